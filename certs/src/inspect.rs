//! Certificate facts compliance checks judge.

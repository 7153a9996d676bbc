//! popscan: the compliance scanner. Only the TLS evidence contract exists so
//! far (the model both evidence sources fill and the checks judge); the
//! scanner itself is tracked in the scanner-core and TLS-engine issues.

pub mod probe;

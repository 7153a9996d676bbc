//! X.509 knowledge shared by the gateway (`popgate`) and the scanner (`popscan`).
//!
//! One module per concern, each owned by the side that needs it most:
//! - [`pki`]: the one-command dev PKI (CA, server and agency client certificates, CRLs).
//! - [`identity`]: what an agency client certificate says about who is calling.
//! - [`inspect`]: facts about a certificate or chain that compliance checks judge.
//! - [`signing`]: Ed25519 keys that seal audit segments and sign scan verdicts.
//! - [`verdict`]: the signed compliance verdict popscan writes and popgate trusts.
//! - [`dates`]: how times and dates are written, everywhere.

pub mod dates;
pub mod durable_file;
pub mod identity;
pub mod inspect;
pub mod pki;
pub mod signing;
pub mod verdict;

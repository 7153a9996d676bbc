//! popscan's own TLS enumeration engine (crafted ClientHellos).

pub mod evidence;
pub mod groups;
pub mod suites;

pub use evidence::*;

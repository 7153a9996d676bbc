//! popscan's own TLS enumeration engine (crafted ClientHellos).

pub mod evidence;

pub use evidence::*;

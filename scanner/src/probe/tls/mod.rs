//! popscan's own TLS enumeration engine (crafted ClientHellos).

mod chain13;
pub mod engine;
pub mod evidence;
pub mod exchange;
pub mod groups;
pub mod recorder;
pub mod render;
pub mod suites;
pub mod wire;

pub use engine::{probe, ProbeError, ProbeLimits};
pub use evidence::*;
pub use exchange::Target;

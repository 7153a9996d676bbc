//! The one error a popgate command ends with, and the exit code it means:
//! 2 when a configuration file is wrong (fix the file, then retry), 1 when
//! something failed while starting or running (a port taken, a log that
//! cannot be written, a damaged audit log) — so scripts and systemd can
//! tell "your config" from "the machine".

use std::fmt::Display;

use yamlconf::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what}: {cause}")]
    Runtime { what: String, cause: String },
}

impl GatewayError {
    /// A failure while starting or running: `what` was being done, `cause`
    /// is why it failed.
    pub fn runtime(what: impl Display, cause: impl Display) -> Self {
        GatewayError::Runtime {
            what: what.to_string(),
            cause: cause.to_string(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            GatewayError::Config(_) => 2,
            GatewayError::Runtime { .. } => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_mistakes_exit_2_and_runtime_failures_exit_1() {
        let c: GatewayError = ConfigError::new(std::path::Path::new("g.yaml"), "bad").into();
        assert_eq!((c.exit_code(), c.to_string().as_str()), (2, "g.yaml: bad"));
        let r = GatewayError::runtime("admin.listen 127.0.0.1:1", "address in use");
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.to_string(), "admin.listen 127.0.0.1:1: address in use");
    }
}

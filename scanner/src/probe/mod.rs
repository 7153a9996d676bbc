//! Live probes of an endpoint.

pub mod tls;

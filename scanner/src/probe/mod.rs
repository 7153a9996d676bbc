//! Live probes of an endpoint: TCP ports, TLS (crafted handshakes), HTTP.

pub mod http;
pub mod ports;
pub mod tls;

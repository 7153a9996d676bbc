//! popgate: the mutual-TLS gateway in front of the population registry.
//!
//! The `popgate` command (crate `popgate`) is a thin CLI over this library;
//! the demo (crate `demo`) drives the same code.

pub mod access;
pub mod admin;
pub mod admission;
pub mod audit;
pub mod config;
pub mod crl_publisher;
pub mod edge;
pub mod error;
pub mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod quota;
pub mod refusal;
pub mod registry;
pub mod routes;
pub mod serve;
pub mod shutdown;
pub mod tls;
pub mod upstream;

#[cfg(test)]
mod module_graph;

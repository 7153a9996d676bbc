//! popgate: the mutual-TLS gateway in front of the population registry.
//!
//! The `popgate` command (crate `popgate`) is a thin CLI over this library;
//! the demo (crate `demo`) drives the same code. What they need is public:
//! loading and checking the config, serving, the audit log's verify and
//! search, the dev PKI's CRL publisher, the error and exit codes, and (for
//! the benchmarks) the audit writer and the quota engine. The request path
//! itself — edge, pipeline stages, proxy phases, refusals — is internal.

pub mod audit;
pub mod config;
pub mod crl_publisher;
pub mod error;
pub mod quota;
pub mod registry;
pub mod revocation;
pub mod serve;

mod access;
mod admin;
mod admission;
mod edge;
mod metrics;
mod pipeline;
mod proxy;
mod refusal;
mod routes;
mod shutdown;
mod tls;
mod upstream;

#[cfg(test)]
mod module_graph;

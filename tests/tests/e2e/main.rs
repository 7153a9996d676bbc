//! Every end-to-end test, in one test binary (as ripgrep does): one link of
//! the workspace instead of one per file. Each module is one concern; the
//! shared harness (processes, PKI, clients, hostile peers) is the `e2e`
//! library in tests/src.

// Test helpers may unwrap: a panic is a failing test, with its location.
#![allow(clippy::unwrap_used)]

mod admission;
mod cli_docs;
mod demo;
mod deploy_checks;
mod gateway_access;
mod gateway_admin;
mod gateway_audit;
mod gateway_audit_store;
mod gateway_cluster_quota;
mod gateway_config;
mod gateway_crl_fetch;
mod gateway_handshake;
mod gateway_hardening;
mod gateway_lifecycle;
mod gateway_ocsp;
mod gateway_quota;
mod gateway_revocation;
mod scanner_scan;
mod scanner_tls_engine;

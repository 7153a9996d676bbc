//! How a request is judged, stage by stage, in the order DESIGN.md gives:
//! identity → revocation (OCSP) → edge → admission → access → body →
//! quota, one module each.
//!
//! Each stage is a function from what it needs to `Result<_, Refusal>`.
//! What a stage learns goes into [`Seen`] as it goes, so a refusal is
//! audited with everything known when it was made. The path ends in an
//! [`Admitted`] value, which only [`admit`] can build: the proxy can
//! build an upstream request only from one, and only after its access
//! record is durable.

mod access;
mod admission;
mod body;
mod edge;
mod identity;
mod quota;
mod revocation;

pub use access::access;
pub use admission::admission;
pub use body::body;
pub use edge::edge;
pub use identity::identity;
pub use quota::admit;
pub use revocation::revocation;

use std::collections::BTreeMap;
use std::sync::Arc;

use certs::identity::CertIdentity;

/// What the audit record of this request shows, filled in stage by stage.
#[derive(Debug, Default)]
pub struct Seen {
    pub identity: Option<Arc<CertIdentity>>,
    pub agency: Option<String>,
    pub route: Option<String>,
    /// The route *template* when a route matched (so a citizen ID appears
    /// only as `citizen_ref`), the normalised path (identifiers redacted)
    /// when none did; `None` before the path was looked at, and the record
    /// then shows the raw path, decoded and redacted.
    pub audit_path: Option<String>,
    pub query: Option<BTreeMap<String, String>>,
    pub purpose: Option<String>,
    pub citizen_id: Option<String>,
}

/// A request that passed every stage. Fields are private to this module:
/// holding one is the proof.
#[derive(Debug)]
pub struct Admitted {
    agency: String,
    route: String,
    /// Normalised path plus the accepted query: what the upstream receives.
    target: String,
    purpose: Option<String>,
    /// Bytes of request body read (and to be forwarded).
    body_len: u64,
    permit: crate::quota::Permit,
}

impl Admitted {
    pub fn agency(&self) -> &str {
        &self.agency
    }
    pub fn route(&self) -> &str {
        &self.route
    }
    pub fn target(&self) -> &str {
        &self.target
    }
    pub fn purpose(&self) -> Option<&str> {
        self.purpose.as_deref()
    }
    pub fn body_len(&self) -> u64 {
        self.body_len
    }
    pub fn permit(&self) -> &crate::quota::Permit {
        &self.permit
    }
}

/// What the stages before the body and quota produce.
pub struct Judged {
    route_index: usize,
    agency: String,
    target: String,
    purpose: Option<String>,
    body_limit: u64,
}

//! Every way popgate says no, with a stable machine-readable code.
//!
//! Integrators write code against `error`; the codes never change meaning.
//! Messages are for humans and may improve over time.

use serde::Serialize;

/// A refusal decided by the gateway, before or instead of the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The connection's certificate was not one this process verified.
    NoIdentity,
    UnknownAgency,
    AgencySuspended {
        agency: String,
    },
    BadPath(String),
    RouteNotAllowed {
        method: String,
        path: String,
    },
    PurposeRequired,
    BadPurpose(&'static str),
    UpstreamUnavailable(String),
    UpstreamTimeout,
    /// The audit log cannot be written: nothing is served unrecorded.
    AuditUnavailable,
    QuotaExceeded(crate::quota::QuotaRefusal),
    /// No current, passing, trusted compliance verdict; the reason says
    /// what to fix ("verdict expired 2026-10-01", "control tls.protocols
    /// failed on hanoi-portal").
    NotCompliant(String),
    /// The gateway is draining for shutdown; retry on another instance.
    ShuttingDown,
    /// `Upgrade`, `CONNECT`: popgate never opens a tunnel, in which later
    /// bytes would reach the registry unjudged and unrecorded.
    TunnelRefused(&'static str),
    /// Request header names and values exceed `limits.max_header_bytes`.
    HeadersTooLarge {
        limit: u64,
    },
    /// The body exceeds the route's limit.
    BodyTooLarge {
        limit: u64,
    },
    /// A body on GET, HEAD or DELETE: a registry that ignores it could read
    /// it as a second, unjudged request.
    BodyNotAllowed {
        method: String,
    },
    /// The request body could not be read as HTTP (malformed chunking,
    /// stalled past `limits.body_timeout_ms`).
    BadRequestBody(String),
    /// A path or query parameter that is not in the route's declared shape.
    BadParameter(crate::access::ParamError),
    /// This connection was opened while the agency already held its
    /// `limits.max_connections_per_agency`.
    TooManyConnections {
        limit: u32,
    },
    /// The registry answered something popgate never relays (101).
    UpstreamBadResponse(String),
    /// A header popgate cannot pass on in any reading: `Connection` naming
    /// other headers (hop-by-hop tricks that strip or smuggle headers).
    BadHeader(String),
    /// The certificate's OCSP responder says it is revoked.
    CertRevoked,
    /// No current revocation status could be had for the certificate
    /// (responder down, answer rejected or unknown) and the policy is
    /// `closed`, or its grace has ended.
    RevocationUnavailable(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NoIdentity
            | Refusal::UnknownAgency
            | Refusal::AgencySuspended { .. }
            | Refusal::RouteNotAllowed { .. }
            | Refusal::NotCompliant(_)
            | Refusal::CertRevoked => 403,
            Refusal::RevocationUnavailable(_) => 503,
            Refusal::ShuttingDown => 503,
            Refusal::BadPath(_) | Refusal::PurposeRequired | Refusal::BadPurpose(_) => 400,
            Refusal::UpstreamUnavailable(_) => 502,
            Refusal::UpstreamTimeout => 504,
            Refusal::AuditUnavailable => 503,
            Refusal::QuotaExceeded(q) if q.limit == crate::quota::Limit::Unavailable => 503,
            Refusal::QuotaExceeded(_) => 429,
            Refusal::TunnelRefused(_)
            | Refusal::BodyNotAllowed { .. }
            | Refusal::BadRequestBody(_)
            | Refusal::BadParameter(_) => 400,
            Refusal::HeadersTooLarge { .. } => 431,
            Refusal::BodyTooLarge { .. } => 413,
            Refusal::TooManyConnections { .. } => 429,
            Refusal::UpstreamBadResponse(_) => 502,
            Refusal::BadHeader(_) => 400,
        }
    }

    /// The stable code (`error` field of the JSON body).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NoIdentity => "no_identity",
            Refusal::UnknownAgency => "unknown_agency",
            Refusal::AgencySuspended { .. } => "agency_suspended",
            Refusal::BadPath(_) => "bad_path",
            Refusal::RouteNotAllowed { .. } => "route_not_allowed",
            Refusal::PurposeRequired => "purpose_required",
            Refusal::BadPurpose(_) => "bad_purpose",
            Refusal::UpstreamUnavailable(_) => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::AuditUnavailable => "audit_unavailable",
            Refusal::QuotaExceeded(q) if q.limit == crate::quota::Limit::Unavailable => {
                "quota_unavailable"
            }
            Refusal::QuotaExceeded(_) => "quota_exceeded",
            Refusal::NotCompliant(_) => "not_compliant",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::TunnelRefused(_) => "tunnel_refused",
            Refusal::HeadersTooLarge { .. } => "headers_too_large",
            Refusal::BodyTooLarge { .. } => "body_too_large",
            Refusal::BodyNotAllowed { .. } => "body_not_allowed",
            Refusal::BadRequestBody(_) => "bad_request_body",
            Refusal::BadParameter(crate::access::ParamError::QueryNotAllowed { .. }) => {
                "query_not_allowed"
            }
            Refusal::BadParameter(_) => "bad_parameter",
            Refusal::TooManyConnections { .. } => "too_many_connections",
            Refusal::UpstreamBadResponse(_) => "upstream_bad_response",
            Refusal::BadHeader(_) => "bad_header",
            Refusal::CertRevoked => "cert_revoked",
            Refusal::RevocationUnavailable(_) => "revocation_unavailable",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NoIdentity => {
                "the client certificate of this connection was not verified by this gateway".into()
            }
            Refusal::UnknownAgency => {
                "the client certificate is valid but belongs to no registered agency".into()
            }
            Refusal::AgencySuspended { agency } => {
                format!("agency {agency} is suspended; contact the registry operator")
            }
            Refusal::BadPath(why) => format!("malformed or ambiguous path: {why}"),
            Refusal::RouteNotAllowed { method, path } => {
                format!("{method} {path} is not a route this agency may call")
            }
            Refusal::PurposeRequired => {
                "this agency must state the purpose of each lookup in the X-Purpose header".into()
            }
            Refusal::BadPurpose(why) => (*why).to_owned(),
            Refusal::UpstreamUnavailable(why) => {
                format!("the population registry is unreachable: {why}")
            }
            Refusal::UpstreamTimeout => "the population registry did not answer in time".into(),
            Refusal::QuotaExceeded(q) if q.limit == crate::quota::Limit::Unavailable => {
                "the shared quota store cannot be reached, so no budget can be granted; retry shortly".into()
            }
            Refusal::QuotaExceeded(q) => format!(
                "{} limit reached; retry in {} s",
                q.limit.as_str(),
                q.retry_after_s
            ),
            Refusal::AuditUnavailable => {
                "the audit log cannot be written, so no request can be served; retry later".into()
            }
            Refusal::NotCompliant(why) => format!("agency not admitted: {why}"),
            Refusal::ShuttingDown => "this gateway instance is shutting down; retry".into(),
            Refusal::TunnelRefused(what) => {
                format!("{what}: popgate does not open tunnels; send plain HTTP requests")
            }
            Refusal::HeadersTooLarge { limit } => {
                format!("request headers exceed {limit} bytes")
            }
            Refusal::BodyTooLarge { limit } => {
                format!("request body exceeds {limit} bytes for this route")
            }
            Refusal::BodyNotAllowed { method } => format!("{method} requests must not carry a body"),
            Refusal::BadRequestBody(why) => format!("the request body could not be read: {why}"),
            Refusal::BadParameter(e) => e.to_string(),
            Refusal::TooManyConnections { limit } => format!(
                "this agency already holds {limit} open connections to this gateway; reuse them"
            ),
            Refusal::UpstreamBadResponse(why) => {
                format!("the population registry sent a response popgate does not relay: {why}")
            }
            Refusal::BadHeader(why) => why.clone(),
            Refusal::CertRevoked => {
                "the client certificate is revoked (its issuer's OCSP responder says so)".into()
            }
            Refusal::RevocationUnavailable(why) => format!(
                "the revocation status of the client certificate cannot be had ({why}); retry later"
            ),
        }
    }

    /// The JSON body sent to the agency.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: String,
            request_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<&'a str>,
        }
        serde_json::to_vec(&Body {
            error: self.code(),
            message: self.message(),
            request_id,
            limit: match self {
                Refusal::QuotaExceeded(q) => Some(q.limit.as_str()),
                _ => None,
            },
        })
        .unwrap_or_else(|_| b"{\"error\":\"internal_error\"}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_the_documented_shape() {
        let r = Refusal::RouteNotAllowed {
            method: "GET".into(),
            path: "/v1/x\"y".into(),
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body("rid-1")).unwrap();
        assert_eq!(v["error"], "route_not_allowed");
        assert_eq!(v["request_id"], "rid-1");
        assert!(v["message"].as_str().unwrap().contains("/v1/x\"y"));
        assert_eq!(r.status(), 403);
    }
}

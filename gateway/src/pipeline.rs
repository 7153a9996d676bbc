//! How a request is judged, stage by stage, in the order DESIGN.md gives:
//! edge → identity → admission → access → body → quota.
//!
//! Each stage is a function from what it needs to `Result<_, Refusal>`.
//! What a stage learns goes into [`Seen`] as it goes, so a refusal is
//! audited with everything known when it was made. The path ends in an
//! [`Admitted`] value, which only [`admit`] can build: the proxy can
//! build an upstream request only from one, and only after its access
//! record is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;

use crate::access::{check_params, check_purpose, check_query, find_route};
use crate::edge::Limits;
use crate::refusal::Refusal;
use crate::registry::{Agency, AgencyStatus, Registry};
use crate::routes::normalise_path;
use crate::tls::AgencyCertVerifier;
use certs::identity::CertIdentity;

/// What the audit record of this request shows, filled in stage by stage.
#[derive(Debug, Default)]
pub struct Seen {
    pub identity: Option<Arc<CertIdentity>>,
    pub agency: Option<String>,
    pub route: Option<String>,
    /// The route *template* when a route matched (so a citizen ID appears
    /// only as `citizen_ref`), otherwise the path with identifiers redacted.
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

/// The edge stage: refuses what popgate never forwards, whoever asks.
/// `has_body`: the request carries a body (pingora's framing verdict).
pub fn edge(req: &RequestHeader, has_body: bool, limits: &Limits) -> Result<(), Refusal> {
    if req.method == http::Method::CONNECT {
        return Err(Refusal::TunnelRefused("CONNECT"));
    }
    if req.headers.contains_key(http::header::UPGRADE)
        || req
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| {
                v.as_bytes()
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
            })
    {
        return Err(Refusal::TunnelRefused("Upgrade"));
    }
    let header_bytes: u64 = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum::<u64>()
        + req.uri.to_string().len() as u64;
    if header_bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    if has_body
        && matches!(
            req.method,
            http::Method::GET | http::Method::HEAD | http::Method::DELETE
        )
    {
        return Err(Refusal::BodyNotAllowed {
            method: req.method.to_string(),
        });
    }
    Ok(())
}

/// The identity stage: the certificate rustls verified for this connection
/// → the agency it belongs to, which must be active.
pub fn identity<'r>(
    session: &Session,
    verifier: &AgencyCertVerifier,
    registry: &'r Registry,
    seen: &mut Seen,
) -> Result<&'r Agency, Refusal> {
    let identity = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|ssl| verifier.identity(&ssl.cert_digest))
        .ok_or(Refusal::NoIdentity)?;
    seen.identity = Some(identity.clone());
    let agency = registry
        .agency_for(&identity)
        .ok_or(Refusal::UnknownAgency)?;
    seen.agency = Some(agency.id.clone());
    if agency.status == AgencyStatus::Suspended {
        return Err(Refusal::AgencySuspended {
            agency: agency.id.clone(),
        });
    }
    Ok(agency)
}

/// The access stage: normalised path → declared route → granted to this
/// agency, with its purpose, parameters and query in their declared shapes.
pub fn access(
    req: &RequestHeader,
    registry: &Registry,
    agency: &Agency,
    limits: &Limits,
    citizen_ref: impl Fn(&str) -> String,
    seen: &mut Seen,
) -> Result<Judged, Refusal> {
    let method = req.method.as_str();
    let path = normalise_path(req.uri.path()).map_err(|e| Refusal::BadPath(e.to_string()))?;
    seen.audit_path = Some(crate::access::redact_identifiers(path.as_str()));
    let not_allowed = || Refusal::RouteNotAllowed {
        method: method.to_owned(),
        path: crate::access::redact_identifiers(path.as_str()),
    };
    let matched = find_route(&registry.routes, method, &path).ok_or_else(not_allowed)?;
    let route = &registry.routes[matched.route_index];
    seen.route = Some(route.id.clone());
    seen.audit_path = Some(route.template.as_str().to_owned());
    // Parameters in their declared shape first, so the citizen is named
    // one way only; then the purpose: a refused attempt on a citizen is
    // recorded under that citizen, with the reason the agency gave.
    check_params(route, &matched).map_err(Refusal::BadParameter)?;
    seen.citizen_id = matched.citizen_id().map(str::to_owned);
    seen.purpose = check_purpose(req.headers.get("x-purpose").map(|v| v.as_bytes()))
        .map_err(Refusal::BadPurpose)?;
    if !agency.allowed.contains(&matched.route_index) {
        return Err(not_allowed());
    }
    let query = check_query(route, req.uri.query(), citizen_ref).map_err(Refusal::BadParameter)?;
    seen.query = query.audit;
    if agency.purpose_required && seen.purpose.is_none() {
        return Err(Refusal::PurposeRequired);
    }
    Ok(Judged {
        route_index: matched.route_index,
        agency: agency.id.clone(),
        target: match query.upstream {
            Some(q) => format!("{}?{q}", path.as_str()),
            None => path.as_str().to_owned(),
        },
        purpose: seen.purpose.clone(),
        body_limit: route.max_body_bytes.unwrap_or(limits.max_body_bytes),
    })
}

/// The body stage: the whole body is read, within its limit and deadline,
/// before anything is forwarded, so the registry never receives part of a
/// request popgate later refuses. pingora replays the read body upstream.
pub async fn body(session: &mut Session, judged: &Judged, limits: &Limits) -> Result<u64, Refusal> {
    if session.as_mut().is_body_empty() {
        return Ok(0);
    }
    let limit = judged.body_limit;
    let too_large = || Refusal::BodyTooLarge { limit };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    session.as_mut().enable_retry_buffering();
    let mut total = 0u64;
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    loop {
        let chunk = tokio::time::timeout_at(deadline, session.as_mut().read_request_body())
            .await
            .map_err(|_| {
                Refusal::BadRequestBody(format!(
                    "not complete within {} ms",
                    limits.body_timeout.as_millis()
                ))
            })?
            .map_err(|e| Refusal::BadRequestBody(e.etype().as_str().to_lowercase()))?;
        match chunk {
            Some(bytes) => {
                total += bytes.len() as u64;
                if total > limit {
                    return Err(too_large());
                }
            }
            None => break,
        }
    }
    Ok(total)
}

/// The quota stage, last: only requests that would otherwise be served
/// spend budget.
pub async fn admit(
    quota: &crate::quota::QuotaEngine,
    registry: &Registry,
    judged: Judged,
    body_len: u64,
) -> Result<Admitted, Refusal> {
    let route = &registry.routes[judged.route_index];
    let permit = quota
        .admit(&judged.agency, &route.id)
        .await
        .map_err(Refusal::QuotaExceeded)?;
    Ok(Admitted {
        agency: judged.agency,
        route: route.id.clone(),
        target: judged.target,
        purpose: judged.purpose,
        body_len,
        permit,
    })
}

//! The request path, in the order DESIGN.md gives it:
//! handshake (in [`crate::tls`]) → identity → access → audit → upstream.
//!
//! [`Gateway::decide`] is the one place a request is judged; it fills the
//! request context step by step (so a refusal is audited with everything that
//! was known) and returns a [`Refusal`] or `Ok`. [`Gateway::refuse`] is the
//! one place a refusal is written, and [`Gateway::record`] the one place an
//! audit record is made: no response head leaves before its record is durable.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::access::{check_purpose, find_route, normalise_path};
use crate::audit::record::{now_rfc3339, Access, CertRef, Decision};
use crate::audit::AuditLog;
use crate::config::Upstream;
use crate::refusal::Refusal;
use crate::registry::{AgencyStatus, Registry};
use crate::tls::AgencyCertVerifier;
use certs::identity::CertIdentity;

/// Headers only the gateway may set on the upstream request. A client that
/// sends them is trying to impersonate; they are removed, then set by us.
pub const GATEWAY_HEADERS: [&str; 3] = ["x-agency-id", "x-request-id", "x-purpose"];

/// Per-request state, filled in as the request moves along the path.
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    pub identity: Option<Arc<CertIdentity>>,
    pub agency_id: Option<String>,
    pub route_id: Option<String>,
    /// What the audit record shows as the path: the route template when a
    /// route matched (so the citizen ID appears only as `citizen_ref`),
    /// otherwise the path with long digit runs redacted.
    pub audit_path: Option<String>,
    /// Normalised path plus the original query: what the upstream receives.
    pub upstream_target: Option<String>,
    pub purpose: Option<String>,
    pub citizen_id: Option<String>,
    /// Set once `decide` allowed the request; nothing is forwarded without it.
    pub allowed: bool,
    /// The audit append for the response failed: answer 503, record nothing more.
    pub audit_failed: bool,
    /// Quota admission; its concurrency slot is released when the request ends.
    pub permit: Option<crate::quota::Permit>,
    /// When the upstream was chosen, for the upstream duration histogram.
    pub upstream_started: Option<Instant>,
    /// Counts the request in `popgate_inflight_requests` (and the drain).
    pub _inflight: crate::shutdown::InflightGuard,
}

pub struct Gateway {
    pub registry: Arc<ArcSwap<Registry>>,
    pub verifier: Arc<AgencyCertVerifier>,
    pub upstream: Upstream,
    pub audit: AuditLog,
    pub quota: Arc<crate::quota::QuotaEngine>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Compliance verdicts, when `admission:` is configured.
    pub admission: Option<Arc<crate::admission::Admission>>,
    pub drain: Arc<crate::shutdown::Drain>,
}

impl Gateway {
    /// Judges a request, recording what it learns in `ctx`.
    pub fn decide(&self, session: &Session, ctx: &mut RequestCtx) -> Result<(), Refusal> {
        let req = session.req_header();
        ctx.audit_path = Some(redact_digits(req.uri.path()));

        // identity: the certificate rustls verified for this connection.
        let identity = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|ssl| self.verifier.identity(&ssl.cert_digest))
            .ok_or(Refusal::NoIdentity)?;
        ctx.identity = Some(identity.clone());
        let registry = self.registry.load();
        let agency = registry
            .agency_for(&identity)
            .ok_or(Refusal::UnknownAgency)?;
        ctx.agency_id = Some(agency.id.clone());
        if agency.status == AgencyStatus::Suspended {
            return Err(Refusal::AgencySuspended {
                agency: agency.id.clone(),
            });
        }

        // admission: a current, passing, signed compliance verdict.
        if let Some(adm) = &self.admission {
            adm.check(agency, time::OffsetDateTime::now_utc())
                .map_err(Refusal::NotCompliant)?;
        }

        // access: normalised path → declared route → granted to this agency.
        let method = req.method.as_str();
        let path = normalise_path(req.uri.path()).map_err(|e| Refusal::BadPath(e.to_string()))?;
        ctx.audit_path = Some(redact_digits(path.as_str()));
        let not_allowed = || Refusal::RouteNotAllowed {
            method: method.to_owned(),
            path: redact_digits(path.as_str()),
        };
        let matched = find_route(&registry.routes, method, &path).ok_or_else(not_allowed)?;
        let route = &registry.routes[matched.route_index];
        ctx.route_id = Some(route.id.clone());
        ctx.audit_path = Some(route.template.as_str().to_owned());
        ctx.citizen_id = matched.citizen_id;
        // Read the stated purpose before judging the grant, so a refused
        // attempt is recorded with the reason the agency gave.
        ctx.purpose = check_purpose(req.headers.get("x-purpose").map(|v| v.as_bytes()))
            .map_err(Refusal::BadPurpose)?;
        if !agency.allowed.contains(&matched.route_index) {
            return Err(not_allowed());
        }
        if agency.purpose_required && ctx.purpose.is_none() {
            return Err(Refusal::PurposeRequired);
        }

        ctx.upstream_target = Some(match req.uri.query() {
            Some(q) => format!("{}?{q}", path.as_str()),
            None => path.as_str().to_owned(),
        });
        Ok(())
    }

    /// Makes the audit record for this request's response and waits until
    /// it is durable.
    async fn record(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        outcome: Outcome<'_>,
    ) -> Result<(), crate::audit::AuditError> {
        let Outcome {
            decision,
            code,
            status,
            upstream_status,
            bytes,
        } = outcome;
        let access = Access {
            time: now_rfc3339(),
            request_id: ctx.request_id.clone(),
            agency: ctx.agency_id.clone(),
            cert: ctx.identity.as_ref().map(|i| CertRef {
                sha256: i.fingerprint_sha256.clone(),
                serial: i.serial.clone(),
                subject: i.subject.clone(),
            }),
            client: session.client_addr().map(|a| a.to_string()),
            method: session.req_header().method.as_str().to_owned(),
            route: ctx.route_id.clone(),
            path: ctx.audit_path.clone().unwrap_or_default(),
            purpose: ctx.purpose.clone(),
            decision,
            code: code.map(str::to_owned),
            status,
            bytes,
            latency_ms: ctx.started.elapsed().as_millis() as u64,
            upstream_status,
            citizen_ref: ctx.citizen_id.as_ref().map(|c| self.audit.citizen_ref(c)),
        };
        let agency = access.agency.as_deref().unwrap_or("-");
        let route = access.route.as_deref().unwrap_or("-");
        self.metrics
            .requests
            .with_label_values(&[agency, route, &status.to_string()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[agency, route])
            .observe(ctx.started.elapsed().as_secs_f64());
        self.audit.append(access).await.map(|_| ())
    }

    /// Writes a refusal as JSON after recording it. The only place refusals
    /// are sent. If the record cannot be written, the answer is 503
    /// `audit_unavailable` instead (which, by necessity, is not recorded).
    pub async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        refusal: &Refusal,
    ) -> Result<()> {
        let body_refusal = if matches!(refusal, Refusal::AuditUnavailable) {
            refusal.clone()
        } else {
            let body_len = refusal.body(&ctx.request_id).len() as u64;
            let outcome = Outcome {
                decision: Decision::Refuse,
                code: Some(refusal.code()),
                status: refusal.status(),
                upstream_status: None,
                bytes: Some(body_len),
            };
            match self.record(session, ctx, outcome).await {
                Ok(()) => refusal.clone(),
                Err(e) => {
                    tracing::error!(request_id = %ctx.request_id, error = %e, "refusal not recorded; answering 503");
                    Refusal::AuditUnavailable
                }
            }
        };
        self.metrics
            .refusals
            .with_label_values(&[body_refusal.code()])
            .inc();
        if let Refusal::QuotaExceeded(q) = &body_refusal {
            self.metrics
                .quota_rejections
                .with_label_values(&[ctx.agency_id.as_deref().unwrap_or("-"), q.limit.as_str()])
                .inc();
        }
        let body = body_refusal.body(&ctx.request_id);
        let mut resp = ResponseHeader::build(body_refusal.status(), Some(4))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        resp.insert_header("cache-control", "no-store")?;
        if let Refusal::QuotaExceeded(q) = &body_refusal {
            for (name, value) in &q.headers {
                resp.insert_header(*name, value.as_str())?;
            }
        }
        // An unread request body would be parsed as the next request.
        if request_may_have_body(session.req_header()) {
            session.set_keepalive(None);
        }
        tracing::info!(
            request_id = %ctx.request_id,
            agency = ctx.agency_id.as_deref().unwrap_or("-"),
            code = body_refusal.code(),
            status = body_refusal.status(),
            "refused"
        );
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
        Ok(())
    }
}

/// How a request ended, for its audit record.
struct Outcome<'a> {
    decision: Decision,
    code: Option<&'a str>,
    status: u16,
    upstream_status: Option<u16>,
    bytes: Option<u64>,
}

/// Replaces runs of 9 or more digits (citizen IDs and the like) so that
/// paths that matched no route cannot smuggle identifiers into the log.
fn redact_digits(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut run = String::new();
    for c in path.chars() {
        if c.is_ascii_digit() {
            run.push(c);
            continue;
        }
        flush_run(&mut out, &mut run);
        out.push(c);
    }
    flush_run(&mut out, &mut run);
    out
}

fn flush_run(out: &mut String, run: &mut String) {
    if run.len() >= 9 {
        out.push_str("{redacted}");
    } else {
        out.push_str(run);
    }
    run.clear();
}

fn request_may_have_body(req: &RequestHeader) -> bool {
    req.headers.contains_key("transfer-encoding")
        || req
            .headers
            .get("content-length")
            .is_some_and(|v| v.as_bytes() != b"0")
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            request_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            identity: None,
            agency_id: None,
            route_id: None,
            audit_path: None,
            upstream_target: None,
            purpose: None,
            citizen_id: None,
            allowed: false,
            audit_failed: false,
            permit: None,
            upstream_started: None,
            _inflight: self.drain.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if self.drain.draining() {
            self.refuse(session, ctx, &Refusal::ShuttingDown).await?;
            return Ok(true);
        }
        // Forward nothing while the log cannot be written.
        if !self.audit.writable() {
            self.refuse(session, ctx, &Refusal::AuditUnavailable)
                .await?;
            return Ok(true);
        }
        let decided = match self.decide(session, ctx) {
            // quota: counted only for requests that would otherwise be served.
            Ok(()) => match (&ctx.agency_id, &ctx.route_id) {
                (Some(a), Some(r)) => self.quota.admit(a, r).await.map_err(Refusal::QuotaExceeded),
                _ => Err(Refusal::NoIdentity),
            },
            Err(r) => Err(r),
        };
        match decided {
            Ok(permit) => {
                ctx.permit = Some(permit);
                ctx.allowed = true;
                Ok(false)
            }
            Err(refusal) => {
                self.refuse(session, ctx, &refusal).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // Fail closed: only a request `decide` allowed may reach this point.
        if !ctx.allowed {
            return Err(Error::explain(
                ErrorType::InternalError,
                "upstream_peer reached without an access decision",
            ));
        }
        ctx.upstream_started = Some(Instant::now());
        let u = &self.upstream;
        let mut peer = HttpPeer::new((u.host.as_str(), u.port), u.tls, u.host.clone());
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.total_connection_timeout = Some(u.connect_timeout);
        peer.options.read_timeout = Some(u.read_timeout);
        peer.options.write_timeout = Some(u.read_timeout);
        peer.options.idle_timeout = Some(u.idle_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let target = match (&ctx.upstream_target, ctx.allowed) {
            (Some(t), true) => t,
            _ => {
                return Err(Error::explain(
                    ErrorType::InternalError,
                    "no access decision for upstream request",
                ))
            }
        };
        for h in GATEWAY_HEADERS {
            upstream_request.remove_header(h);
        }
        let uri = target.parse::<http::Uri>().map_err(|e| {
            Error::because(ErrorType::InternalError, "normalised path is not a URI", e)
        })?;
        upstream_request.set_uri(uri);
        if let Some(a) = &ctx.agency_id {
            upstream_request.insert_header("x-agency-id", a.as_str())?;
        }
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(p) = &ctx.purpose {
            upstream_request.insert_header("x-purpose", p.as_str())?;
        }
        let host = format!("{}:{}", self.upstream.host, self.upstream.port);
        upstream_request.insert_header("host", host)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        if let (Some(t), Some(route)) = (ctx.upstream_started, &ctx.route_id) {
            self.metrics
                .upstream_duration
                .with_label_values(&[route.as_str()])
                .observe(t.elapsed().as_secs_f64());
        }
        let bytes = upstream_response
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        // Durable before disclosure: the head goes out only after this.
        let outcome = Outcome {
            decision: Decision::Allow,
            code: None,
            status,
            upstream_status: Some(status),
            bytes,
        };
        if let Err(e) = self.record(session, ctx, outcome).await {
            ctx.audit_failed = true;
            return Err(Error::because(
                ErrorType::InternalError,
                "audit record for the response could not be written",
                e,
            ));
        }
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(p) = &ctx.permit {
            for (name, value) in &p.headers {
                upstream_response.insert_header(*name, value.as_str())?;
            }
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let refusal = if ctx.audit_failed {
            Refusal::AuditUnavailable
        } else {
            match e.etype() {
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                    Refusal::UpstreamTimeout
                }
                _ => Refusal::UpstreamUnavailable(e.etype().as_str().to_owned()),
            }
        };
        let downstream_gone = matches!(
            e.etype(),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
        ) && e.esource() == &pingora::ErrorSource::Downstream;
        // Headers already sent (failure mid-body) or client gone: nothing to write.
        if downstream_gone || session.response_written().is_some() {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        tracing::warn!(request_id = %ctx.request_id, error = %e, "request failed after the access decision");
        if let Err(write_err) = self.refuse(session, ctx, &refusal).await {
            tracing::warn!(request_id = %ctx.request_id, error = %write_err, "could not send refusal");
        }
        FailToProxy {
            error_code: refusal.status(),
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_digits;

    #[test]
    fn long_digit_runs_never_reach_the_log() {
        assert_eq!(redact_digits("/v1/x/001203012345/y"), "/v1/x/{redacted}/y");
        assert_eq!(
            redact_digits("/v1/citizens/12345678"),
            "/v1/citizens/12345678"
        );
        assert_eq!(redact_digits("/a123456789"), "/a{redacted}");
    }
}

//! The request path under pingora's phases.
//!
//! - `request_filter` runs the [`pipeline`](crate::pipeline) stages. A
//!   refusal is recorded durably, then answered. An admitted request gets
//!   its access record written *and made durable before anything is
//!   forwarded* (write-ahead): whatever happens afterwards — the agency
//!   resetting the connection, the registry failing, popgate crashing — the
//!   access is on record.
//! - `upstream_peer` and `upstream_request_filter` build the upstream
//!   request only from the [`Forwarded`] proof, sending an allow-list of
//!   headers and popgate's own.
//! - `logging`, which pingora calls at the end of every request that got
//!   past header parsing, appends the outcome record (how it ended and
//!   who cut it short) and counts the request in metrics. If the context is
//!   dropped without `logging` (a panic, a runtime shutdown), [`Forwarded`]'s
//!   `Drop` still records the outcome as `aborted`.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::audit::record::{now_rfc3339, Access, CertRef, Decision, Outcome};
use crate::audit::AuditLog;
use crate::edge::{Conn, Limits};
use crate::pipeline::{Admitted, Seen};
use crate::refusal::Refusal;
use crate::registry::Registry;
use crate::tls::AgencyCertVerifier;
use crate::upstream::Upstream;

/// Per-request state.
pub struct RequestCtx {
    pub request_id: String,
    pub started: Instant,
    /// What the audit record shows, filled in by the pipeline stages.
    pub seen: Seen,
    /// Present once the request was admitted and its access record is
    /// durable; nothing is forwarded without it.
    forwarded: Option<Forwarded>,
    /// The refusal this request got (recorded as its access record), or
    /// the failure that ended a forwarded one (recorded in its outcome).
    ended: Option<Refusal>,
    /// Counts the request in `popgate_inflight_requests` (and the drain).
    _inflight: crate::shutdown::InflightGuard,
}

/// An admitted request whose access record is durable. Dropping it without
/// [`Forwarded::finish`] records the outcome as `aborted`, so a forwarded
/// request can never end without an outcome record while popgate runs.
pub struct Forwarded {
    admitted: Admitted,
    request_id: String,
    citizen_ref: Option<String>,
    audit: AuditLog,
    started: Instant,
    upstream_started: Option<Instant>,
    upstream_status: Option<u16>,
    finished: bool,
}

impl Forwarded {
    fn finish(&mut self, outcome: &str, status: Option<u16>, bytes: u64) {
        self.finished = true;
        self.audit.record_outcome(Outcome {
            time: now_rfc3339(),
            request_id: self.request_id.clone(),
            agency: Some(self.admitted.agency().to_owned()),
            route: Some(self.admitted.route().to_owned()),
            outcome: outcome.to_owned(),
            status,
            upstream_status: self.upstream_status,
            bytes,
            latency_ms: self.started.elapsed().as_millis() as u64,
            citizen_ref: self.citizen_ref.clone(),
        });
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!(request_id = %self.request_id, "forwarded request ended without an outcome; recording it as aborted");
            self.finish("aborted", None, 0);
        }
    }
}

pub struct Gateway {
    pub registry: Arc<ArcSwap<Registry>>,
    pub verifier: Arc<AgencyCertVerifier>,
    pub upstream: Upstream,
    pub limits: Limits,
    pub audit: AuditLog,
    pub quota: Arc<crate::quota::QuotaEngine>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Compliance verdicts, when `admission:` is configured.
    pub admission: Option<Arc<crate::admission::Admission>>,
    pub drain: Arc<crate::shutdown::Drain>,
    /// OCSP for client certificates, when `revocation.ocsp` is configured.
    pub ocsp: Option<Arc<crate::revocation::ocsp::OcspChecker>>,
}

impl Gateway {
    /// Runs the stages; on success the request is admitted (not yet recorded).
    async fn judge(&self, session: &mut Session, seen: &mut Seen) -> Result<Admitted, Refusal> {
        let has_body = !session.as_mut().is_body_empty();
        let registry = self.registry.load_full();
        let agency = crate::pipeline::identity(session, &self.verifier, &registry, seen)?;
        crate::pipeline::revocation(session, &self.verifier, self.ocsp.as_deref()).await?;
        if Conn::of(session).is_some_and(|c| c.over_cap) {
            return Err(Refusal::TooManyConnections {
                limit: self.limits.max_connections_per_agency,
            });
        }
        crate::pipeline::edge(session.req_header(), has_body, &self.limits)?;
        crate::pipeline::admission(
            self.admission.as_deref(),
            agency,
            time::OffsetDateTime::now_utc(),
        )?;
        let judged = crate::pipeline::access(
            session.req_header(),
            &registry,
            agency,
            &self.limits,
            |c| self.audit.citizen_ref(c),
            seen,
        )?;
        let body_len = crate::pipeline::body(session, &judged, &self.limits).await?;
        crate::pipeline::admit(&self.quota, &registry, judged, body_len).await
    }

    /// The access record of this request, as far as it got.
    fn access_record(&self, session: &Session, ctx: &RequestCtx, decision: Decision) -> Access {
        let refusal = ctx.ended.as_ref().filter(|_| decision == Decision::Refuse);
        Access {
            time: now_rfc3339(),
            request_id: ctx.request_id.clone(),
            agency: ctx.seen.agency.clone(),
            cert: ctx.seen.identity.as_ref().map(|i| CertRef {
                sha256: i.fingerprint_sha256.clone(),
                serial: i.serial.clone(),
                subject: i.subject.clone(),
            }),
            client: session.client_addr().map(|a| a.to_string()),
            method: session.req_header().method.as_str().to_owned(),
            route: ctx.seen.route.clone(),
            // The route template when one matched; otherwise the raw path,
            // made fit for the log only now, on the refusal path.
            path: ctx
                .seen
                .audit_path
                .clone()
                .unwrap_or_else(|| crate::access::audit_path(session.req_header().uri.path())),
            query: ctx.seen.query.clone(),
            purpose: ctx.seen.purpose.clone(),
            decision,
            code: refusal.map(|r| r.code().to_owned()),
            status: refusal.map(|r| r.status()),
            bytes: refusal.map(|r| r.body(&ctx.request_id).len() as u64),
            latency_ms: refusal.map(|_| ctx.started.elapsed().as_millis() as u64),
            upstream_status: None,
            citizen_ref: ctx
                .seen
                .citizen_id
                .as_ref()
                .map(|c| self.audit.citizen_ref(c)),
        }
    }

    /// Records a refusal durably, then sends it. If the record cannot be
    /// written, the answer is 503 `audit_unavailable` instead (which, by
    /// necessity, is not recorded).
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        refusal: Refusal,
    ) -> Result<()> {
        ctx.ended = Some(refusal);
        if !matches!(ctx.ended, Some(Refusal::AuditUnavailable)) {
            let record = self.access_record(session, ctx, Decision::Refuse);
            if let Err(e) = self.audit.append(record).await {
                tracing::error!(request_id = %ctx.request_id, error = %e, "refusal not recorded; answering 503");
                ctx.ended = Some(Refusal::AuditUnavailable);
            }
        }
        let refusal = ctx.ended.clone().unwrap_or(Refusal::AuditUnavailable);
        // An unread request body would be parsed as the next request.
        if !session.as_mut().is_body_done() {
            session.set_keepalive(None);
        }
        // A connection with no business here is not kept for more attempts:
        // each refusal is a durable record, so it must not be free to repeat.
        if matches!(
            refusal,
            Refusal::TooManyConnections { .. }
                | Refusal::TunnelRefused(_)
                | Refusal::NoIdentity
                | Refusal::CertRevoked
                | Refusal::UnknownAgency
                | Refusal::AgencySuspended { .. }
                | Refusal::NotCompliant(_)
                | Refusal::HeadersTooLarge { .. }
        ) {
            session.set_keepalive(None);
        }
        tracing::info!(
            request_id = %ctx.request_id,
            agency = ctx.seen.agency.as_deref().unwrap_or("-"),
            code = refusal.code(),
            status = refusal.status(),
            "refused"
        );
        send_refusal(session, &ctx.request_id, &refusal, None).await
    }
}

/// Writes a refusal's JSON answer. The only place refusal bodies are made.
async fn send_refusal(
    session: &mut Session,
    request_id: &str,
    refusal: &Refusal,
    extra: Option<&[(&'static str, String)]>,
) -> Result<()> {
    let body = refusal.body(request_id);
    let mut resp = ResponseHeader::build(refusal.status(), Some(6))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("x-request-id", request_id)?;
    resp.insert_header("cache-control", "no-store")?;
    if let Refusal::QuotaExceeded(q) = refusal {
        for (name, value) in &q.headers {
            resp.insert_header(*name, value.as_str())?;
        }
    }
    for (name, value) in extra.unwrap_or_default() {
        resp.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

/// popgate never relays a 101: past it, the exchange would be a tunnel of
/// unjudged bytes. Checked on the registry's head and again on what would
/// be sent, both before any byte reaches the agency.
fn refuse_switching_protocols(resp: &ResponseHeader) -> Result<()> {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::explain(
            ErrorType::HTTPStatus(502),
            "the registry answered 101 Switching Protocols",
        )
        .into_up());
    }
    Ok(())
}

/// Did the agency's side end the exchange (reset, closed, cancelled the
/// stream, stopped reading)? Those are the agency's doing, not the
/// registry's, and are recorded as `client_closed`.
fn downstream_failed(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
        && matches!(
            e.etype(),
            ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ConnectionClosed
                | ErrorType::H2Error
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout
        )
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        crate::edge::head_read();
        RequestCtx {
            request_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            seen: Seen::default(),
            forwarded: None,
            ended: None,
            _inflight: self.drain.enter(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(conn) = Conn::of(session) {
            conn.begin_request();
        }
        // pingora resets HTTP/1.1 keep-alive to "no timeout" once a head is
        // parsed; the next request must come within the idle timeout.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.limits.idle_timeout.as_secs()));
        }
        session.set_read_timeout(Some(self.limits.body_timeout));
        session.set_write_timeout(Some(self.upstream.read_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        if self.drain.draining() {
            self.refuse(session, ctx, Refusal::ShuttingDown).await?;
            return Ok(true);
        }
        // Forward nothing while the log cannot be written.
        if !self.audit.writable() {
            self.refuse(session, ctx, Refusal::AuditUnavailable).await?;
            return Ok(true);
        }
        let mut seen = std::mem::take(&mut ctx.seen);
        let judged = self.judge(session, &mut seen).await;
        ctx.seen = seen;
        let admitted = match judged {
            Ok(a) => a,
            Err(refusal) => {
                self.refuse(session, ctx, refusal).await?;
                return Ok(true);
            }
        };
        // Write-ahead: the access is durable before a byte is forwarded.
        let record = self.access_record(session, ctx, Decision::Allow);
        let citizen_ref = record.citizen_ref.clone();
        if let Err(e) = self.audit.append(record).await {
            tracing::error!(request_id = %ctx.request_id, error = %e, "access record not written; nothing forwarded");
            ctx.ended = Some(Refusal::AuditUnavailable);
            send_refusal(session, &ctx.request_id, &Refusal::AuditUnavailable, None).await?;
            return Ok(true);
        }
        ctx.forwarded = Some(Forwarded {
            admitted,
            request_id: ctx.request_id.clone(),
            citizen_ref,
            audit: self.audit.clone(),
            started: ctx.started,
            upstream_started: None,
            upstream_status: None,
            finished: false,
        });
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some(fwd) = ctx.forwarded.as_mut() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "upstream_peer reached without an admitted, recorded request",
            ));
        };
        fwd.upstream_started = Some(Instant::now());
        let u = &self.upstream;
        let mut peer = HttpPeer::new((u.host.as_str(), u.port), u.tls, u.host.clone());
        peer.options.connection_timeout = Some(u.connect_timeout);
        peer.options.total_connection_timeout = Some(u.connect_timeout);
        peer.options.read_timeout = Some(u.read_timeout);
        peer.options.write_timeout = Some(u.read_timeout);
        peer.options.idle_timeout = Some(u.idle_timeout);
        // Never forward an upgrade handshake (the edge refuses them too).
        peer.options.http_upstream_request_policy =
            pingora::upstreams::peer::HttpUpstreamRequestPolicy::deny_upgrades();
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let Some(fwd) = ctx.forwarded.as_ref() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no admitted, recorded request to build the upstream request from",
            ));
        };
        let admitted = &fwd.admitted;
        // Only allow-listed client headers travel on; everything else
        // (Forwarded, X-Forwarded-*, X-Original-URL, Authorization, Cookie,
        // method overrides, …) stops here.
        let names: Vec<HeaderName> = upstream_request.headers.keys().cloned().collect();
        for name in names {
            if !self.upstream.forward_headers.contains(&name) {
                upstream_request.remove_header(&name);
            }
        }
        let uri = admitted.target().parse::<http::Uri>().map_err(|e| {
            Error::because(ErrorType::InternalError, "normalised path is not a URI", e)
        })?;
        upstream_request.set_uri(uri);
        upstream_request.insert_header(
            "host",
            format!("{}:{}", self.upstream.host, self.upstream.port),
        )?;
        upstream_request.insert_header("x-agency-id", admitted.agency())?;
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(p) = admitted.purpose() {
            upstream_request.insert_header("x-purpose", p)?;
        }
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = client.ip();
            upstream_request.insert_header("x-forwarded-for", ip.to_string())?;
            let node = match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
            };
            upstream_request.insert_header("forwarded", format!("for={node};proto=https"))?;
        }
        upstream_request.insert_header("x-forwarded-proto", "https")?;
        if admitted.body_len() > 0 {
            upstream_request.insert_header("content-length", admitted.body_len().to_string())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        refuse_switching_protocols(upstream_response)?;
        if upstream_response.status.is_informational() {
            return Ok(());
        }
        if let Some(fwd) = ctx.forwarded.as_mut() {
            fwd.upstream_status = Some(upstream_response.status.as_u16());
            if let Some(t) = fwd.upstream_started {
                self.metrics
                    .upstream_duration
                    .with_label_values(&[fwd.admitted.route()])
                    .observe(t.elapsed().as_secs_f64());
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        refuse_switching_protocols(upstream_response)?;
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        // Citizen data must not be kept by caches between registry and officer.
        upstream_response.insert_header("cache-control", "no-store")?;
        if let Some(fwd) = &ctx.forwarded {
            for (name, value) in &fwd.admitted.permit().headers {
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
        let nothing = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        if ctx.forwarded.is_none() {
            // Only the refusal path runs before admission; its errors are
            // failures to write the answer to an agency that went away.
            return nothing;
        }
        if downstream_failed(e) {
            return nothing;
        }
        let refusal = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Refusal::UpstreamTimeout
            }
            // Our own 101 refusal. The error's context names the registry's
            // address, which the agency must not learn: a fixed reason.
            ErrorType::HTTPStatus(502) => {
                Refusal::UpstreamBadResponse("101 Switching Protocols".into())
            }
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error
                if e.esource() == &ErrorSource::Upstream =>
            {
                Refusal::UpstreamBadResponse("a malformed response".into())
            }
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::H2Error
                if e.esource() == &ErrorSource::Downstream =>
            {
                Refusal::BadRequestBody(e.etype().as_str().to_lowercase())
            }
            other => Refusal::UpstreamUnavailable(other.as_str().to_owned()),
        };
        tracing::warn!(request_id = %ctx.request_id, error = %e, code = refusal.code(), "forwarded request failed");
        let status = refusal.status();
        ctx.ended = Some(refusal.clone());
        // Headers already sent (failure mid-body): nothing more to write.
        if session.response_written().is_none() {
            if let Err(write_err) = send_refusal(session, &ctx.request_id, &refusal, None).await {
                tracing::info!(request_id = %ctx.request_id, error = %write_err, "could not send the failure answer");
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    /// An agency leaving is recorded and counted, not an error of popgate's;
    /// a failure popgate classified was logged once, with its request id.
    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, e: &Error) -> bool {
        downstream_failed(e) || ctx.ended.is_some()
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        let sent = session
            .response_written()
            .filter(|r| !r.status.is_informational())
            .map(|r| r.status.as_u16());
        let client_gone = e.is_some_and(downstream_failed);
        if let Some(fwd) = ctx.forwarded.as_mut() {
            let outcome = match (&ctx.ended, client_gone, e) {
                (_, true, _) => "client_closed".to_owned(),
                (Some(r), _, _) => r.code().to_owned(),
                (None, _, Some(err)) => format!("error:{}", err.etype().as_str()),
                (None, false, None) => "completed".to_owned(),
            };
            fwd.finish(&outcome, sent, session.body_bytes_sent() as u64);
        }
        let agency = ctx.seen.agency.as_deref().unwrap_or("-");
        let route = ctx.seen.route.as_deref().unwrap_or("-");
        // What the agency got: the status sent, or 499 when it left first.
        let status = match (sent, client_gone) {
            (Some(s), _) => s,
            (None, true) => 499,
            (None, false) => ctx.ended.as_ref().map_or(500, |r| r.status()),
        };
        self.metrics
            .requests
            .with_label_values(&[agency, route, &status.to_string()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[agency, route])
            .observe(ctx.started.elapsed().as_secs_f64());
        if let Some(r) = &ctx.ended {
            self.metrics.refusals.with_label_values(&[r.code()]).inc();
            if let Refusal::QuotaExceeded(q) = r {
                self.metrics
                    .quota_rejections
                    .with_label_values(&[agency, q.limit.as_str()])
                    .inc();
            }
        }
        if client_gone {
            self.metrics.client_closed.inc();
        }
    }
}

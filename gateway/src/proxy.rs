//! The request path, in the order DESIGN.md gives it:
//! handshake (in [`crate::tls`]) → identity → access → upstream.
//!
//! [`Gateway::decide`] is the one place a request is judged; it returns either
//! an [`Allowed`] (everything the upstream step needs) or a [`Refusal`].
//! [`Gateway::refuse`] is the one place a refusal is written. Later steps
//! (admission, quota, audit) slot into those two functions and nowhere else.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::access::{check_purpose, find_route, normalise_path};
use crate::config::Upstream;
use crate::refusal::Refusal;
use crate::registry::{AgencyStatus, Registry};
use crate::tls::AgencyCertVerifier;

/// Headers only the gateway may set on the upstream request. A client that
/// sends them is trying to impersonate; they are removed, then set by us.
pub const GATEWAY_HEADERS: [&str; 3] = ["x-agency-id", "x-request-id", "x-purpose"];

/// What an allowed request carries to the upstream step.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub agency_id: String,
    pub route_id: String,
    /// Normalised path plus the original query: what the upstream receives.
    pub upstream_target: String,
    pub purpose: Option<String>,
    pub citizen_id: Option<String>,
}

/// Per-request state pingora threads through the phases.
pub struct RequestCtx {
    pub request_id: String,
    pub allowed: Option<Allowed>,
}

pub struct Gateway {
    pub registry: Arc<ArcSwap<Registry>>,
    pub verifier: Arc<AgencyCertVerifier>,
    pub upstream: Upstream,
}

impl Gateway {
    /// Judges a request. Pure with respect to the session: reads, never writes.
    pub fn decide(&self, session: &Session) -> Result<Allowed, Refusal> {
        // identity: the certificate rustls verified for this connection.
        let identity = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .and_then(|ssl| self.verifier.identity(&ssl.cert_digest))
            .ok_or(Refusal::NoIdentity)?;
        let registry = self.registry.load();
        let agency = registry
            .agency_for(&identity)
            .ok_or(Refusal::UnknownAgency)?;
        if agency.status == AgencyStatus::Suspended {
            return Err(Refusal::AgencySuspended {
                agency: agency.id.clone(),
            });
        }

        // access: normalised path → declared route → granted to this agency.
        let req = session.req_header();
        let method = req.method.as_str();
        let path = normalise_path(req.uri.path()).map_err(|e| Refusal::BadPath(e.to_string()))?;
        let not_allowed = || Refusal::RouteNotAllowed {
            method: method.to_owned(),
            path: path.as_str().to_owned(),
        };
        let matched = find_route(&registry.routes, method, &path).ok_or_else(not_allowed)?;
        if !agency.allowed.contains(&matched.route_index) {
            return Err(not_allowed());
        }
        let purpose = check_purpose(req.headers.get("x-purpose").map(|v| v.as_bytes()))
            .map_err(Refusal::BadPurpose)?;
        if agency.purpose_required && purpose.is_none() {
            return Err(Refusal::PurposeRequired);
        }

        let upstream_target = match req.uri.query() {
            Some(q) => format!("{}?{q}", path.as_str()),
            None => path.as_str().to_owned(),
        };
        Ok(Allowed {
            agency_id: agency.id.clone(),
            route_id: registry.routes[matched.route_index].id.clone(),
            upstream_target,
            purpose,
            citizen_id: matched.citizen_id,
        })
    }

    /// Writes a refusal as JSON. The only place refusals are sent.
    pub async fn refuse(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        refusal: &Refusal,
    ) -> Result<()> {
        let body = refusal.body(&ctx.request_id);
        let mut resp = ResponseHeader::build(refusal.status(), Some(4))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        resp.insert_header("cache-control", "no-store")?;
        // An unread request body would be parsed as the next request.
        if request_may_have_body(session.req_header()) {
            session.set_keepalive(None);
        }
        tracing::info!(
            request_id = %ctx.request_id,
            code = refusal.code(),
            status = refusal.status(),
            "refused"
        );
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
        Ok(())
    }
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
            allowed: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        match self.decide(session) {
            Ok(allowed) => {
                tracing::debug!(
                    request_id = %ctx.request_id,
                    agency = %allowed.agency_id,
                    route = %allowed.route_id,
                    "allowed"
                );
                ctx.allowed = Some(allowed);
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
        if ctx.allowed.is_none() {
            return Err(Error::explain(
                ErrorType::InternalError,
                "upstream_peer reached without an access decision",
            ));
        }
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
        let allowed = ctx.allowed.as_ref().ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "no access decision for upstream request",
            )
        })?;
        for h in GATEWAY_HEADERS {
            upstream_request.remove_header(h);
        }
        let uri = allowed.upstream_target.parse::<http::Uri>().map_err(|e| {
            Error::because(ErrorType::InternalError, "normalised path is not a URI", e)
        })?;
        upstream_request.set_uri(uri);
        upstream_request.insert_header("x-agency-id", allowed.agency_id.as_str())?;
        upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(p) = &allowed.purpose {
            upstream_request.insert_header("x-purpose", p.as_str())?;
        }
        let host = format!("{}:{}", self.upstream.host, self.upstream.port);
        upstream_request.insert_header("host", host)?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let refusal = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Refusal::UpstreamTimeout
            }
            _ => Refusal::UpstreamUnavailable(e.etype().as_str().to_owned()),
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
        tracing::warn!(request_id = %ctx.request_id, error = %e, "upstream failure");
        if let Err(write_err) = self.refuse(session, ctx, &refusal).await {
            tracing::warn!(request_id = %ctx.request_id, error = %write_err, "could not send refusal");
        }
        FailToProxy {
            error_code: refusal.status(),
            can_reuse_downstream: false,
        }
    }
}

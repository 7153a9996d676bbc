//! The strict edge: what popgate accepts from an agency's connection before
//! a request is judged, and how long it waits for it.
//!
//! - [`Limits`] (`limits:` in gateway.yaml): header and body sizes, the
//!   header-read deadline, idle timeouts, open connections per agency.
//! - [`ConnectionHook`]: runs when a TLS handshake completes, counts the
//!   connection against its agency and hands pingora a [`Conn`] that lives
//!   exactly as long as the connection (pingora keeps it in the connection's
//!   TLS digest), so its `Drop` is the "connection closed" event pingora has
//!   no hook for.
//! - [`EdgeApp`]: wraps pingora's proxy to give every HTTP/1.1 request head a
//!   total read deadline (pingora bounds each `read()`, so a client sending
//!   one byte a second would otherwise hold a connection for ever).

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::listeners::TlsAccept;
use pingora::protocols::http::ServerSession;
use pingora::protocols::tls::TlsRef;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::tls::AgencyCertVerifier;
use yamlconf::ConfigError;

use crate::routes::BODY_LIMIT_CEILING;

mod front;
pub use front::TlsFront;

/// The `limits:` section of `gateway.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// From the first byte a connection may send a request head until the
    /// head is complete (for a keep-alive connection: after its idle time).
    #[serde(default = "default_header_timeout_ms")]
    header_timeout_ms: u64,
    /// An idle keep-alive connection (HTTP/1.1 or HTTP/2) is closed after this.
    #[serde(default = "default_idle_timeout_s")]
    idle_timeout_s: u64,
    /// Each read of a request body must progress within this.
    #[serde(default = "default_body_timeout_ms")]
    body_timeout_ms: u64,
    /// Total bytes of request header names and values (431 beyond).
    #[serde(default = "default_max_header_bytes")]
    max_header_bytes: u64,
    /// Request body size for routes that name no `max_body_bytes` (413 beyond).
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: u64,
    /// Open connections one agency may hold on this instance.
    #[serde(default = "default_max_connections")]
    max_connections_per_agency: u32,
}

fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_s() -> u64 {
    30
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_max_header_bytes() -> u64 {
    16 * 1024
}
fn default_max_body_bytes() -> u64 {
    16 * 1024
}
fn default_max_connections() -> u32 {
    64
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            header_timeout_ms: default_header_timeout_ms(),
            idle_timeout_s: default_idle_timeout_s(),
            body_timeout_ms: default_body_timeout_ms(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            max_connections_per_agency: default_max_connections(),
        }
    }
}

/// Validated edge limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_header_bytes: u64,
    pub max_body_bytes: u64,
    pub max_connections_per_agency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_raw(std::path::Path::new("-"), &RawLimits::default())
            .expect("defaults are valid")
    }
}

impl Limits {
    pub fn from_raw(file: &std::path::Path, raw: &RawLimits) -> Result<Self, ConfigError> {
        let range = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(v)
            } else {
                Err(ConfigError::new(
                    file,
                    format!("limits.{name}: {v} must be between {lo} and {hi}"),
                ))
            }
        };
        Ok(Limits {
            header_timeout: Duration::from_millis(range(
                "header_timeout_ms",
                raw.header_timeout_ms,
                100,
                120_000,
            )?),
            idle_timeout: Duration::from_secs(range(
                "idle_timeout_s",
                raw.idle_timeout_s,
                1,
                3600,
            )?),
            body_timeout: Duration::from_millis(range(
                "body_timeout_ms",
                raw.body_timeout_ms,
                100,
                120_000,
            )?),
            max_header_bytes: range("max_header_bytes", raw.max_header_bytes, 1024, 1024 * 1024)?,
            max_body_bytes: range("max_body_bytes", raw.max_body_bytes, 0, BODY_LIMIT_CEILING)?,
            max_connections_per_agency: range(
                "max_connections_per_agency",
                raw.max_connections_per_agency.into(),
                1,
                100_000,
            )? as u32,
        })
    }
}

/// Open connections per agency on this instance.
pub struct ConnectionTable {
    open: Mutex<HashMap<String, u32>>,
    cap: u32,
    metrics: Arc<Metrics>,
}

/// One TLS connection, from handshake to close.
pub struct Conn {
    /// The agency the verified certificate maps to at handshake time, or
    /// `-` when it maps to none (such requests are refused anyway, but the
    /// connections still count, under `-`).
    agency: String,
    /// Opened while the agency already held `cap` connections: every
    /// request on it is refused with `too_many_connections`.
    pub over_cap: bool,
    /// Requests that reached the request phase on this connection.
    requests: AtomicU64,
    table: Arc<ConnectionTable>,
}

impl Conn {
    /// The connection a session belongs to, when it came through the hook.
    pub fn of(session: &ServerSession) -> Option<&Conn> {
        session
            .digest()?
            .ssl_digest
            .as_ref()?
            .extension
            .get::<Conn>()
    }

    /// Counts a request on this connection; returns how many came before.
    pub fn begin_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    pub fn agency(&self) -> &str {
        &self.agency
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(n) = open.get_mut(&self.agency) {
            *n = n.saturating_sub(1);
            self.table
                .metrics
                .connections_open
                .with_label_values(&[&self.agency])
                .set(i64::from(*n));
            if *n == 0 {
                open.remove(&self.agency);
            }
        }
    }
}

impl ConnectionTable {
    pub fn new(cap: u32, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ConnectionTable {
            open: Mutex::new(HashMap::new()),
            cap,
            metrics,
        })
    }

    fn open(self: &Arc<Self>, agency: String) -> Conn {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let n = open.entry(agency.clone()).or_insert(0);
        let over_cap = *n >= self.cap;
        *n += 1;
        self.metrics
            .connections_open
            .with_label_values(&[&agency])
            .set(i64::from(*n));
        if over_cap {
            self.metrics
                .connection_refusals
                .with_label_values(&[&agency, "too_many_connections"])
                .inc();
            tracing::warn!(agency = %agency, cap = self.cap, "connection over the per-agency cap; its requests are refused");
        }
        Conn {
            agency,
            over_cap,
            requests: AtomicU64::new(0),
            table: self.clone(),
        }
    }
}

/// Called by pingora when a TLS handshake completes.
pub struct ConnectionHook {
    pub table: Arc<ConnectionTable>,
    pub verifier: Arc<AgencyCertVerifier>,
    pub registry: Arc<ArcSwap<Registry>>,
}

#[async_trait]
impl TlsAccept for ConnectionHook {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let leaf = tls.peer_certificate_der()?;
        let sha: [u8; 32] = Sha256::digest(leaf).into();
        let agency = self
            .verifier
            .identity(&sha)
            .and_then(|id| self.registry.load().agency_for(&id).map(|a| a.id.clone()))
            .unwrap_or_else(|| "-".to_owned());
        Some(Arc::new(self.table.open(agency)))
    }
}

tokio::task_local! {
    /// Set once pingora has parsed the request head of the current request.
    static HEAD_READ: Arc<AtomicBool>;
}

/// Tells the edge that this task's request head is complete (called from
/// the proxy's first phase); outside [`EdgeApp`] it does nothing.
pub fn head_read() {
    let _ = HEAD_READ.try_with(|h| h.store(true, Ordering::Release));
}

/// pingora's proxy with total deadlines for reading request heads.
pub struct EdgeApp<P> {
    pub proxy: Arc<HttpProxy<P>>,
    pub limits: Limits,
    pub options: HttpServerOptions,
    pub metrics: Arc<Metrics>,
}

impl<P> EdgeApp<P> {
    pub fn new(mut proxy: HttpProxy<P>, limits: Limits, metrics: Arc<Metrics>) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(limits.idle_timeout);
        // CONNECT reaches popgate's request filter, which refuses it with
        // an audited `tunnel_refused` (pingora would answer 405 unrecorded).
        options.allow_connect_method_proxying = true;
        // The proxy reads its own copy when it parses a request head.
        proxy.server_options = Some(options.clone());
        EdgeApp {
            proxy: Arc::new(proxy),
            limits,
            options,
            metrics,
        }
    }
}

#[async_trait]
impl<P> HttpServerApp for EdgeApp<P>
where
    P: pingora::proxy::ProxyHttp + Send + Sync + 'static,
    P::CTX: Send + Sync,
{
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let idle = self.limits.idle_timeout;
        // An HTTP/2 stream arrives with its head complete, and h2 idleness
        // is pingora's `h2_idle_timeout`.
        let deadline = if session.is_http2() {
            None
        } else {
            // pingora marks HTTP/1.1 keep-alive as "no timeout" once a head
            // is parsed; bound the wait for the next request instead.
            if session.get_keepalive().is_some() {
                session.set_keepalive(Some(idle.as_secs()));
            }
            // The TLS front calls in once the head's first byte is here
            // (the idle wait between requests is its own).
            Some(self.limits.header_timeout)
        };
        let head = Arc::new(AtomicBool::new(false));
        let work = HEAD_READ.scope(head.clone(), self.proxy.process_new_http(session, shutdown));
        let Some(deadline) = deadline else {
            return work.await;
        };
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => r,
            _ = tokio::time::sleep(deadline) => {
                if head.load(Ordering::Acquire) {
                    // The head arrived in time; the request runs under its
                    // own (body, upstream) timeouts.
                    work.await
                } else {
                    // No request was parsed, so nothing was forwarded or
                    // needs a record: dropping the work closes the connection.
                    self.metrics
                        .connection_refusals
                        .with_label_values(&["-", "header_timeout"])
                        .inc();
                    None
                }
            }
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }

    fn h2_options(&self) -> Option<pingora::protocols::http::v2::server::H2Options> {
        let mut o = pingora::protocols::http::v2::server::default_h2_options();
        // Above popgate's own header limit, so that popgate (not h2) answers
        // oversized heads, with an audited 431.
        o.max_header_list_size((self.limits.max_header_bytes * 2).min(u64::from(u32::MAX)) as u32);
        Some(o)
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

//! The admin listener (loopback by default): `/healthz` (the process is
//! alive), `/readyz` (it can serve: audit log writable, upstream reachable;
//! 503 with the failing reasons otherwise) and `/metrics`.
//!
//! It runs on its own small runtime so that ops can still look inside when
//! the proxy's workers are saturated.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::audit::AuditLog;
use crate::metrics::Metrics;
use crate::quota::QuotaEngine;
use crate::upstream::Upstream;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    pub upstream: Upstream,
    pub quota: Arc<QuotaEngine>,
    pub tls: crate::tls::TlsState,
    pub drain: Arc<crate::shutdown::Drain>,
}

impl Admin {
    async fn readiness(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.drain.draining() {
            reasons.push("draining for shutdown".to_owned());
        }
        if !self.audit.writable() {
            reasons.push("audit log not writable".to_owned());
        }
        if self.tls.verifier.holds_no_crl() {
            reasons.push(
                "revocation: no CRL fetched or cached yet, every agency is refused".to_owned(),
            );
        }
        let addr = format!("{}:{}", self.upstream.host, self.upstream.port);
        match tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => reasons.push(format!("upstream {addr} unreachable: {e}")),
            Err(_) => reasons.push(format!("upstream {addr} did not accept within 500 ms")),
        }
        reasons
    }

    fn refresh(&self) {
        let s = self.audit.stats();
        let m = &self.metrics;
        m.audit_records
            .set(s.records.load(Ordering::Relaxed) as i64);
        m.audit_syncs.set(s.syncs.load(Ordering::Relaxed) as i64);
        m.audit_write_failures
            .set(s.write_failures.load(Ordering::Relaxed) as i64);
        m.audit_writable.set(i64::from(self.audit.writable()));
        m.audit_checkpoints
            .set(s.checkpoints.load(Ordering::Relaxed) as i64);
        m.audit_outcomes_lost
            .set(s.outcomes_lost.load(Ordering::Relaxed) as i64);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for e in self.tls.expiry.load().iter() {
            let days = certs::inspect::days_until(e.at_unix, now);
            match e.kind {
                "crl" => m
                    .crl_next_update_days
                    .with_label_values(&[e.name.as_str()])
                    .set(days),
                _ => m
                    .cert_expiry_days
                    .with_label_values(&[e.name.as_str()])
                    .set(days),
            }
        }
        if let Some(c) = self.quota.cluster() {
            m.quota_backend_transitions
                .set(c.transitions.load(Ordering::Relaxed) as i64);
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let text = |status: StatusCode, ctype: &str, body: String| {
            Response::builder()
                .status(status)
                .header("content-type", ctype)
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
        };
        Ok(match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => {
                let reasons = self.readiness().await;
                let body = serde_json::json!({"ready": reasons.is_empty(), "reasons": reasons})
                    .to_string();
                let status = if reasons.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(status, "application/json", body)
            }
            "/metrics" => {
                self.refresh();
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        })
    }
}

/// Binds now (so a taken port is a startup error) and serves in the background.
pub fn spawn(addr: SocketAddr, admin: Admin) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("popgate-admin")
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(addr))?;
    let admin = Arc::new(admin);
    std::thread::Builder::new()
        .name("popgate-admin".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let admin = admin.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| admin.clone().handle(req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        })?;
    Ok(())
}

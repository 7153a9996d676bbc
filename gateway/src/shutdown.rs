//! Graceful shutdown: on SIGTERM or SIGINT popgate drains — requests already
//! in flight run to completion, new ones are refused with 503
//! `shutting_down` (and audited) so a load balancer retries elsewhere — then
//! pingora closes the listeners, the audit log seals its open segment and
//! the process exits 0.
//!
//! pingora's own grace period is a fixed sleep; draining on the in-flight
//! count instead makes shutdown as fast as the slowest request, bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use prometheus::IntGauge;

pub struct Drain {
    draining: AtomicBool,
    inflight: IntGauge,
    timeout: Duration,
}

impl Drain {
    pub fn new(inflight: IntGauge, timeout: Duration) -> Arc<Drain> {
        Arc::new(Drain {
            draining: AtomicBool::new(false),
            inflight,
            timeout,
        })
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Counts a request as in flight until the guard drops.
    pub fn enter(&self) -> InflightGuard {
        self.inflight.inc();
        InflightGuard(self.inflight.clone())
    }
}

/// Decrements the in-flight gauge when the request's context is dropped,
/// however the request ended.
pub struct InflightGuard(IntGauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Tells pingora to shut down only once the drain is over.
pub struct DrainingSignal(pub Arc<Drain>);

#[async_trait]
impl ShutdownSignalWatch for DrainingSignal {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers; shutting down now");
            return ShutdownSignal::FastShutdown;
        };
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let drain = &self.0;
        drain.draining.store(true, Ordering::Release);
        tracing::info!(signal = which, in_flight = drain.inflight.get(), "draining");
        let deadline = Instant::now() + drain.timeout;
        while drain.inflight.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = drain.inflight.get();
        if left > 0 {
            tracing::warn!(in_flight = left, "drain timeout reached; closing anyway");
        } else {
            tracing::info!("drained");
        }
        ShutdownSignal::GracefulTerminate
    }
}

//! The TLS front door: popgate's own handshake, and the HTTP/1.1
//! keep-alive loop that lets an idle connection hold only its TLS state.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Ssl, Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::{Conn, ConnectionHook};
use crate::metrics::Metrics;

/// pingora's initial request-head buffer (`INIT_HEADER_BUF_SIZE`): the
/// first byte read here goes into a buffer of the size pingora would have
/// allocated, which then serves as its parse buffer.
const HEAD_BUFFER: usize = 4096;

/// The TLS front door as a pingora application: popgate listens on plain
/// TCP and runs the handshake itself, with a `ServerConfig` it builds
/// (pingora's rustls listener builds its own and exposes neither server
/// cipher order nor a handshake deadline shorter than 60 s), then hands
/// the TLS stream, its [`Conn`] attached, to the HTTP application.
pub struct TlsFront<A> {
    pub acceptor: pingora::listeners::tls::Acceptor,
    pub hook: ConnectionHook,
    pub app: Arc<A>,
    pub handshake_timeout: Duration,
    /// How long a keep-alive HTTP/1.1 connection may wait for its next request.
    pub idle_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl<A> pingora::apps::ServerApp for TlsFront<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: pingora::protocols::Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::Stream> {
        // The listener is plain TCP, so the stream is pingora's L4 stream;
        // the handshake wants the concrete type.
        let l4 = match stream
            .into_any()
            .downcast::<pingora::protocols::l4::stream::Stream>()
        {
            Ok(l4) => *l4,
            Err(_) => {
                tracing::error!("listener handed over a stream that is not TCP; closing it");
                return None;
            }
        };
        let fd = l4.as_raw_fd();
        // Boxed, and the stream boxed before anything borrows it: awaited
        // inline, the handshake's 7 KiB state and a dead 4.7 KiB copy of
        // the stream stayed in this future for the connection's life (most
        // of the idle connection's growth from 55 to 69 KiB).
        let handshake = Box::pin(pingora::protocols::tls::server::handshake_with_callback(
            &self.acceptor,
            l4,
            &self.hook,
        ));
        let tls = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => {
                ack_now(fd);
                Box::new(tls)
            }
            Ok(Err(e)) => {
                // Certificate refusals are counted by the verifier; this
                // counts what fails before it (no certificate, no common
                // version or suite, garbage).
                let reason = handshake_failure_reason(&e);
                if reason != "certificate" {
                    self.metrics
                        .tls_handshake_failures
                        .with_label_values(&[reason])
                        .inc();
                }
                tracing::debug!(error = %e, reason, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                self.metrics
                    .tls_handshake_failures
                    .with_label_values(&["timeout"])
                    .inc();
                return None;
            }
        };
        // Until the first request head arrives, the connection lives only
        // `handshake_timeout`: an HTTP/2 client that never sends its preface
        // (pingora waits for it without a deadline) is cut off like an HTTP/1.1
        // one that never finishes a head. A connection over its agency's cap
        // lives at most that long whatever it does: its requests within it
        // get the audited 429, and it cannot hold a slot.
        let digest = tls.ssl_digest();
        let conn = || digest.as_ref().and_then(|d| d.extension.get::<Conn>());
        let h2 = matches!(tls.selected_alpn_proto(), Some(ALPN::H2));
        let work = async move {
            if h2 {
                pingora::apps::ServerApp::process_new(&self.app, tls, shutdown).await
            } else {
                self.serve_h1(tls, shutdown).await
            }
        };
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => return r,
            _ = tokio::time::sleep(self.handshake_timeout) => {}
        }
        match conn() {
            Some(c) if c.over_cap => {}
            Some(c) if c.requests.load(Ordering::Relaxed) == 0 => {
                self.metrics
                    .connection_refusals
                    .with_label_values(&[c.agency(), "header_timeout"])
                    .inc();
            }
            _ => return work.await,
        }
        // Dropping the work closes the connection; no request of it was
        // forwarded (none started, or all were refused).
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

impl<A> TlsFront<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// pingora's HTTP/1.1 keep-alive loop, with one change: a request's
    /// session and pingora's proxy future (about 15 KiB, plus a 4 KiB head
    /// buffer) are made only once the request's first byte has arrived.
    /// pingora makes them up front, so every idle connection held them.
    async fn serve_h1(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // `Some` once a request was served: the connection is a keep-alive
        // one, carrying pingora's settings (`None` inside: none were given).
        let mut reused: Option<Option<HttpPersistentSettings>> = None;
        loop {
            let mut first = [0u8; 1];
            if reused.is_some() {
                // Between requests: closed after the idle time, or at once
                // when popgate shuts down (nothing of it is in flight).
                let mut stop = shutdown.clone();
                tokio::select! {
                    r = tokio::time::timeout(self.idle_timeout, stream.read(&mut first)) => {
                        if !matches!(r, Ok(Ok(1))) {
                            return None;
                        }
                    }
                    _ = stop.wait_for(|stopping| *stopping) => return None,
                }
            } else {
                // The caller's header deadline bounds this wait and counts
                // it; the timeout here only guards any path that skips it.
                let read = tokio::time::timeout(self.handshake_timeout, stream.read(&mut first));
                if !matches!(read.await, Ok(Ok(1))) {
                    return None;
                }
            }
            let mut session = ServerSession::new_http1(stream);
            match reused.take() {
                Some(Some(settings)) => settings.apply_to_session(&mut session),
                Some(None) => {}
                None => {
                    // As pingora does for a new connection; the edge app
                    // turns the keep-alive time into popgate's idle time.
                    session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
                    session.set_keepalive_reuses_remaining(
                        self.app
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            // popgate never enables HTTP/1.1 pipelining, so the previous
            // request left no bytes of its own to carry over.
            let mut head = BytesMut::with_capacity(HEAD_BUFFER);
            head.put_u8(first[0]);
            session.set_pipelined_prefix(head);
            let (next, settings) = self
                .app
                .process_new_http(session, shutdown)
                .await?
                .consume();
            stream = next;
            reused = Some(settings);
        }
    }
}

/// Acknowledges the client's last handshake flight at once. A TLS 1.3
/// server without session tickets sends nothing after the handshake, so
/// the kernel delayed that ACK (40 ms), and a client with Nagle's algorithm
/// on (no TCP_NODELAY: Python's ssl, many Java stacks) held its first
/// request until it came: 42 ms on every new connection's first request.
#[allow(unsafe_code)]
fn ack_now(fd: RawFd) {
    // SAFETY: `fd` is the socket of the TLS stream the caller holds; it is
    // open for the whole call and only borrowed for one setsockopt.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if let Err(e) = socket2::SockRef::from(&fd).set_tcp_quickack(true) {
        tracing::debug!(error = %e, "TCP_QUICKACK not set");
    }
}

/// The `reason` label of a handshake that failed before or outside the
/// client-certificate verifier. pingora keeps only the text of the rustls
/// error (its `explain_err` drops the cause), so the text is what is read.
fn handshake_failure_reason(e: &pingora::Error) -> &'static str {
    let text = e.to_string().to_ascii_lowercase();
    if text.contains("peer sent no certificates") {
        "no_cert"
    } else if text.contains("invalid peer certificate") {
        // Already counted, by reason, by the verifier.
        "certificate"
    } else if text.contains("peer is incompatible") || text.contains("peer misbehaved") {
        "incompatible"
    } else if text.contains("eof") || text.contains("reset") || text.contains("broken pipe") {
        "closed"
    } else {
        "other"
    }
}

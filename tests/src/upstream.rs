//! Upstreams the gateway forwards to in tests: one that records every
//! request's headers, and one that accepts connections and never answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The request body, once it was read whole (empty until then).
    pub body: Vec<u8>,
}

impl Seen {
    /// All values of a header, case-insensitively.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// An HTTP/1.1 upstream that answers 200 `{"ok":true}` and records requests.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpstream {
    pub async fn start() -> Self {
        Self::start_delayed(std::time::Duration::ZERO).await
    }

    /// Records each request as its head arrives, reads its body, then
    /// answers after `delay` (a slow registry the agency can leave).
    pub async fn start_delayed(delay: std::time::Duration) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = l.accept().await else {
                    return;
                };
                let seen = s2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let index = {
                                let mut seen = seen.lock().expect("lock");
                                seen.push(Seen {
                                    method: req.method().to_string(),
                                    target: req.uri().to_string(),
                                    headers: req
                                        .headers()
                                        .iter()
                                        .map(|(k, v)| {
                                            (
                                                k.to_string(),
                                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                            )
                                        })
                                        .collect(),
                                    body: Vec::new(),
                                });
                                seen.len() - 1
                            };
                            use http_body_util::BodyExt;
                            if let Ok(body) = req.into_body().collect().await {
                                seen.lock().expect("lock")[index].body = body.to_bytes().to_vec();
                            }
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        RecordingUpstream { addr, seen, task }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts TCP connections and never sends a byte: a hung registry.
pub struct SilentUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SilentUpstream {
    pub async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        SilentUpstream { addr, task }
    }
}

impl Drop for SilentUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers every request head with `101 Switching Protocols`, then records
/// every byte that arrives after it: a registry (or an impostor) trying to
/// turn the gateway into a tunnel.
pub struct SwitchingUpstream {
    pub addr: SocketAddr,
    /// Bytes received after the first request head, over all connections.
    pub after_head: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SwitchingUpstream {
    pub async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let after_head: Arc<Mutex<Vec<u8>>> = Arc::default();
        let a2 = after_head.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let after = a2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    after.lock().expect("lock").extend_from_slice(&buf[end..]);
                    let _ = s
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                        .await;
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => after.lock().expect("lock").extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        SwitchingUpstream {
            addr,
            after_head,
            task,
        }
    }
}

impl Drop for SwitchingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

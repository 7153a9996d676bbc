//! `popgate pki serve-crl`: publishes the development PKI's CRL over HTTP at
//! the URL its certificates name in their CRL distribution point
//! ([`certs::pki::DEV_CRL_URL`]), as a production CA publishes its own.
//! The file is re-read on every request, so a `pki revoke` is visible at
//! once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves `GET /crl.der` (application/pkix-crl) and `GET /crl.pem` from
/// `crl_pem` until the listener fails.
pub async fn serve(listener: TcpListener, crl_pem: PathBuf) -> std::io::Result<()> {
    let crl_pem = Arc::new(crl_pem);
    loop {
        let (stream, _) = listener.accept().await?;
        let crl_pem = crl_pem.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let crl_pem = crl_pem.clone();
                async move { Ok::<_, Infallible>(answer(&req, &crl_pem)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    crl_pem: &std::path::Path,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.method() != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            b"GET only\n".to_vec(),
        );
    }
    let text = match std::fs::read(crl_pem) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(file = %crl_pem.display(), error = %e, "CRL unreadable");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"CRL unreadable\n".to_vec(),
            );
        }
    };
    match req.uri().path() {
        "/crl.pem" => reply(StatusCode::OK, "application/x-pem-file", text),
        "/crl.der" => match pem::parse(&text) {
            Ok(p) if p.tag() == "X509 CRL" => {
                reply(StatusCode::OK, "application/pkix-crl", p.into_contents())
            }
            _ => {
                tracing::error!(file = %crl_pem.display(), "not a PEM CRL");
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    b"CRL unreadable\n".to_vec(),
                )
            }
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"try /crl.der or /crl.pem\n".to_vec(),
        ),
    }
}

/// Binds the listener (so the caller can report a busy port as such).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

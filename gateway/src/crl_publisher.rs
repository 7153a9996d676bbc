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
    serve_with(listener, crl_pem, None).await
}

/// `popgate pki serve-revocation`: the CRL as [`serve`] does, and OCSP at
/// `/ocsp` (RFC 6960 POST, RFC 5019 GET `/ocsp/<base64>`) for the dev PKI
/// in `pki_dir`, answers current for `validity`.
pub async fn serve_revocation(
    listener: TcpListener,
    pki_dir: PathBuf,
    validity: std::time::Duration,
) -> std::io::Result<()> {
    let crl = pki_dir.join("crl.pem");
    serve_with(listener, crl, Some((pki_dir, validity))).await
}

async fn serve_with(
    listener: TcpListener,
    crl_pem: PathBuf,
    ocsp: Option<(PathBuf, std::time::Duration)>,
) -> std::io::Result<()> {
    let crl_pem = Arc::new(crl_pem);
    let ocsp = Arc::new(ocsp);
    loop {
        let (stream, _) = listener.accept().await?;
        let crl_pem = crl_pem.clone();
        let ocsp = ocsp.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let crl_pem = crl_pem.clone();
                let ocsp = ocsp.clone();
                async move {
                    if let (Some((dir, validity)), true) =
                        (ocsp.as_ref(), req.uri().path().starts_with("/ocsp"))
                    {
                        return Ok::<_, Infallible>(ocsp_answer(req, dir, *validity).await);
                    }
                    Ok::<_, Infallible>(answer(&req, &crl_pem))
                }
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

/// One OCSP exchange: the request from a POST body or a GET path, the
/// answer from the dev PKI's index (re-read each time).
async fn ocsp_answer(
    req: Request<hyper::body::Incoming>,
    pki_dir: &std::path::Path,
    validity: std::time::Duration,
) -> Response<Full<Bytes>> {
    use base64::Engine;
    use http_body_util::BodyExt;
    let reply = |status: StatusCode, kind: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let request = if req.method() == hyper::Method::POST {
        match http_body_util::Limited::new(req.into_body(), 64 << 10)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes().to_vec(),
            Err(_) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    b"bad body\n".to_vec(),
                )
            }
        }
    } else {
        let encoded = req
            .uri()
            .path()
            .trim_start_matches("/ocsp")
            .trim_start_matches('/');
        let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
        match base64::engine::general_purpose::STANDARD.decode(decoded.as_bytes()) {
            Ok(b) => b,
            Err(_) => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    b"GET /ocsp/<base64 DER request> or POST /ocsp\n".to_vec(),
                )
            }
        }
    };
    let pki = match certs::pki::DevPki::open(pki_dir) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(dir = %pki_dir.display(), error = %e, "dev PKI unreadable");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"PKI unreadable\n".to_vec(),
            );
        }
    };
    let body = crate::revocation::responder::answer(
        &pki,
        &request,
        time::OffsetDateTime::now_utc(),
        validity,
    );
    reply(StatusCode::OK, "application/ocsp-response", body)
}

/// Binds the listener (so the caller can report a busy port as such).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

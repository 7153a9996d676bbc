//! The demo's stand-in for an agency system (Gia Lai's residence portal):
//! a small HTTPS endpoint on the dev server certificate, configured the way
//! the level-2 policy asks, so `popscan scan` judges it compliant and the
//! gateway then admits Gia Lai.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RESPONSE: &str = "HTTP/1.1 200 OK\r\n\
    Content-Type: text/plain; charset=utf-8\r\n\
    Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n\
    X-Content-Type-Options: nosniff\r\n\
    Content-Length: 33\r\n\
    Connection: close\r\n\r\n\
    Gia Lai residence portal (demo)\r\n";

/// Binds now (so a busy port is reported before the demo prints anything)
/// and serves on the given runtime.
pub fn start(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
) -> Result<(), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| format!("{addr}: {e}"))?;
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16384 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(RESPONSE.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(())
}

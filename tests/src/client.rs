//! A deliberately raw HTTPS client: it sends the request bytes exactly as
//! written, so tests can try encodings (`%2e%2e`, `//`, `%2f`) that URL
//! libraries would normalise away before the gateway ever saw them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The stable error code of a refusal body.
    pub fn error_code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("<no error code in {:?}>", self.body))
    }
}

/// A TLS client identity (or none) trusting one CA.
#[derive(Clone)]
pub struct Client {
    config: Arc<rustls::ClientConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Client {
    pub fn new(ca: &Path, identity: Option<(&Path, &Path)>) -> Self {
        Self::with_alpn(ca, identity, vec![b"http/1.1".to_vec()])
    }

    pub fn with_alpn(ca: &Path, identity: Option<(&Path, &Path)>, alpn: Vec<Vec<u8>>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).expect("ca pem") {
            roots.add(c.expect("ca cert")).expect("add root");
        }
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                    .expect("cert pem")
                    .map(|c| c.expect("cert"))
                    .collect();
                let key = PrivateKeyDer::from_pem_file(key).expect("key pem");
                b.with_client_auth_cert(chain, key).expect("client auth")
            }
            None => b.with_no_client_auth(),
        };
        config.alpn_protocols = alpn;
        Client {
            config: Arc::new(config),
        }
    }

    pub async fn connect(
        &self,
        port: u16,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
    }

    /// Sends `method target` with extra header lines; reads the whole
    /// response (the request asks the server to close).
    pub async fn send(
        &self,
        port: u16,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> std::io::Result<RawResponse> {
        let fut = async {
            let mut s = self.connect(port).await?;
            let mut req =
                format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
            for (k, v) in headers {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            if !body.is_empty() || method == "POST" {
                req.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            req.push_str("\r\n");
            req.push_str(body);
            s.write_all(req.as_bytes()).await?;
            // Read to EOF. A peer that closes without TLS close_notify after
            // a complete response is accepted, as curl accepts it.
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {
                        break
                    }
                    Err(e) => return Err(e),
                }
            }
            parse(&buf)
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 30 s"))?
    }

    /// Writes `bytes` as they are on a fresh connection and reads until the
    /// gateway closes it (or `wait` passes): what came back, and whether
    /// the gateway closed the connection by itself.
    pub async fn exchange(
        &self,
        port: u16,
        bytes: &[u8],
        wait: Duration,
    ) -> std::io::Result<(Vec<u8>, bool)> {
        let mut s = self.connect(port).await?;
        s.write_all(bytes).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Err(_) => return Ok((buf, false)),
                Ok(Ok(0)) => return Ok((buf, true)),
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Ok(Err(_)) => return Ok((buf, true)),
            }
        }
    }

    pub async fn get(
        &self,
        port: u16,
        target: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<RawResponse> {
        self.send(port, "GET", target, headers, "").await
    }
}

/// Parses one HTTP/1.1 response (head and body) from raw bytes.
pub fn parse(buf: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let mut lines = head.lines();
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

//! HTTP(S) response headers of an endpoint: one `GET /` over TLS (any
//! certificate accepted — judging it is the certificate checks' job).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::evidence::HttpEvidence;

/// Largest response head read; a server sending more is refused.
const MAX_HEAD: usize = 64 * 1024;

/// Fetches the response head of `GET /` from an HTTPS endpoint.
pub async fn fetch_headers(
    addr: std::net::SocketAddr,
    hostname: &str,
    timeout: Duration,
) -> Result<HttpEvidence, String> {
    // Any certificate is accepted: judging it is the certificate checks' job.
    let (config, _) = crate::probe::tls::recorder::recording_client(rustls::DEFAULT_VERSIONS)
        .map_err(|e| e.to_string())?;
    let name = match hostname.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(hostname.to_string())
            .map_err(|e| format!("hostname {hostname:?}: {e}"))?,
    };
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake (TLS 1.2/1.3) failed: {e}"))?;
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {hostname}\r\nUser-Agent: popscan/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        tls.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find_head_end(&buf) {
                return parse_head(&buf[..end]);
            }
            if buf.len() > MAX_HEAD {
                return Err(format!("response head larger than {MAX_HEAD} bytes"));
            }
            let n = match tls.read(&mut chunk).await {
                Ok(n) => n,
                // Servers that skip close_notify after a full head are common.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Err(format!("read: {e}")),
            };
            if n == 0 {
                return match find_head_end(&buf) {
                    Some(end) => parse_head(&buf[..end]),
                    None if buf.is_empty() => Err("connection closed with no HTTP response".into()),
                    None => parse_head(&buf),
                };
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("no HTTP response head within {timeout:?}"))?
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses a status line and headers; HTTP/1.0 answers (no headers) are fine.
pub fn parse_head(head: &[u8]) -> Result<HttpEvidence, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(format!("not an HTTP response: {:?}", truncate(status_line)));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {:?}", truncate(status_line)))?;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header line {:?}", truncate(line)));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(HttpEvidence { status, headers })
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nServer: nginx/1.18.0\r\nStrict-Transport-Security: max-age=600\r\n\r\n").unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.header("server"), Some("nginx/1.18.0"));
        assert_eq!(h.header("STRICT-TRANSPORT-SECURITY"), Some("max-age=600"));
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n").is_err());
    }
}

//! TCP connect probes: is anything listening on host:port?

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::evidence::PortState;

/// Connects once. Refused means closed; no answer within `timeout` means
/// filtered (a firewall dropping packets looks exactly like that).
pub async fn probe_port(addr: SocketAddr, timeout: Duration) -> PortState {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => PortState::Open,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => PortState::Closed,
        Ok(Err(_)) => PortState::Unknown,
        Err(_) => PortState::Filtered,
    }
}

/// Resolves `host` (name or address) to its first socket address.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))
}

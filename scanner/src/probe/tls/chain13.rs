//! Certificate chain capture for servers that only speak TLS 1.3, where the
//! Certificate message is encrypted: a real rustls handshake with a verifier
//! that records what it is shown and accepts it.

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::exchange::{ExchangeError, Target};
use super::recorder::recording_client;

/// The chain the server presents in a TLS 1.3 handshake, leaf first.
pub async fn fetch(target: &Target) -> Result<Vec<Vec<u8>>, ExchangeError> {
    let (config, recorder) = recording_client(&[&rustls::version::TLS13])
        .map_err(|e| ExchangeError::Io(e.to_string()))?;
    let name = match &target.sni {
        Some(n) => ServerName::try_from(n.clone())
            .map_err(|e| ExchangeError::Io(format!("SNI {n:?}: {e}")))?,
        None => ServerName::IpAddress(target.addr.ip().into()),
    };
    let stream =
        match tokio::time::timeout(target.connect_timeout, TcpStream::connect(target.addr)).await {
            Err(_) => return Err(ExchangeError::ConnectTimeout(target.connect_timeout)),
            Ok(Err(e)) => return Err(ExchangeError::Connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
    let connector = TlsConnector::from(std::sync::Arc::new(config));
    // The handshake may still fail after the certificate was seen (client
    // certificate required, say); the chain is what was asked for.
    let _ = tokio::time::timeout(target.exchange_timeout, connector.connect(name, stream)).await;
    let chain = recorder.chain();
    Ok(chain)
}

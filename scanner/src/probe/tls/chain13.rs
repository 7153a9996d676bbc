//! Certificate chain capture for servers that only speak TLS 1.3, where the
//! Certificate message is encrypted: a real rustls handshake whose verifier
//! records what it is shown and accepts it, because judging the chain is the
//! certificate checks' job, not the transport's.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::exchange::{ExchangeError, Target};

#[derive(Debug)]
struct Recorder {
    chain: Mutex<Vec<Vec<u8>>>,
    schemes: Vec<SignatureScheme>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.to_vec()];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        if let Ok(mut c) = self.chain.lock() {
            *c = chain;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The chain the server presents in a TLS 1.3 handshake, leaf first.
pub async fn fetch(target: &Target) -> Result<Vec<Vec<u8>>, ExchangeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        chain: Mutex::new(Vec::new()),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ExchangeError::Io(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
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
    let connector = TlsConnector::from(Arc::new(config));
    // The handshake may still fail after the certificate was seen (client
    // certificate required, say); the chain is what was asked for.
    let _ = tokio::time::timeout(target.exchange_timeout, connector.connect(name, stream)).await;
    let chain = recorder.chain.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(chain)
}

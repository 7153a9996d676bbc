//! One crafted handshake attempt: connect, send a ClientHello, read the
//! server's first flight (or its alert), hang up.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::suites;
use super::wire::{
    self, HandshakeBuffer, HelloSpec, KeyExchange, Malformed, ServerHello, CT_ALERT,
    CT_CHANGE_CIPHER_SPEC, CT_HANDSHAKE, HS_CERTIFICATE, HS_SERVER_HELLO, HS_SERVER_HELLO_DONE,
    HS_SERVER_KEY_EXCHANGE, TLS13,
};

/// Where to probe and how long to wait.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Host name for SNI (none for bare IP addresses).
    pub sni: Option<String>,
    pub connect_timeout: Duration,
    /// Bound on one whole exchange after connecting (write + all reads).
    pub exchange_timeout: Duration,
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Hello(Flight),
    /// A fatal alert before any ServerHello (description code).
    Alert(u8),
    /// The server closed the connection without a word.
    Closed,
}

/// The unencrypted first flight of a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flight {
    pub hello: ServerHello,
    /// Certificate chain (TLS ≤ 1.2 only; leaf first).
    pub chain: Option<Vec<Vec<u8>>>,
    pub key_exchange: Option<KeyExchange>,
}

/// Why an exchange did not produce an answer popscan can judge.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ExchangeError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("no TCP connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("server sent no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("i/o error: {0}")]
    Io(String),
}

impl From<Malformed> for ExchangeError {
    fn from(m: Malformed) -> Self {
        ExchangeError::Malformed(m.0)
    }
}

/// Sends `spec` and reads the answer. With `want_flight`, a TLS ≤ 1.2
/// answer is read up to ServerHelloDone to capture Certificate and
/// ServerKeyExchange; otherwise reading stops at the ServerHello.
pub async fn exchange(
    target: &Target,
    spec: &HelloSpec,
    want_flight: bool,
) -> Result<Answer, ExchangeError> {
    let stream =
        match tokio::time::timeout(target.connect_timeout, TcpStream::connect(target.addr)).await {
            Err(_) => return Err(ExchangeError::ConnectTimeout(target.connect_timeout)),
            Ok(Err(e)) => return Err(ExchangeError::Connect(e.to_string())),
            Ok(Ok(s)) => s,
        };
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(target.exchange_timeout, talk(stream, spec, want_flight)).await {
        Err(_) => Err(ExchangeError::Timeout(target.exchange_timeout)),
        Ok(r) => r,
    }
}

async fn talk(
    mut stream: TcpStream,
    spec: &HelloSpec,
    want_flight: bool,
) -> Result<Answer, ExchangeError> {
    if let Err(e) = stream.write_all(&spec.to_records()).await {
        // A server that slams the door on the hello is "closed", not broken.
        return match e.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                Ok(Answer::Closed)
            }
            _ => Err(ExchangeError::Io(e.to_string())),
        };
    }
    let mut hs = HandshakeBuffer::default();
    let mut flight: Option<Flight> = None;
    let mut body = Vec::with_capacity(wire::MAX_RECORD);
    loop {
        let mut header = [0u8; 5];
        if let Err(e) = stream.read_exact(&mut header).await {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted => {
                    Ok(flight.map(Answer::Hello).unwrap_or(Answer::Closed))
                }
                _ => Err(ExchangeError::Io(e.to_string())),
            };
        }
        let h = wire::parse_record_header(header)?;
        body.resize(h.len, 0);
        if let Err(e) = stream.read_exact(&mut body).await {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                    Err(ExchangeError::Malformed(format!(
                        "connection closed inside a {}-byte record",
                        h.len
                    )))
                }
                _ => Err(ExchangeError::Io(e.to_string())),
            };
        }
        match h.content_type {
            CT_ALERT => {
                if let Some(f) = flight {
                    return Ok(Answer::Hello(f));
                }
                return match body.get(1) {
                    Some(&d) => Ok(Answer::Alert(d)),
                    None => Err(ExchangeError::Malformed(format!(
                        "alert record of {} bytes",
                        body.len()
                    ))),
                };
            }
            CT_HANDSHAKE => hs.push(&body),
            // TLS 1.3 middlebox-compatibility CCS after the ServerHello.
            CT_CHANGE_CIPHER_SPEC if flight.is_some() => {
                return Ok(flight.map(Answer::Hello).unwrap_or(Answer::Closed))
            }
            other => {
                if let Some(f) = flight {
                    return Ok(Answer::Hello(f));
                }
                return Err(ExchangeError::Malformed(format!(
                    "record type {other} before any ServerHello"
                )));
            }
        }
        while let Some((ty, msg)) = hs.next_message()? {
            match (&mut flight, ty) {
                (None, HS_SERVER_HELLO) => {
                    let hello = wire::parse_server_hello(&msg)?;
                    let done = !want_flight || hello.is_hrr || hello.version >= TLS13;
                    let f = Flight {
                        hello,
                        chain: None,
                        key_exchange: None,
                    };
                    if done {
                        return Ok(Answer::Hello(f));
                    }
                    flight = Some(f);
                }
                (None, other) => {
                    return Err(ExchangeError::Malformed(format!(
                        "handshake message type {other} before ServerHello"
                    )))
                }
                (Some(f), HS_CERTIFICATE) => f.chain = Some(wire::parse_certificate(&msg)?),
                (Some(f), HS_SERVER_KEY_EXCHANGE) => {
                    let dhe = suites::by_id(f.hello.suite).is_some_and(|s| s.is_dhe());
                    let ecdhe = suites::by_id(f.hello.suite).is_some_and(|s| s.is_ecdhe());
                    if dhe || ecdhe {
                        f.key_exchange = Some(wire::parse_server_key_exchange(&msg, dhe)?);
                    }
                }
                (Some(_), HS_SERVER_HELLO_DONE) => {
                    return Ok(flight.map(Answer::Hello).unwrap_or(Answer::Closed))
                }
                (Some(_), _) => {}
            }
        }
    }
}

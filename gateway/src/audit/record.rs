//! One audit record, and how it is written as a hash-chained JSON line.
//!
//! A line is the record's JSON followed by its own hash as the last field:
//! `{"seq":1,...,"prev":"<hex>","hash":"<hex>"}`. `hash` is the SHA-256 of
//! the exact bytes of the line with the `,"hash":"…"` part removed, so
//! verification never depends on re-serialising (field order, escaping):
//! any changed byte changes the hash.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Admitted: this record is durable before anything is forwarded, and
    /// an [`Outcome`] record with the same request id follows.
    Allow,
    /// Refused: this is the request's only record; it holds the status sent.
    Refuse,
}

/// The certificate an access was made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRef {
    pub sha256: String,
    pub serial: String,
    pub subject: String,
}

/// What the gateway decided about one request, with everything it knew
/// when deciding. Raw citizen IDs never appear: only `citizen_ref`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    pub request_id: String,
    pub agency: Option<String>,
    pub cert: Option<CertRef>,
    pub client: Option<String>,
    pub method: String,
    pub route: Option<String>,
    pub path: String,
    /// The query parameters the route allows, as forwarded; citizen IDs
    /// among them appear only as their HMAC (`hmac:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<std::collections::BTreeMap<String, String>>,
    pub purpose: Option<String>,
    pub decision: Decision,
    /// Refusal code, for refusals.
    pub code: Option<String>,
    /// The status sent, for refusals. An allowed request's status is in its
    /// outcome record (records from before write-ahead auditing carry it here).
    #[serde(default)]
    pub status: Option<u16>,
    /// Response body length, for refusals (and in pre-write-ahead records).
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub upstream_status: Option<u16>,
    /// Keyed HMAC-SHA256 of the citizen ID in the path, hex.
    pub citizen_ref: Option<String>,
}

/// How a forwarded request ended. Written after the exchange, whatever
/// happened to it: the agency vanishing, the registry failing, or a normal
/// end. Repeats agency, route and `citizen_ref` so a search by citizen
/// finds it through the same index as the access it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub time: String,
    pub request_id: String,
    pub agency: Option<String>,
    pub route: Option<String>,
    /// `completed`, or the stable code of what cut the exchange short
    /// (`client_closed`, `upstream_unavailable`, `upstream_timeout`, …).
    pub outcome: String,
    /// The status the agency was sent; `None` if no response head left.
    pub status: Option<u16>,
    pub upstream_status: Option<u16>,
    /// Response body bytes sent to the agency.
    pub bytes: u64,
    pub latency_ms: u64,
    pub citizen_ref: Option<String>,
}

/// One line of the log.
///
/// Not boxed: each event is built once and moved to the writer thread, and
/// most events are accesses, so a box would add an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Event {
    Access(Access),
    Outcome(Outcome),
}

impl Event {
    pub fn request_id(&self) -> &str {
        match self {
            Event::Access(a) => &a.request_id,
            Event::Outcome(o) => &o.request_id,
        }
    }
    pub fn time(&self) -> &str {
        match self {
            Event::Access(a) => &a.time,
            Event::Outcome(o) => &o.time,
        }
    }
    pub fn citizen_ref(&self) -> Option<&str> {
        match self {
            Event::Access(a) => a.citizen_ref.as_deref(),
            Event::Outcome(o) => o.citizen_ref.as_deref(),
        }
    }
    pub fn agency(&self) -> Option<&str> {
        match self {
            Event::Access(a) => a.agency.as_deref(),
            Event::Outcome(o) => o.agency.as_deref(),
        }
    }
}

/// A record as stored: the event plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub seq: u64,
    /// The popgate instance whose chain this record is on (`audit.instance`);
    /// absent in logs of instances configured without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(flatten)]
    pub event: Event,
    pub prev: String,
}

/// Encodes a stored record as a line (with trailing newline) and returns
/// the line and its hash.
pub fn encode(stored: &Stored) -> Result<(Vec<u8>, String), serde_json::Error> {
    encode_parts(
        stored.seq,
        stored.instance.as_deref(),
        &stored.event,
        &stored.prev,
    )
}

/// [`Stored`]'s serialised form, borrowing its parts.
#[derive(Serialize)]
struct StoredRef<'a> {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<&'a str>,
    #[serde(flatten)]
    event: &'a Event,
    prev: &'a str,
}

/// [`encode`] of the record `seq`, `event`, `prev` without assembling a
/// [`Stored`]: the writer encodes every record this way, and cloning each
/// event (a dozen strings) to do so was measurable per request.
pub fn encode_parts(
    seq: u64,
    instance: Option<&str>,
    event: &Event,
    prev: &str,
) -> Result<(Vec<u8>, String), serde_json::Error> {
    let mut body = serde_json::to_vec(&StoredRef {
        seq,
        instance,
        event,
        prev,
    })?;
    let hash = hex_string(&Sha256::digest(&body));
    // Replace the closing brace with the hash field.
    body.pop();
    body.extend_from_slice(b",\"hash\":\"");
    body.extend_from_slice(hash.as_bytes());
    body.extend_from_slice(b"\"}\n");
    Ok((body, hash))
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line does not end with a \"hash\" field")]
    NoHash,
    #[error("hash mismatch: the line was changed after it was written")]
    HashMismatch,
    #[error("not a valid record: {0}")]
    Json(String),
}

/// Checks a line's own hash and parses it. `line` excludes the newline.
pub fn decode(line: &[u8]) -> Result<(Stored, String), LineError> {
    const TAIL: usize = 2; // "}
    const FIELD: &[u8] = b",\"hash\":\"";
    let hash_len = 64;
    if line.len() < FIELD.len() + hash_len + TAIL || !line.ends_with(b"\"}") {
        return Err(LineError::NoHash);
    }
    let hash_start = line.len() - TAIL - hash_len;
    let field_start = hash_start - FIELD.len();
    if &line[field_start..hash_start] != FIELD {
        return Err(LineError::NoHash);
    }
    let claimed =
        std::str::from_utf8(&line[hash_start..line.len() - TAIL]).map_err(|_| LineError::NoHash)?;
    let mut body = line[..field_start].to_vec();
    body.push(b'}');
    if hex::encode(Sha256::digest(&body)) != claimed {
        return Err(LineError::HashMismatch);
    }
    let stored: Stored =
        serde_json::from_slice(&body).map_err(|e| LineError::Json(e.to_string()))?;
    Ok((stored, claimed.to_owned()))
}

/// What shipping needs of a line, borrowed from it where JSON allows.
#[derive(Debug, Deserialize)]
pub struct Peek<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub instance: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub time: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub request_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pub agency: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub citizen_ref: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub prev: std::borrow::Cow<'a, str>,
    /// Present (as the ending) in outcome records only.
    #[serde(borrow, default)]
    pub outcome: Option<std::borrow::Cow<'a, str>>,
}

impl Peek<'_> {
    pub fn kind(&self) -> &'static str {
        if self.outcome.is_some() {
            "outcome"
        } else {
            "access"
        }
    }
}

/// [`decode`] for shipping: the same hash check, without building the
/// record (the shipper copies the line as it is and needs a few fields).
pub fn peek(line: &[u8]) -> Result<(Peek<'_>, String), LineError> {
    const TAIL: usize = 2;
    const FIELD: &[u8] = b",\"hash\":\"";
    if line.len() < FIELD.len() + 64 + TAIL || !line.ends_with(b"\"}") {
        return Err(LineError::NoHash);
    }
    let hash_start = line.len() - TAIL - 64;
    let field_start = hash_start - FIELD.len();
    if &line[field_start..hash_start] != FIELD {
        return Err(LineError::NoHash);
    }
    let claimed = &line[hash_start..line.len() - TAIL];
    let mut hasher = Sha256::new();
    hasher.update(&line[..field_start]);
    hasher.update(b"}");
    let hash = hex_string(&hasher.finalize());
    if hash.as_bytes() != claimed {
        return Err(LineError::HashMismatch);
    }
    let peek: Peek<'_> =
        serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
    Ok((peek, hash))
}

/// The keyed reference to a citizen that records carry instead of the ID.
/// Keyed, so that someone holding the log but not the key cannot test
/// guesses (12-digit IDs are few enough to enumerate).
pub fn citizen_ref(key: &[u8], citizen_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(citizen_id.as_bytes());
    hex_string(&mac.finalize().into_bytes())
}

/// Lower-case hex of a SHA-256 sized digest, encoded in one pass (the
/// `hex::encode` iterator builds the string a char at a time).
fn hex_string(digest: &[u8]) -> String {
    let mut buf = [0u8; 64];
    if let Some(out) = buf.get_mut(..digest.len() * 2) {
        if hex::encode_to_slice(digest, out).is_ok() {
            return String::from_utf8_lossy(out).into_owned();
        }
    }
    hex::encode(digest)
}

/// Now, as records spell it.
pub fn now_rfc3339() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// A UTC time as records spell it (RFC 3339, milliseconds, `Z`).
pub use certs::dates::rfc3339_millis as format_time;

/// Reads a record time back (RFC 3339).
pub use certs::dates::parse_rfc3339 as parse_time;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample(request_id: &str, citizen: Option<&str>) -> Access {
        Access {
            time: now_rfc3339(),
            request_id: request_id.into(),
            agency: Some("hanoi".into()),
            cert: Some(CertRef {
                sha256: "ab".repeat(32),
                serial: "01".into(),
                subject: "CN=hanoi".into(),
            }),
            client: Some("127.0.0.1:5555".into()),
            method: "GET".into(),
            route: Some("citizen.read".into()),
            path: "/v1/citizens/x".into(),
            purpose: Some("thủ tục \"cư trú\"".into()),
            query: None,
            decision: Decision::Allow,
            code: None,
            status: None,
            bytes: None,
            latency_ms: None,
            upstream_status: None,
            citizen_ref: citizen.map(|c| citizen_ref(b"k", c)),
        }
    }

    #[test]
    fn encode_decode_round_trip_and_any_byte_change_is_caught() {
        let s = Stored {
            seq: 7,
            instance: Some("hcm-1".into()),
            event: Event::Access(sample("r1", Some("001203012345"))),
            prev: GENESIS.into(),
        };
        let (line, hash) = encode(&s).unwrap();
        assert!(line.ends_with(b"\"}\n"));
        let (back, h2) = decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, s);
        assert_eq!(hash, h2);
        for i in 0..line.len() - 1 {
            let mut t = line[..line.len() - 1].to_vec();
            t[i] ^= 0x01;
            assert!(decode(&t).is_err(), "flip at byte {i} not caught");
        }
    }

    #[test]
    fn peek_checks_the_same_hash_and_reads_the_same_fields_as_decode() {
        for event in [
            Event::Access(sample("r1", Some("001203012345"))),
            Event::Outcome(Outcome {
                time: now_rfc3339(),
                request_id: "r1".into(),
                agency: Some("ha \"nội\"".into()),
                route: None,
                outcome: "completed".into(),
                status: Some(200),
                upstream_status: Some(200),
                bytes: 10,
                latency_ms: 3,
                citizen_ref: None,
            }),
        ] {
            let s = Stored {
                seq: 9,
                instance: Some("hcm-1".into()),
                event,
                prev: GENESIS.into(),
            };
            let (line, hash) = encode(&s).unwrap();
            let line = &line[..line.len() - 1];
            let (p, h) = peek(line).unwrap();
            assert_eq!(h, hash);
            assert_eq!((p.seq, p.prev.as_ref()), (9, GENESIS));
            assert_eq!(p.instance.as_deref(), Some("hcm-1"));
            assert_eq!(p.time.as_ref(), s.event.time());
            assert_eq!(p.request_id.as_ref(), s.event.request_id());
            assert_eq!(p.agency.as_deref(), s.event.agency());
            assert_eq!(p.citizen_ref.as_deref(), s.event.citizen_ref());
            let kind = match s.event {
                Event::Access(_) => "access",
                Event::Outcome(_) => "outcome",
            };
            assert_eq!(p.kind(), kind);
            for i in 0..line.len() {
                let mut t = line.to_vec();
                t[i] ^= 0x01;
                assert!(peek(&t).is_err(), "flip at byte {i} not caught");
            }
        }
    }

    #[test]
    fn citizen_ref_is_keyed() {
        assert_ne!(citizen_ref(b"a", "1"), citizen_ref(b"b", "1"));
        assert_eq!(citizen_ref(b"a", "1"), citizen_ref(b"a", "1"));
        assert_eq!(citizen_ref(b"a", "1").len(), 64);
    }
}

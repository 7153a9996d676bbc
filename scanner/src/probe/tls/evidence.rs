//! What a TLS endpoint was seen to offer: the contract between the evidence
//! sources (popscan's own crafted-handshake engine, nmap's `ssl-enum-ciphers`
//! and `ssl-cert` script output) and the compliance checks that judge it.
//!
//! Both sources fill the same type so a control is written once. A field the
//! source could not establish is `None` / absent, never a guessed default: a
//! check that needs it reports "not established" instead of passing.

use serde::{Deserialize, Serialize};

/// A TLS (or SSL) protocol version, ordered oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "SSLv2")]
    Ssl2,
    #[serde(rename = "SSLv3")]
    Ssl3,
    #[serde(rename = "TLSv1.0")]
    Tls10,
    #[serde(rename = "TLSv1.1")]
    Tls11,
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

impl Protocol {
    pub const ALL: [Protocol; 6] = [
        Protocol::Ssl2,
        Protocol::Ssl3,
        Protocol::Tls10,
        Protocol::Tls11,
        Protocol::Tls12,
        Protocol::Tls13,
    ];

    /// The spelling used in policies, reports and nmap output ("TLSv1.0").
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ssl2 => "SSLv2",
            Protocol::Ssl3 => "SSLv3",
            Protocol::Tls10 => "TLSv1.0",
            Protocol::Tls11 => "TLSv1.1",
            Protocol::Tls12 => "TLSv1.2",
            Protocol::Tls13 => "TLSv1.3",
        }
    }

    /// Parses the policy/report spelling; also accepts nmap's "TLSv1.0"
    /// and OpenSSL's "TLSv1" for 1.0.
    pub fn from_name(s: &str) -> Option<Protocol> {
        Some(match s {
            "SSLv2" => Protocol::Ssl2,
            "SSLv3" => Protocol::Ssl3,
            "TLSv1.0" | "TLSv1" => Protocol::Tls10,
            "TLSv1.1" => Protocol::Tls11,
            "TLSv1.2" => Protocol::Tls12,
            "TLSv1.3" => Protocol::Tls13,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A property of a cipher suite that policies forbid by class rather than by
/// name, so a policy stays correct when new suites appear in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CipherClass {
    /// No encryption at all.
    Null,
    /// Export-grade (40/56-bit) suites.
    Export,
    /// No server authentication (anonymous DH/ECDH).
    Anonymous,
    Rc4,
    /// Single DES.
    Des,
    TripleDes,
    /// CBC mode with an HMAC-SHA1 MAC (the TLS 1.0-era suites).
    CbcSha1,
    /// Any CBC-mode suite.
    Cbc,
    /// Static RSA / static (EC)DH key exchange: no forward secrecy.
    NoForwardSecrecy,
    /// AEAD bulk cipher (GCM, CCM, ChaCha20-Poly1305).
    Aead,
}

impl CipherClass {
    /// The policy spelling, e.g. `cbc_sha1`.
    pub fn name(self) -> &'static str {
        match self {
            CipherClass::Null => "null",
            CipherClass::Export => "export",
            CipherClass::Anonymous => "anonymous",
            CipherClass::Rc4 => "rc4",
            CipherClass::Des => "des",
            CipherClass::TripleDes => "triple_des",
            CipherClass::CbcSha1 => "cbc_sha1",
            CipherClass::Cbc => "cbc",
            CipherClass::NoForwardSecrecy => "no_forward_secrecy",
            CipherClass::Aead => "aead",
        }
    }
}

/// One cipher suite the server accepted for one protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedSuite {
    /// IANA code point.
    pub id: u16,
    /// IANA name, e.g. `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`.
    pub iana: String,
    /// OpenSSL name where one exists, e.g. `ECDHE-RSA-AES128-GCM-SHA256`.
    pub openssl: Option<String>,
    pub classes: Vec<CipherClass>,
}

/// Everything established about one protocol version on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolSupport {
    pub protocol: Protocol,
    pub offered: bool,
    /// Suites accepted, in the server's preference order when it enforces one,
    /// otherwise in the order found. Empty when not offered or not enumerated.
    pub suites: Vec<OfferedSuite>,
    /// `Some(true)` when the server picks by its own order, `Some(false)` when
    /// it follows the client's, `None` when not determinable (e.g. one suite).
    pub server_order: Option<bool>,
}

/// A key-exchange group (named curve, FFDHE group or hybrid KEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedGroup {
    /// IANA `supported_groups` code point.
    pub id: u16,
    /// IANA name, e.g. `x25519`, `secp256r1`, `ffdhe2048`, `X25519MLKEM768`.
    pub name: String,
}

/// How the server reacts to `TLS_FALLBACK_SCSV` on a downgraded handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackScsv {
    /// Refused the downgraded handshake with `inappropriate_fallback`.
    Enforced,
    /// Ignored the SCSV but marked its ServerHello with the RFC 8446
    /// downgrade sentinel, so TLS 1.3 clients detect and abort the downgrade.
    Sentinel,
    /// Completed the downgraded handshake.
    Ignored,
    /// Only one protocol version is offered, so no downgrade is possible.
    NotApplicable,
}

/// What one TLS endpoint was seen to offer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsEvidence {
    /// One entry per protocol version that was tested; a version absent
    /// here was not tested (popscan and nmap ≥ 7.92 test SSLv3–TLS 1.3; SSLv2
    /// is not tested).
    pub protocols: Vec<ProtocolSupport>,
    /// Key-exchange groups the server accepted; `None` when not enumerated.
    pub groups: Option<Vec<OfferedGroup>>,
    /// Size in bits of the finite-field DHE prime the server sent (TLS ≤ 1.2).
    pub dhe_bits: Option<u32>,
    /// The certificate chain as the server sent it, leaf first, DER.
    #[serde(with = "der_list_base64")]
    pub chain: Vec<Vec<u8>>,
    /// RFC 5746 secure renegotiation supported.
    pub secure_renegotiation: Option<bool>,
    /// TLS-level compression (CRIME) accepted.
    pub compression: Option<bool>,
    pub fallback_scsv: Option<FallbackScsv>,
    /// Where the evidence came from, e.g. `popscan-tls`, `nmap:scan.xml`.
    pub source: String,
}

impl TlsEvidence {
    /// Versions seen offered, oldest first.
    pub fn offered_protocols(&self) -> Vec<Protocol> {
        let mut v: Vec<Protocol> = self
            .protocols
            .iter()
            .filter(|p| p.offered)
            .map(|p| p.protocol)
            .collect();
        v.sort();
        v
    }
}

/// Certificates travel in JSON as base64 DER so a report can be re-checked.
mod der_list_base64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let e = base64::engine::general_purpose::STANDARD;
        s.collect_seq(v.iter().map(|d| e.encode(d)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let e = base64::engine::general_purpose::STANDARD;
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| e.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

//! Certificate controls on the chain a server presented: key size,
//! signature algorithm, trust, expiry, hostname, extended key usage.
//!
//! Parsing uses x509-cert; path building, hostname matching and signature
//! verification use rustls-webpki — the same code that decides whether a
//! real client would connect.

use std::path::Path;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Serialize;
use x509_cert::Certificate;

use super::{CheckContext, Outcome};
use crate::evidence::EndpointFacts;
use crate::policy::{bundle_path, CertCheck, Control, SigHash};

const RSA: &str = "1.2.840.113549.1.1.1";
const EC: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const EXT_EKU: &str = "2.5.29.37";
const EKU_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const EKU_ANY: &str = "2.5.29.37.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Rsa,
    Ec,
    Ed25519,
    Other,
}

/// What popscan reads out of one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub key: KeyKind,
    pub key_bits: Option<u32>,
    /// Signature algorithm name, e.g. `sha256WithRSAEncryption`.
    pub signature: String,
    pub signature_hash: Option<SigHash>,
    /// `None` when the certificate has no extendedKeyUsage extension.
    pub server_auth_eku: Option<bool>,
    /// DNS names and IP addresses in subjectAltName (what clients match).
    pub san: Vec<String>,
    pub self_issued: bool,
}

impl CertFacts {
    pub fn parse(der: &[u8]) -> Result<CertFacts, String> {
        let cert =
            Certificate::from_der(der).map_err(|e| format!("certificate does not parse: {e}"))?;
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_public_key_info;
        let alg = spki.algorithm.oid.to_string();
        let (key, key_bits) = match alg.as_str() {
            RSA => (
                KeyKind::Rsa,
                spki.subject_public_key
                    .as_bytes()
                    .and_then(rsa_modulus_bits),
            ),
            EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                    .map(|o| o.to_string());
                let bits = match curve.as_deref() {
                    Some("1.2.840.10045.3.1.7") => Some(256),
                    Some("1.3.132.0.34") => Some(384),
                    Some("1.3.132.0.35") => Some(521),
                    Some("1.3.132.0.10") => Some(256),
                    Some("1.3.36.3.3.2.8.1.1.7") => Some(256),
                    Some("1.3.36.3.3.2.8.1.1.11") => Some(384),
                    Some("1.3.36.3.3.2.8.1.1.13") => Some(512),
                    _ => None,
                };
                (KeyKind::Ec, bits)
            }
            ED25519 => (KeyKind::Ed25519, Some(256)),
            _ => (KeyKind::Other, None),
        };
        let sig_oid = cert.signature_algorithm.oid.to_string();
        let (signature, signature_hash) = signature_name(&sig_oid);
        let server_auth_eku = tbs.extensions.as_ref().and_then(|exts| {
            exts.iter()
                .find(|e| e.extn_id.to_string() == EXT_EKU)
                .map(|e| {
                    x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes())
                        .map(|eku| {
                            eku.0.iter().any(|o| {
                                let o = o.to_string();
                                o == EKU_SERVER_AUTH || o == EKU_ANY
                            })
                        })
                        .unwrap_or(false)
                })
        });
        let san = tbs
            .extensions
            .as_ref()
            .and_then(|exts| exts.iter().find(|e| e.extn_id.to_string() == "2.5.29.17"))
            .and_then(|e| {
                x509_cert::ext::pkix::SubjectAltName::from_der(e.extn_value.as_bytes()).ok()
            })
            .map(|names| {
                names
                    .0
                    .iter()
                    .filter_map(|n| match n {
                        x509_cert::ext::pkix::name::GeneralName::DnsName(d) => Some(d.to_string()),
                        x509_cert::ext::pkix::name::GeneralName::IpAddress(ip) => {
                            let b = ip.as_bytes();
                            match b.len() {
                                4 => Some(
                                    std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
                                ),
                                16 => <[u8; 16]>::try_from(b)
                                    .ok()
                                    .map(|a| std::net::Ipv6Addr::from(a).to_string()),
                                _ => None,
                            }
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let subject = tbs.subject.to_string();
        let issuer = tbs.issuer.to_string();
        Ok(CertFacts {
            self_issued: tbs.subject.to_der().ok() == tbs.issuer.to_der().ok(),
            subject,
            issuer,
            not_before: tbs.validity.not_before.to_unix_duration().as_secs() as i64,
            not_after: tbs.validity.not_after.to_unix_duration().as_secs() as i64,
            key,
            key_bits,
            signature,
            signature_hash,
            server_auth_eku,
            san,
        })
    }
}

fn signature_name(oid: &str) -> (String, Option<SigHash>) {
    let (name, hash) = match oid {
        "1.2.840.113549.1.1.4" => ("md5WithRSAEncryption", Some(SigHash::Md5)),
        "1.2.840.113549.1.1.5" => ("sha1WithRSAEncryption", Some(SigHash::Sha1)),
        "1.2.840.10045.4.1" => ("ecdsa-with-SHA1", Some(SigHash::Sha1)),
        "1.2.840.10040.4.3" => ("dsa-with-SHA1", Some(SigHash::Sha1)),
        "1.2.840.113549.1.1.11" => ("sha256WithRSAEncryption", None),
        "1.2.840.113549.1.1.12" => ("sha384WithRSAEncryption", None),
        "1.2.840.113549.1.1.13" => ("sha512WithRSAEncryption", None),
        "1.2.840.113549.1.1.10" => ("rsassaPss", None),
        "1.2.840.10045.4.3.2" => ("ecdsa-with-SHA256", None),
        "1.2.840.10045.4.3.3" => ("ecdsa-with-SHA384", None),
        "1.2.840.10045.4.3.4" => ("ecdsa-with-SHA512", None),
        "1.3.101.112" => ("Ed25519", None),
        other => return (other.to_string(), None),
    };
    (name.to_string(), hash)
}

/// Bit length of the modulus in a PKCS#1 RSAPublicKey.
fn rsa_modulus_bits(pk: &[u8]) -> Option<u32> {
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        modulus: der::asn1::UintRef<'a>,
        _exponent: der::asn1::UintRef<'a>,
    }
    let k = RsaPublicKey::from_der(pk).ok()?;
    let m = k.modulus.as_bytes();
    let top = *m.first()?;
    Some((m.len() as u32 - 1) * 8 + (8 - top.leading_zeros()))
}

fn day(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| crate::waiver::format_date(t.date()))
        .unwrap_or_else(|_| unix.to_string())
}

pub(super) fn check(
    control: &Control,
    c: &CertCheck,
    ep: &EndpointFacts,
    chain: &[Vec<u8>],
    ctx: &CheckContext,
    out: &mut Outcome,
) {
    let at = &ep.label;
    let leaf = match CertFacts::parse(&chain[0]) {
        Ok(l) => l,
        Err(e) => return out.fail(format!("{at}: leaf {e}")),
    };
    match c {
        CertCheck::KeySize {
            rsa_min_bits,
            ec_min_bits,
        } => key_size(&leaf, at, *rsa_min_bits, *ec_min_bits, out),
        CertCheck::Signature { forbidden } => signatures(chain, at, forbidden, out),
        CertCheck::ChainTrusted { bundle } => {
            let path = match &ctx.trust_bundle {
                Some(p) => p.clone(),
                None => bundle_path(control, bundle),
            };
            chain_trusted(chain, &path, &leaf, ctx, at, out)
        }
        CertCheck::Expiry { min_days } => expiry(&leaf, ctx.now_unix, *min_days, at, out),
        CertCheck::Hostname => hostname(ep, chain, &leaf, out),
        CertCheck::ServerAuthEku => match leaf.server_auth_eku {
            Some(true) => out.ok(format!("{at}: extendedKeyUsage includes serverAuth")),
            Some(false) => out.fail(format!("{at}: extendedKeyUsage lacks serverAuth")),
            None => out.fail(format!(
                "{at}: certificate has no extendedKeyUsage extension"
            )),
        },
    }
}

/// The leaf's public key is at least as large as the policy asks.
fn key_size(leaf: &CertFacts, at: &str, rsa_min_bits: u32, ec_min_bits: u32, out: &mut Outcome) {
    let desc = format!(
        "{:?} {}",
        leaf.key,
        leaf.key_bits.map(|b| b.to_string()).unwrap_or("?".into())
    );
    match (leaf.key, leaf.key_bits) {
        (KeyKind::Rsa, Some(b)) if b < rsa_min_bits => out.fail(format!(
            "{at}: RSA-{b} key, policy needs ≥ {rsa_min_bits} ({})",
            leaf.subject
        )),
        (KeyKind::Ec, Some(b)) if b < ec_min_bits => out.fail(format!(
            "{at}: EC-{b} key, policy needs ≥ {ec_min_bits} ({})",
            leaf.subject
        )),
        (KeyKind::Rsa | KeyKind::Ec | KeyKind::Ed25519, Some(_)) => {
            out.ok(format!("{at}: {} key", desc.to_uppercase()))
        }
        _ => out.error(format!("{at}: key type/size not recognised ({desc})")),
    }
}

/// No certificate of the chain (but a self-issued anchor) is signed with a
/// forbidden hash.
fn signatures(chain: &[Vec<u8>], at: &str, forbidden: &[SigHash], out: &mut Outcome) {
    for (i, der) in chain.iter().enumerate() {
        match CertFacts::parse(der) {
            // A self-issued root's own signature is not relied upon.
            Ok(f) if i > 0 && f.self_issued => {}
            Ok(f) => match f.signature_hash {
                Some(h) if forbidden.contains(&h) => out.fail(format!(
                    "{at}: certificate #{i} ({}) is signed with {}",
                    f.subject, f.signature
                )),
                _ => out.ok(format!(
                    "{at}: certificate #{i} signed with {}",
                    f.signature
                )),
            },
            Err(e) => out.fail(format!("{at}: certificate #{i} {e}")),
        }
    }
}

/// The chain verifies to an anchor in the trust bundle at `path`.
fn chain_trusted(
    chain: &[Vec<u8>],
    path: &std::path::Path,
    leaf: &CertFacts,
    ctx: &CheckContext,
    at: &str,
    out: &mut Outcome,
) {
    match verify_chain(chain, path, ctx.now_unix) {
        Ok(()) => out.ok(format!(
            "{at}: chain verifies to a trust anchor in {}",
            path.display()
        )),
        Err(ChainError::Bundle(e)) => out.error(format!("trust bundle {}: {e}", path.display())),
        Err(ChainError::Untrusted(e)) => out.fail(format!(
            "{at}: chain for {} (issuer {}) does not verify against {}: {e}",
            leaf.subject,
            leaf.issuer,
            path.display()
        )),
    }
}

/// The leaf is valid now and for at least `min_days` more.
fn expiry(leaf: &CertFacts, now: i64, min_days: u32, at: &str, out: &mut Outcome) {
    if now < leaf.not_before {
        out.fail(format!(
            "{at}: certificate not valid before {}",
            day(leaf.not_before)
        ));
    } else if now > leaf.not_after {
        out.fail(format!(
            "{at}: certificate expired on {}",
            day(leaf.not_after)
        ));
    } else {
        let left = (leaf.not_after - now) / 86_400;
        if left < min_days as i64 {
            out.fail(format!(
                "{at}: certificate expires {} ({left} days), policy needs ≥ {min_days}",
                day(leaf.not_after)
            ));
        } else {
            out.ok(format!(
                "{at}: certificate valid until {} ({left} days)",
                day(leaf.not_after)
            ));
        }
    }
}

/// The leaf is valid for the endpoint's hostname, as clients check it.
fn hostname(ep: &EndpointFacts, chain: &[Vec<u8>], leaf: &CertFacts, out: &mut Outcome) {
    let at = &ep.label;
    let name = match ep.hostname.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => match ServerName::try_from(ep.hostname.clone()) {
            Ok(n) => n,
            Err(_) => return out.error(format!("{at}: {:?} is not a valid hostname", ep.hostname)),
        },
    };
    let der = CertificateDer::from(chain[0].as_slice());
    match webpki::EndEntityCert::try_from(&der) {
        Err(e) => out.fail(format!("{at}: leaf rejected: {e}")),
        Ok(ee) => match ee.verify_is_valid_for_subject_name(&name) {
            Ok(()) => out.ok(format!("{at}: certificate is valid for {}", ep.hostname)),
            Err(_) if leaf.san.is_empty() => out.fail(format!(
                "{at}: certificate ({}) has no subjectAltName, so it is valid for no name (clients ignore the CN); expected {}",
                leaf.subject, ep.hostname
            )),
            Err(_) => out.fail(format!(
                "{at}: certificate is valid for {}, not {}",
                leaf.san.join(", "),
                ep.hostname
            )),
        },
    }
}

enum ChainError {
    Bundle(String),
    Untrusted(String),
}

/// Verifies the chain for server authentication. Validity dates are the
/// expiry control's business, so when the only problem is time the chain is
/// re-checked at a moment inside the leaf's validity.
fn verify_chain(chain: &[Vec<u8>], bundle: &Path, now: i64) -> Result<(), ChainError> {
    let pem = std::fs::read(bundle).map_err(|e| ChainError::Bundle(e.to_string()))?;
    let roots: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| ChainError::Bundle(format!("not PEM certificates: {e}")))?;
    if roots.is_empty() {
        return Err(ChainError::Bundle("contains no certificates".into()));
    }
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    let leaf = CertificateDer::from(chain[0].as_slice());
    let ee =
        webpki::EndEntityCert::try_from(&leaf).map_err(|e| ChainError::Untrusted(e.to_string()))?;
    let inter: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let at = |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64));
    let verify = |t: i64| {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &inter,
            at(t),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map(|_| ())
    };
    match verify(now) {
        Ok(()) => Ok(()),
        Err(webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }) => {
            let mid = CertFacts::parse(&chain[0])
                .map(|f| f.not_before + (f.not_after - f.not_before) / 2)
                .unwrap_or(now);
            verify(mid).map_err(|e| ChainError::Untrusted(e.to_string()))
        }
        Err(e) => Err(ChainError::Untrusted(e.to_string())),
    }
}

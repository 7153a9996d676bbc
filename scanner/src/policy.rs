//! Compliance policies: one baseline per security level, as YAML files
//! `level-N.yaml` in a policy directory. A level may `extends` a lower one;
//! its controls replace inherited controls with the same id and add new ones.
//!
//! Each control has a stable id (what waivers, verdicts and reports name), a
//! title, severity, rationale, references and one typed check. Everything is
//! validated at load time with `file:line:column`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::probe::tls::{CipherClass, Protocol};
use yamlconf::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Certificate signature hash families a policy can forbid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigHash {
    Md5,
    Sha1,
}

/// A port that must not be open, with the service it usually means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedPort {
    pub port: u16,
    pub service: String,
}

/// What a control checks, with its parameters, grouped by the evidence it
/// reads so each checks module matches its own family exhaustively. In
/// YAML a check is flat (`{kind: tls_protocols, allowed: […]}`): see
/// [`FlatCheck`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "FlatCheck", into = "FlatCheck")]
pub enum Check {
    Tls(TlsCheck),
    Cert(CertCheck),
    Http(HttpCheck),
    Ports(PortsCheck),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TlsCheck {
    Protocols { allowed: Vec<ProtocolName> },
    CipherClasses { forbidden: Vec<ClassName> },
    DheMinBits { min_bits: u32 },
    DowngradeProtection,
    RenegotiationCompression,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CertCheck {
    KeySize { rsa_min_bits: u32, ec_min_bits: u32 },
    Signature { forbidden: Vec<SigHash> },
    ChainTrusted { bundle: String },
    Expiry { min_days: u32 },
    Hostname,
    ServerAuthEku,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpCheck {
    Hsts { min_max_age: u64 },
    Header { header: String, value: String },
    ServerBanner,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PortsCheck {
    Forbidden { ports: Vec<NamedPort> },
}

impl From<FlatCheck> for Check {
    fn from(f: FlatCheck) -> Check {
        use FlatCheck as F;
        match f {
            F::TlsProtocols { allowed } => Check::Tls(TlsCheck::Protocols { allowed }),
            F::TlsCipherClasses { forbidden } => Check::Tls(TlsCheck::CipherClasses { forbidden }),
            F::TlsDheMinBits { min_bits } => Check::Tls(TlsCheck::DheMinBits { min_bits }),
            F::TlsDowngradeProtection {} => Check::Tls(TlsCheck::DowngradeProtection),
            F::TlsRenegotiationCompression {} => Check::Tls(TlsCheck::RenegotiationCompression),
            F::CertKeySize {
                rsa_min_bits,
                ec_min_bits,
            } => Check::Cert(CertCheck::KeySize {
                rsa_min_bits,
                ec_min_bits,
            }),
            F::CertSignature { forbidden } => Check::Cert(CertCheck::Signature { forbidden }),
            F::CertChainTrusted { bundle } => Check::Cert(CertCheck::ChainTrusted { bundle }),
            F::CertExpiry { min_days } => Check::Cert(CertCheck::Expiry { min_days }),
            F::CertHostname {} => Check::Cert(CertCheck::Hostname),
            F::CertServerAuthEku {} => Check::Cert(CertCheck::ServerAuthEku),
            F::HttpHsts { min_max_age } => Check::Http(HttpCheck::Hsts { min_max_age }),
            F::HttpHeader { header, value } => Check::Http(HttpCheck::Header { header, value }),
            F::HttpServerBanner {} => Check::Http(HttpCheck::ServerBanner),
            F::PortsForbidden { ports } => Check::Ports(PortsCheck::Forbidden { ports }),
        }
    }
}

impl From<Check> for FlatCheck {
    fn from(c: Check) -> FlatCheck {
        use FlatCheck as F;
        match c {
            Check::Tls(TlsCheck::Protocols { allowed }) => F::TlsProtocols { allowed },
            Check::Tls(TlsCheck::CipherClasses { forbidden }) => F::TlsCipherClasses { forbidden },
            Check::Tls(TlsCheck::DheMinBits { min_bits }) => F::TlsDheMinBits { min_bits },
            Check::Tls(TlsCheck::DowngradeProtection) => F::TlsDowngradeProtection {},
            Check::Tls(TlsCheck::RenegotiationCompression) => F::TlsRenegotiationCompression {},
            Check::Cert(CertCheck::KeySize {
                rsa_min_bits,
                ec_min_bits,
            }) => F::CertKeySize {
                rsa_min_bits,
                ec_min_bits,
            },
            Check::Cert(CertCheck::Signature { forbidden }) => F::CertSignature { forbidden },
            Check::Cert(CertCheck::ChainTrusted { bundle }) => F::CertChainTrusted { bundle },
            Check::Cert(CertCheck::Expiry { min_days }) => F::CertExpiry { min_days },
            Check::Cert(CertCheck::Hostname) => F::CertHostname {},
            Check::Cert(CertCheck::ServerAuthEku) => F::CertServerAuthEku {},
            Check::Http(HttpCheck::Hsts { min_max_age }) => F::HttpHsts { min_max_age },
            Check::Http(HttpCheck::Header { header, value }) => F::HttpHeader { header, value },
            Check::Http(HttpCheck::ServerBanner) => F::HttpServerBanner {},
            Check::Ports(PortsCheck::Forbidden { ports }) => F::PortsForbidden { ports },
        }
    }
}

/// A check as policies spell it: one flat `kind` with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FlatCheck {
    /// Only these protocol versions may be offered.
    TlsProtocols { allowed: Vec<ProtocolName> },
    /// No offered suite may fall in these classes.
    TlsCipherClasses { forbidden: Vec<ClassName> },
    /// Finite-field DHE primes at least this large.
    TlsDheMinBits { min_bits: u32 },
    /// TLS_FALLBACK_SCSV enforced when more than one version is offered.
    TlsDowngradeProtection {},
    /// RFC 5746 secure renegotiation when TLS ≤ 1.2 is offered; no compression.
    TlsRenegotiationCompression {},
    /// Leaf public key size.
    CertKeySize { rsa_min_bits: u32, ec_min_bits: u32 },
    /// No certificate in the chain (except the trust anchor) signed with these.
    CertSignature { forbidden: Vec<SigHash> },
    /// The chain leads to a certificate in the trust bundle (path relative to
    /// the policy file; `popscan scan --trust-bundle` overrides it).
    CertChainTrusted { bundle: String },
    /// The leaf is valid now and for at least `min_days` more.
    CertExpiry { min_days: u32 },
    /// The leaf is valid for the endpoint's hostname.
    CertHostname {},
    /// The leaf's extended key usage includes serverAuth.
    CertServerAuthEku {},
    /// HSTS with at least this max-age (https endpoints).
    HttpHsts { min_max_age: u64 },
    /// A response header with this exact value (case-insensitive).
    HttpHeader { header: String, value: String },
    /// The Server header (if any) must not reveal a version.
    HttpServerBanner {},
    /// None of these ports may be open on any host of the system.
    PortsForbidden { ports: Vec<NamedPort> },
}

/// A protocol name as written in a policy, validated on load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProtocolName(pub Protocol);

impl<'de> Deserialize<'de> for ProtocolName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Protocol::from_name(&s).map(ProtocolName).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown protocol {s:?}; expected one of SSLv2, SSLv3, TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3"
            ))
        })
    }
}

/// A cipher class as written in a policy. YAML reads a bare `null` as the
/// null value, not the string, so that is accepted as the NULL class too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ClassName(pub CipherClass);

impl<'de> Deserialize<'de> for ClassName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(ClassName(CipherClass::Null)),
            Some(s) => serde_json::from_value::<CipherClass>(serde_json::Value::String(s.clone()))
                .map(ClassName)
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "unknown cipher class {s:?}; expected one of null, export, anonymous, rc4, des, \
                         triple_des, cbc_sha1, cbc, no_forward_secrecy, aead"
                    ))
                }),
        }
    }
}

impl Check {
    /// The evidence family a check reads, for reports and applicability.
    pub fn family(&self) -> &'static str {
        match self {
            Check::Tls(_) => "tls",
            Check::Cert(_) => "certificate",
            Check::Http(_) => "http",
            Check::Ports(_) => "ports",
        }
    }

    /// The ports a `ports_forbidden` control lists, if this is one.
    pub fn forbidden_ports(&self) -> Option<&[NamedPort]> {
        match self {
            Check::Ports(PortsCheck::Forbidden { ports }) => Some(ports),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Control {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub rationale: String,
    pub references: Vec<String>,
    pub check: Check,
    /// Policy file that defined this control (after inheritance).
    #[serde(skip)]
    pub defined_in: PathBuf,
}

/// The effective policy for one security level.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub id: String,
    pub title: String,
    pub level: u8,
    /// How long a passing verdict under this policy stays valid.
    pub validity_days: u32,
    pub controls: Vec<Control>,
    /// SHA-256 over the bytes of every file in the `extends` chain, base
    /// first: a verdict names exactly the policy text it was judged by.
    pub sha256: String,
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    id: Spanned<String>,
    title: String,
    level: Spanned<u8>,
    #[serde(default)]
    extends: Option<Spanned<String>>,
    #[serde(default)]
    validity_days: Option<Spanned<u32>>,
    #[serde(default)]
    controls: Vec<Spanned<RawControl>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    id: Spanned<String>,
    title: String,
    severity: Severity,
    rationale: String,
    #[serde(default)]
    references: Vec<String>,
    check: Spanned<Check>,
}

/// All level policies in one directory.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub dir: PathBuf,
    pub by_level: BTreeMap<u8, Policy>,
}

impl PolicySet {
    /// Loads every `level-*.yaml` in `dir`.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, ConfigError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ConfigError::new(dir, format!("cannot read policy directory: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("level-") && n.ends_with(".yaml"))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ConfigError::new(dir, "no level-N.yaml policy files here"));
        }
        let mut by_level = BTreeMap::new();
        for f in files {
            let p = load_policy(&f)?;
            if let Some(prev) = by_level.insert(p.level, p) {
                return Err(ConfigError::new(
                    &f,
                    format!(
                        "a second policy for level {} (also {})",
                        prev.level,
                        prev.files
                            .last()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(PolicySet {
            dir: dir.to_owned(),
            by_level,
        })
    }

    pub fn for_level(&self, level: u8) -> Option<&Policy> {
        self.by_level.get(&level)
    }
}

/// Loads one policy file and everything it extends (by policy id, looked up
/// as a sibling file whose `id` matches; the file `<id>.yaml` is tried first).
pub fn load_policy(file: &Path) -> Result<Policy, ConfigError> {
    load_chain(file, &mut Vec::new())
}

fn load_chain(file: &Path, seen: &mut Vec<PathBuf>) -> Result<Policy, ConfigError> {
    let canon = file.canonicalize().unwrap_or_else(|_| file.to_owned());
    if seen.contains(&canon) {
        return Err(ConfigError::new(
            file,
            "policy `extends` chain loops back to this file",
        ));
    }
    seen.push(canon);
    let text =
        std::fs::read(file).map_err(|e| ConfigError::new(file, format!("cannot read: {e}")))?;
    let text_str =
        String::from_utf8(text.clone()).map_err(|_| ConfigError::new(file, "not UTF-8 text"))?;
    let raw: RawPolicy = yamlconf::parse(file, &text_str)?;
    check_id(file, &raw.id, "policy")?;
    if !(1..=5).contains(&raw.level.value) {
        return Err(ConfigError::at(
            file,
            &raw.level.referenced,
            format!("security level {} is not one of 1..5", raw.level.value),
        ));
    }
    let mut base = parent(file, &raw, seen)?;
    let inherited = base
        .as_mut()
        .map(|b| std::mem::take(&mut b.controls))
        .unwrap_or_default();
    let controls = merge_controls(file, raw.controls, inherited)?;
    let validity_days = match (&raw.validity_days, &base) {
        (Some(v), _) if v.value == 0 || v.value > 3650 => {
            return Err(ConfigError::at(
                file,
                &v.referenced,
                format!("validity_days {} is not in 1..3650", v.value),
            ))
        }
        (Some(v), _) => v.value,
        (None, Some(b)) => b.validity_days,
        (None, None) => {
            return Err(ConfigError::new(
                file,
                "validity_days is required (in this file or the one it extends)",
            ))
        }
    };
    let mut files = base.as_ref().map(|b| b.files.clone()).unwrap_or_default();
    files.push(file.to_owned());
    let mut h = Sha256::new();
    if let Some(b) = &base {
        h.update(b.sha256.as_bytes());
    }
    h.update(&text);
    Ok(Policy {
        id: raw.id.value,
        title: raw.title,
        level: raw.level.value,
        validity_days,
        controls,
        sha256: hex::encode(h.finalize()),
        files,
    })
}

/// The policy `raw` extends, loaded with its own chain; a parent may not
/// be of a higher level than its child.
fn parent(
    file: &Path,
    raw: &RawPolicy,
    seen: &mut Vec<PathBuf>,
) -> Result<Option<Policy>, ConfigError> {
    Ok(match &raw.extends {
        None => None,
        Some(parent) => {
            let parent_file = find_sibling(file, &parent.value).ok_or_else(|| {
                ConfigError::at(
                    file,
                    &parent.referenced,
                    format!(
                        "extends {:?}: no policy with that id next to this file",
                        parent.value
                    ),
                )
            })?;
            let p = load_chain(&parent_file, seen)?;
            if p.level > raw.level.value {
                return Err(ConfigError::at(
                    file,
                    &parent.referenced,
                    format!(
                        "level {} cannot extend {:?}, which is level {} (higher)",
                        raw.level.value, p.id, p.level
                    ),
                ));
            }
            Some(p)
        }
    })
}

/// This file's controls over the inherited ones: a control with an
/// inherited id replaces it, a new one is added.
fn merge_controls(
    file: &Path,
    own: Vec<Spanned<RawControl>>,
    mut controls: Vec<Control>,
) -> Result<Vec<Control>, ConfigError> {
    let mut own_ids = Vec::new();
    for c in own {
        let c = c.value;
        check_id(file, &c.id, "control")?;
        if own_ids.contains(&c.id.value) {
            return Err(ConfigError::at(
                file,
                &c.id.referenced,
                format!("control {:?} is defined twice in this file", c.id.value),
            ));
        }
        own_ids.push(c.id.value.clone());
        validate_check(file, &c.check)?;
        let control = Control {
            id: c.id.value.clone(),
            title: c.title,
            severity: c.severity,
            rationale: c.rationale,
            references: c.references,
            check: c.check.value,
            defined_in: file.to_owned(),
        };
        match controls.iter_mut().find(|x| x.id == control.id) {
            Some(slot) => *slot = control,
            None => controls.push(control),
        }
    }
    Ok(controls)
}

fn find_sibling(file: &Path, id: &str) -> Option<PathBuf> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let direct = dir.join(format!("{id}.yaml"));
    if direct.is_file() {
        return Some(direct);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("yaml") || p == file {
            continue;
        }
        #[derive(Deserialize)]
        struct IdOnly {
            id: String,
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        // Only the id is needed; other files' mistakes surface when loaded.
        if serde_saphyr::from_str::<IdOnly>(&text).is_ok_and(|f| f.id == id) {
            return Some(p);
        }
    }
    None
}

fn check_id(file: &Path, id: &Spanned<String>, what: &str) -> Result<(), ConfigError> {
    let ok = !id.value.is_empty()
        && id.value.len() <= 64
        && id
            .value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::at(
            file,
            &id.referenced,
            format!(
                "{what} id {:?}: use 1–64 lowercase letters, digits, '-', '_' or '.'",
                id.value
            ),
        ))
    }
}

fn validate_check(file: &Path, c: &Spanned<Check>) -> Result<(), ConfigError> {
    let at = |m: String| Err(ConfigError::at(file, &c.referenced, m));
    match &FlatCheck::from(c.value.clone()) {
        FlatCheck::TlsProtocols { allowed } if allowed.is_empty() => {
            at("tls_protocols: `allowed` is empty, nothing could ever pass".into())
        }
        FlatCheck::TlsCipherClasses { forbidden } if forbidden.is_empty() => {
            at("tls_cipher_classes: `forbidden` is empty".into())
        }
        FlatCheck::TlsDheMinBits { min_bits } if !(512..=16384).contains(min_bits) => {
            at(format!("tls_dhe_min_bits: min_bits {min_bits} is not in 512..16384"))
        }
        FlatCheck::CertKeySize { rsa_min_bits, ec_min_bits }
            if !(512..=16384).contains(rsa_min_bits) || !(160..=571).contains(ec_min_bits) =>
        {
            at(format!(
                "cert_key_size: rsa_min_bits {rsa_min_bits} / ec_min_bits {ec_min_bits} out of range (512..16384 / 160..571)"
            ))
        }
        FlatCheck::CertSignature { forbidden } if forbidden.is_empty() => {
            at("cert_signature: `forbidden` is empty".into())
        }
        FlatCheck::CertChainTrusted { bundle } if bundle.trim().is_empty() => {
            at("cert_chain_trusted: `bundle` is empty".into())
        }
        FlatCheck::HttpHeader { header, value } if header.trim().is_empty() || value.trim().is_empty() => {
            at("http_header: `header` and `value` must be non-empty".into())
        }
        FlatCheck::PortsForbidden { ports } if ports.is_empty() || ports.iter().any(|p| p.port == 0) => {
            at("ports_forbidden: list ports 1..65535".into())
        }
        _ => Ok(()),
    }
}

/// Resolves a control's trust bundle path (relative to its policy file).
pub fn bundle_path(control: &Control, bundle: &str) -> PathBuf {
    let p = Path::new(bundle);
    if p.is_absolute() {
        p.to_owned()
    } else {
        control
            .defined_in
            .parent()
            .unwrap_or(Path::new("."))
            .join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const L1: &str = "id: base-l1
title: Level 1
level: 1
validity_days: 365
controls:
  - id: tls.protocols
    title: Only modern TLS
    severity: high
    rationale: Old TLS is broken.
    references: [NIST SP 800-52 Rev. 2]
    check:
      kind: tls_protocols
      allowed: [TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3]
  - id: cert.expiry
    title: Not about to expire
    severity: medium
    rationale: Outages.
    check: {kind: cert_expiry, min_days: 7}
";

    #[test]
    fn levels_extend_and_override() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "level-1.yaml", L1);
        write(
            d.path(),
            "level-3.yaml",
            "id: base-l3
title: Level 3
level: 3
extends: base-l1
validity_days: 90
controls:
  - id: tls.protocols
    title: Only TLS 1.2+
    severity: critical
    rationale: Decree 85 level 3.
    check: {kind: tls_protocols, allowed: [TLSv1.2, TLSv1.3]}
  - id: http.hsts
    title: HSTS
    severity: medium
    rationale: Downgrade.
    check: {kind: http_hsts, min_max_age: 31536000}
",
        );
        let set = PolicySet::load_dir(d.path()).unwrap();
        let l3 = set.for_level(3).unwrap();
        assert_eq!(l3.validity_days, 90);
        let ids: Vec<&str> = l3.controls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["tls.protocols", "cert.expiry", "http.hsts"]);
        assert_eq!(l3.controls[0].severity, Severity::Critical);
        assert_eq!(l3.files.len(), 2);
        assert_ne!(l3.sha256, set.for_level(1).unwrap().sha256);
    }

    #[test]
    fn every_mistake_is_located() {
        let d = tempfile::tempdir().unwrap();
        for (bad, line, needle) in [
            // Inside a check the position is the check's first line.
            (L1.replace("TLSv1.0,", "TLSv9,"), 12, "unknown protocol"),
            (
                L1.replace("kind: cert_expiry", "kind: cert_expiryy"),
                18,
                "cert_expiryy",
            ),
            (
                L1.replace("severity: medium", "severity: urgent"),
                16,
                "urgent",
            ),
            (
                L1.replace("min_days: 7", "min_days: 7, extra: 1"),
                18,
                "extra",
            ),
            (
                L1.replace("id: cert.expiry", "id: Cert Expiry"),
                14,
                "control id",
            ),
            (L1.replace("level: 1", "level: 9"), 3, "not one of 1..5"),
        ] {
            let f = write(d.path(), "level-1.yaml", &bad);
            let e = load_policy(&f).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
            assert_eq!(e.pos.map(|p| p.0), Some(line), "{needle}: {e}");
        }
        let f = write(
            d.path(),
            "level-2.yaml",
            &L1.replace("level: 1", "level: 2\nextends: nowhere"),
        );
        let e = load_policy(&f).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }
}

//! `ssl-enum-ciphers` and `ssl-cert` output as [`TlsEvidence`]: what nmap
//! establishes about a TLS port, and what it does not.

use roxmltree::Node;

use super::script::{Table, Value};
use super::{Cx, NmapError};
use crate::probe::tls::evidence::{
    OfferedGroup, OfferedSuite, Protocol, ProtocolSupport, TlsEvidence,
};
use crate::probe::tls::{groups, suites};

/// nmap's version as (major, minor): "7.93" → (7, 93), "7.94SVN" → (7, 94).
pub(super) fn version_tuple(v: &str) -> Option<(u32, u32)> {
    let (major, rest) = v.split_once('.')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.trim().parse().ok()?, digits.parse().ok()?))
}

/// The protocol versions nmap's `ssl-enum-ciphers` tried, so that one it
/// does not list is known **not offered** (rather than not tested).
///
/// The rule, read from nmap's own sources (`nselib/tls.lua` `PROTOCOLS`, which
/// `ssl-enum-ciphers` iterates in full, and the nmap changelog):
/// - SSLv3, TLSv1.0, TLSv1.1, TLSv1.2: tried by every nmap that writes
///   structured `ssl-enum-ciphers` output, with nmap's own hand-built
///   ClientHello (not the local OpenSSL, so OpenSSL builds without SSLv3 do not
///   matter). Verified on nmap 7.93 with `-d`: "Trying protocol SSLv3."
/// - TLSv1.3: tried from nmap 7.92 on (changelog: "[GH#1691] TLS 1.3 now
///   supported by most scripts"); the file's `<nmaprun version>` decides, and
///   an unreadable version does not count as ≥ 7.92.
/// - SSLv2: never by `ssl-enum-ciphers` (that is the separate `sslv2`
///   script), so it is never claimed absent.
///
/// The fixtures were made with nmap 7.93.
pub(super) fn tested_protocols(version: Option<&str>) -> Vec<Protocol> {
    let mut v = vec![
        Protocol::Ssl3,
        Protocol::Tls10,
        Protocol::Tls11,
        Protocol::Tls12,
    ];
    if version
        .and_then(version_tuple)
        .is_some_and(|mv| mv >= (7, 92))
    {
        v.push(Protocol::Tls13);
    }
    v
}

/// nmap's suite name → evidence entry. nmap spells TLS 1.3 suites in the
/// draft style `TLS_AKE_WITH_AES_128_GCM_SHA256` (IANA `TLS_AES_128_GCM_SHA256`)
/// and the RFC 9150 integrity-only ones `TLS_AKE_WITH_NULL_SHA256` (IANA
/// `TLS_SHA256_SHA256`). Names the registry does not know (nmap also lists
/// pre-standard suites such as `TLS_RSA_EXPORT1024_WITH_RC4_56_MD5`) are kept
/// with id 0 and the classes their name implies, never dropped.
pub(super) fn offered_suite(nmap_name: &str) -> OfferedSuite {
    let iana = match nmap_name.strip_prefix("TLS_AKE_WITH_") {
        Some("NULL_SHA256") => "TLS_SHA256_SHA256".to_string(),
        Some("NULL_SHA384") => "TLS_SHA384_SHA384".to_string(),
        Some(rest) => format!("TLS_{rest}"),
        None => nmap_name.to_string(),
    };
    match suites::by_name(&iana) {
        Some(s) => s.offered(),
        None => OfferedSuite {
            id: 0,
            classes: suites::classes_of(&iana),
            iana,
            openssl: None,
        },
    }
}

/// A `kex_info` value naming a key-exchange group: nmap's curve names are the
/// IANA ones except `ecdh_x25519` / `ecdh_x448`. Non-named (explicit) curves
/// and `rsa 2048`-style certificate sizes are not groups.
pub(super) fn kex_group(kex: &str) -> Option<OfferedGroup> {
    if kex.contains(' ') || kex.starts_with("arbitrary_explicit") {
        return None;
    }
    let name = kex.strip_prefix("ecdh_").unwrap_or(kex);
    Some(match groups::by_name(name) {
        Some(id) => groups::offered(id),
        // e.g. GOST curves or curveSM2: keep nmap's name, id 0 (unassigned).
        None => OfferedGroup {
            id: 0,
            name: name.to_string(),
        },
    })
}

impl Cx<'_, '_> {
    /// `ssl-enum-ciphers` and `ssl-cert` of one port → [`TlsEvidence`], or
    /// `None` when neither carried TLS facts.
    ///
    /// From `ssl-enum-ciphers`, per protocol table (`TLSv1.2`, …):
    /// - listed → `offered: true`, its `ciphers` (in nmap's order, which is the
    ///   server's order when `cipher preference` is `server`), `server_order`
    ///   from `cipher preference` (`server` → true, `client` → false, anything
    ///   else → unknown);
    /// - not listed but tried (see [`tested_protocols`]) → `offered: false`.
    ///   That is only claimed when the script produced at least one protocol
    ///   table (a script error leaves all protocols unknown);
    /// - `groups`: the distinct groups named by `kex_info` of ECDHE and TLS 1.3
    ///   suites. nmap does not enumerate groups: this is what the server chose
    ///   from nmap's offer (secp256r1, secp384r1, secp521r1, x25519, ffdhe2048
    ///   in 7.93), so it is a subset of what the server accepts. `None` if no
    ///   suite named one;
    /// - `dhe_bits`: the smallest `dh N` of DHE suites;
    /// - `compression`: `Some(true)` if any protocol's `compressors` lists
    ///   anything but `NULL`, `Some(false)` if lists were seen and all `NULL`.
    ///
    /// From `ssl-cert`: `pem` → `chain[0]`. nmap only reports the leaf
    /// certificate, so `chain` never has intermediates from nmap; a check that
    /// needs the chain must use a live probe.
    ///
    /// Secure renegotiation and fallback SCSV are not tested by these scripts
    /// and stay `None`.
    pub(super) fn tls_from_scripts(
        &self,
        ciphers: Option<&(Node, Table)>,
        cert: Option<&(Node, Table)>,
        tested: &[Protocol],
    ) -> Result<Option<TlsEvidence>, NmapError> {
        let mut ev = TlsEvidence {
            source: self.source(),
            ..TlsEvidence::default()
        };
        let mut found = false;
        if let Some((_, t)) = ciphers {
            let mut groups_seen: Vec<OfferedGroup> = Vec::new();
            let mut compression: Option<bool> = None;
            for entry in &t.entries {
                let Some(protocol) = entry.key.as_deref().and_then(Protocol::from_name) else {
                    continue; // "least strength" and the like
                };
                let Value::Table(pt) = &entry.value else {
                    return Err(self.invalid_at(
                        value_at(&entry.value),
                        format!("ssl-enum-ciphers: {protocol} is not a <table>"),
                    ));
                };
                if ev.protocols.iter().any(|p| p.protocol == protocol) {
                    return Err(self
                        .invalid_at(pt.at, format!("ssl-enum-ciphers: {protocol} listed twice")));
                }
                let mut offered = Vec::new();
                if let Some(list) = pt.table("ciphers") {
                    for item in list.items() {
                        let Value::Table(c) = item else {
                            return Err(self.invalid_at(
                                value_at(item),
                                "ssl-enum-ciphers: cipher entry is not a <table>".to_string(),
                            ));
                        };
                        let name = c.elem("name").ok_or_else(|| {
                            self.invalid_at(
                                c.at,
                                "ssl-enum-ciphers: cipher <table> without <elem key=\"name\">"
                                    .to_string(),
                            )
                        })?;
                        let suite = offered_suite(name);
                        if let Some(kex) = c.elem("kex_info") {
                            let ecdhe = suites::by_name(&suite.iana)
                                .map(|s| s.is_ecdhe() || s.is_tls13())
                                .unwrap_or(false)
                                || suite.iana.starts_with("TLS_ECDH_anon_");
                            let dhe = suites::by_name(&suite.iana).is_some_and(|s| s.is_dhe());
                            if dhe {
                                if let Some(bits) = kex
                                    .strip_prefix("dh ")
                                    .and_then(|b| b.trim().parse::<u32>().ok())
                                {
                                    ev.dhe_bits = Some(ev.dhe_bits.map_or(bits, |b| b.min(bits)));
                                }
                            } else if ecdhe {
                                if let Some(g) = kex_group(kex) {
                                    if !groups_seen.contains(&g) {
                                        groups_seen.push(g);
                                    }
                                }
                            }
                        }
                        if !offered.contains(&suite) {
                            offered.push(suite);
                        }
                    }
                }
                if let Some(comp) = pt.table("compressors") {
                    for item in comp.items() {
                        if let Value::Elem { text, .. } = item {
                            let on = text.trim() != "NULL";
                            compression = Some(compression.unwrap_or(false) || on);
                        }
                    }
                }
                let server_order = match pt.elem("cipher preference") {
                    Some("server") => Some(true),
                    Some("client") => Some(false),
                    _ => None,
                };
                ev.protocols.push(ProtocolSupport {
                    protocol,
                    offered: true,
                    suites: offered,
                    server_order,
                });
            }
            if !ev.protocols.is_empty() {
                found = true;
                for p in tested {
                    if !ev.protocols.iter().any(|s| s.protocol == *p) {
                        ev.protocols.push(ProtocolSupport {
                            protocol: *p,
                            offered: false,
                            suites: Vec::new(),
                            server_order: None,
                        });
                    }
                }
                ev.protocols.sort_by_key(|p| p.protocol);
                ev.groups = (!groups_seen.is_empty()).then_some(groups_seen);
                ev.compression = compression;
            }
        }
        if let Some((node, t)) = cert {
            if let Some(Value::Elem { text, at }) = t.get("pem") {
                let der = pem_leaf(text).ok_or_else(|| {
                    self.invalid_at(
                        *at,
                        "ssl-cert: <elem key=\"pem\"> is not a PEM certificate".to_string(),
                    )
                })?;
                ev.chain = vec![der];
                found = true;
            } else if !t.entries.is_empty() {
                return Err(self.invalid(
                    *node,
                    "ssl-cert: output without <elem key=\"pem\">".to_string(),
                ));
            }
        }
        Ok(found.then_some(ev))
    }
}

pub(super) fn value_at(v: &Value) -> usize {
    match v {
        Value::Elem { at, .. } => *at,
        Value::Table(t) => t.at,
    }
}

/// First `CERTIFICATE` block of a PEM text, as DER.
pub(super) fn pem_leaf(pem: &str) -> Option<Vec<u8>> {
    let mut reader = pem.as_bytes();
    let der = rustls_pemfile::certs(&mut reader).next()?.ok()?;
    let bytes = der.as_ref().to_vec();
    (!bytes.is_empty()).then_some(bytes)
}

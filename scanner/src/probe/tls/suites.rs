//! The IANA cipher suite registry (generated data in `iana_suites.txt`) and
//! the policy classes each suite falls into.
//!
//! Classes are derived from the IANA name, which encodes key exchange,
//! authentication, bulk cipher and MAC by construction; that keeps a policy
//! like "no CBC-SHA1" correct for suites nobody listed by hand.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::evidence::{CipherClass, OfferedSuite};

/// One registry entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    pub id: u16,
    pub iana: &'static str,
    pub openssl: Option<&'static str>,
}

impl Suite {
    /// TLS 1.3 suites name no key exchange and are only valid in TLS 1.3.
    pub fn is_tls13(&self) -> bool {
        !self.iana.contains("_WITH_")
    }

    /// Uses an ECDHE key exchange (so `supported_groups` matters).
    pub fn is_ecdhe(&self) -> bool {
        self.iana.starts_with("TLS_ECDHE_")
    }

    /// Uses a finite-field DHE key exchange (so the server sends a prime).
    pub fn is_dhe(&self) -> bool {
        self.iana.starts_with("TLS_DHE_") || self.iana.starts_with("TLS_DH_anon_")
    }

    /// Policy classes of this suite.
    pub fn classes(&self) -> Vec<CipherClass> {
        classes_of(self.iana)
    }

    pub fn offered(&self) -> OfferedSuite {
        OfferedSuite {
            id: self.id,
            iana: self.iana.to_string(),
            openssl: self.openssl.map(str::to_string),
            classes: self.classes(),
        }
    }
}

struct Registry {
    suites: Vec<Suite>,
    by_id: HashMap<u16, usize>,
    by_name: HashMap<&'static str, usize>,
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut suites = Vec::new();
        for line in include_str!("iana_suites.txt").lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut f = line.split_whitespace();
            let (Some(id), Some(iana), Some(ossl)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(id) = u16::from_str_radix(id, 16) else {
                continue;
            };
            suites.push(Suite {
                id,
                iana,
                openssl: (ossl != "-").then_some(ossl),
            });
        }
        let by_id = suites.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let mut by_name = HashMap::new();
        for (i, s) in suites.iter().enumerate() {
            by_name.insert(s.iana, i);
            if let Some(o) = s.openssl {
                by_name.insert(o, i);
            }
        }
        Registry {
            suites,
            by_id,
            by_name,
        }
    })
}

/// Every registered suite, by code point.
pub fn all() -> &'static [Suite] {
    &registry().suites
}

pub fn by_id(id: u16) -> Option<&'static Suite> {
    let r = registry();
    r.by_id.get(&id).map(|&i| &r.suites[i])
}

/// Looks a suite up by its IANA or its OpenSSL name.
pub fn by_name(name: &str) -> Option<&'static Suite> {
    let r = registry();
    r.by_name.get(name).map(|&i| &r.suites[i])
}

/// The evidence entry for a code point; unregistered code points (a server
/// may pick anything) are kept with a synthetic name rather than dropped.
pub fn offered(id: u16) -> OfferedSuite {
    match by_id(id) {
        Some(s) => s.offered(),
        None => OfferedSuite {
            id,
            iana: format!("UNKNOWN_0x{id:04X}"),
            openssl: None,
            classes: Vec::new(),
        },
    }
}

/// Policy classes implied by an IANA suite name.
pub fn classes_of(iana: &str) -> Vec<CipherClass> {
    let mut c = Vec::new();
    let (kx, bulk) = match iana.split_once("_WITH_") {
        Some((kx, bulk)) => (kx.trim_start_matches("TLS_"), bulk),
        None => ("TLS13", iana.trim_start_matches("TLS_")),
    };
    if bulk.starts_with("NULL") || matches!(bulk, "SHA256_SHA256" | "SHA384_SHA384") {
        c.push(CipherClass::Null);
    }
    if kx.contains("EXPORT") || bulk.contains("_40_") || bulk.contains("DES40") {
        c.push(CipherClass::Export);
    }
    if kx.contains("anon") || kx == "NULL" {
        c.push(CipherClass::Anonymous);
    }
    if bulk.starts_with("RC4") {
        c.push(CipherClass::Rc4);
    }
    if bulk.starts_with("DES") {
        c.push(CipherClass::Des);
    }
    if bulk.starts_with("3DES") {
        c.push(CipherClass::TripleDes);
    }
    if bulk.contains("_CBC") {
        c.push(CipherClass::Cbc);
        if bulk.ends_with("_SHA") {
            c.push(CipherClass::CbcSha1);
        }
    }
    let forward_secret = kx == "TLS13"
        || kx.starts_with("DHE_")
        || kx.starts_with("ECDHE_")
        || kx.starts_with("PSK_DHE")
        || kx.starts_with("SRP_")
        || kx == "ECCPWD";
    if !forward_secret {
        c.push(CipherClass::NoForwardSecrecy);
    }
    if ["GCM", "CCM", "POLY1305", "MGM"]
        .iter()
        .any(|m| bulk.contains(m))
    {
        c.push(CipherClass::Aead);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_complete_and_consistent() {
        assert!(all().len() > 340, "{}", all().len());
        let s = by_id(0xC02F).unwrap();
        assert_eq!(s.iana, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256");
        assert_eq!(s.openssl, Some("ECDHE-RSA-AES128-GCM-SHA256"));
        assert_eq!(by_name("ECDHE-RSA-AES128-GCM-SHA256").unwrap().id, 0xC02F);
        assert!(by_id(0x1301).unwrap().is_tls13());
        assert!(by_id(0x00FF).is_none(), "signalling values are not suites");
        assert_eq!(offered(0xEEEE).iana, "UNKNOWN_0xEEEE");
    }

    #[test]
    fn classes_follow_the_name() {
        use CipherClass::*;
        assert_eq!(
            classes_of("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            vec![Aead]
        );
        assert_eq!(classes_of("TLS_AES_256_GCM_SHA384"), vec![Aead]);
        assert_eq!(
            classes_of("TLS_RSA_WITH_AES_128_CBC_SHA"),
            vec![Cbc, CbcSha1, NoForwardSecrecy]
        );
        assert_eq!(
            classes_of("TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
            vec![TripleDes, Cbc, CbcSha1, NoForwardSecrecy]
        );
        assert_eq!(classes_of("TLS_ECDHE_RSA_WITH_RC4_128_SHA"), vec![Rc4]);
        assert_eq!(
            classes_of("TLS_RSA_WITH_NULL_SHA256"),
            vec![Null, NoForwardSecrecy]
        );
        assert!(classes_of("TLS_RSA_EXPORT_WITH_RC4_40_MD5").contains(&Export));
        assert!(classes_of("TLS_DH_anon_WITH_AES_128_CBC_SHA").contains(&Anonymous));
        assert_eq!(classes_of("TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"), vec![Cbc]);
    }
}

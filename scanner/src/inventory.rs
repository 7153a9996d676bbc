//! `inventory.yaml`: the agency systems to audit, each with its declared
//! security level (Decree 85/2016, levels 1–5) and the endpoints it exposes.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use yamlconf::ConfigError;

/// What kind of agency runs a system; reports summarise by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgencyKind {
    Ministry,
    Province,
    Enterprise,
    Telco,
}

impl AgencyKind {
    pub fn name(self) -> &'static str {
        match self {
            AgencyKind::Ministry => "ministry",
            AgencyKind::Province => "province",
            AgencyKind::Enterprise => "enterprise",
            AgencyKind::Telco => "telco",
        }
    }
}

/// What an endpoint speaks, which decides the controls that apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// HTTP over TLS: TLS, certificate and HTTP header controls.
    Https,
    /// Another protocol over TLS: TLS and certificate controls.
    Tls,
    Ssh,
    Other,
}

impl ServiceKind {
    pub fn is_tls(self) -> bool {
        matches!(self, ServiceKind::Https | ServiceKind::Tls)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub service: ServiceKind,
    /// Name the certificate must match and SNI sends (defaults to `host`).
    pub hostname: String,
}

impl Endpoint {
    pub fn label(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct System {
    pub id: String,
    pub agency: String,
    pub agency_kind: AgencyKind,
    pub name: String,
    pub level: u8,
    pub endpoints: Vec<Endpoint>,
}

impl System {
    /// Distinct hosts, in inventory order.
    pub fn hosts(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for e in &self.endpoints {
            if !seen.contains(&e.host) {
                seen.push(e.host.clone());
            }
        }
        seen
    }
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub systems: Vec<System>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    systems: Vec<Spanned<RawSystem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    id: Spanned<String>,
    agency: String,
    agency_kind: AgencyKind,
    name: String,
    level: Spanned<u8>,
    endpoints: Vec<Spanned<RawEndpoint>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: Spanned<String>,
    service: ServiceKind,
    #[serde(default)]
    hostname: Option<String>,
}

/// Splits `host:port` / `[v6]:port`.
pub fn split_address(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        s.rsplit_once(':')?
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some((host.to_string(), port))
}

impl Inventory {
    pub fn load(file: &Path) -> Result<Inventory, ConfigError> {
        let raw: RawInventory = yamlconf::load(file)?;
        let mut ids = HashSet::new();
        let mut systems = Vec::new();
        for s in raw.systems {
            let s = s.value;
            let id = &s.id;
            let valid = !id.value.is_empty()
                && id.value.len() <= 64
                && id
                    .value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return Err(ConfigError::at(
                    file,
                    &id.referenced,
                    format!(
                        "system id {:?}: use 1–64 letters, digits, '-', '_' or '.'",
                        id.value
                    ),
                ));
            }
            if !ids.insert(id.value.clone()) {
                return Err(ConfigError::at(
                    file,
                    &id.referenced,
                    format!("duplicate system id {:?}", id.value),
                ));
            }
            if !(1..=5).contains(&s.level.value) {
                return Err(ConfigError::at(
                    file,
                    &s.level.referenced,
                    format!("security level {} is not one of 1..5", s.level.value),
                ));
            }
            if s.endpoints.is_empty() {
                return Err(ConfigError::at(
                    file,
                    &id.referenced,
                    format!("system {:?} lists no endpoints", id.value),
                ));
            }
            let mut endpoints = Vec::new();
            for e in s.endpoints {
                let e = e.value;
                let Some((host, port)) = split_address(&e.address.value) else {
                    return Err(ConfigError::at(
                        file,
                        &e.address.referenced,
                        format!("address {:?}: expected host:port", e.address.value),
                    ));
                };
                endpoints.push(Endpoint {
                    hostname: e.hostname.unwrap_or_else(|| host.clone()),
                    host,
                    port,
                    service: e.service,
                });
            }
            systems.push(System {
                id: id.value.clone(),
                agency: s.agency,
                agency_kind: s.agency_kind,
                name: s.name,
                level: s.level.value,
                endpoints,
            });
        }
        Ok(Inventory { systems })
    }

    /// The systems of shard `index` of `count` (1-based index), split by a
    /// stable hash of the agency id: shards stay put as the inventory grows,
    /// and all of an agency's systems land in one shard, so each shard can
    /// sign complete per-agency verdicts.
    pub fn shard(self, index: u32, count: u32) -> Inventory {
        use sha2::{Digest, Sha256};
        let systems = self
            .systems
            .into_iter()
            .filter(|s| {
                let h = Sha256::digest(s.agency.as_bytes());
                let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                n % count == index - 1
            })
            .collect();
        Inventory { systems }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Inventory, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("inventory.yaml");
        std::fs::write(&f, text).unwrap();
        Inventory::load(&f)
    }

    const OK: &str = "systems:
  - id: moj-civil
    agency: moj
    agency_kind: ministry
    name: Civil status registry
    level: 3
    endpoints:
      - address: 127.0.0.1:8443
        service: https
        hostname: localhost
      - address: '[::1]:22'
        service: ssh
";

    #[test]
    fn loads_and_defaults_hostname() {
        let inv = load_str(OK).unwrap();
        let s = &inv.systems[0];
        assert_eq!(s.level, 3);
        assert_eq!(s.endpoints[0].hostname, "localhost");
        assert_eq!(s.endpoints[1].host, "::1");
        assert_eq!(s.endpoints[1].hostname, "::1");
        assert_eq!(s.endpoints[1].label(), "[::1]:22");
    }

    #[test]
    fn mistakes_are_located() {
        let e = load_str(&OK.replace("level: 3", "level: 7")).unwrap_err();
        assert_eq!(e.pos.map(|p| p.0), Some(6), "{e}");
        assert!(e.to_string().contains("not one of 1..5"), "{e}");
        let e = load_str(&OK.replace("127.0.0.1:8443", "127.0.0.1")).unwrap_err();
        assert!(e.to_string().contains(":8:18:"), "{e}");
        let e = load_str(&OK.replace("service: ssh", "service: sssh")).unwrap_err();
        assert!(e.pos.is_some(), "{e}");
        let e = load_str(&OK.replace("    name:", "    nmae:")).unwrap_err();
        assert!(e.to_string().contains("nmae"), "{e}");
    }

    #[test]
    fn shards_partition_the_inventory() {
        let mut text = String::from("systems:\n");
        for i in 0..50 {
            text.push_str(&format!(
                "  - {{id: s{i}, agency: a{}, agency_kind: province, name: n, level: 2, endpoints: [{{address: 'h:1', service: tls}}]}}\n",
                i / 2
            ));
        }
        let all = load_str(&text).unwrap();
        let mut ids: Vec<String> = (1..=3)
            .flat_map(|i| all.clone().shard(i, 3).systems.into_iter().map(|s| s.id))
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 50);
        ids.dedup();
        assert_eq!(ids.len(), 50);
        // Systems of one agency never straddle shards.
        for i in 1..=3 {
            let part = all.clone().shard(i, 3);
            for s in &part.systems {
                let siblings = all.systems.iter().filter(|x| x.agency == s.agency).count();
                let here = part.systems.iter().filter(|x| x.agency == s.agency).count();
                assert_eq!(siblings, here);
            }
        }
    }
}

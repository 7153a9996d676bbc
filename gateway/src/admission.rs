//! Admission: an agency may reach the population registry only while it
//! holds a current, passing, correctly signed compliance verdict from
//! popscan — if the configuration says that agency needs one.
//!
//! Verdicts are the per-agency roll-ups popscan writes
//! (`agency-<id>.verdict.json`). The directory is re-read whenever a file in
//! it changes (polled, so it also works on network filesystems and with
//! atomic renames), and each file is verified once per change, not per
//! request. A file that cannot be trusted is never "no opinion": it stands
//! for its agency as a refusal with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use certs::verdict::{Verdict, VerdictResult};
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::registry::{Agency, AgencyKind};
use yamlconf::ConfigError;

/// Which agencies must hold a passing verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    All,
    Kinds(Vec<AgencyKind>),
    Agencies(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub verdicts_dir: PathBuf,
    pub trusted_keys: Vec<PathBuf>,
    pub required: Required,
    pub exempt: Vec<String>,
    /// An expired passing verdict still admits for this long (0 = never).
    pub grace: Duration,
    pub poll_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmission {
    verdicts_dir: String,
    trusted_keys: Vec<String>,
    #[serde(default)]
    require: RawRequire,
    #[serde(default)]
    exempt: Vec<String>,
    #[serde(default)]
    grace_days: u32,
    #[serde(default = "default_poll_ms")]
    poll_interval_ms: u64,
}

fn default_poll_ms() -> u64 {
    2_000
}

#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
enum RawRequire {
    #[default]
    #[serde(skip)]
    Unset,
    Word(String),
    Map(RawRequireMap),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequireMap {
    #[serde(default)]
    kinds: Vec<AgencyKind>,
    #[serde(default)]
    agencies: Vec<String>,
}

impl AdmissionConfig {
    pub fn from_raw(file: &Path, raw: &RawAdmission) -> Result<Self, ConfigError> {
        let rel = |p: &str| yamlconf::resolve(file, p);
        if raw.trusted_keys.is_empty() {
            return Err(ConfigError::new(
                file,
                "admission.trusted_keys: list at least one popscan verdict public key",
            ));
        }
        let required = match &raw.require {
            RawRequire::Unset => Required::All,
            RawRequire::Word(w) if w == "all" => Required::All,
            RawRequire::Word(w) => {
                return Err(ConfigError::new(
                    file,
                    format!("admission.require: {w:?}; expected `all`, {{kinds: [...]}} or {{agencies: [...]}}"),
                ))
            }
            RawRequire::Map(m) => match (m.kinds.is_empty(), m.agencies.is_empty()) {
                (false, true) => Required::Kinds(m.kinds.clone()),
                (true, false) => Required::Agencies(m.agencies.clone()),
                _ => {
                    return Err(ConfigError::new(
                        file,
                        "admission.require: give either `kinds` or `agencies`, not both or neither",
                    ))
                }
            },
        };
        if raw.grace_days > 90 {
            return Err(ConfigError::new(file, "admission.grace_days: at most 90"));
        }
        Ok(AdmissionConfig {
            verdicts_dir: rel(&raw.verdicts_dir),
            trusted_keys: raw.trusted_keys.iter().map(|k| rel(k)).collect(),
            required,
            exempt: raw.exempt.clone(),
            grace: Duration::from_secs(raw.grace_days as u64 * 86_400),
            poll_interval: Duration::from_millis(raw.poll_interval_ms.clamp(100, 60_000)),
        })
    }

    pub fn applies_to(&self, agency: &Agency) -> bool {
        if self.exempt.contains(&agency.id) {
            return false;
        }
        match &self.required {
            Required::All => true,
            Required::Kinds(k) => k.contains(&agency.kind),
            Required::Agencies(a) => a.contains(&agency.id),
        }
    }
}

/// What the verdict directory says about one agency.
#[derive(Debug, Clone)]
enum Standing {
    Verified(Box<Verdict>),
    /// The agency's verdict file exists but cannot be trusted.
    Untrusted(String),
}

#[derive(Debug, Default)]
struct Snapshot {
    by_agency: HashMap<String, Standing>,
    /// (name, modified, length) of every file, to notice changes; `None`
    /// before the first load.
    fingerprint: Option<Vec<(String, Option<SystemTime>, u64)>>,
}

pub struct Admission {
    config: AdmissionConfig,
    keys: Vec<VerifyingKey>,
    state: ArcSwap<Snapshot>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("config", &self.config)
            .finish()
    }
}

fn fingerprint(dir: &Path) -> Vec<(String, Option<SystemTime>, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let m = e.metadata().ok()?;
            Some((name, m.modified().ok(), m.len()))
        })
        .collect();
    v.sort();
    v
}

impl Admission {
    pub fn new(config: AdmissionConfig) -> Result<Self, ConfigError> {
        let keys = config
            .trusted_keys
            .iter()
            .map(|k| {
                certs::signing::load_verifying_key(k)
                    .map_err(|e| ConfigError::new(k, format!("admission key: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !config.verdicts_dir.is_dir() {
            return Err(ConfigError::new(
                &config.verdicts_dir,
                "admission.verdicts_dir is not a directory",
            ));
        }
        let a = Admission {
            config,
            keys,
            state: ArcSwap::from_pointee(Snapshot::default()),
        };
        a.refresh();
        Ok(a)
    }

    /// Re-reads the directory if anything in it changed. Returns whether it did.
    pub fn refresh(&self) -> bool {
        let fp = fingerprint(&self.config.verdicts_dir);
        if self.state.load().fingerprint.as_ref() == Some(&fp) {
            return false;
        }
        let mut by_agency = HashMap::new();
        for (name, _, _) in &fp {
            let Some(agency) = name
                .strip_prefix("agency-")
                .and_then(|n| n.strip_suffix(".verdict.json"))
            else {
                continue;
            };
            let path = self.config.verdicts_dir.join(name);
            let standing = match std::fs::read(&path) {
                Err(e) => Standing::Untrusted(format!("verdict file unreadable: {e}")),
                Ok(bytes) => match certs::verdict::verify(&bytes, &self.keys) {
                    Err(e) => Standing::Untrusted(format!("verdict rejected: {e}")),
                    Ok(v) if v.agency != agency || v.system.is_some() => {
                        Standing::Untrusted(format!(
                            "verdict file {name} holds a verdict for another scope ({})",
                            v.agency
                        ))
                    }
                    Ok(v) => Standing::Verified(Box::new(v)),
                },
            };
            if let Standing::Untrusted(why) = &standing {
                tracing::warn!(agency, file = %path.display(), reason = %why, "untrusted compliance verdict");
            }
            by_agency.insert(agency.to_string(), standing);
        }
        // Only on change: the directory is polled every few seconds.
        tracing::info!(
            dir = %self.config.verdicts_dir.display(),
            agencies = by_agency.len(),
            "compliance verdicts loaded"
        );
        self.state.store(Arc::new(Snapshot {
            by_agency,
            fingerprint: Some(fp),
        }));
        true
    }

    /// `Ok` if the agency may proceed, else the reason it can act on.
    pub fn check(&self, agency: &Agency, now: OffsetDateTime) -> Result<(), String> {
        if !self.config.applies_to(agency) {
            return Ok(());
        }
        let snap = self.state.load();
        match snap.by_agency.get(&agency.id) {
            None => Err(format!(
                "no compliance verdict for agency {}; its systems must pass a popscan audit",
                agency.id
            )),
            Some(Standing::Untrusted(why)) => Err(why.clone()),
            Some(Standing::Verified(v)) => {
                if v.result != VerdictResult::Pass {
                    return Err(v.failure_reason());
                }
                let until = v.valid_until().map_err(|e| e.to_string())?;
                let date = certs::dates::date(until.date());
                if now <= until {
                    Ok(())
                } else if now <= until + self.config.grace {
                    tracing::warn!(agency = %agency.id, expired = %date, "admitting on grace period");
                    Ok(())
                } else {
                    Err(format!("verdict expired {date}"))
                }
            }
        }
    }

    /// Days until each verified passing verdict expires (negative: expired).
    pub fn expiry_days(&self, now: OffsetDateTime) -> Vec<(String, i64)> {
        self.state
            .load()
            .by_agency
            .iter()
            .filter_map(|(a, s)| match s {
                Standing::Verified(v) => v
                    .valid_until()
                    .ok()
                    .map(|u| (a.clone(), (u - now).whole_seconds().div_euclid(86_400))),
                Standing::Untrusted(_) => None,
            })
            .collect()
    }

    pub fn poll_interval(&self) -> Duration {
        self.config.poll_interval
    }
}

/// Polls the verdict directory and refreshes gauges.
pub fn spawn_watcher(
    admission: Arc<Admission>,
    metrics: Arc<crate::metrics::Metrics>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("popgate-verdicts".into())
        .spawn(move || loop {
            admission.refresh();
            let now = OffsetDateTime::now_utc();
            metrics.set_verdict_expiry(&admission.expiry_days(now));
            std::thread::sleep(admission.poll_interval());
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_directory_is_not_reloaded_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let a = Admission::new(AdmissionConfig {
            verdicts_dir: dir.path().to_owned(),
            trusted_keys: Vec::new(),
            required: Required::All,
            exempt: Vec::new(),
            grace: Duration::ZERO,
            poll_interval: Duration::from_millis(10),
        })
        .unwrap();
        // Loaded once at start; polls of the same (empty) directory do nothing.
        assert!(!a.refresh());
        assert!(!a.refresh());
        std::fs::write(dir.path().join("agency-hanoi.verdict.json"), b"{}").unwrap();
        assert!(a.refresh());
        assert!(!a.refresh());
    }
}

//! The audit log: one hash-chained, durable record per request, allowed or
//! refused, written before any response byte reaches the agency.
//!
//! - [`record`]: the record and its line encoding (hash chain, citizen refs).
//! - [`writer`]: the group-commit writer thread, recovery, rotation, seals.
//! - [`segment`]: segment, seal and index files.
//! - [`verify`]: `popgate audit verify`.
//! - [`search`]: `popgate audit search`.
//! - [`store`], [`ship`], [`retention`], [`store_verify`]: the cluster's
//!   audit store in PostgreSQL, how each instance's log gets there, when a
//!   shipped local segment may go, and `audit verify --store`.

pub mod instance;
mod queue;
pub mod record;
pub mod retention;
pub mod search;
pub mod segment;
pub mod ship;
pub mod store;
pub mod store_verify;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use writer::AuditLog;

use yamlconf::ConfigError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit log not writable: {0}")]
    Write(String),
    #[error("audit writer queue is full")]
    Overloaded,
    #[error("audit log damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Config(String),
}

/// When `append` resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the record is written and fdatasync'd (group commit).
    Durable,
    /// After write(2); fdatasync every `flush_interval`. A crash can lose the
    /// records of the last interval — choose this knowingly.
    Relaxed { flush_interval: Duration },
}

/// How much record time the open segment's records after its newest
/// checkpoint may span before `verify` calls the log damaged. Checkpoints
/// follow writes within `checkpoint_interval_ms` (≤ 1 s), so a longer
/// unvouched tail means checkpoints were removed; the slack covers
/// queueing between a record's time and its write, and a crash.
pub const MAX_UNCHECKPOINTED_SPAN: Duration = Duration::from_secs(6);

/// The `audit:` section of `gateway.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditConfig {
    /// This instance's id in the cluster (see [`instance`]); required
    /// with `store`.
    #[serde(default)]
    pub instance: Option<String>,
    /// Ship the log to the cluster's audit store.
    #[serde(default)]
    pub store: Option<store::RawStoreConfig>,
    pub dir: String,
    pub hmac_key: String,
    pub seal_key: String,
    #[serde(default)]
    pub durability: RawDurability,
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_segment_bytes")]
    pub segment_max_bytes: u64,
    #[serde(default = "default_segment_age")]
    pub segment_max_age_s: u64,
    /// How often the chain head of the open segment is signed (when it
    /// moved). At most 1000: this bounds how far back an undetectable
    /// rewrite of the open segment can reach.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawDurability {
    #[default]
    Durable,
    Relaxed,
}

fn default_flush_ms() -> u64 {
    100
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_segment_age() -> u64 {
    3600
}
fn default_checkpoint_ms() -> u64 {
    1000
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub instance: Option<instance::InstanceId>,
    pub store: Option<store::StoreConfig>,
    pub dir: PathBuf,
    pub hmac_key: PathBuf,
    pub seal_key: PathBuf,
    pub durability: Durability,
    pub segment_max_bytes: u64,
    pub segment_max_age: Duration,
    pub checkpoint_interval: Duration,
}

impl AuditConfig {
    /// Resolves paths against the config file's directory and checks the rules that make the log
    /// trustworthy: keys live outside the log directory.
    pub fn from_raw(file: &Path, raw: &RawAuditConfig) -> Result<Self, ConfigError> {
        let rel = |p: &str| yamlconf::resolve(file, p);
        if raw.segment_max_bytes < 4096 || raw.segment_max_age_s == 0 {
            return Err(ConfigError::new(
                file,
                "audit.segment_max_bytes must be ≥ 4096 and audit.segment_max_age_s ≥ 1",
            ));
        }
        if !(10..=1000).contains(&raw.checkpoint_interval_ms) {
            return Err(ConfigError::new(
                file,
                "audit.checkpoint_interval_ms must be between 10 and 1000",
            ));
        }
        if raw.flush_interval_ms == 0 || raw.flush_interval_ms > 60_000 {
            return Err(ConfigError::new(
                file,
                "audit.flush_interval_ms must be between 1 and 60000",
            ));
        }
        let instance = raw
            .instance
            .as_deref()
            .map(instance::InstanceId::parse)
            .transpose()
            .map_err(|e| ConfigError::new(file, format!("audit.instance: {e}")))?;
        let store = raw
            .store
            .as_ref()
            .map(|r| store::StoreConfig::from_raw(r, rel))
            .transpose()
            .map_err(|e| ConfigError::new(file, e))?;
        if store.is_some() && instance.is_none() {
            return Err(ConfigError::new(
                file,
                "audit.store needs audit.instance: every instance's records are keyed by its id in the store",
            ));
        }
        Ok(AuditConfig {
            instance,
            store,
            dir: rel(&raw.dir),
            hmac_key: rel(&raw.hmac_key),
            seal_key: rel(&raw.seal_key),
            durability: match raw.durability {
                RawDurability::Durable => Durability::Durable,
                RawDurability::Relaxed => Durability::Relaxed {
                    flush_interval: Duration::from_millis(raw.flush_interval_ms),
                },
            },
            segment_max_bytes: raw.segment_max_bytes,
            segment_max_age: Duration::from_secs(raw.segment_max_age_s),
            checkpoint_interval: Duration::from_millis(raw.checkpoint_interval_ms),
        })
    }

    /// Creates the directory if needed and refuses keys inside it: whoever
    /// can rewrite the log must not also find the key that would let them
    /// re-seal it or test citizen IDs against it.
    pub fn prepare(&self, file: &Path) -> Result<(), ConfigError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(segment::DIR_MODE);
        }
        builder.create(&self.dir).map_err(|e| {
            ConfigError::new(
                file,
                format!("audit.dir {}: cannot create: {e}", self.dir.display()),
            )
        })?;
        let dir = self.dir.canonicalize().map_err(|e| {
            ConfigError::new(file, format!("audit.dir {}: {e}", self.dir.display()))
        })?;
        for (name, key) in [
            ("audit.hmac_key", &self.hmac_key),
            ("audit.seal_key", &self.seal_key),
        ] {
            let k = key
                .canonicalize()
                .map_err(|e| ConfigError::new(file, format!("{name} {}: {e}", key.display())))?;
            if k.starts_with(&dir) {
                return Err(ConfigError::new(
                    file,
                    format!(
                        "{name} {} is inside audit.dir {}: keep keys outside the log directory",
                        k.display(),
                        dir.display()
                    ),
                ));
            }
        }
        load_hmac_key(&self.hmac_key)
            .map_err(|e| ConfigError::new(&self.hmac_key, e.to_string()))?;
        certs::signing::load_signing_key(&self.seal_key)
            .map_err(|e| ConfigError::new(&self.seal_key, e.to_string()))?;
        Ok(())
    }
}

/// The HMAC key file holds at least 32 bytes as hex (what `pki init` writes).
pub fn load_hmac_key(path: &Path) -> Result<Vec<u8>, AuditError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AuditError::Config(format!("{}: {e}", path.display())))?;
    let key = hex::decode(text.trim())
        .map_err(|_| AuditError::Config(format!("{}: the HMAC key must be hex", path.display())))?;
    if key.len() < 32 {
        return Err(AuditError::Config(format!(
            "{}: the HMAC key must be at least 32 bytes (64 hex digits)",
            path.display()
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests;

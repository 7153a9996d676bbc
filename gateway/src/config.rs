//! `gateway.yaml`: where popgate listens, which certificates it uses, where
//! the registry of agencies lives and where requests go.
//!
//! Every mistake is caught at load time with `file:line:column` so that
//! `popgate check-config` finds it before production does. Relative paths are
//! resolved against the directory of the file that names them, so a config
//! directory can be moved as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::registry::Registry;
use crate::tls::TlsFiles;
use crate::upstream::Upstream;

/// A configuration problem, naming the file and, where known, the line and
/// column: the one error type of every config file (shared with popscan).
pub use yamlconf::ConfigError;

/// The raw YAML shape of `gateway.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    tls: crate::tls::RawTls,
    upstream: crate::upstream::RawUpstream,
    registry: String,
    #[serde(default)]
    threads: Option<usize>,
    audit: crate::audit::RawAuditConfig,
    #[serde(default)]
    quota: Option<RawQuota>,
    #[serde(default)]
    admin: Option<RawAdmin>,
    /// Compliance verdicts popscan signs; see `admission.rs`.
    #[serde(default)]
    admission: Option<crate::admission::RawAdmission>,
    /// How long SIGTERM/SIGINT waits for in-flight requests (default 10 s).
    #[serde(default)]
    drain_timeout_s: Option<u64>,
    /// Header, body, time and connection limits at the edge.
    #[serde(default)]
    limits: crate::edge::RawLimits,
    /// CRLs fetched from distribution points; see `revocation/`.
    #[serde(default)]
    revocation: Option<crate::revocation::RawRevocation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    /// /healthz, /readyz, /metrics. Keep it on loopback or a management network.
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    /// Where daily counters are persisted (default: `quota-state` next to
    /// this file).
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    backend: QuotaBackend,
    #[serde(default)]
    redis: Option<RawRedis>,
    #[serde(default)]
    failure_mode: RawFailureMode,
}

#[derive(Debug, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum QuotaBackend {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawFailureMode {
    #[default]
    Deny,
    Local,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: String,
    #[serde(default = "default_prefix")]
    key_prefix: String,
    #[serde(default = "default_redis_timeout")]
    timeout_ms: u64,
}

fn default_prefix() -> String {
    "popgate:quota:".into()
}
fn default_redis_timeout() -> u64 {
    200
}

/// Cluster-wide quotas through Redis.
#[derive(Debug, Clone)]
pub struct RedisQuota {
    pub url: String,
    pub key_prefix: String,
    pub timeout: Duration,
    pub failure_mode: crate::quota::cluster::FailureMode,
}

/// A validated gateway configuration; all paths absolute or relative to CWD.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub upstream: Upstream,
    pub registry_path: PathBuf,
    pub threads: usize,
    pub audit: crate::audit::AuditConfig,
    pub quota_state_dir: PathBuf,
    pub quota_redis: Option<RedisQuota>,
    pub admin_listen: Option<SocketAddr>,
    pub admission: Option<crate::admission::AdmissionConfig>,
    pub drain_timeout: Duration,
    pub limits: crate::edge::Limits,
    /// CRL fetching, when configured.
    pub crl_fetch: Option<crate::revocation::CrlFetch>,
    /// OCSP for client certificates, when configured.
    pub ocsp: Option<crate::revocation::ocsp::OcspSettings>,
}

impl GatewayConfig {
    /// Loads and validates `gateway.yaml`, without touching the files it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = yamlconf::load(path)?;
        let rel = |p: &str| yamlconf::resolve(path, p);
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            ConfigError::new(
                path,
                format!(
                    "listen: {:?} is not an address:port such as 127.0.0.1:8443",
                    raw.listen
                ),
            )
        })?;
        let upstream = crate::upstream::parse_upstream(path, &raw.upstream)?;
        let threads = raw.threads.unwrap_or(2);
        if threads == 0 || threads > 256 {
            return Err(ConfigError::new(path, "threads: must be between 1 and 256"));
        }
        let crl_fetch = match raw.revocation.as_ref().and_then(|r| r.crl.as_ref()) {
            Some(c) => Some(crate::revocation::CrlFetch::from_raw(path, c)?),
            None => None,
        };
        let mut tls = TlsFiles::from_raw(path, &raw.tls);
        tls.crl_cache = crl_fetch.as_ref().map(|c| c.cache_dir.clone());
        tls.revocation_grace = match &raw.revocation {
            Some(r) => crate::revocation::grace(path, r)?,
            None => None,
        };
        Ok(GatewayConfig {
            source: path.to_owned(),
            listen,
            tls,
            upstream,
            registry_path: rel(&raw.registry),
            threads,
            audit: crate::audit::AuditConfig::from_raw(path, &raw.audit)?,
            quota_state_dir: rel(raw
                .quota
                .as_ref()
                .and_then(|q| q.state_dir.as_deref())
                .unwrap_or("quota-state")),
            quota_redis: redis_quota(path, raw.quota.as_ref())?,
            admin_listen: match &raw.admin {
                Some(a) => Some(a.listen.parse().map_err(|_| {
                    ConfigError::new(
                        path,
                        format!(
                            "admin.listen: {:?} is not an address:port such as 127.0.0.1:9443",
                            a.listen
                        ),
                    )
                })?),
                None => None,
            },
            admission: match &raw.admission {
                Some(a) => Some(crate::admission::AdmissionConfig::from_raw(path, a)?),
                None => None,
            },
            drain_timeout: Duration::from_secs(match raw.drain_timeout_s {
                Some(s) if s == 0 || s > 3600 => {
                    return Err(ConfigError::new(path, "drain_timeout_s: must be 1..3600"))
                }
                Some(s) => s,
                None => 10,
            }),
            limits: crate::edge::Limits::from_raw(path, &raw.limits)?,
            crl_fetch,
            ocsp: match raw.revocation.as_ref().and_then(|r| r.ocsp.as_ref()) {
                Some(o) => Some(crate::revocation::ocsp_settings(path, o)?),
                None => None,
            },
        })
    }

    /// Everything `check-config` verifies: the config, the registry, and that
    /// every certificate, key and CRL file exists and parses.
    pub fn check(&self) -> Result<(Registry, crate::tls::TlsMaterial), ConfigError> {
        let registry = Registry::load(&self.registry_path)?;
        let material = crate::tls::TlsMaterial::load(&self.tls)?;
        self.audit.prepare(&self.source)?;
        Ok((registry, material))
    }
}

fn redis_quota(path: &Path, q: Option<&RawQuota>) -> Result<Option<RedisQuota>, ConfigError> {
    let Some(q) = q.filter(|q| q.backend == QuotaBackend::Redis) else {
        return Ok(None);
    };
    let r = q.redis.as_ref().ok_or_else(|| {
        ConfigError::new(
            path,
            "quota.backend is redis but quota.redis.url is missing",
        )
    })?;
    if !r.url.starts_with("redis://") {
        return Err(ConfigError::new(
            path,
            format!("quota.redis.url {:?} must start with redis://", r.url),
        ));
    }
    Ok(Some(RedisQuota {
        url: r.url.clone(),
        key_prefix: r.key_prefix.clone(),
        timeout: Duration::from_millis(r.timeout_ms.clamp(10, 10_000)),
        failure_mode: match q.failure_mode {
            RawFailureMode::Deny => crate::quota::cluster::FailureMode::Deny,
            RawFailureMode::Local => crate::quota::cluster::FailureMode::Local,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "popgate-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const GOOD: &str = "listen: 127.0.0.1:8443\ntls:\n  cert: s.pem\n  key: s.key\n  client_ca: ca.pem\n  crls: [crl.pem]\nupstream:\n  url: http://127.0.0.1:8080\nregistry: agencies.yaml\naudit:\n  dir: log\n  hmac_key: k/h.key\n  seal_key: k/s.key\n";

    #[test]
    fn good_config_resolves_paths_relative_to_the_file() {
        let d = tmp();
        let p = write(&d, "g.yaml", GOOD);
        let c = GatewayConfig::load(&p).unwrap();
        assert_eq!(c.tls.cert, d.join("s.pem"));
        assert_eq!(c.tls.crls, vec![d.join("crl.pem")]);
        assert_eq!(c.upstream.port, 8080);
        assert!(!c.upstream.tls);
        assert_eq!(c.upstream.read_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_field_is_located() {
        let d = tmp();
        let p = write(
            &d,
            "bad.yaml",
            &GOOD.replace("registry:", "registri: x\nregistry:"),
        );
        let e = GatewayConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.yaml:9:1: unknown field `registri`"), "{e}");
        assert!(e.contains("registri"), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let d = tmp();
        let p = write(
            &d,
            "bad2.yaml",
            &GOOD.replace(
                "url: http://127.0.0.1:8080",
                "url: http://127.0.0.1:8080\n  read_timeout_ms: soon",
            ),
        );
        let e = GatewayConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad2.yaml:9:"), "{e}");
    }

    #[test]
    fn bad_upstream_and_listen_are_explained() {
        let d = tmp();
        let p = write(
            &d,
            "u.yaml",
            &GOOD.replace("http://127.0.0.1:8080", "ftp://x"),
        );
        let e = GatewayConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("upstream.url"), "{e}");
        let p = write(&d, "l.yaml", &GOOD.replace("127.0.0.1:8443", "localhost"));
        let e = GatewayConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
    }
}

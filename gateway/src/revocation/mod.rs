//! Revocation that runs itself: the CRLs agencies are judged by are fetched
//! from their distribution points, checked, cached on disk and swapped in
//! without a restart.
//!
//! - [`crl`]: what a fetched CRL must be before it is believed.
//! - [`fetch`]: the fetcher thread, its schedule and its metrics.
//!
//! Fetched CRLs land in `revocation.crl.cache_dir`; the TLS material loads
//! them beside the configured `tls.crls` (the newest CRL of each issuer
//! wins), and the reload watcher notices the directory change, so a new
//! CRL takes effect like an edited CRL file: new handshakes are judged by
//! it and already-open connections of a certificate it revokes lose access.

pub mod crl;
pub mod fetch;
pub mod ocsp;
pub mod responder;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use yamlconf::ConfigError;

/// The `revocation:` section of `gateway.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    pub crl: Option<RawCrlFetch>,
    /// OCSP for client certificates that name a responder (or all, with
    /// `responder`).
    pub ocsp: Option<RawOcsp>,
    /// When no current status can be had (every CRL of an issuer past its
    /// nextUpdate): `closed` refuses (the default), `grace` admits for at
    /// most `grace_s` past it, logged and counted.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    pub grace_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    #[default]
    Closed,
    Grace,
}

/// How long a stale status still admits: `None` is fail closed.
pub fn grace(file: &Path, raw: &RawRevocation) -> Result<Option<Duration>, ConfigError> {
    match (raw.on_unavailable, raw.grace_s) {
        (OnUnavailable::Closed, None) => Ok(None),
        (OnUnavailable::Closed, Some(_)) => Err(ConfigError::new(
            file,
            "revocation.grace_s is set but on_unavailable is closed: set on_unavailable: grace, or remove grace_s",
        )),
        (OnUnavailable::Grace, Some(s)) if (60..=7 * 86_400).contains(&s) => {
            Ok(Some(Duration::from_secs(s)))
        }
        (OnUnavailable::Grace, _) => Err(ConfigError::new(
            file,
            "revocation.on_unavailable: grace needs revocation.grace_s between 60 and 604800 (7 days)",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCrlFetch {
    /// Also fetch the CRLs named by the CRL distribution points of the CA
    /// bundle's certificates and of agency certificates seen in handshakes.
    #[serde(default = "yes")]
    pub distribution_points: bool,
    /// CRL URLs to fetch whatever the certificates say.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Fetch each CRL at least this often (and by half-way to its
    /// nextUpdate at the latest): the longest a revocation at the CA can
    /// take to reach popgate.
    #[serde(default = "default_refresh")]
    pub refresh_s: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Where fetched CRLs are kept (they serve a restart while the
    /// distribution point is down). Default `revocation-cache` next to
    /// the config.
    #[serde(default)]
    pub cache_dir: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_refresh() -> u64 {
    300
}
fn default_timeout() -> u64 {
    5000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOcsp {
    /// Ask this responder for every certificate instead of the one its
    /// Authority Information Access names.
    pub responder: Option<String>,
    #[serde(default = "default_ocsp_timeout")]
    pub timeout_ms: u64,
    /// How long an answer that gives no nextUpdate is reused.
    #[serde(default = "default_max_age")]
    pub max_age_s: u64,
}

fn default_ocsp_timeout() -> u64 {
    3000
}
fn default_max_age() -> u64 {
    3600
}

/// `revocation.ocsp`, checked.
pub fn ocsp_settings(file: &Path, raw: &RawOcsp) -> Result<ocsp::OcspSettings, ConfigError> {
    if let Some(u) = &raw.responder {
        fetch::parse_url(u).map_err(|e| {
            ConfigError::new(file, format!("revocation.ocsp.responder: {u:?}: {e}"))
        })?;
    }
    if !(100..=30_000).contains(&raw.timeout_ms) {
        return Err(ConfigError::new(
            file,
            "revocation.ocsp.timeout_ms must be between 100 and 30000",
        ));
    }
    if !(10..=7 * 86_400).contains(&raw.max_age_s) {
        return Err(ConfigError::new(
            file,
            "revocation.ocsp.max_age_s must be between 10 and 604800",
        ));
    }
    Ok(ocsp::OcspSettings {
        responder: raw.responder.clone(),
        timeout: Duration::from_millis(raw.timeout_ms),
        max_age: Duration::from_secs(raw.max_age_s),
    })
}

#[derive(Debug, Clone)]
pub struct CrlFetch {
    pub distribution_points: bool,
    pub urls: Vec<String>,
    pub refresh: Duration,
    pub timeout: Duration,
    pub cache_dir: PathBuf,
}

impl CrlFetch {
    pub fn from_raw(file: &Path, raw: &RawCrlFetch) -> Result<Self, ConfigError> {
        for u in &raw.urls {
            fetch::parse_url(u)
                .map_err(|e| ConfigError::new(file, format!("revocation.crl.urls: {u:?}: {e}")))?;
        }
        if !(5..=86_400).contains(&raw.refresh_s) {
            return Err(ConfigError::new(
                file,
                "revocation.crl.refresh_s must be between 5 and 86400",
            ));
        }
        if !(100..=60_000).contains(&raw.timeout_ms) {
            return Err(ConfigError::new(
                file,
                "revocation.crl.timeout_ms must be between 100 and 60000",
            ));
        }
        if raw.urls.is_empty() && !raw.distribution_points {
            return Err(ConfigError::new(
                file,
                "revocation.crl: no urls and distribution_points: false leaves nothing to fetch",
            ));
        }
        Ok(CrlFetch {
            distribution_points: raw.distribution_points,
            urls: raw.urls.clone(),
            refresh: Duration::from_secs(raw.refresh_s),
            timeout: Duration::from_millis(raw.timeout_ms),
            cache_dir: yamlconf::resolve(
                file,
                raw.cache_dir.as_deref().unwrap_or("revocation-cache"),
            ),
        })
    }
}

/// The `http://` URIs in a certificate's CRL distribution points.
pub fn distribution_points(cert_der: &[u8]) -> Vec<String> {
    use der::Decode;
    use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
    use x509_cert::ext::pkix::CrlDistributionPoints;
    const CDP: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.31");
    let Ok(cert) = x509_cert::Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != CDP {
            continue;
        }
        let Ok(points) = CrlDistributionPoints::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for dp in points.0 {
            if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
                for n in names {
                    if let GeneralName::UniformResourceIdentifier(uri) = n {
                        let uri = uri.to_string();
                        if uri.starts_with("http://") && !out.contains(&uri) {
                            out.push(uri);
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(yaml: &str) -> RawRevocation {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn revocation_settings_that_cannot_work_are_config_errors() {
        let f = Path::new("gateway.yaml");
        let err = |yaml: &str| -> String {
            let r = raw(yaml);
            let e = match r.crl.as_ref().map(|c| CrlFetch::from_raw(f, c)) {
                Some(Err(e)) => e,
                _ => grace(f, &r).unwrap_err(),
            };
            e.to_string()
        };
        assert!(err("crl: {urls: ['https://ca/crl']}").contains("only http://"));
        assert!(err("crl: {urls: ['http://ca/crl'], refresh_s: 1}").contains("refresh_s"));
        assert!(err("crl: {distribution_points: false}").contains("nothing to fetch"));
        assert!(err("on_unavailable: grace").contains("grace_s"));
        assert!(err("grace_s: 600").contains("on_unavailable is closed"));
        assert_eq!(
            grace(f, &raw("on_unavailable: grace\ngrace_s: 600")).unwrap(),
            Some(Duration::from_secs(600))
        );
        assert_eq!(grace(f, &raw("{}")).unwrap(), None);
        let ok = CrlFetch::from_raw(f, raw("crl: {}").crl.as_ref().unwrap()).unwrap();
        assert!(ok.distribution_points && ok.cache_dir.ends_with("revocation-cache"));
    }

    #[test]
    fn the_dev_pki_names_its_crl_in_the_certificates_it_issues() {
        let dir = tempfile::tempdir().unwrap();
        let pki = certs::pki::DevPki::create(dir.path()).unwrap();
        let leaf = pki
            .issue_agency(
                &certs::pki::AgencySubject {
                    id: "hanoi".into(),
                    name: "Hà Nội".into(),
                },
                30,
            )
            .unwrap();
        assert_eq!(
            distribution_points(&leaf.der),
            vec![certs::pki::DEV_CRL_URL.to_owned()]
        );
        assert!(distribution_points(b"not a certificate").is_empty());
    }
}

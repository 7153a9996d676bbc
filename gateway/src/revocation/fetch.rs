//! The CRL fetcher: one thread that keeps a fresh, checked copy of every
//! CRL popgate needs in the cache directory.
//!
//! Each source is fetched at least every `refresh_s`, and by half-way from
//! now to its CRL's nextUpdate at the latest, with ±10 % jitter so a fleet
//! does not fetch in step. A failure (unreachable, HTTP error, a body that
//! is not a CRL, a CRL that fails [`super::crl::check`] or is older than
//! the one held) keeps the last good CRL, counts the failure, and retries
//! after 5 s, doubling up to `refresh_s`. The last good CRL keeps judging
//! until its own nextUpdate; after that the verifier refuses its issuer's
//! certificates (fail closed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::crl::{self, CrlFacts};
use super::CrlFetch;

/// Bodies larger than this are not CRLs popgate will hold in memory.
const MAX_CRL_BYTES: usize = 64 << 20;
const FIRST_RETRY: Duration = Duration::from_secs(5);

/// `http://host[:port]/path` → (host, port, path and query).
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// distribution points are fetched (RFC 5280 §4.2.1.13: a CRL is signed, it needs no TLS, and https would depend on revocation itself)".into());
    }
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    Ok((host, uri.port_u16().unwrap_or(80), path))
}

/// Where the CRL fetched from `url` is cached.
pub fn cache_file(dir: &Path, url: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(url.as_bytes()));
    dir.join(format!("crl-{}.pem", &h[..16]))
}

/// Metrics of the fetcher, by source URL (from configuration and from
/// CA-signed certificates: bounded).
#[derive(Clone)]
pub struct FetchMetrics {
    pub fetches: prometheus::IntCounterVec,
    pub age: prometheus::IntGaugeVec,
    pub revoked: prometheus::IntGaugeVec,
}

impl FetchMetrics {
    pub fn new() -> Self {
        use prometheus::Opts;
        FetchMetrics {
            fetches: prometheus::IntCounterVec::new(
                Opts::new(
                    "popgate_revocation_crl_fetches_total",
                    "CRL fetches by source and result (ok, unchanged, unreachable, http_error, rejected)",
                ),
                &["url", "result"],
            )
            .expect("static metric definition"),
            age: prometheus::IntGaugeVec::new(
                Opts::new(
                    "popgate_revocation_crl_age_seconds",
                    "Seconds since the thisUpdate of the CRL held from each source",
                ),
                &["url"],
            )
            .expect("static metric definition"),
            revoked: prometheus::IntGaugeVec::new(
                Opts::new(
                    "popgate_revocation_crl_revoked_certificates",
                    "Certificates listed as revoked in the CRL held from each source",
                ),
                &["url"],
            )
            .expect("static metric definition"),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.fetches.clone()),
            Box::new(self.age.clone()),
            Box::new(self.revoked.clone()),
        ]
    }
}

impl Default for FetchMetrics {
    fn default() -> Self {
        Self::new()
    }
}

struct Source {
    due: Instant,
    failures: u32,
    held: Option<CrlFacts>,
}

struct Shared {
    sources: Mutex<BTreeMap<String, Source>>,
}

/// Handle to the fetcher: more sources can be added while it runs.
#[derive(Clone)]
pub struct CrlFetcher {
    shared: Arc<Shared>,
    distribution_points: bool,
}

impl std::fmt::Debug for CrlFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.shared.sources.lock().map(|s| s.len()).unwrap_or(0);
        write!(f, "CrlFetcher({n} sources)")
    }
}

impl CrlFetcher {
    /// Adds the distribution points of a certificate a CA in the bundle
    /// signed (never of an unverified one: popgate must not fetch URLs a
    /// stranger chose). Cheap when they are known already.
    pub fn learn_from(&self, cert_der: &[u8]) {
        if !self.distribution_points {
            return;
        }
        let urls = super::distribution_points(cert_der);
        if urls.is_empty() {
            return;
        }
        if let Ok(mut s) = self.shared.sources.lock() {
            for u in urls {
                if parse_url(&u).is_ok() && !s.contains_key(&u) {
                    tracing::info!(url = %u, "new CRL distribution point; fetching it");
                    s.insert(
                        u,
                        Source {
                            due: Instant::now(),
                            failures: 0,
                            held: None,
                        },
                    );
                }
            }
        }
    }
}

/// Starts the fetcher: sources are the configured URLs and, if asked, the
/// distribution points of the CA bundle `ca_file`'s certificates.
pub fn spawn(cfg: &CrlFetch, ca_file: &Path, metrics: FetchMetrics) -> std::io::Result<CrlFetcher> {
    std::fs::create_dir_all(&cfg.cache_dir)?;
    let mut sources = BTreeMap::new();
    let mut urls = cfg.urls.clone();
    if cfg.distribution_points {
        for c in read_cas(ca_file) {
            urls.extend(super::distribution_points(c.as_ref()));
        }
    }
    for u in urls {
        sources.entry(u).or_insert(Source {
            due: Instant::now(),
            failures: 0,
            held: None,
        });
    }
    let fetcher = CrlFetcher {
        shared: Arc::new(Shared {
            sources: Mutex::new(sources),
        }),
        distribution_points: cfg.distribution_points,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (shared, cfg, ca_file) = (fetcher.shared.clone(), cfg.clone(), ca_file.to_owned());
    std::thread::Builder::new()
        .name("popgate-crl-fetch".into())
        .spawn(move || rt.block_on(run(&shared, &cfg, &ca_file, &metrics)))?;
    Ok(fetcher)
}

fn read_cas(ca_file: &Path) -> Vec<CertificateDer<'static>> {
    std::fs::read(ca_file)
        .map(|b| {
            CertificateDer::pem_slice_iter(&b)
                .filter_map(Result::ok)
                .collect()
        })
        .unwrap_or_default()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// ±10 % of `d`, from the clock's low bits (no need for a good RNG).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0) as f64
        / 1e9;
    d.mul_f64(0.9 + 0.2 * nanos)
}

async fn run(shared: &Shared, cfg: &CrlFetch, ca_file: &Path, metrics: &FetchMetrics) {
    // What the cache already holds counts as held: a restart must not take
    // back a CRL older than the one it had.
    if let Ok(mut s) = shared.sources.lock() {
        for (url, src) in s.iter_mut() {
            src.held = held(&cache_file(&cfg.cache_dir, url));
        }
    }
    loop {
        let due: Vec<(String, Option<CrlFacts>)> = match shared.sources.lock() {
            Ok(s) => s
                .iter()
                .filter(|(_, src)| src.due <= Instant::now())
                .map(|(u, src)| (u.clone(), src.held.clone()))
                .collect(),
            Err(_) => return,
        };
        for (url, before) in due {
            let outcome = fetch_one(&url, before.as_ref(), cfg, ca_file).await;
            let result = match &outcome {
                Ok(Some(_)) => "ok",
                Ok(None) => "unchanged",
                Err(Failure::Unreachable(_)) => "unreachable",
                Err(Failure::Http(_)) => "http_error",
                Err(Failure::Rejected(_)) => "rejected",
            };
            metrics.fetches.with_label_values(&[&url, result]).inc();
            let Ok(mut s) = shared.sources.lock() else {
                return;
            };
            let Some(src) = s.get_mut(&url) else { continue };
            match outcome {
                Ok(new) => {
                    if let Some(f) = new {
                        tracing::info!(%url, revoked = f.revoked, next_update = f.next_update, "fetched a newer CRL");
                        src.held = Some(f);
                    }
                    src.failures = 0;
                    let until_stale = src
                        .held
                        .as_ref()
                        .map(|f| {
                            Duration::from_secs((f.next_update - now_unix()).max(10) as u64 / 2)
                        })
                        .unwrap_or(cfg.refresh);
                    src.due = Instant::now() + jitter(cfg.refresh.min(until_stale));
                }
                Err(e) => {
                    src.failures += 1;
                    let backoff = FIRST_RETRY
                        .saturating_mul(1 << src.failures.min(16).saturating_sub(1))
                        .min(cfg.refresh);
                    src.due = Instant::now() + jitter(backoff);
                    tracing::warn!(%url, error = %e, retry_in_s = backoff.as_secs(), "CRL fetch failed; keeping the last good CRL");
                }
            }
            if let Some(f) = &src.held {
                metrics
                    .age
                    .with_label_values(&[&url])
                    .set(now_unix() - f.this_update);
                metrics
                    .revoked
                    .with_label_values(&[&url])
                    .set(f.revoked as i64);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The facts of the CRL cached for a source, whatever its age.
fn held(path: &Path) -> Option<CrlFacts> {
    use der::{Decode, Encode};
    let der = crl::to_der(&std::fs::read(path).ok()?).ok()?;
    let list = x509_cert::crl::CertificateList::from_der(&der).ok()?;
    let tbs = list.tbs_cert_list;
    Some(CrlFacts {
        issuer: tbs.issuer.to_der().ok()?,
        this_update: tbs.this_update.to_unix_duration().as_secs() as i64,
        next_update: tbs
            .next_update
            .map(|t| t.to_unix_duration().as_secs() as i64)
            .unwrap_or(i64::MAX),
        number: None,
        revoked: tbs.revoked_certificates.map_or(0, |r| r.len()),
    })
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Http(String),
    #[error("rejected: {0}")]
    Rejected(String),
}

/// Fetches and checks one CRL; `Ok(Some)` when a newer one was cached.
async fn fetch_one(
    url: &str,
    held: Option<&CrlFacts>,
    cfg: &CrlFetch,
    ca_file: &Path,
) -> Result<Option<CrlFacts>, Failure> {
    let body = tokio::time::timeout(cfg.timeout, get(url))
        .await
        .map_err(|_| Failure::Unreachable(format!("no answer within {:?}", cfg.timeout)))??;
    let der = crl::to_der(&body).map_err(|e| Failure::Rejected(e.to_string()))?;
    let facts = crl::check(&der, &read_cas(ca_file), now_unix())
        .map_err(|e| Failure::Rejected(e.to_string()))?;
    if let Some(h) = held {
        crl::not_older(&facts, h).map_err(|e| Failure::Rejected(e.to_string()))?;
        if facts.this_update == h.this_update && facts.revoked == h.revoked {
            return Ok(None);
        }
    }
    let path = cache_file(&cfg.cache_dir, url);
    let text = pem::encode(&pem::Pem::new("X509 CRL", der));
    certs::durable_file::write(&path, text.as_bytes(), false)
        .map_err(|e| Failure::Rejected(format!("cannot cache it at {}: {e}", path.display())))?;
    Ok(Some(facts))
}

async fn get(url: &str) -> Result<Vec<u8>, Failure> {
    let (host, port, path) = parse_url(url).map_err(Failure::Http)?;
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
    tokio::spawn(conn);
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let req = http::Request::get(path)
        .header(http::header::HOST, host_header)
        .header(http::header::USER_AGENT, "popgate")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Http(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    if resp.status() != http::StatusCode::OK {
        return Err(Failure::Http(format!("HTTP {}", resp.status())));
    }
    let body = Limited::new(resp.into_body(), MAX_CRL_BYTES)
        .collect()
        .await
        .map_err(|e| Failure::Http(format!("body: {e}")))?;
    Ok(body.to_bytes().to_vec())
}

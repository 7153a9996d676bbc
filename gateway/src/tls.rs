//! The TLS front door: the server certificate, and the client-certificate
//! verifier that decides, during the handshake, who may even speak HTTP.
//!
//! Verification is rustls' `WebPkiClientVerifier` (chain to the agency CA
//! bundle, validity window, clientAuth EKU, CRLs). We wrap it for two
//! reasons: the inner verifier sits in an `ArcSwap` so CA bundles and CRLs
//! can be replaced without a restart, and on success the verified leaf's
//! identity is remembered under its SHA-256, which is the only per-connection
//! fact pingora hands the request filter (`SslDigest::cert_digest`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use certs::identity::CertIdentity;
use yamlconf::ConfigError;

/// The `tls:` section of `gateway.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
    #[serde(default)]
    pub crls: Vec<String>,
}

/// The files the listener's TLS material comes from, resolved.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub crls: Vec<PathBuf>,
    /// Where fetched CRLs are cached (`revocation.crl.cache_dir`). When
    /// set, revocation is required: with no CRL at all, no agency is
    /// admitted (rustls would otherwise check nothing).
    pub crl_cache: Option<PathBuf>,
    /// `revocation.on_unavailable: grace`: how long past a CRL's nextUpdate
    /// its issuer's certificates are still admitted (counted and logged).
    pub revocation_grace: Option<std::time::Duration>,
}

impl TlsFiles {
    /// Resolves the section's paths against the config file that names them.
    pub fn from_raw(file: &Path, raw: &RawTls) -> Self {
        TlsFiles {
            cert: yamlconf::resolve(file, &raw.cert),
            key: yamlconf::resolve(file, &raw.key),
            client_ca: yamlconf::resolve(file, &raw.client_ca),
            crls: raw
                .crls
                .iter()
                .map(|c| yamlconf::resolve(file, c))
                .collect(),
            crl_cache: None,
            revocation_grace: None,
        }
    }
}

/// Parsed certificate material named by the config.
pub struct TlsMaterial {
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
    pub roots: RootCertStore,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Revocation must be checked: no CRL means no agency is admitted.
    pub require_crls: bool,
    pub grace: Option<std::time::Duration>,
    /// The CA bundle's certificates (issuers, for OCSP requests).
    pub ca_certs: Arc<Vec<CertificateDer<'static>>>,
}

/// The fetched CRLs in the cache: written there only after they were
/// checked (signature, currency); one that no longer parses is skipped
/// with a warning rather than failing every reload.
fn cached_crls(dir: &Path) -> Vec<CertificateRevocationListDer<'static>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    paths.sort();
    for p in paths {
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        for crl in CertificateRevocationListDer::pem_slice_iter(&bytes) {
            match crl {
                Ok(c) if webpki::OwnedCertRevocationList::from_der(c.as_ref()).is_ok() => {
                    out.push(c)
                }
                _ => tracing::warn!(file = %p.display(), "cached CRL does not parse; skipped"),
            }
        }
    }
    out
}

/// One CRL per issuer, the newest (by thisUpdate): a configured file and a
/// fetched copy of the same CRL must not have the older one judge.
fn newest_per_issuer(
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Vec<CertificateRevocationListDer<'static>> {
    use der::{Decode, Encode};
    let mut best: Vec<(Vec<u8>, i64, CertificateRevocationListDer<'static>)> = Vec::new();
    for crl in crls {
        let Ok(list) = x509_cert::crl::CertificateList::from_der(crl.as_ref()) else {
            best.push((Vec::new(), i64::MIN, crl));
            continue;
        };
        let issuer = list.tbs_cert_list.issuer.to_der().unwrap_or_default();
        let at = list.tbs_cert_list.this_update.to_unix_duration().as_secs() as i64;
        match best
            .iter_mut()
            .find(|(i, _, _)| !i.is_empty() && *i == issuer)
        {
            Some(slot) if slot.1 < at => *slot = (issuer, at, crl),
            Some(_) => {}
            None => best.push((issuer, at, crl)),
        }
    }
    best.into_iter().map(|(_, _, c)| c).collect()
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(path, format!("cannot read {what}: {e}")))
}

impl TlsMaterial {
    pub fn load(files: &TlsFiles) -> Result<Self, ConfigError> {
        let server_chain = certs_from_pem(&files.cert, "tls.cert (server certificate chain)")?;
        let key_bytes = read(&files.key, "tls.key")?;
        let server_key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
            ConfigError::new(
                &files.key,
                format!("tls.key: no usable PEM private key: {e}"),
            )
        })?;
        let mut roots = RootCertStore::empty();
        let ca_certs = certs_from_pem(&files.client_ca, "tls.client_ca (agency CA bundle)")?;
        for c in ca_certs.iter().cloned() {
            roots.add(c).map_err(|e| {
                ConfigError::new(
                    &files.client_ca,
                    format!("tls.client_ca: certificate is not a usable trust anchor: {e}"),
                )
            })?;
        }
        let mut crls = Vec::new();
        for path in &files.crls {
            let bytes = read(path, "tls.crls entry")?;
            let mut found = 0;
            for crl in CertificateRevocationListDer::pem_slice_iter(&bytes) {
                let crl = crl.map_err(|e| {
                    ConfigError::new(path, format!("tls.crls: malformed PEM CRL: {e}"))
                })?;
                // Parse now so a broken CRL is a config error, not a
                // handshake failure for every agency later.
                webpki::OwnedCertRevocationList::from_der(crl.as_ref()).map_err(|e| {
                    ConfigError::new(path, format!("tls.crls: CRL does not parse: {e:?}"))
                })?;
                crls.push(crl);
                found += 1;
            }
            if found == 0 {
                return Err(ConfigError::new(
                    path,
                    "tls.crls: file holds no -----BEGIN X509 CRL----- block",
                ));
            }
        }
        if let Some(dir) = &files.crl_cache {
            crls.extend(cached_crls(dir));
        }
        let crls = newest_per_issuer(crls);
        let m = TlsMaterial {
            server_chain,
            server_key,
            roots,
            crls,
            require_crls: files.crl_cache.is_some(),
            grace: files.revocation_grace,
            ca_certs: Arc::new(ca_certs),
        };
        m.certified_key(&files.key)?;
        m.client_verifier(&files.client_ca)?;
        Ok(m)
    }

    fn certified_key(&self, key_path: &Path) -> Result<Arc<CertifiedKey>, ConfigError> {
        let signing = rustls::crypto::ring::sign::any_supported_type(&self.server_key)
            .map_err(|e| ConfigError::new(key_path, format!("tls.key: unsupported key: {e}")))?;
        Ok(Arc::new(CertifiedKey::new(
            self.server_chain.clone(),
            signing,
        )))
    }

    fn trust(&self, ca_path: &Path) -> Result<Trust, ConfigError> {
        let good_until = self
            .crls
            .iter()
            .map(
                |crl| match certs::inspect::crl_next_update_unix(crl.as_ref()) {
                    Ok(t) => t,
                    // Never stale, so no limit from it.
                    Err(certs::inspect::InspectError::NoNextUpdate) => i64::MAX,
                    Err(_) => i64::MIN,
                },
            )
            .fold(i64::MAX, i64::min);
        Ok(Trust {
            ca_certs: self.ca_certs.clone(),
            verifier: self.client_verifier(ca_path)?,
            good_until,
            chain_only: if self.require_crls && self.crls.is_empty() {
                Some(self.client_verifier(ca_path)?)
            } else {
                None
            },
            grace: self.grace.map(|g| {
                use der::{Decode, Encode};
                let next_updates = self
                    .crls
                    .iter()
                    .filter_map(|c| x509_cert::crl::CertificateList::from_der(c.as_ref()).ok())
                    .filter_map(|l| {
                        let issuer = l.tbs_cert_list.issuer.to_der().ok()?;
                        let next = l.tbs_cert_list.next_update?.to_unix_duration().as_secs();
                        Some((issuer, next as i64))
                    })
                    .collect();
                Grace {
                    span: g.as_secs() as i64,
                    next_updates,
                }
            }),
        })
    }

    fn client_verifier(&self, ca_path: &Path) -> Result<Arc<dyn ClientCertVerifier>, ConfigError> {
        let builder = WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots.clone()),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .with_crls(self.crls.clone());
        // A CRL past its nextUpdate no longer proves anything: fail closed,
        // unless a grace is configured (then the verifier checks the age).
        let builder = if self.grace.is_some() {
            builder
        } else {
            builder.enforce_revocation_expiration()
        };
        builder
            .build()
            .map_err(|e| ConfigError::new(ca_path, format!("client verifier: {e}")))
    }

    /// The two pieces popgate's listener is built from: the (reloadable)
    /// server certificate and the agency client-certificate verifier.
    /// Protocol versions (TLS 1.2 and 1.3 only) and ALPN are set by the
    /// listener (`serve`).
    pub fn server_parts(&self, files: &TlsFiles) -> Result<TlsState, ConfigError> {
        let verifier = Arc::new(AgencyCertVerifier::new(
            self.trust(&files.client_ca)?,
            self.roots.subjects(),
        ));
        let resolver = Arc::new(ReloadableCert(ArcSwap::from(
            self.certified_key(&files.key)?,
        )));
        Ok(TlsState {
            resolver,
            verifier,
            expiry: Arc::new(ArcSwap::from_pointee(self.expiry(files))),
        })
    }

    /// When each piece of this material stops working (Unix seconds).
    fn expiry(&self, files: &TlsFiles) -> Vec<Expiry> {
        let mut out = Vec::new();
        if let Some(leaf) = self.server_chain.first() {
            if let Ok(t) = certs::inspect::not_after_unix(leaf.as_ref()) {
                out.push(Expiry {
                    kind: "certificate",
                    name: "server".into(),
                    at_unix: t,
                });
            }
        }
        if let Ok(bytes) = std::fs::read(&files.client_ca) {
            let earliest = CertificateDer::pem_slice_iter(&bytes)
                .filter_map(|c| c.ok())
                .filter_map(|c| certs::inspect::not_after_unix(c.as_ref()).ok())
                .min();
            if let Some(t) = earliest {
                out.push(Expiry {
                    kind: "certificate",
                    name: "client_ca".into(),
                    at_unix: t,
                });
            }
        }
        for (i, crl) in self.crls.iter().enumerate() {
            if let Ok(t) = certs::inspect::crl_next_update_unix(crl.as_ref()) {
                let name = files
                    .crls
                    .get(i)
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| format!("crl{i}"));
                out.push(Expiry {
                    kind: "crl",
                    name,
                    at_unix: t,
                });
            }
        }
        out
    }

    /// Puts this material into service: new handshakes use the new server
    /// certificate, CA bundle and CRLs, and every already-verified
    /// certificate is checked again so a revocation also ends access on
    /// connections that are already open. Returns how many were dropped.
    pub fn apply(&self, files: &TlsFiles, state: &TlsState) -> Result<usize, ConfigError> {
        let verifier = self.trust(&files.client_ca)?;
        let key = self.certified_key(&files.key)?;
        state.resolver.0.store(key);
        state.expiry.store(Arc::new(self.expiry(files)));
        Ok(state.verifier.replace(verifier, self.roots.subjects()))
    }
}

impl TlsState {
    /// The listener's rustls configuration: TLS 1.2 and 1.3, ALPN h2 then
    /// HTTP/1.1, the agency client-certificate verifier, the reloadable
    /// server certificate, and the *server's* cipher suite order (AEAD with
    /// forward secrecy only, strongest first), so no client can steer the
    /// connection to a weaker suite it prefers.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(self.verifier.clone())
        .with_cert_resolver(self.resolver.clone());
        config.ignore_client_order = true;
        // No session resumption: every connection presents its certificate
        // and meets the current CRLs and registry. A resumed TLS 1.3
        // session would carry an identity verified when it was first made.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The reloadable halves of the listener's TLS configuration.
#[derive(Clone)]
pub struct TlsState {
    pub resolver: Arc<ReloadableCert>,
    pub verifier: Arc<AgencyCertVerifier>,
    /// What expires when, for the days-left gauges ops alert on.
    pub expiry: Arc<ArcSwap<Vec<Expiry>>>,
}

#[derive(Debug, Clone)]
pub struct Expiry {
    /// `certificate` (notAfter) or `crl` (nextUpdate).
    pub kind: &'static str,
    /// `server`, `client_ca`, or the CRL's file name.
    pub name: String,
    pub at_unix: i64,
}

fn certs_from_pem(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(path, what)?;
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(&bytes) {
        let c = c.map_err(|e| ConfigError::new(path, format!("{what}: malformed PEM: {e}")))?;
        CertIdentity::from_der(c.as_ref()).map_err(|e| {
            ConfigError::new(path, format!("{what}: certificate #{} {e}", out.len() + 1))
        })?;
        out.push(c);
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            path,
            format!("{what}: no -----BEGIN CERTIFICATE----- block found"),
        ));
    }
    Ok(out)
}

/// Serves the current server certificate; swappable for reloads.
#[derive(Debug)]
pub struct ReloadableCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// How many verified client certificates are remembered. Agencies number in
/// the hundreds of certificates; the bound only stops a flood of distinct
/// valid certificates from growing memory without limit.
const IDENTITY_CACHE_MAX: usize = 50_000;

/// rustls client verifier that records who it verified.
#[derive(Debug)]
pub struct AgencyCertVerifier {
    inner: ArcSwap<Trust>,
    /// The CA names sent in CertificateRequest, from the current bundle.
    /// rustls borrows them from the verifier for the whole handshake, so
    /// each set lives for the rest of the process: a new set is leaked
    /// only when a reload changes the bundle's subjects (an operator
    /// action, a few hundred bytes each), never on an unchanged reload.
    hints: ArcSwap<&'static [DistinguishedName]>,
    verified: Mutex<HashMap<[u8; 32], Verified>>,
    /// Counts handshakes; set once metrics exist.
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// Told the CRL distribution points of certificates the CA signed.
    crl_fetcher: std::sync::OnceLock<crate::revocation::fetch::CrlFetcher>,
}

/// The `reason` label for a client certificate refused in the handshake.
/// Failures rustls decides before calling a verifier (no certificate sent,
/// no common protocol version) are not visible here and not counted.
pub fn failure_reason(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => "unknown_ca",
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => "expired",
            C::Revoked => "revoked",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => "bad_eku",
            C::UnknownRevocationStatus
            | C::ExpiredRevocationList
            | C::ExpiredRevocationListContext { .. } => "crl",
            _ => "other",
        },
        rustls::Error::NoCertificatesPresented => "no_cert",
        _ => "other",
    }
}

/// The CA bundle and CRLs in force, as a verifier, with the time its
/// answers stop holding: the earliest CRL nextUpdate (a CRL past it proves
/// nothing and fails every handshake). Each reload makes a new one.
#[derive(Debug)]
struct Trust {
    verifier: Arc<dyn ClientCertVerifier>,
    /// Unix seconds; `i64::MIN` when a CRL's nextUpdate could not be read,
    /// so nothing verified under it is reused.
    good_until: i64,
    /// Revocation is required and no CRL is held yet: this verifier (the
    /// chain alone) tells a certificate our CA signed from a stranger's,
    /// and every one is refused.
    chain_only: Option<Arc<dyn ClientCertVerifier>>,
    /// `on_unavailable: grace`: each issuer's CRL nextUpdate, and how long
    /// past it its certificates are still admitted.
    grace: Option<Grace>,
    ca_certs: Arc<Vec<CertificateDer<'static>>>,
}

#[derive(Debug)]
struct Grace {
    span: i64,
    next_updates: Vec<(Vec<u8>, i64)>,
}

impl Grace {
    /// Within its CRL's validity: admitted; past it by less than the
    /// grace: admitted on grace (`Ok(true)`); beyond: refused.
    fn judge(&self, leaf: &[u8], now: i64) -> Result<bool, rustls::Error> {
        use der::{Decode, Encode};
        if self.next_updates.is_empty() {
            return Ok(false); // no CRL in force: nothing to be stale
        }
        let issuer = x509_cert::Certificate::from_der(leaf)
            .ok()
            .and_then(|c| c.tbs_certificate.issuer.to_der().ok());
        let next = issuer.and_then(|i| {
            self.next_updates
                .iter()
                .find(|(n, _)| *n == i)
                .map(|(_, t)| *t)
        });
        match next {
            Some(t) if now <= t => Ok(false),
            Some(t) if now <= t + self.span => Ok(true),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ExpiredRevocationList,
            )),
        }
    }
}

/// A certificate this verifier accepted, kept whole so a reload can judge
/// it again under new CRLs.
#[derive(Debug)]
struct Verified {
    identity: Arc<CertIdentity>,
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    /// The trust it was verified under, and until when that verification
    /// stands (the earliest of the trust's limit and the chain's notAfter).
    /// A handshake presenting the same chain under the same trust before
    /// then skips the chain and CRL signature checks — about a fifth of a
    /// new connection's CPU — and still proves its key (CertificateVerify).
    trust: Arc<Trust>,
    good_until: i64,
}

impl Verified {
    /// Whether a handshake at `now` presenting `intermediates` under
    /// `trust` is answered by this earlier verification.
    fn vouches(
        &self,
        trust: &Arc<Trust>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        Arc::ptr_eq(&self.trust, trust)
            && i64::try_from(now.as_secs()).is_ok_and(|t| t < self.good_until)
            && self.intermediates.len() == intermediates.len()
            && self
                .intermediates
                .iter()
                .zip(intermediates)
                .all(|(a, b)| a.as_ref() == b.as_ref())
    }
}

/// Until when a verification of `leaf` + `intermediates` under `trust`
/// stands: the earliest notAfter of the chain and the trust's limit.
/// Unreadable dates give `i64::MIN` (never reused).
fn chain_good_until(trust: &Trust, leaf: &[u8], intermediates: &[CertificateDer<'_>]) -> i64 {
    std::iter::once(leaf)
        .chain(intermediates.iter().map(|c| c.as_ref()))
        .map(|der| certs::inspect::not_after_unix(der).unwrap_or(i64::MIN))
        .fold(trust.good_until, i64::min)
}

impl AgencyCertVerifier {
    fn new(inner: Trust, hints: Vec<DistinguishedName>) -> Self {
        AgencyCertVerifier {
            inner: ArcSwap::from_pointee(inner),
            hints: ArcSwap::from_pointee(&*Box::leak(hints.into_boxed_slice())),
            verified: Mutex::new(HashMap::new()),
            metrics: std::sync::OnceLock::new(),
            crl_fetcher: std::sync::OnceLock::new(),
        }
    }

    /// Revocation is required and no CRL is held: nobody is admitted.
    pub fn holds_no_crl(&self) -> bool {
        self.inner.load().chain_only.is_some()
    }

    /// Lets handshakes tell the CRL fetcher of new distribution points.
    pub fn set_crl_fetcher(&self, f: crate::revocation::fetch::CrlFetcher) {
        let _ = self.crl_fetcher.set(f);
    }

    pub fn set_metrics(&self, m: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(m);
    }

    /// The identity of a certificate this verifier accepted, by the SHA-256
    /// pingora reports for the connection. `None` means "not verified by us"
    /// and must be treated as a refusal.
    /// The verified certificate with this SHA-256 and its issuer's
    /// certificate (from the presented chain or the CA bundle), as DER.
    pub fn leaf_and_issuer(&self, cert_sha256: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        use der::{Decode, Encode};
        let key: [u8; 32] = cert_sha256.try_into().ok()?;
        let (leaf, intermediates) = {
            let map = self.verified.lock().ok()?;
            let v = map.get(&key)?;
            (v.leaf.clone(), v.intermediates.clone())
        };
        let issuer_name = x509_cert::Certificate::from_der(leaf.as_ref())
            .ok()?
            .tbs_certificate
            .issuer
            .to_der()
            .ok()?;
        let trust = self.inner.load();
        let issuer = intermediates
            .iter()
            .chain(trust.ca_certs.iter())
            .find(|c| {
                x509_cert::Certificate::from_der(c.as_ref())
                    .ok()
                    .and_then(|c| c.tbs_certificate.subject.to_der().ok())
                    .is_some_and(|s| s == issuer_name)
            })?;
        Some((leaf.as_ref().to_vec(), issuer.as_ref().to_vec()))
    }

    pub fn identity(&self, cert_sha256: &[u8]) -> Option<Arc<CertIdentity>> {
        let key: [u8; 32] = cert_sha256.try_into().ok()?;
        self.verified
            .lock()
            .ok()?
            .get(&key)
            .map(|v| v.identity.clone())
    }

    /// Swaps in a new inner verifier and forgets every remembered
    /// certificate it no longer accepts. Returns how many were forgotten.
    fn replace(&self, inner: Trust, hints: Vec<DistinguishedName>) -> usize {
        let now = UnixTime::now();
        let current: &[DistinguishedName] = **self.hints.load();
        let same = current.len() == hints.len()
            && current
                .iter()
                .zip(&hints)
                .all(|(a, b)| a.as_ref() == b.as_ref());
        if !same {
            self.hints
                .store(Arc::new(&*Box::leak(hints.into_boxed_slice())));
        }
        let trust = Arc::new(inner);
        self.inner.store(trust.clone());
        let Ok(mut map) = self.verified.lock() else {
            return 0;
        };
        let before = map.len();
        map.retain(|_, v| {
            let ok = trust
                .verifier
                .verify_client_cert(&v.leaf, &v.intermediates, now)
                .is_ok();
            if ok {
                v.good_until = chain_good_until(&trust, &v.leaf, &v.intermediates);
                v.trust = trust.clone();
            }
            ok
        });
        before - map.len()
    }

    fn remember(
        &self,
        der: &[u8],
        intermediates: &[CertificateDer<'_>],
        mut trust: Arc<Trust>,
    ) -> Result<(), rustls::Error> {
        let ident = CertIdentity::from_der(der).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        let key: [u8; 32] = Sha256::digest(der).into();
        let mut map = self
            .verified
            .lock()
            .map_err(|_| rustls::Error::General("identity cache poisoned".into()))?;
        // A reload swaps the trust and then, under this lock, re-judges what
        // is remembered. A chain verified under the old trust and remembered
        // after that pass would escape it (a certificate revoked by the new
        // CRL would keep its identity): judge it under the current trust.
        let current = self.inner.load_full();
        if !Arc::ptr_eq(&current, &trust) {
            current.verifier.verify_client_cert(
                &CertificateDer::from(der),
                intermediates,
                UnixTime::now(),
            )?;
            trust = current;
        }
        if map.len() >= IDENTITY_CACHE_MAX && !map.contains_key(&key) {
            // Evict an arbitrary entry; a live connection's entry being
            // evicted only costs that connection a refusal (fail closed).
            if let Some(k) = map.keys().next().copied() {
                map.remove(&k);
            }
        }
        let good_until = chain_good_until(&trust, der, intermediates);
        map.insert(
            key,
            Verified {
                identity: Arc::new(ident),
                leaf: CertificateDer::from(der.to_vec()),
                intermediates: intermediates
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect(),
                trust,
                good_until,
            },
        );
        Ok(())
    }
}

impl ClientCertVerifier for AgencyCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        **self.hints.load()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let trust = self.inner.load_full();
        let key: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        let reused = self
            .verified
            .lock()
            .map_err(|_| rustls::Error::General("identity cache poisoned".into()))?
            .get(&key)
            .is_some_and(|v| v.vouches(&trust, intermediates, now));
        if reused {
            if let Some(m) = self.metrics.get() {
                m.tls_handshakes.inc();
            }
            return Ok(ClientCertVerified::assertion());
        }
        // A certificate our CA signed names where its issuer's CRL is: the
        // fetcher learns it (from signed certificates only, never from a
        // stranger's). Without any CRL yet, the chain is checked alone and
        // the certificate refused until its CRL is here.
        let unknown =
            || rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownRevocationStatus);
        let learn = || {
            if let Some(f) = self.crl_fetcher.get() {
                f.learn_from(end_entity.as_ref());
            }
        };
        let verified = match &trust.chain_only {
            Some(chain) => chain
                .verify_client_cert(end_entity, intermediates, now)
                .and_then(|_| {
                    learn();
                    Err(unknown())
                }),
            None => {
                let v = trust
                    .verifier
                    .verify_client_cert(end_entity, intermediates, now);
                if v.is_ok() || matches!(&v, Err(e) if *e == unknown()) {
                    learn();
                }
                match (&trust.grace, v) {
                    (Some(g), Ok(ok)) => match g.judge(end_entity.as_ref(), now.as_secs() as i64) {
                        Ok(false) => Ok(ok),
                        Ok(true) => {
                            if let Some(m) = self.metrics.get() {
                                m.revocation_grace_admissions.inc();
                            }
                            tracing::warn!("client certificate admitted on grace: its issuer's CRL is past nextUpdate (revocation.on_unavailable: grace)");
                            Ok(ok)
                        }
                        Err(e) => Err(e),
                    },
                    (_, v) => v,
                }
            }
        };
        if let Some(m) = self.metrics.get() {
            match &verified {
                Ok(_) => m.tls_handshakes.inc(),
                Err(e) => m
                    .tls_handshake_failures
                    .with_label_values(&[failure_reason(e)])
                    .inc(),
            }
        }
        if let Err(e) = &verified {
            tracing::info!(reason = %e, "client certificate refused in handshake");
        }
        let verified = verified?;
        self.remember(end_entity.as_ref(), intermediates, trust)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .load()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .load()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.load().verifier.supported_verify_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn offer_client_auth(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certs::pki::{AgencySubject, DevPki as Pki};

    const DAY: u64 = 86_400;

    fn at(now: UnixTime, days: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.as_secs() + days * DAY))
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        pki: Pki,
        files: TlsFiles,
        state: TlsState,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path()).unwrap();
        let files = TlsFiles {
            cert: pki.server_cert_path(),
            key: pki.server_key_path(),
            client_ca: pki.ca_cert_path(),
            crls: vec![pki.crl_path()],
            crl_cache: None,
            revocation_grace: None,
        };
        let state = TlsMaterial::load(&files)
            .unwrap()
            .server_parts(&files)
            .unwrap();
        Fixture {
            _dir: dir,
            pki,
            files,
            state,
        }
    }

    fn agency(f: &Fixture, id: &str, days: u32) -> (CertificateDer<'static>, PathBuf) {
        let issued = f
            .pki
            .issue_agency(
                &AgencySubject {
                    id: id.into(),
                    name: id.into(),
                },
                days,
            )
            .unwrap();
        (CertificateDer::from(issued.der), issued.cert_path)
    }

    fn vouched(v: &AgencyCertVerifier, leaf: &CertificateDer<'_>, now: UnixTime) -> bool {
        let key: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        let trust = v.inner.load_full();
        v.verified
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|e| e.vouches(&trust, &[], now))
    }

    /// A chain verified once is not checked again (chain and CRL
    /// signatures) on the next handshake, but only while nothing it was
    /// judged on has changed: the certificate's and the CRL's validity,
    /// the presented chain, and the CA bundle and CRLs in force.
    #[test]
    fn a_verified_chain_is_reused_only_while_its_judgement_stands() {
        let f = fixture();
        let v = &f.state.verifier;
        let now = UnixTime::now();
        let (short, _) = agency(&f, "hanoi", 10);
        let (long, long_path) = agency(&f, "hanam", 60);

        assert!(!vouched(v, &short, now));
        v.verify_client_cert(&short, &[], now).unwrap();
        v.verify_client_cert(&long, &[], now).unwrap();
        assert!(vouched(v, &short, now), "the second handshake reuses it");
        assert!(vouched(v, &short, at(now, 9)));

        // Past the certificate's notAfter: verified afresh, and refused.
        assert!(!vouched(v, &short, at(now, 11)));
        let e = v.verify_client_cert(&short, &[], at(now, 11)).unwrap_err();
        assert_eq!(failure_reason(&e), "expired", "{e:?}");

        // Past the CRL's nextUpdate (30 days), though the certificate is
        // still valid: verified afresh, and refused for the stale CRL.
        assert!(vouched(v, &long, at(now, 29)));
        assert!(!vouched(v, &long, at(now, 31)));
        let e = v.verify_client_cert(&long, &[], at(now, 31)).unwrap_err();
        assert_eq!(failure_reason(&e), "crl", "{e:?}");

        // Another presented chain is not the one that was judged.
        let key: [u8; 32] = Sha256::digest(long.as_ref()).into();
        let trust = v.inner.load_full();
        let extra = [CertificateDer::from_pem_file(f.pki.ca_cert_path()).unwrap()];
        assert!(!v.verified.lock().unwrap()[&key].vouches(&trust, &extra, now));

        // A revocation loaded by a reload ends the reuse at once.
        let before_reload = v.inner.load_full();
        f.pki.revoke(&long_path).unwrap();
        TlsMaterial::load(&f.files)
            .unwrap()
            .apply(&f.files, &f.state)
            .unwrap();
        assert!(!vouched(v, &long, now));
        let e = v.verify_client_cert(&long, &[], now).unwrap_err();
        assert_eq!(failure_reason(&e), "revoked", "{e:?}");
        // Others stay verified, under the new trust.
        assert!(vouched(v, &short, now));

        // A handshake verified under the old trust that reaches `remember`
        // only after the reload re-judged the cache is judged again, not
        // remembered with the identity the new CRL revoked.
        let late = v.remember(long.as_ref(), &[], before_reload).unwrap_err();
        assert_eq!(failure_reason(&late), "revoked", "{late:?}");
        let key: [u8; 32] = Sha256::digest(long.as_ref()).into();
        assert!(v.identity(&key).is_none());
    }

    /// With fetched CRLs required (a cache directory) and none there yet,
    /// no agency is admitted; once one lands it judges; and of two CRLs of
    /// one issuer (the configured file, an older copy; the fetched one,
    /// newer) the newer judges.
    #[test]
    fn fetched_crls_are_required_and_the_newest_of_an_issuer_judges() {
        let mut f = fixture();
        let cache = f._dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        let stale_copy = f._dir.path().join("crl-old.pem");
        std::fs::copy(f.pki.crl_path(), &stale_copy).unwrap();
        f.files.crls = vec![];
        f.files.crl_cache = Some(cache.clone());
        let (leaf, leaf_path) = agency(&f, "hanoi", 30);
        let now = UnixTime::now();
        let state = TlsMaterial::load(&f.files)
            .unwrap()
            .server_parts(&f.files)
            .unwrap();
        let e = state
            .verifier
            .verify_client_cert(&leaf, &[], now)
            .unwrap_err();
        assert_eq!(
            e,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownRevocationStatus)
        );

        // The fetched CRL lands (newer, revoking the leaf); the configured
        // file is the older one, from before the revocation.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        f.pki.revoke(&leaf_path).unwrap();
        std::fs::copy(f.pki.crl_path(), cache.join("crl-0.pem")).unwrap();
        f.files.crls = vec![stale_copy];
        TlsMaterial::load(&f.files)
            .unwrap()
            .apply(&f.files, &state)
            .unwrap();
        let e = state
            .verifier
            .verify_client_cert(&leaf, &[], now)
            .unwrap_err();
        assert_eq!(failure_reason(&e), "revoked", "{e:?}");
        let (other, _) = agency(&f, "hanam", 30);
        state.verifier.verify_client_cert(&other, &[], now).unwrap();
    }

    /// `on_unavailable: grace`: past its CRL's nextUpdate a certificate is
    /// still admitted for the grace (counted), then refused; `closed`
    /// refuses at once (a_verified_chain_is_reused_only_while_… shows it).
    #[test]
    fn a_stale_crl_admits_only_within_the_grace() {
        let mut f = fixture();
        f.files.revocation_grace = Some(std::time::Duration::from_secs(2 * DAY));
        let state = TlsMaterial::load(&f.files)
            .unwrap()
            .server_parts(&f.files)
            .unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new());
        state.verifier.set_metrics(metrics.clone());
        let (leaf, _) = agency(&f, "hanoi", 90);
        let now = UnixTime::now();
        state
            .verifier
            .verify_client_cert(&leaf, &[], at(now, 29))
            .unwrap();
        assert_eq!(metrics.revocation_grace_admissions.get(), 0);
        // The CRL (30 days) is a day stale: admitted on grace, counted.
        state
            .verifier
            .verify_client_cert(&leaf, &[], at(now, 31))
            .unwrap();
        assert_eq!(metrics.revocation_grace_admissions.get(), 1);
        // Three days stale, past the 2-day grace: refused.
        let e = state
            .verifier
            .verify_client_cert(&leaf, &[], at(now, 33))
            .unwrap_err();
        assert_eq!(failure_reason(&e), "crl", "{e:?}");
    }
}

//! OCSP for client certificates (RFC 6960, RFC 5019 profile).
//!
//! Asked after the handshake, before the first request of a connection is
//! forwarded, on the request path's own runtime (async, never blocking a
//! worker), and remembered per certificate until the answer's nextUpdate
//! (or `max_age_s` when the responder gives none), so later requests and
//! connections pay nothing. Requests carry no nonce (RFC 5019: responders
//! may answer from a cache) and go by GET when the encoded request fits in
//! 255 bytes, by POST otherwise.
//!
//! An answer is believed only when signed by the certificate's issuer, or
//! by a responder certificate that issuer signed for OCSP signing (the
//! id-kp-OCSPSigning extended key usage), currently valid; when it is
//! about this very certificate (issuer name and key hashes, serial); and
//! when it is current (thisUpdate not in the future, nextUpdate not past).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use http_body_util::{BodyExt, Full, Limited};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, OcspResponseStatus, Request,
    ResponderId, TbsRequest,
};

use super::crl::{first_element, signed_by};

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const AIA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.1");
const AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
const EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
/// Responses larger than this are not OCSP responses popgate will read.
const MAX_RESPONSE_BYTES: usize = 256 << 10;
/// Clocks disagree a little.
const SKEW: i64 = 300;

/// What a responder said about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked,
    /// The responder does not know the certificate.
    Unknown,
}

/// A believed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Status,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OcspError {
    #[error("responder unreachable: {0}")]
    Unreachable(String),
    #[error("responder answered {0}")]
    Refused(String),
    #[error("response rejected: {0}")]
    Rejected(String),
}

fn rejected(e: impl std::fmt::Display) -> OcspError {
    OcspError::Rejected(e.to_string())
}

fn sha1(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

fn issuer_key_hash(issuer: &Certificate) -> Vec<u8> {
    sha1(
        issuer
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
}

/// The CertID of `leaf` (SHA-1, as RFC 5019 responders expect).
pub fn cert_id(leaf: &Certificate, issuer: &Certificate) -> Result<CertId, OcspError> {
    let name = issuer.tbs_certificate.subject.to_der().map_err(rejected)?;
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: SHA1,
            parameters: Some(der::asn1::Null.into()),
        },
        issuer_name_hash: OctetString::new(sha1(&name)).map_err(rejected)?,
        issuer_key_hash: OctetString::new(issuer_key_hash(issuer)).map_err(rejected)?,
        serial_number: leaf.tbs_certificate.serial_number.clone(),
    })
}

/// A nonce-less request for one certificate.
pub fn request_der(id: &CertId) -> Result<Vec<u8>, OcspError> {
    OcspRequest {
        tbs_request: TbsRequest {
            version: Default::default(),
            requestor_name: None,
            request_list: vec![Request {
                req_cert: id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(rejected)
}

/// The `http://` OCSP responder URLs in a certificate's Authority
/// Information Access extension.
pub fn responder_urls(cert: &Certificate) -> Vec<String> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
    let mut out = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != AIA {
            continue;
        }
        let Ok(aia) = AuthorityInfoAccessSyntax::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for ad in aia.0 {
            if ad.access_method == AD_OCSP {
                if let GeneralName::UniformResourceIdentifier(uri) = ad.access_location {
                    let uri = uri.to_string();
                    if uri.starts_with("http://") {
                        out.push(uri);
                    }
                }
            }
        }
    }
    out
}

fn unix(t: &x509_ocsp::OcspGeneralizedTime) -> i64 {
    t.0.to_unix_duration().as_secs() as i64
}

/// Checks a response body for the certificate `id` of `issuer` at `now`.
pub fn parse_and_verify(
    body: &[u8],
    id: &CertId,
    issuer: &Certificate,
    now: i64,
) -> Result<Answer, OcspError> {
    let resp =
        OcspResponse::from_der(body).map_err(|e| rejected(format!("not an OCSP response: {e}")))?;
    if resp.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Refused(format!("{:?}", resp.response_status)));
    }
    let bytes = resp
        .response_bytes
        .ok_or_else(|| rejected("successful but empty"))?;
    if bytes.response_type != BASIC {
        return Err(rejected(format!(
            "response type {} is not basic",
            bytes.response_type
        )));
    }
    let basic_der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der).map_err(rejected)?;
    let signer = signer(&basic, issuer, now)?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or_else(|| rejected("signature is not whole bytes"))?;
    let tbs = first_element(basic_der).map_err(rejected)?;
    signed_by(&tbs, basic.signature_algorithm.oid, signature, &signer).map_err(|s| {
        rejected(format!(
            "signature does not verify against {s}: forged or altered"
        ))
    })?;
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            r.cert_id.serial_number == id.serial_number
                && r.cert_id.issuer_name_hash == id.issuer_name_hash
                && r.cert_id.issuer_key_hash == id.issuer_key_hash
        })
        .ok_or_else(|| rejected("no answer about this certificate in it"))?;
    let this_update = unix(&single.this_update);
    let next_update = single.next_update.as_ref().map(unix);
    if this_update > now + SKEW {
        return Err(rejected("thisUpdate is in the future"));
    }
    if next_update.is_some_and(|n| n + SKEW < now) {
        return Err(rejected(
            "nextUpdate has passed: a stale (or replayed) answer",
        ));
    }
    Ok(Answer {
        status: match single.cert_status {
            CertStatus::Good(_) => Status::Good,
            CertStatus::Revoked(_) => Status::Revoked,
            CertStatus::Unknown(_) => Status::Unknown,
        },
        this_update,
        next_update,
    })
}

/// Who may sign: the issuer itself, or a responder certificate in the
/// response that the issuer signed for OCSP signing and that is valid now.
fn signer(
    basic: &BasicOcspResponse,
    issuer: &Certificate,
    now: i64,
) -> Result<Certificate, OcspError> {
    let by_issuer = match &basic.tbs_response_data.responder_id {
        ResponderId::ByName(n) => *n == issuer.tbs_certificate.subject,
        ResponderId::ByKey(k) => k.as_bytes() == issuer_key_hash(issuer).as_slice(),
    };
    if by_issuer {
        return Ok(issuer.clone());
    }
    for cert in basic.certs.iter().flatten() {
        let named = match &basic.tbs_response_data.responder_id {
            ResponderId::ByName(n) => *n == cert.tbs_certificate.subject,
            ResponderId::ByKey(k) => k.as_bytes() == issuer_key_hash(cert).as_slice(),
        };
        if !named {
            continue;
        }
        if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
            return Err(rejected(
                "the responder certificate was not issued by the certificate's issuer",
            ));
        }
        let cert_der = cert.to_der().map_err(rejected)?;
        let sig = cert
            .signature
            .as_bytes()
            .ok_or_else(|| rejected("responder certificate signature is not whole bytes"))?;
        signed_by(
            &first_element(&cert_der).map_err(rejected)?,
            cert.signature_algorithm.oid,
            sig,
            issuer,
        )
        .map_err(|_| rejected("the responder certificate is not signed by the issuer"))?;
        let v = &cert.tbs_certificate.validity;
        let (nb, na) = (
            v.not_before.to_unix_duration().as_secs() as i64,
            v.not_after.to_unix_duration().as_secs() as i64,
        );
        if now + SKEW < nb || now > na + SKEW {
            return Err(rejected("the responder certificate is not valid now"));
        }
        let for_ocsp = cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|e| e.extn_id == EKU)
            .filter_map(|e| {
                x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
            })
            .any(|eku| eku.0.contains(&OCSP_SIGNING));
        if !for_ocsp {
            return Err(rejected(
                "the responder certificate is not for OCSP signing",
            ));
        }
        return Ok(cert.clone());
    }
    Err(rejected(
        "signed by neither the issuer nor a responder the issuer delegated to",
    ))
}

/// Sends the request: GET when it fits in 255 bytes encoded, else POST.
pub async fn query(url: &str, request: &[u8]) -> Result<Vec<u8>, OcspError> {
    let (host, port, path) = super::fetch::parse_url(url).map_err(OcspError::Unreachable)?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(request);
    let escaped: String =
        percent_encoding::utf8_percent_encode(&encoded, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let base = path.trim_end_matches('/');
    let get_path = format!("{base}/{escaped}");
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| OcspError::Unreachable(format!("{url}: {e}")))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| OcspError::Unreachable(format!("{url}: {e}")))?;
    tokio::spawn(conn);
    let host_header = if port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let req = if get_path.len() <= 255 {
        http::Request::get(get_path).body(Full::new(Bytes::new()))
    } else {
        http::Request::post(if path.is_empty() {
            "/".to_owned()
        } else {
            path.clone()
        })
        .header(http::header::CONTENT_TYPE, "application/ocsp-request")
        .body(Full::new(Bytes::copy_from_slice(request)))
    }
    .map_err(|e| OcspError::Unreachable(e.to_string()))?;
    let (mut parts, body) = req.into_parts();
    parts.headers.insert(
        http::header::HOST,
        host_header
            .parse()
            .map_err(|_| OcspError::Unreachable("bad host".into()))?,
    );
    let resp = send
        .send_request(http::Request::from_parts(parts, body))
        .await
        .map_err(|e| OcspError::Unreachable(format!("{url}: {e}")))?;
    if resp.status() != http::StatusCode::OK {
        return Err(OcspError::Refused(format!("HTTP {}", resp.status())));
    }
    let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| OcspError::Unreachable(format!("{url}: body: {e}")))?;
    Ok(body.to_bytes().to_vec())
}

/// How long an answer without nextUpdate is reused, and the cache of
/// answers per certificate (by SHA-256 of the certificate).
pub struct OcspCache {
    pub max_age: Duration,
    answers: Mutex<HashMap<[u8; 32], (Answer, i64)>>,
}

impl OcspCache {
    pub fn new(max_age: Duration) -> Self {
        OcspCache {
            max_age,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Until when an answer may be used.
    pub fn good_until(&self, a: &Answer, fetched_at: i64) -> i64 {
        a.next_update
            .unwrap_or(fetched_at + self.max_age.as_secs() as i64)
    }

    /// A still-current cached answer.
    pub fn current(&self, key: &[u8; 32], now: i64) -> Option<Answer> {
        let map = self.answers.lock().ok()?;
        let (a, at) = map.get(key)?;
        (now <= self.good_until(a, *at)).then(|| a.clone())
    }

    /// The last good answer, however old, and until when it was current.
    pub fn last_good(&self, key: &[u8; 32]) -> Option<i64> {
        let map = self.answers.lock().ok()?;
        let (a, at) = map.get(key)?;
        (a.status == Status::Good).then(|| self.good_until(a, *at))
    }

    pub fn put(&self, key: [u8; 32], a: Answer, now: i64) {
        if let Ok(mut map) = self.answers.lock() {
            // Bounded: certificates seen, not requests. A registry has
            // thousands of agencies, not millions.
            if map.len() > 100_000 {
                map.retain(|_, (a, at)| now <= a.next_update.unwrap_or(*at) + 86_400);
            }
            map.insert(key, (a, now));
        }
    }
}

/// `revocation.ocsp`, resolved.
#[derive(Debug, Clone)]
pub struct OcspSettings {
    /// Ask this responder for every certificate, whatever its AIA says.
    pub responder: Option<String>,
    pub timeout: Duration,
    /// How long an answer without nextUpdate is reused.
    pub max_age: Duration,
}

/// What the request path is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Good, or no OCSP responder for this certificate (CRLs judge it).
    Good,
    Revoked,
    /// No current status, and no grace covers it: the reason.
    Unavailable(String),
}

/// Metrics of OCSP checking.
#[derive(Clone)]
pub struct OcspMetrics {
    /// Queries sent, by result.
    pub queries: prometheus::IntCounterVec,
    /// Requests answered from a current cached answer.
    pub cached: prometheus::IntCounter,
    /// Requests admitted on grace (`popgate_revocation_grace_admissions_total`).
    pub grace: prometheus::IntCounter,
    /// thisUpdate of the newest believed answer (Unix seconds): its age is
    /// `time() - this` in PromQL.
    pub newest_answer: prometheus::IntGauge,
}

impl OcspMetrics {
    pub fn new(grace: prometheus::IntCounter) -> Self {
        OcspMetrics {
            queries: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "popgate_revocation_ocsp_queries_total",
                    "OCSP queries by result (good, revoked, unknown, unreachable, refused, rejected)",
                ),
                &["result"],
            )
            .expect("static metric definition"),
            cached: prometheus::IntCounter::new(
                "popgate_revocation_ocsp_cached_total",
                "Requests whose certificate status came from a current cached OCSP answer",
            )
            .expect("static metric definition"),
            grace,
            newest_answer: prometheus::IntGauge::new(
                "popgate_revocation_ocsp_newest_answer_timestamp_seconds",
                "thisUpdate of the newest OCSP answer believed (Unix seconds)",
            )
            .expect("static metric definition"),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.queries.clone()),
            Box::new(self.cached.clone()),
            Box::new(self.newest_answer.clone()),
        ]
    }
}

/// OCSP checking with its cache and policy.
pub struct OcspChecker {
    settings: OcspSettings,
    /// `on_unavailable: grace`: how long past the last good answer a
    /// certificate is still admitted when no current status can be had.
    grace: Option<Duration>,
    cache: OcspCache,
    metrics: OcspMetrics,
    /// Certificates that name no responder (CRLs judge them).
    no_responder: Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl OcspChecker {
    pub fn new(settings: OcspSettings, grace: Option<Duration>, metrics: OcspMetrics) -> Self {
        OcspChecker {
            cache: OcspCache::new(settings.max_age),
            no_responder: Mutex::new(std::collections::HashSet::new()),
            settings,
            grace,
            metrics,
        }
    }

    /// The status of `leaf` (issued by `issuer`), from the cache or its
    /// responder.
    /// The verdict for a certificate (by its SHA-256) when it needs no
    /// query: a current cached answer, or no responder to ask. The request
    /// path asks this first, so a connection's later requests cost a hash
    /// lookup, not certificate parsing.
    pub fn known(&self, key: &[u8; 32]) -> Option<Verdict> {
        if self
            .no_responder
            .lock()
            .ok()
            .is_some_and(|s| s.contains(key))
        {
            return Some(Verdict::Good);
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let a = self.cache.current(key, now)?;
        if a.status == Status::Unknown {
            return None;
        }
        self.metrics.cached.inc();
        Some(self.verdict(&a, key, now, ""))
    }

    pub async fn judge(&self, leaf_der: &[u8], issuer_der: &[u8]) -> Verdict {
        use sha2::Digest;
        let (Ok(leaf), Ok(issuer)) = (
            Certificate::from_der(leaf_der),
            Certificate::from_der(issuer_der),
        ) else {
            return Verdict::Unavailable("certificate does not parse".into());
        };
        let url = match &self.settings.responder {
            Some(u) => u.clone(),
            None => match responder_urls(&leaf).into_iter().next() {
                Some(u) => u,
                None => {
                    let key: [u8; 32] = sha2::Sha256::digest(leaf_der).into();
                    if let Ok(mut s) = self.no_responder.lock() {
                        if s.len() < 100_000 {
                            s.insert(key);
                        }
                    }
                    return Verdict::Good;
                }
            },
        };
        let key: [u8; 32] = sha2::Sha256::digest(leaf_der).into();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(a) = self.cache.current(&key, now) {
            if a.status != Status::Unknown {
                self.metrics.cached.inc();
                return self.verdict(&a, &key, now, "");
            }
        }
        let asked = async {
            let id = cert_id(&leaf, &issuer)?;
            let body = tokio::time::timeout(self.settings.timeout, query(&url, &request_der(&id)?))
                .await
                .map_err(|_| {
                    OcspError::Unreachable(format!(
                        "{url}: no answer within {:?}",
                        self.settings.timeout
                    ))
                })??;
            parse_and_verify(&body, &id, &issuer, now)
        }
        .await;
        match asked {
            Ok(a) => {
                let result = match a.status {
                    Status::Good => "good",
                    Status::Revoked => "revoked",
                    Status::Unknown => "unknown",
                };
                self.metrics.queries.with_label_values(&[result]).inc();
                if a.this_update > self.metrics.newest_answer.get() {
                    self.metrics.newest_answer.set(a.this_update);
                }
                self.cache.put(key, a.clone(), now);
                self.verdict(&a, &key, now, &url)
            }
            Err(e) => {
                let result = match e {
                    OcspError::Unreachable(_) => "unreachable",
                    OcspError::Refused(_) => "refused",
                    OcspError::Rejected(_) => "rejected",
                };
                self.metrics.queries.with_label_values(&[result]).inc();
                tracing::warn!(%url, error = %e, "OCSP status not had");
                self.unavailable(&key, now, e.to_string())
            }
        }
    }

    fn verdict(&self, a: &Answer, key: &[u8; 32], now: i64, url: &str) -> Verdict {
        match a.status {
            Status::Good => Verdict::Good,
            Status::Revoked => Verdict::Revoked,
            Status::Unknown => {
                self.unavailable(key, now, format!("{url} does not know the certificate"))
            }
        }
    }

    /// No current status: refused, unless a grace covers it since the last
    /// good answer.
    fn unavailable(&self, key: &[u8; 32], now: i64, why: String) -> Verdict {
        if let (Some(grace), Some(until)) = (self.grace, self.cache.last_good(key)) {
            if now <= until + grace.as_secs() as i64 {
                self.metrics.grace.inc();
                tracing::warn!(reason = %why, "client certificate admitted on grace: no current OCSP status (revocation.on_unavailable: grace)");
                return Verdict::Good;
            }
        }
        Verdict::Unavailable(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under `grace`, no current status admits only within the grace after
    /// the last good answer; a revoked or never-good certificate never.
    #[test]
    fn grace_runs_from_the_last_good_answer_and_ends() {
        let metrics = OcspMetrics::new(
            prometheus::IntCounter::new("grace_test", "grace admissions").unwrap(),
        );
        let checker = OcspChecker::new(
            OcspSettings {
                responder: None,
                timeout: Duration::from_secs(1),
                max_age: Duration::from_secs(60),
            },
            Some(Duration::from_secs(600)),
            metrics.clone(),
        );
        let now = 1_800_000_000;
        let answer = |status, next: i64| Answer {
            status,
            this_update: next - 60,
            next_update: Some(next),
        };
        let (recent, old, revoked, never) = ([1u8; 32], [2u8; 32], [3u8; 32], [4u8; 32]);
        checker
            .cache
            .put(recent, answer(Status::Good, now - 300), now - 400);
        checker
            .cache
            .put(old, answer(Status::Good, now - 900), now - 1000);
        checker
            .cache
            .put(revoked, answer(Status::Revoked, now - 300), now - 400);
        assert_eq!(
            checker.unavailable(&recent, now, "down".into()),
            Verdict::Good
        );
        assert_eq!(metrics.grace.get(), 1);
        assert!(matches!(
            checker.unavailable(&old, now, "down".into()),
            Verdict::Unavailable(_)
        ));
        assert!(matches!(
            checker.unavailable(&revoked, now, "down".into()),
            Verdict::Unavailable(_)
        ));
        assert!(matches!(
            checker.unavailable(&never, now, "down".into()),
            Verdict::Unavailable(_)
        ));
        // `closed`: no grace at all.
        let closed = OcspChecker::new(checker.settings.clone(), None, metrics);
        closed
            .cache
            .put(recent, answer(Status::Good, now - 1), now - 100);
        assert!(matches!(
            closed.unavailable(&recent, now, "down".into()),
            Verdict::Unavailable(_)
        ));
    }

    /// A real `openssl ocsp` responder for a dev PKI with one good and one
    /// revoked certificate: both answers are read and believed, and a
    /// responder signing with another key is not.
    #[tokio::test]
    async fn answers_from_openssl_are_read_and_only_the_issuers_believed() {
        use std::path::PathBuf;
        let dir = tempfile::tempdir().unwrap();
        let pki = certs::pki::DevPki::create(dir.path()).unwrap();
        let subject = |id: &str| certs::pki::AgencySubject {
            id: id.into(),
            name: id.into(),
        };
        let good = pki.issue_agency(&subject("good"), 30).unwrap();
        let bad = pki.issue_agency(&subject("bad"), 30).unwrap();
        let ca = Certificate::from_der(
            &pem::parse(std::fs::read(pki.ca_cert_path()).unwrap())
                .unwrap()
                .into_contents(),
        )
        .unwrap();
        let leaf = |der: &[u8]| Certificate::from_der(der).unwrap();
        let serial =
            |c: &Certificate| hex::encode_upper(c.tbs_certificate.serial_number.as_bytes());
        let (g, b) = (leaf(&good.der), leaf(&bad.der));
        let index = dir.path().join("index.txt");
        std::fs::write(
            &index,
            format!(
                "V\t301231000000Z\t\t{}\tunknown\t/CN=good\nR\t301231000000Z\t250101000000Z\t{}\tunknown\t/CN=bad\n",
                serial(&g),
                serial(&b)
            ),
        )
        .unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        certs::pki::DevPki::create(other_dir.path()).unwrap();
        // Delegated responders, made with openssl: one the CA signed for
        // OCSP signing, one it signed for something else.
        let delegate = |name: &str, eku: &str| -> (PathBuf, PathBuf) {
            let d = dir.path();
            let (key, csr, cert, ext) = (
                d.join(format!("{name}.key")),
                d.join(format!("{name}.csr")),
                d.join(format!("{name}.pem")),
                d.join(format!("{name}.cnf")),
            );
            std::fs::write(&ext, format!("extendedKeyUsage={eku}\n")).unwrap();
            let run = |args: &[&std::ffi::OsStr]| {
                let st = std::process::Command::new("openssl")
                    .args(args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success(), "openssl {args:?}");
            };
            let os = |s: &str| std::ffi::OsString::from(s);
            run(&[
                &os("genpkey"),
                &os("-algorithm"),
                &os("EC"),
                &os("-pkeyopt"),
                &os("ec_paramgen_curve:P-256"),
                &os("-out"),
                key.as_os_str(),
            ]);
            run(&[
                &os("req"),
                &os("-new"),
                &os("-key"),
                key.as_os_str(),
                &os("-subj"),
                &os(&format!("/CN={name}")),
                &os("-out"),
                csr.as_os_str(),
            ]);
            run(&[
                &os("x509"),
                &os("-req"),
                &os("-in"),
                csr.as_os_str(),
                &os("-CA"),
                pki.ca_cert_path().as_os_str(),
                &os("-CAkey"),
                d.join("ca.key").as_os_str(),
                &os("-set_serial"),
                &os("7"),
                &os("-days"),
                &os("1"),
                &os("-extfile"),
                ext.as_os_str(),
                &os("-out"),
                cert.as_os_str(),
            ]);
            (cert, key)
        };
        let (ocsp_cert, ocsp_key) = delegate("ocsp-signer", "OCSPSigning");
        let (wrong_cert, wrong_key) = delegate("not-ocsp", "clientAuth");
        let signers = [
            (
                dir.path().join("ca.pem"),
                dir.path().join("ca.key"),
                dir.path().join("ca.pem"),
                true,
            ),
            (ocsp_cert, ocsp_key, dir.path().join("ca.pem"), true),
            (wrong_cert, wrong_key, dir.path().join("ca.pem"), false),
            (
                other_dir.path().join("ca.pem"),
                other_dir.path().join("ca.key"),
                other_dir.path().join("ca.pem"),
                false,
            ),
        ];
        for (signer, signer_key, signer_ca, expect_ok) in signers {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = std::process::Command::new("openssl")
                .args(["ocsp", "-index"])
                .arg(&index)
                .args(["-port", &port.to_string(), "-rsigner"])
                .arg(&signer)
                .arg("-rkey")
                .arg(&signer_key)
                .arg("-CA")
                .arg(&signer_ca)
                .arg("-ignore_err")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("openssl");
            // Probe with a whole (bad) request: openssl ocsp hangs on a
            // connection closed before it sent one.
            loop {
                use std::io::{Read, Write};
                if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                    let _ = s.read_to_end(&mut Vec::new());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let url = format!("http://127.0.0.1:{port}");
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            for (cert, want) in [(&g, Status::Good), (&b, Status::Revoked)] {
                let id = cert_id(cert, &ca).unwrap();
                let body = tokio::time::timeout(
                    Duration::from_secs(5),
                    query(&url, &request_der(&id).unwrap()),
                )
                .await
                .expect("answered in time")
                .unwrap();
                let got = parse_and_verify(&body, &id, &ca, now);
                if expect_ok {
                    assert_eq!(got.unwrap().status, want, "signed by {}", signer.display());
                } else {
                    let e = got.unwrap_err();
                    assert!(matches!(e, OcspError::Rejected(_)), "{e}");
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

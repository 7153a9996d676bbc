//! The one-command development PKI: a CA, a server certificate for loopback,
//! one client certificate per agency, and a CRL that revocations re-sign.
//!
//! It exists so that a newcomer, a test, or a demo gets the same certificate
//! shapes production uses (URI SAN `spiffe://dancu.gov.vn/agency/<id>`,
//! O = agency name, EKU clientAuth) without hand-running openssl. Everything
//! is PEM that curl and openssl accept as-is. Private keys are written 0600.
//!
//! Layout of a PKI directory:
//! ```text
//! ca.pem ca.key                 ECDSA P-256 CA
//! server.pem server.key         localhost, 127.0.0.1, ::1 (serverAuth)
//! crl.pem                       CRL signed by the CA (empty at first)
//! agencies/<id>.pem <id>.key    agency client certificates (clientAuth)
//! index.json                    every certificate issued, and revocations
//! ```

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// The trust domain agency identities live in.
pub const TRUST_DOMAIN: &str = "dancu.gov.vn";

/// The URI SAN an agency certificate carries.
pub fn agency_uri(agency_id: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/agency/{agency_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0} already holds a CA (ca.pem); refusing to overwrite it")]
    AlreadyExists(PathBuf),
    #[error("{0} holds no CA (ca.pem); run `popgate pki init --dir {0}` first")]
    Missing(PathBuf),
    #[error("agency id {0:?} is not usable in a certificate: use lower-case letters, digits, '-' and '_'")]
    BadAgencyId(String),
    #[error("{path}: certificate serial {serial} was not issued by this PKI (not in index.json)")]
    UnknownSerial { path: PathBuf, serial: String },
    #[error("no randomness for a serial number: {0}")]
    Random(String),
    #[error("{path}: certificate serial {serial} is already revoked")]
    AlreadyRevoked { path: PathBuf, serial: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How long the development server certificate is valid: under the 398
/// days browsers and scanners (testssl.sh) accept.
pub const SERVER_CERT_DAYS: i64 = 397;

/// Where certificates of the development PKI say their CRL is published:
/// `popgate pki serve-crl --dir <pki>` serves it there (DER, re-read on
/// every request, so a revocation is visible at once).
pub const DEV_CRL_URL: &str = "http://localhost:8489/crl.der";

/// Where the dev CA answers OCSP: `popgate pki serve-revocation` serves
/// it beside the CRL. Agency certificates name it in their Authority
/// Information Access.
pub const DEV_OCSP_URL: &str = "http://localhost:8489/ocsp";

/// The Authority Information Access extension naming [`DEV_OCSP_URL`].
fn ocsp_access() -> Result<rcgen::CustomExtension, PkiError> {
    use der::Encode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    let aia = AuthorityInfoAccessSyntax(vec![AccessDescription {
        access_method: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1"),
        access_location: GeneralName::UniformResourceIdentifier(
            der::asn1::Ia5String::new(DEV_OCSP_URL).map_err(|e| PkiError::Invalid {
                path: PathBuf::new(),
                message: e.to_string(),
            })?,
        ),
    }]);
    let der = aia.to_der().map_err(|e| PkiError::Invalid {
        path: PathBuf::new(),
        message: e.to_string(),
    })?;
    Ok(rcgen::CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        der,
    ))
}

/// What the dev CA knows of a serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevStatus {
    Good,
    Revoked {
        at: OffsetDateTime,
    },
    /// Not a certificate this PKI issued.
    Unknown,
}

fn crl_distribution_points() -> Vec<rcgen::CrlDistributionPoint> {
    vec![rcgen::CrlDistributionPoint {
        uris: vec![DEV_CRL_URL.to_owned()],
    }]
}

/// Who an agency certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgencySubject {
    pub id: String,
    pub name: String,
}

/// What kind of leaf to issue. The non-default shapes exist so tests can
/// prove the gateway refuses them (expired, not yet valid, serverAuth-only).
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// File stem under `agencies/`.
    pub file_stem: String,
    pub agency: AgencySubject,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub usage: LeafUsage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    ClientAuth,
    ServerAuthOnly,
}

/// A certificate this PKI issued, with where it was written.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: Vec<u8>,
    /// Lower-case hex, no leading zero bytes (as `certs::identity` prints it).
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct RevokedCert {
    pub serial_hex: String,
    pub agency: String,
    pub crl_path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    crl_number: u64,
    issued: Vec<IndexEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexEntry {
    serial: String,
    agency: String,
    file: String,
    not_after: String,
    revoked_at: Option<String>,
}

/// An opened development PKI directory.
pub struct DevPki {
    dir: PathBuf,
    ca_key: KeyPair,
    ca_cert_pem: String,
}

impl DevPki {
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key_path(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    pub fn agency_cert_path(&self, id: &str) -> PathBuf {
        self.dir.join("agencies").join(format!("{id}.pem"))
    }
    pub fn agency_key_path(&self, id: &str) -> PathBuf {
        self.dir.join("agencies").join(format!("{id}.key"))
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a new CA, server certificate and empty CRL in `dir`.
    pub fn create(dir: &Path) -> Result<Self, PkiError> {
        if dir.join("ca.pem").exists() {
            return Err(PkiError::AlreadyExists(dir.to_owned()));
        }
        fs::create_dir_all(dir.join("agencies")).map_err(io_err(dir))?;

        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = dn(&[
            (DnType::CountryName, "VN"),
            (DnType::OrganizationName, "popgate development PKI"),
            (DnType::CommonName, "popgate dev agency CA"),
        ]);
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        ca.not_before = now - Duration::hours(1);
        ca.not_after = now + Duration::days(3650);
        ca.serial_number = Some(random_serial()?);
        let ca_cert = ca.self_signed(&ca_key)?;
        write_file(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), false)?;
        write_file(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes(), true)?;

        let pki = DevPki {
            dir: dir.to_owned(),
            ca_key,
            ca_cert_pem: ca_cert.pem(),
        };
        pki.issue_server()?;
        pki.save_index(&Index::default())?;
        pki.write_crl(&Index::default())?;
        Ok(pki)
    }

    /// Opens an existing PKI directory.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let ca_path = dir.join("ca.pem");
        if !ca_path.exists() {
            return Err(PkiError::Missing(dir.to_owned()));
        }
        let ca_cert_pem = fs::read_to_string(&ca_path).map_err(io_err(&ca_path))?;
        let key_path = dir.join("ca.key");
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Invalid {
            path: key_path.clone(),
            message: format!("not a usable private key: {e}"),
        })?;
        // Fail now, naming the file, rather than at the first issuance.
        Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key).map_err(|e| PkiError::Invalid {
            path: ca_path.clone(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
        Ok(DevPki {
            dir: dir.to_owned(),
            ca_key,
            ca_cert_pem,
        })
    }

    /// Opens `dir` if it holds a PKI, else creates one. Returns whether it was created.
    pub fn open_or_create(dir: &Path) -> Result<(Self, bool), PkiError> {
        if dir.join("ca.pem").exists() {
            Ok((Self::open(dir)?, false))
        } else {
            Ok((Self::create(dir)?, true))
        }
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?)
    }

    fn issue_server(&self) -> Result<(), PkiError> {
        const { assert!(SERVER_CERT_DAYS <= 398) };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&[
            (DnType::OrganizationName, "popgate development PKI"),
            (DnType::CommonName, "localhost"),
        ]);
        p.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::hours(1);
        // CA/Browser Forum limit for TLS server certificates (398 days).
        p.not_after = now + Duration::days(SERVER_CERT_DAYS);
        p.crl_distribution_points = crl_distribution_points();
        p.serial_number = Some(random_serial()?);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer()?)?;
        // The chain the server sends: leaf then CA, so clients that only
        // hold the CA as a trust anchor still build the path.
        let chain = format!("{}{}", cert.pem(), self.ca_cert_pem);
        write_file(&self.server_cert_path(), chain.as_bytes(), false)?;
        write_file(
            &self.server_key_path(),
            key.serialize_pem().as_bytes(),
            true,
        )?;
        Ok(())
    }

    /// Issues the standard client certificate for an agency, valid `days` days.
    pub fn issue_agency(&self, agency: &AgencySubject, days: u32) -> Result<IssuedCert, PkiError> {
        let now = OffsetDateTime::now_utc();
        self.issue(&LeafSpec {
            file_stem: agency.id.clone(),
            agency: agency.clone(),
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(i64::from(days)),
            usage: LeafUsage::ClientAuth,
        })
    }

    /// Issues a leaf certificate of any shape (see [`LeafSpec`]).
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, PkiError> {
        validate_id(&spec.agency.id)?;
        validate_id(&spec.file_stem)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(&[
            (DnType::CountryName, "VN"),
            (DnType::OrganizationName, spec.agency.name.as_str()),
            (DnType::CommonName, spec.agency.id.as_str()),
        ]);
        p.subject_alt_names = vec![SanType::URI(agency_uri(&spec.agency.id).try_into()?)];
        p.extended_key_usages = match spec.usage {
            LeafUsage::ClientAuth => vec![ExtendedKeyUsagePurpose::ClientAuth],
            LeafUsage::ServerAuthOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = spec.not_before;
        p.not_after = spec.not_after;
        p.crl_distribution_points = crl_distribution_points();
        p.custom_extensions = vec![ocsp_access()?];
        let serial = random_serial()?;
        p.serial_number = Some(serial.clone());
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer()?)?;

        let cert_path = self.agency_cert_path(&spec.file_stem);
        let key_path = self.agency_key_path(&spec.file_stem);
        fs::create_dir_all(self.dir.join("agencies")).map_err(io_err(&self.dir))?;
        write_file(&cert_path, cert.pem().as_bytes(), false)?;
        write_file(&key_path, key.serialize_pem().as_bytes(), true)?;

        let serial_hex = serial_hex(&serial);
        let mut index = self.load_index()?;
        index.issued.push(IndexEntry {
            serial: serial_hex.clone(),
            agency: spec.agency.id.clone(),
            file: format!("agencies/{}.pem", spec.file_stem),
            not_after: crate::dates::rfc3339(spec.not_after),
            revoked_at: None,
        });
        self.save_index(&index)?;
        Ok(IssuedCert {
            cert_path,
            key_path,
            der: cert.der().to_vec(),
            serial_hex,
            not_after: spec.not_after,
        })
    }

    /// Revokes the certificate in `cert_file` and re-signs the CRL.
    pub fn revoke(&self, cert_file: &Path) -> Result<RevokedCert, PkiError> {
        let pem_text = fs::read_to_string(cert_file).map_err(io_err(cert_file))?;
        let parsed = pem::parse(&pem_text).map_err(|e| PkiError::Invalid {
            path: cert_file.to_owned(),
            message: format!("not a PEM certificate: {e}"),
        })?;
        let ident = crate::identity::CertIdentity::from_der(parsed.contents()).map_err(|e| {
            PkiError::Invalid {
                path: cert_file.to_owned(),
                message: e.to_string(),
            }
        })?;
        let mut index = self.load_index()?;
        let entry = index
            .issued
            .iter_mut()
            .find(|e| e.serial == ident.serial)
            .ok_or_else(|| PkiError::UnknownSerial {
                path: cert_file.to_owned(),
                serial: ident.serial.clone(),
            })?;
        if entry.revoked_at.is_some() {
            return Err(PkiError::AlreadyRevoked {
                path: cert_file.to_owned(),
                serial: ident.serial,
            });
        }
        entry.revoked_at = Some(crate::dates::rfc3339(OffsetDateTime::now_utc()));
        let agency = entry.agency.clone();
        index.crl_number += 1;
        self.write_crl(&index)?;
        self.save_index(&index)?;
        Ok(RevokedCert {
            serial_hex: ident.serial,
            agency,
            crl_path: self.crl_path(),
        })
    }

    fn write_crl(&self, index: &Index) -> Result<(), PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        for e in index.issued.iter() {
            let Some(at) = &e.revoked_at else { continue };
            let bytes = hex::decode(&e.serial).map_err(|_| PkiError::Invalid {
                path: self.dir.join("index.json"),
                message: format!("serial {:?} is not hex", e.serial),
            })?;
            let when = OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .map_err(|_| PkiError::Invalid {
                    path: self.dir.join("index.json"),
                    message: format!("revoked_at {at:?} is not RFC 3339"),
                })?;
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from(bytes),
                revocation_time: when,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(index.crl_number.to_be_bytes().to_vec()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer()?)?;
        write_file(&self.crl_path(), crl.pem()?.as_bytes(), false)
    }

    /// The status of the certificate with this serial number (big-endian
    /// bytes, leading zeros allowed), as the CA's index says.
    pub fn status(&self, serial: &[u8]) -> Result<DevStatus, PkiError> {
        let first = serial
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(serial.len().saturating_sub(1));
        let wanted = hex::encode(&serial[first..]);
        let index = self.load_index()?;
        let Some(entry) = index
            .issued
            .iter()
            .find(|e| e.serial.eq_ignore_ascii_case(&wanted))
        else {
            return Ok(DevStatus::Unknown);
        };
        Ok(match &entry.revoked_at {
            None => DevStatus::Good,
            Some(at) => DevStatus::Revoked {
                at: OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| PkiError::Invalid {
                        path: self.dir.join("index.json"),
                        message: format!("revoked_at {at:?}: {e}"),
                    })?,
            },
        })
    }

    /// Signs `message` with the CA key (ECDSA P-256, SHA-256, DER
    /// signature): what the dev OCSP responder signs its answers with.
    pub fn sign_as_ca(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        use rcgen::SigningKey;
        Ok(self.ca_key.sign(message)?)
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> Result<Vec<u8>, PkiError> {
        pem::parse(&self.ca_cert_pem)
            .map(|p| p.into_contents())
            .map_err(|e| PkiError::Invalid {
                path: self.ca_cert_path(),
                message: e.to_string(),
            })
    }

    fn load_index(&self) -> Result<Index, PkiError> {
        let path = self.dir.join("index.json");
        if !path.exists() {
            return Ok(Index::default());
        }
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| PkiError::Invalid {
            path,
            message: e.to_string(),
        })
    }

    fn save_index(&self, index: &Index) -> Result<(), PkiError> {
        let text = serde_json::to_string_pretty(index).map_err(|e| PkiError::Invalid {
            path: self.dir.join("index.json"),
            message: e.to_string(),
        })?;
        write_file(&self.dir.join("index.json"), text.as_bytes(), false)
    }
}

fn validate_id(id: &str) -> Result<(), PkiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadAgencyId(id.to_owned()))
    }
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (t, v) in parts {
        dn.push(t.clone(), *v);
    }
    dn
}

/// 16 random bytes with the top bit clear: positive, unguessable, and
/// within RFC 5280's 20-octet limit.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PkiError::Random(e.to_string()))?;
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 0x01;
    }
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn serial_hex(s: &SerialNumber) -> String {
    let bytes = s.as_ref();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[first..])
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), PkiError> {
    crate::durable_file::write(path, bytes, secret).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "certs-pki-{tag}-{}-{}",
            std::process::id(),
            OffsetDateTime::now_utc().unix_timestamp_nanos()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn create_issue_revoke_round_trip() {
        let dir = tempdir("rt");
        let pki = DevPki::create(&dir).unwrap();
        assert!(matches!(
            DevPki::create(&dir),
            Err(PkiError::AlreadyExists(_))
        ));
        let a = AgencySubject {
            id: "hanoi".into(),
            name: "UBND Thành phố Hà Nội".into(),
        };
        let issued = pki.issue_agency(&a, 10).unwrap();
        let crl_before = fs::read_to_string(pki.crl_path()).unwrap();
        let pki = DevPki::open(&dir).unwrap();
        let r = pki.revoke(&issued.cert_path).unwrap();
        assert_eq!(r.serial_hex, issued.serial_hex);
        assert_eq!(r.agency, "hanoi");
        let crl_after = fs::read_to_string(pki.crl_path()).unwrap();
        assert_ne!(crl_before, crl_after);
        assert!(matches!(
            pki.revoke(&issued.cert_path),
            Err(PkiError::AlreadyRevoked { .. })
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&issued.key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn certificates_name_their_crl_and_the_server_one_stays_under_398_days() {
        let dir = tempdir("crldp");
        let pki = DevPki::create(&dir).unwrap();
        let pem = fs::read_to_string(pki.server_cert_path()).unwrap();
        let leaf = ::pem::parse_many(&pem).unwrap().remove(0);
        let der = leaf.contents();
        let not_after = crate::inspect::not_after_unix(der).unwrap();
        let days = (not_after - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!(days <= 398, "server certificate valid {days} days");
        // id-ce-cRLDistributionPoints (2.5.29.31) with the dev CRL URL.
        for der in [der.to_vec(), {
            let a = AgencySubject {
                id: "hanoi".into(),
                name: "Hà Nội".into(),
            };
            pki.issue_agency(&a, 10).unwrap().der
        }] {
            assert!(
                der.windows(3).any(|w| w == [0x55, 0x1d, 0x1f]),
                "no CRL distribution point"
            );
            assert!(der
                .windows(DEV_CRL_URL.len())
                .any(|w| w == DEV_CRL_URL.as_bytes()));
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn foreign_certificate_cannot_be_revoked() {
        let a = tempdir("a");
        let b = tempdir("b");
        let pa = DevPki::create(&a).unwrap();
        let pb = DevPki::create(&b).unwrap();
        let s = AgencySubject {
            id: "moj".into(),
            name: "Bộ Tư pháp".into(),
        };
        let issued = pb.issue_agency(&s, 1).unwrap();
        assert!(matches!(
            pa.revoke(&issued.cert_path),
            Err(PkiError::UnknownSerial { .. })
        ));
        fs::remove_dir_all(&a).ok();
        fs::remove_dir_all(&b).ok();
    }

    #[test]
    fn bad_agency_ids_are_refused() {
        let dir = tempdir("ids");
        let pki = DevPki::create(&dir).unwrap();
        for bad in ["", "../x", "Upper", "a b"] {
            let s = AgencySubject {
                id: bad.into(),
                name: "x".into(),
            };
            assert!(matches!(
                pki.issue_agency(&s, 1),
                Err(PkiError::BadAgencyId(_))
            ));
        }
        fs::remove_dir_all(&dir).ok();
    }
}

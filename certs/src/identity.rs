//! What an agency client certificate says about who is calling.
//!
//! The gateway never trusts a certificate's claims before rustls has verified
//! the chain, validity, EKU and revocation; this module only reads the facts
//! out of an already-verified leaf so the registry can map them to an agency
//! and the audit log can name the exact certificate used.

use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// OIDs of the subject attributes the registry can match on.
const OID_CN: &str = "2.5.4.3";
const OID_O: &str = "2.5.4.10";
const OID_OU: &str = "2.5.4.11";

/// The identifying facts of one client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// Lower-case hex SHA-256 of the DER certificate (what a pin names).
    pub fingerprint_sha256: String,
    /// Lower-case hex serial number, without leading zero padding.
    pub serial: String,
    /// The subject as an RFC 4514 string (for logs and audit records).
    pub subject: String,
    pub uri_sans: Vec<String>,
    pub organizations: Vec<String>,
    pub organizational_units: Vec<String>,
    pub common_names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("certificate is not valid DER X.509: {0}")]
    Der(#[from] der::Error),
}

/// Lower-case hex SHA-256 of DER bytes: the fingerprint form used everywhere
/// in popgate (registry pins, audit records, metrics never).
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl CertIdentity {
    /// Reads the identity out of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let cert = Certificate::from_der(der)?;
        let tbs = &cert.tbs_certificate;

        let mut organizations = Vec::new();
        let mut organizational_units = Vec::new();
        let mut common_names = Vec::new();
        for rdn in tbs.subject.0.iter() {
            for atv in rdn.0.iter() {
                let Some(value) = attribute_string(&atv.value) else {
                    continue;
                };
                match atv.oid.to_string().as_str() {
                    OID_O => organizations.push(value),
                    OID_OU => organizational_units.push(value),
                    OID_CN => common_names.push(value),
                    _ => {}
                }
            }
        }

        let mut uri_sans = Vec::new();
        if let Some((_, san)) = tbs.get::<SubjectAltName>()? {
            for name in san.0 {
                if let GeneralName::UniformResourceIdentifier(uri) = name {
                    uri_sans.push(uri.as_str().to_owned());
                }
            }
        }

        let serial_bytes = tbs.serial_number.as_bytes();
        let first_nonzero = serial_bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(serial_bytes.len().saturating_sub(1));
        Ok(CertIdentity {
            fingerprint_sha256: sha256_hex(der),
            serial: hex::encode(&serial_bytes[first_nonzero..]),
            subject: tbs.subject.to_string(),
            uri_sans,
            organizations,
            organizational_units,
            common_names,
        })
    }
}

/// Decodes a DirectoryString-ish attribute value (UTF8String, PrintableString,
/// IA5String); other encodings are not used by agency certificates.
fn attribute_string(value: &der::Any) -> Option<String> {
    let bytes = value.to_der().ok()?;
    if let Ok(s) = der::asn1::Utf8StringRef::from_der(&bytes) {
        return Some(s.as_str().to_owned());
    }
    if let Ok(s) = der::asn1::PrintableStringRef::from_der(&bytes) {
        return Some(s.as_str().to_owned());
    }
    if let Ok(s) = der::asn1::Ia5StringRef::from_der(&bytes) {
        return Some(s.as_str().to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{AgencySubject, DevPki};

    #[test]
    fn reads_uri_san_org_and_fingerprint_from_an_issued_agency_cert() {
        let dir = tempdir();
        let pki = DevPki::create(&dir).unwrap();
        let issued = pki
            .issue_agency(
                &AgencySubject {
                    id: "vss".into(),
                    name: "Bảo hiểm xã hội Việt Nam".into(),
                },
                30,
            )
            .unwrap();
        let id = CertIdentity::from_der(&issued.der).unwrap();
        assert_eq!(id.uri_sans, vec!["spiffe://dancu.gov.vn/agency/vss"]);
        assert_eq!(id.organizations, vec!["Bảo hiểm xã hội Việt Nam"]);
        assert_eq!(id.fingerprint_sha256, sha256_hex(&issued.der));
        assert_eq!(id.serial, issued.serial_hex);
        assert!(id.subject.contains("O="), "{}", id.subject);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(CertIdentity::from_der(b"\x30\x82\xff\xffnot a cert").is_err());
        assert!(CertIdentity::from_der(&[]).is_err());
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "certs-identity-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

//! Facts about certificates and CRLs that operators and compliance checks
//! judge. Starts with validity: when a certificate stops being valid, and
//! when a CRL stops proving anything (its nextUpdate), since a stale CRL
//! makes the gateway refuse every agency.

use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("not valid DER: {0}")]
    Der(#[from] der::Error),
    #[error("the CRL has no nextUpdate, so its freshness cannot be judged")]
    NoNextUpdate,
}

/// Seconds since the Unix epoch at which the certificate expires.
pub fn not_after_unix(cert_der: &[u8]) -> Result<i64, InspectError> {
    let c = Certificate::from_der(cert_der)?;
    Ok(c.tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs() as i64)
}

/// Seconds since the Unix epoch of the CRL's nextUpdate.
pub fn crl_next_update_unix(crl_der: &[u8]) -> Result<i64, InspectError> {
    let crl = CertificateList::from_der(crl_der)?;
    let next = crl
        .tbs_cert_list
        .next_update
        .ok_or(InspectError::NoNextUpdate)?;
    Ok(next.to_unix_duration().as_secs() as i64)
}

/// Whole days from `now_unix` until `at_unix` (negative once past).
pub fn days_until(at_unix: i64, now_unix: i64) -> i64 {
    (at_unix - now_unix).div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{AgencySubject, DevPki};

    #[test]
    fn reads_validity_of_issued_certs_and_crls() {
        let dir = std::env::temp_dir().join(format!("certs-inspect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pki = DevPki::create(&dir).unwrap();
        let issued = pki
            .issue_agency(
                &AgencySubject {
                    id: "moj".into(),
                    name: "Bộ Tư pháp".into(),
                },
                30,
            )
            .unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((29..=30).contains(&days_until(not_after_unix(&issued.der).unwrap(), now)));
        let crl_pem = std::fs::read_to_string(pki.crl_path()).unwrap();
        let crl = pem::parse(crl_pem).unwrap();
        let d = days_until(crl_next_update_unix(crl.contents()).unwrap(), now);
        assert!((29..=30).contains(&d), "{d}");
        assert!(not_after_unix(b"junk").is_err());
        assert!(crl_next_update_unix(&[0x30, 0x00]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}

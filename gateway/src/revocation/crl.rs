//! What popgate checks of a CRL before it lets it judge agencies.
//!
//! A CRL put into the verifier decides every handshake of its issuer's
//! certificates, so a fetched one is taken only when it is well formed,
//! signed by a CA in the bundle, current (`thisUpdate` not in the future,
//! `nextUpdate` not past), and not older than the one it replaces — an
//! attacker on the path to the distribution point could otherwise serve an
//! old CRL from before a revocation.

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Encode, Reader};
use rustls::pki_types::CertificateDer;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

/// The facts of a CRL that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFacts {
    /// DER of the issuer name (matches the CA's subject).
    pub issuer: Vec<u8>,
    pub this_update: i64,
    pub next_update: i64,
    /// The cRLNumber extension's value, as an unsigned big-endian integer.
    pub number: Option<Vec<u8>>,
    pub revoked: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("not a DER or PEM CRL: {0}")]
    Malformed(String),
    #[error("issued by {0}, which is not a CA in the bundle")]
    UnknownIssuer(String),
    #[error("signature does not verify against its issuer ({0})")]
    BadSignature(String),
    #[error("not current: {0}")]
    NotCurrent(String),
    #[error(
        "older than the CRL already held (thisUpdate {new} < {held}): a replayed CRL is refused"
    )]
    Rollback { new: i64, held: i64 },
}

/// DER from a body that is DER or PEM (`-----BEGIN X509 CRL-----`).
pub fn to_der(body: &[u8]) -> Result<Vec<u8>, CrlError> {
    if body.first() == Some(&0x30) {
        return Ok(body.to_vec());
    }
    let p = pem::parse(body).map_err(|e| CrlError::Malformed(e.to_string()))?;
    if p.tag() != "X509 CRL" {
        return Err(CrlError::Malformed(format!(
            "PEM block is {:?}, not X509 CRL",
            p.tag()
        )));
    }
    Ok(p.contents().to_vec())
}

fn unix(t: &x509_cert::time::Time) -> i64 {
    t.to_unix_duration().as_secs() as i64
}

/// Checks `der` against the CA bundle at `now` (Unix seconds).
pub fn check(der: &[u8], cas: &[CertificateDer<'_>], now: i64) -> Result<CrlFacts, CrlError> {
    let malformed = |e: der::Error| CrlError::Malformed(e.to_string());
    // webpki is what will use it: it must accept it too.
    webpki::OwnedCertRevocationList::from_der(der)
        .map_err(|e| CrlError::Malformed(format!("{e:?}")))?;
    let crl = CertificateList::from_der(der).map_err(malformed)?;
    let tbs = &crl.tbs_cert_list;
    let issuer = tbs.issuer.to_der().map_err(malformed)?;
    // Every CA of that name is a candidate (a bundle holds the old and the
    // new CA through a key rollover): one must have signed it.
    let candidates: Vec<Certificate> = cas
        .iter()
        .filter_map(|c| Certificate::from_der(c.as_ref()).ok())
        .filter(|c| {
            c.tbs_certificate
                .subject
                .to_der()
                .is_ok_and(|s| s == issuer)
        })
        .collect();
    if candidates.is_empty() {
        return Err(CrlError::UnknownIssuer(tbs.issuer.to_string()));
    }
    let mut last = None;
    if !candidates
        .iter()
        .any(|c| match verify_signature(der, &crl, c) {
            Ok(()) => true,
            Err(e) => {
                last = Some(e);
                false
            }
        })
    {
        return Err(last.unwrap_or_else(|| CrlError::UnknownIssuer(tbs.issuer.to_string())));
    }
    let this_update = unix(&tbs.this_update);
    let next_update = tbs
        .next_update
        .as_ref()
        .map(unix)
        .ok_or_else(|| CrlError::NotCurrent("no nextUpdate: it could never go stale".into()))?;
    // A little slack for clocks that disagree.
    if this_update > now + 300 {
        return Err(CrlError::NotCurrent(format!(
            "thisUpdate is {} s in the future",
            this_update - now
        )));
    }
    if next_update <= now {
        return Err(CrlError::NotCurrent(format!(
            "nextUpdate passed {} s ago",
            now - next_update
        )));
    }
    const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
    let number = tbs
        .crl_extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == CRL_NUMBER)
        .and_then(|e| der::asn1::UintRef::from_der(e.extn_value.as_bytes()).ok())
        .map(|n| n.as_bytes().to_vec());
    Ok(CrlFacts {
        issuer,
        this_update,
        next_update,
        number,
        revoked: tbs.revoked_certificates.as_ref().map_or(0, Vec::len),
    })
}

/// Refuses a CRL older than the one held for the same issuer.
pub fn not_older(new: &CrlFacts, held: &CrlFacts) -> Result<(), CrlError> {
    if new.this_update < held.this_update {
        return Err(CrlError::Rollback {
            new: new.this_update,
            held: held.this_update,
        });
    }
    Ok(())
}

/// The raw bytes of the first element of a DER SEQUENCE (the signed part
/// of a CRL, an OCSP response, a certificate), as signed.
pub(crate) fn first_element(der: &[u8]) -> Result<Vec<u8>, CrlError> {
    let malformed = |e: der::Error| CrlError::Malformed(e.to_string());
    let outer = AnyRef::from_der(der).map_err(malformed)?;
    let mut reader = der::SliceReader::new(outer.value()).map_err(malformed)?;
    let tbs: AnyRef<'_> = reader.decode().map_err(malformed)?;
    tbs.to_der().map_err(malformed)
}

fn verify_signature(
    der: &[u8],
    crl: &CertificateList,
    issuer: &Certificate,
) -> Result<(), CrlError> {
    let signature = crl
        .signature
        .as_bytes()
        .ok_or_else(|| CrlError::BadSignature("signature is not whole bytes".into()))?;
    signed_by(
        &first_element(der)?,
        crl.signature_algorithm.oid,
        signature,
        issuer,
    )
    .map_err(CrlError::BadSignature)
}

/// Checks that `signer`'s key made `signature` over `tbs` with `alg`
/// (ECDSA P-256/P-384, RSA PKCS#1 SHA-2, Ed25519).
pub(crate) fn signed_by(
    tbs: &[u8],
    alg: ObjectIdentifier,
    signature: &[u8],
    signer: &Certificate,
) -> Result<(), String> {
    use ring::signature as sig;
    const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
    const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
    const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
    const RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
    const RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
    const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
    const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    let spki = &signer.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let verifier: &dyn sig::VerificationAlgorithm = match (alg, curve) {
        (ECDSA_SHA256, Some(P256)) => &sig::ECDSA_P256_SHA256_ASN1,
        (ECDSA_SHA256, Some(P384)) => &sig::ECDSA_P384_SHA256_ASN1,
        (ECDSA_SHA384, Some(P256)) => &sig::ECDSA_P256_SHA384_ASN1,
        (ECDSA_SHA384, Some(P384)) => &sig::ECDSA_P384_SHA384_ASN1,
        (RSA_SHA256, _) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (RSA_SHA384, _) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (RSA_SHA512, _) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (ED25519, _) => &sig::ED25519,
        (oid, _) => {
            return Err(format!(
                "signature algorithm {oid} with this signer's key is not supported"
            ))
        }
    };
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("signer key is not whole bytes")?;
    sig::UnparsedPublicKey::new(verifier, key)
        .verify(tbs, signature)
        .map_err(|_| signer.tbs_certificate.subject.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn the_dev_ca_crl_passes_and_every_kind_of_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let pki = certs::pki::DevPki::create(dir.path()).unwrap();
        let ca_pem = std::fs::read(pki.ca_cert_path()).unwrap();
        let ca: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
            .map(|c| c.unwrap())
            .collect();
        let crl = to_der(&std::fs::read(pki.crl_path()).unwrap()).unwrap();
        let facts = check(&crl, &ca, now()).unwrap();
        assert_eq!(facts.revoked, 0);
        assert!(facts.next_update > now());

        // Another CA's CRL is not believed, even under the same CA name.
        let other_dir = tempfile::tempdir().unwrap();
        let other = certs::pki::DevPki::create(other_dir.path()).unwrap();
        let foreign = to_der(&std::fs::read(other.crl_path()).unwrap()).unwrap();
        assert!(matches!(
            check(&foreign, &ca, now()),
            Err(CrlError::BadSignature(_))
        ));
        // Unless that CA is in the bundle too (a rollover): then it is.
        let both: Vec<CertificateDer<'static>> = ca
            .iter()
            .cloned()
            .chain(
                CertificateDer::pem_file_iter(other.ca_cert_path())
                    .unwrap()
                    .map(|c| c.unwrap()),
            )
            .collect();
        assert!(check(&foreign, &both, now()).is_ok());
        assert!(check(&crl, &both, now()).is_ok());
        assert!(matches!(
            check(&crl, &[], now()),
            Err(CrlError::UnknownIssuer(_))
        ));
        // A flipped byte in the signed part or the signature.
        for at in [crl.len() / 3, crl.len() - 3] {
            let mut bad = crl.clone();
            bad[at] ^= 0x01;
            assert!(check(&bad, &ca, now()).is_err(), "flip at {at} accepted");
        }
        // Garbage.
        assert!(matches!(
            to_der(b"<html>502</html>"),
            Err(CrlError::Malformed(_))
        ));
        assert!(matches!(
            check(b"\x30\x03\x02\x01\x00", &ca, now()),
            Err(CrlError::Malformed(_))
        ));
        // Stale, and from the future.
        assert!(matches!(
            check(&crl, &ca, facts.next_update + 1),
            Err(CrlError::NotCurrent(_))
        ));
        assert!(matches!(
            check(&crl, &ca, facts.this_update - 3600),
            Err(CrlError::NotCurrent(_))
        ));
        // A newer CRL (after a revocation) replaces it; the older one cannot come back.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let leaf = pki
            .issue_agency(
                &certs::pki::AgencySubject {
                    id: "hanoi".into(),
                    name: "Hà Nội".into(),
                },
                30,
            )
            .unwrap();
        pki.revoke(&leaf.cert_path).unwrap();
        let newer = check(
            &to_der(&std::fs::read(pki.crl_path()).unwrap()).unwrap(),
            &ca,
            now(),
        )
        .unwrap();
        assert_eq!(newer.revoked, 1);
        assert!(not_older(&newer, &facts).is_ok());
        assert!(matches!(
            not_older(&facts, &newer),
            Err(CrlError::Rollback { .. })
        ));
    }
}

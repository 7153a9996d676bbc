//! The development CA's OCSP responder (`popgate pki serve-revocation`):
//! answers from the dev PKI's index, signed with the CA key, so the demo
//! and integrators' test setups can see OCSP end to end without a
//! production PKI. Not for production: a real CA runs its own responder.
//!
//! Answers are for one certificate per request (the first asked about),
//! signed by the CA itself (no delegated responder), current for
//! `validity` — short, so a revocation shows within it.

use std::time::Duration;

use der::asn1::{BitString, GeneralizedTime, ObjectIdentifier};
use der::{Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_ocsp::{
    BasicOcspResponse, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse, ResponderId,
    ResponseData, RevokedInfo, SingleResponse,
};

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");

fn at(t: time::OffsetDateTime) -> Result<OcspGeneralizedTime, der::Error> {
    Ok(OcspGeneralizedTime(GeneralizedTime::from_unix_duration(
        Duration::from_secs(t.unix_timestamp().max(0) as u64),
    )?))
}

/// The DER response to a DER request, at `now`.
pub fn answer(
    pki: &certs::pki::DevPki,
    request: &[u8],
    now: time::OffsetDateTime,
    validity: Duration,
) -> Vec<u8> {
    let fallback = |r: OcspResponse| r.to_der().unwrap_or_default();
    let Ok(req) = OcspRequest::from_der(request) else {
        return fallback(OcspResponse::malformed_request());
    };
    let Some(asked) = req.tbs_request.request_list.first() else {
        return fallback(OcspResponse::malformed_request());
    };
    match build(pki, asked.req_cert.clone(), now, validity) {
        Ok(der) => der,
        Err(e) => {
            tracing::error!(error = %e, "OCSP answer could not be made");
            fallback(OcspResponse::internal_error())
        }
    }
}

fn build(
    pki: &certs::pki::DevPki,
    id: x509_ocsp::CertId,
    now: time::OffsetDateTime,
    validity: Duration,
) -> Result<Vec<u8>, String> {
    let ca = Certificate::from_der(&pki.ca_cert_der().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let ours = super::ocsp::cert_id(
        // Only the issuer half of the CertID matters here.
        &ca, &ca,
    )
    .map_err(|e| e.to_string())?;
    let status = if id.issuer_name_hash != ours.issuer_name_hash
        || id.issuer_key_hash != ours.issuer_key_hash
        || id.hash_algorithm.oid != ours.hash_algorithm.oid
    {
        CertStatus::unknown()
    } else {
        match pki
            .status(id.serial_number.as_bytes())
            .map_err(|e| e.to_string())?
        {
            certs::pki::DevStatus::Good => CertStatus::good(),
            certs::pki::DevStatus::Revoked { at: when } => CertStatus::revoked(RevokedInfo {
                revocation_time: at(when).map_err(|e| e.to_string())?,
                revocation_reason: None,
            }),
            certs::pki::DevStatus::Unknown => CertStatus::unknown(),
        }
    };
    let tbs = ResponseData {
        version: Default::default(),
        responder_id: ResponderId::ByName(ca.tbs_certificate.subject.clone()),
        produced_at: at(now).map_err(|e| e.to_string())?,
        responses: vec![SingleResponse {
            cert_id: id,
            cert_status: status,
            this_update: at(now).map_err(|e| e.to_string())?,
            next_update: Some(
                at(now + time::Duration::seconds(validity.as_secs() as i64))
                    .map_err(|e| e.to_string())?,
            ),
            single_extensions: None,
        }],
        response_extensions: None,
    };
    let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
    let signature = pki.sign_as_ca(&tbs_der).map_err(|e| e.to_string())?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: ECDSA_SHA256,
            parameters: None,
        },
        signature: BitString::from_bytes(&signature).map_err(|e| e.to_string())?,
        certs: None,
    };
    OcspResponse::successful(basic)
        .and_then(|r| r.to_der())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::ocsp::{cert_id, parse_and_verify, request_der, Status};

    #[test]
    fn the_dev_responder_answers_what_the_ca_index_says_and_popgate_believes_it() {
        let dir = tempfile::tempdir().unwrap();
        let pki = certs::pki::DevPki::create(dir.path()).unwrap();
        let issue = |id: &str| {
            pki.issue_agency(
                &certs::pki::AgencySubject {
                    id: id.into(),
                    name: id.into(),
                },
                30,
            )
            .unwrap()
        };
        let (good, bad) = (issue("good"), issue("bad"));
        pki.revoke(&bad.cert_path).unwrap();
        let ca = Certificate::from_der(&pki.ca_cert_der().unwrap()).unwrap();
        let now = time::OffsetDateTime::now_utc();
        // Its certificates name it.
        let g = Certificate::from_der(&good.der).unwrap();
        assert_eq!(
            crate::revocation::ocsp::responder_urls(&g),
            vec![certs::pki::DEV_OCSP_URL.to_owned()]
        );
        for (der, want) in [(&good.der, Status::Good), (&bad.der, Status::Revoked)] {
            let leaf = Certificate::from_der(der).unwrap();
            let id = cert_id(&leaf, &ca).unwrap();
            let body = answer(
                &pki,
                &request_der(&id).unwrap(),
                now,
                Duration::from_secs(60),
            );
            let a = parse_and_verify(&body, &id, &ca, now.unix_timestamp()).unwrap();
            assert_eq!(a.status, want);
            assert_eq!(a.next_update, Some(now.unix_timestamp() + 60));
        }
        // Another CA's certificate: unknown, still signed.
        let other_dir = tempfile::tempdir().unwrap();
        let other = certs::pki::DevPki::create(other_dir.path()).unwrap();
        let stranger = other
            .issue_agency(
                &certs::pki::AgencySubject {
                    id: "x".into(),
                    name: "x".into(),
                },
                30,
            )
            .unwrap();
        let other_ca = Certificate::from_der(&other.ca_cert_der().unwrap()).unwrap();
        let id = cert_id(&Certificate::from_der(&stranger.der).unwrap(), &other_ca).unwrap();
        let body = answer(
            &pki,
            &request_der(&id).unwrap(),
            now,
            Duration::from_secs(60),
        );
        assert_eq!(
            parse_and_verify(&body, &id, &ca, now.unix_timestamp())
                .unwrap()
                .status,
            Status::Unknown
        );
        // Garbage in: a malformed-request status out, which popgate refuses.
        let body = answer(&pki, b"nonsense", now, Duration::from_secs(60));
        assert!(parse_and_verify(&body, &id, &ca, now.unix_timestamp()).is_err());
    }
}

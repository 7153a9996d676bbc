//! The compliance verdict: what popscan concluded about an agency's systems,
//! signed, and what popgate's admission step trusts.
//!
//! The file is an envelope around the exact bytes that were signed (the
//! payload, base64), in the manner of DSSE: a verifier checks the signature
//! over those bytes before parsing anything inside them, so no JSON
//! re-serialisation question can ever make a tampered verdict verify.

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Envelope and payload format tag.
pub const FORMAT: &str = "popscan-verdict/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictResult {
    Pass,
    Fail,
    /// The scan could not decide (unreachable endpoint, missing evidence).
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedControl {
    pub control: String,
    /// First quoted finding, e.g. "TLSv1.0 offered on 10.0.0.5:443".
    pub finding: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaiverUsed {
    pub control: String,
    pub approver: String,
    pub expires: String,
}

/// The outcome for one system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemOutcome {
    pub system: String,
    pub level: u8,
    pub policy_id: String,
    pub policy_sha256: String,
    pub result: VerdictResult,
    pub failed_controls: Vec<FailedControl>,
    pub waivers_used: Vec<WaiverUsed>,
    /// Why the system could not be judged, for `error` results.
    pub errors: Vec<String>,
}

/// One verdict: for a single system (`system` set) or the roll-up of all of
/// an agency's systems in one scan (`system` absent), which is what the
/// gateway admits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub format: String,
    pub agency: String,
    pub system: Option<String>,
    pub result: VerdictResult,
    pub systems: Vec<SystemOutcome>,
    /// RFC 3339 UTC.
    pub scanned_at: String,
    /// RFC 3339 UTC; the verdict means nothing after this.
    pub valid_until: String,
    pub scanner_version: String,
}

impl Verdict {
    pub fn valid_until(&self) -> Result<OffsetDateTime, VerdictError> {
        OffsetDateTime::parse(&self.valid_until, &Rfc3339)
            .map_err(|e| VerdictError::Payload(format!("valid_until {:?}: {e}", self.valid_until)))
    }

    pub fn scanned_at(&self) -> Result<OffsetDateTime, VerdictError> {
        OffsetDateTime::parse(&self.scanned_at, &Rfc3339)
            .map_err(|e| VerdictError::Payload(format!("scanned_at {:?}: {e}", self.scanned_at)))
    }

    /// A one-line reason an agency can act on when the result is not pass.
    pub fn failure_reason(&self) -> String {
        let mut parts = Vec::new();
        for s in &self.systems {
            for c in &s.failed_controls {
                parts.push(format!("control {} failed on {}", c.control, s.system));
            }
            for e in &s.errors {
                parts.push(format!("{} could not be scanned: {e}", s.system));
            }
        }
        if parts.is_empty() {
            format!("verdict result is {:?}", self.result).to_lowercase()
        } else {
            parts.join("; ")
        }
    }
}

/// The signed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub format: String,
    pub key_id: String,
    /// base64 of the verdict JSON bytes that were signed.
    pub payload: String,
    /// base64 Ed25519 signature over the payload bytes.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    #[error("not a verdict file: {0}")]
    Unparseable(String),
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    #[error("signature does not verify (file altered or forged)")]
    BadSignature,
    #[error("signed payload is invalid: {0}")]
    Payload(String),
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Signs a verdict; the result serialises to the verdict file.
pub fn sign(v: &Verdict, key: &SigningKey) -> Envelope {
    let payload = serde_json::to_vec(v).unwrap_or_default();
    let sig = key.sign(&payload);
    Envelope {
        format: FORMAT.to_string(),
        key_id: crate::signing::key_id(&key.verifying_key()),
        payload: b64().encode(&payload),
        signature: b64().encode(sig.to_bytes()),
    }
}

fn parse_envelope(bytes: &[u8]) -> Result<(Envelope, Vec<u8>), VerdictError> {
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| VerdictError::Unparseable(e.to_string()))?;
    if env.format != FORMAT {
        return Err(VerdictError::Unparseable(format!(
            "format {:?}, expected {FORMAT:?}",
            env.format
        )));
    }
    let payload = b64()
        .decode(&env.payload)
        .map_err(|e| VerdictError::Unparseable(format!("payload is not base64: {e}")))?;
    Ok((env, payload))
}

/// Parses the envelope and decodes the payload without checking the
/// signature (for `popscan verdict show`).
pub fn open_unverified(bytes: &[u8]) -> Result<(Envelope, Verdict), VerdictError> {
    let (env, payload) = parse_envelope(bytes)?;
    let v: Verdict =
        serde_json::from_slice(&payload).map_err(|e| VerdictError::Payload(e.to_string()))?;
    Ok((env, v))
}

/// Verifies the signature with one of `keys`, then parses the payload.
pub fn verify(bytes: &[u8], keys: &[VerifyingKey]) -> Result<Verdict, VerdictError> {
    let (env, payload) = parse_envelope(bytes).map_err(|e| match e {
        // A payload altered into non-base64 is a signature failure too.
        VerdictError::Unparseable(m) if m.starts_with("payload") => VerdictError::BadSignature,
        other => other,
    })?;
    let key = keys
        .iter()
        .find(|k| crate::signing::key_id(k) == env.key_id)
        .ok_or_else(|| VerdictError::UnknownKey(env.key_id.clone()))?;
    let sig_bytes: [u8; 64] = b64()
        .decode(&env.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(VerdictError::BadSignature)?;
    key.verify(&payload, &Signature::from_bytes(&sig_bytes))
        .map_err(|_| VerdictError::BadSignature)?;
    let v: Verdict =
        serde_json::from_slice(&payload).map_err(|e| VerdictError::Payload(e.to_string()))?;
    if v.format != FORMAT {
        return Err(VerdictError::Payload(format!("format {:?}", v.format)));
    }
    v.valid_until()?;
    v.scanned_at()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Verdict {
        Verdict {
            format: FORMAT.into(),
            agency: "hanoi".into(),
            system: None,
            result: VerdictResult::Fail,
            systems: vec![SystemOutcome {
                system: "hanoi-portal".into(),
                level: 3,
                policy_id: "vn-l3".into(),
                policy_sha256: "ab".repeat(32),
                result: VerdictResult::Fail,
                failed_controls: vec![FailedControl {
                    control: "tls.protocols".into(),
                    finding: "TLSv1.0 offered on 10.0.0.5:443".into(),
                }],
                waivers_used: vec![],
                errors: vec![],
            }],
            scanned_at: "2026-11-22T10:00:00Z".into(),
            valid_until: "2027-02-20T10:00:00Z".into(),
            scanner_version: "0.1.0".into(),
        }
    }

    #[test]
    fn sign_verify_and_tamper() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let file = serde_json::to_vec(&sign(&sample(), &key)).unwrap();
        let v = verify(&file, &[other.verifying_key(), key.verifying_key()]).unwrap();
        assert_eq!(v, sample());
        assert_eq!(
            v.failure_reason(),
            "control tls.protocols failed on hanoi-portal"
        );
        assert!(matches!(
            verify(&file, &[other.verifying_key()]),
            Err(VerdictError::UnknownKey(_))
        ));
        // Every single-byte change inside the payload or signature fails.
        let text = String::from_utf8(file.clone()).unwrap();
        let start = text.find("\"payload\":\"").unwrap() + 11;
        for i in (start..start + 40).step_by(3) {
            let mut t = file.clone();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            assert!(verify(&t, &[key.verifying_key()]).is_err(), "byte {i}");
        }
        assert!(matches!(
            verify(b"{not json", &[key.verifying_key()]),
            Err(VerdictError::Unparseable(_))
        ));
    }
}

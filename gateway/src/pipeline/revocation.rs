use pingora::proxy::Session;

use crate::refusal::Refusal;
use crate::revocation::ocsp::{OcspChecker, Verdict};
use crate::tls::AgencyCertVerifier;

/// The OCSP stage, right after identity: the connection's certificate must
/// not be revoked, as its issuer's responder says (cached until the
/// answer's nextUpdate). Certificates that name no responder pass: CRLs
/// judged them in the handshake.
pub async fn revocation(
    session: &Session,
    verifier: &AgencyCertVerifier,
    checker: Option<&OcspChecker>,
) -> Result<(), Refusal> {
    let Some(checker) = checker else {
        return Ok(());
    };
    let digest = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|ssl| ssl.cert_digest.as_slice())
        .ok_or(Refusal::NoIdentity)?;
    // The certificate digest is the SHA-256 of its DER: the cache key.
    let known = <[u8; 32]>::try_from(digest)
        .ok()
        .and_then(|k| checker.known(&k));
    let verdict = match known {
        Some(v) => v,
        None => {
            let (leaf, issuer) = verifier
                .leaf_and_issuer(digest)
                .ok_or(Refusal::NoIdentity)?;
            checker.judge(&leaf, &issuer).await
        }
    };
    match verdict {
        Verdict::Good => Ok(()),
        Verdict::Revoked => Err(Refusal::CertRevoked),
        Verdict::Unavailable(why) => Err(Refusal::RevocationUnavailable(why)),
    }
}

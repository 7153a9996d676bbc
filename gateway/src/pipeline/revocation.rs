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
    let (leaf, issuer) = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|ssl| verifier.leaf_and_issuer(&ssl.cert_digest))
        .ok_or(Refusal::NoIdentity)?;
    match checker.judge(&leaf, &issuer).await {
        Verdict::Good => Ok(()),
        Verdict::Revoked => Err(Refusal::CertRevoked),
        Verdict::Unavailable(why) => Err(Refusal::RevocationUnavailable(why)),
    }
}

use pingora::proxy::Session;

use super::Seen;
use crate::refusal::Refusal;
use crate::registry::{Agency, AgencyStatus, Registry};
use crate::tls::AgencyCertVerifier;

/// The identity stage: the certificate rustls verified for this connection
/// → the agency it belongs to, which must be active.
pub fn identity<'r>(
    session: &Session,
    verifier: &AgencyCertVerifier,
    registry: &'r Registry,
    seen: &mut Seen,
) -> Result<&'r Agency, Refusal> {
    let identity = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|ssl| verifier.identity(&ssl.cert_digest))
        .ok_or(Refusal::NoIdentity)?;
    seen.identity = Some(identity.clone());
    let agency = registry
        .agency_for(&identity)
        .ok_or(Refusal::UnknownAgency)?;
    seen.agency = Some(agency.id.clone());
    if agency.status == AgencyStatus::Suspended {
        return Err(Refusal::AgencySuspended {
            agency: agency.id.clone(),
        });
    }
    Ok(agency)
}

use super::{Admitted, Judged};
use crate::refusal::Refusal;
use crate::registry::Registry;

/// The quota stage, last: only requests that would otherwise be served
/// spend budget.
pub async fn admit(
    quota: &crate::quota::QuotaEngine,
    registry: &Registry,
    judged: Judged,
    body_len: u64,
) -> Result<Admitted, Refusal> {
    let route = &registry.routes[judged.route_index];
    let permit = quota
        .admit(&judged.agency, &route.id)
        .await
        .map_err(Refusal::QuotaExceeded)?;
    Ok(Admitted {
        agency: judged.agency,
        route: route.id.clone(),
        target: judged.target,
        purpose: judged.purpose,
        body_len,
        permit,
    })
}

use pingora::http::RequestHeader;

use super::{Judged, Seen};
use crate::access::{check_params, check_purpose, check_query, find_route};
use crate::edge::Limits;
use crate::refusal::Refusal;
use crate::registry::{Agency, Registry};
use crate::routes::normalise_path;

/// The access stage: normalised path → declared route → granted to this
/// agency, with its purpose, parameters and query in their declared shapes.
pub fn access(
    req: &RequestHeader,
    registry: &Registry,
    agency: &Agency,
    limits: &Limits,
    citizen_ref: impl Fn(&str) -> String,
    seen: &mut Seen,
) -> Result<Judged, Refusal> {
    let method = req.method.as_str();
    let path = normalise_path(req.uri.path()).map_err(|e| Refusal::BadPath(e.to_string()))?;
    let not_allowed = || Refusal::RouteNotAllowed {
        method: method.to_owned(),
        path: crate::access::audit_path(path.as_str()),
    };
    let Some(matched) = find_route(&registry.routes, method, &path) else {
        seen.audit_path = Some(crate::access::audit_path(path.as_str()));
        return Err(not_allowed());
    };
    let route = &registry.routes[matched.route_index];
    seen.route = Some(route.id.clone());
    seen.audit_path = Some(route.template.as_str().to_owned());
    // Parameters in their declared shape first, so the citizen is named
    // one way only; then the purpose: a refused attempt on a citizen is
    // recorded under that citizen, with the reason the agency gave.
    check_params(route, &matched).map_err(Refusal::BadParameter)?;
    seen.citizen_id = matched.citizen_id().map(str::to_owned);
    seen.purpose = check_purpose(req.headers.get("x-purpose").map(|v| v.as_bytes()))
        .map_err(Refusal::BadPurpose)?;
    if !agency.allowed.contains(&matched.route_index) {
        return Err(not_allowed());
    }
    let query = check_query(route, req.uri.query(), citizen_ref).map_err(Refusal::BadParameter)?;
    seen.query = query.audit;
    if seen.citizen_id.is_none() {
        seen.citizen_id = query.citizen;
    }
    if agency.purpose_required && seen.purpose.is_none() {
        return Err(Refusal::PurposeRequired);
    }
    Ok(Judged {
        route_index: matched.route_index,
        agency: agency.id.clone(),
        target: match query.upstream {
            Some(q) => format!("{}?{q}", path.as_str()),
            None => path.as_str().to_owned(),
        },
        purpose: seen.purpose.clone(),
        body_limit: route.max_body_bytes.unwrap_or(limits.max_body_bytes),
    })
}

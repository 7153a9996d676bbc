use pingora::http::RequestHeader;

use crate::edge::Limits;
use crate::refusal::Refusal;

/// The edge stage: refuses what popgate never forwards, whoever asks.
/// `has_body`: the request carries a body (pingora's framing verdict).
pub fn edge(req: &RequestHeader, has_body: bool, limits: &Limits) -> Result<(), Refusal> {
    if req.method == http::Method::CONNECT {
        return Err(Refusal::TunnelRefused("CONNECT"));
    }
    // `Connection` may only say keep-alive or close: `upgrade` asks for a
    // tunnel, and any other token names a header to drop on the way, a way
    // to strip what a hop relies on. One pass over its tokens decides.
    let mut upgrade = req.headers.contains_key(http::header::UPGRADE);
    let mut nominates = false;
    for t in req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
    {
        if t.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        } else if !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close") {
            nominates = true;
        }
    }
    if upgrade {
        return Err(Refusal::TunnelRefused("Upgrade"));
    }
    if nominates {
        return Err(Refusal::BadHeader(
            "Connection may only be keep-alive or close".into(),
        ));
    }
    let header_bytes: u64 = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
        .sum::<u64>()
        + req.uri.path_and_query().map_or(0, |p| p.as_str().len()) as u64;
    if header_bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    if has_body
        && matches!(
            req.method,
            http::Method::GET | http::Method::HEAD | http::Method::DELETE
        )
    {
        return Err(Refusal::BodyNotAllowed {
            method: req.method.to_string(),
        });
    }
    Ok(())
}

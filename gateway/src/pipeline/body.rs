use pingora::proxy::Session;

use super::Judged;
use crate::edge::Limits;
use crate::refusal::Refusal;

/// The body stage: the whole body is read, within its limit and deadline,
/// before anything is forwarded, so the registry never receives part of a
/// request popgate later refuses. pingora replays the read body upstream.
pub async fn body(session: &mut Session, judged: &Judged, limits: &Limits) -> Result<u64, Refusal> {
    if session.as_mut().is_body_empty() {
        return Ok(0);
    }
    let limit = judged.body_limit;
    let too_large = || Refusal::BodyTooLarge { limit };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // An agency that asked to be invited (`Expect: 100-continue`) sends
    // its body only now that everything else about the request passed.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .as_mut()
            .write_continue_response()
            .await
            .map_err(|e| Refusal::BadRequestBody(e.etype().as_str().to_lowercase()))?;
    }
    session.as_mut().enable_retry_buffering();
    let mut total = 0u64;
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    loop {
        let chunk = tokio::time::timeout_at(deadline, session.as_mut().read_request_body())
            .await
            .map_err(|_| {
                Refusal::BadRequestBody(format!(
                    "not complete within {} ms",
                    limits.body_timeout.as_millis()
                ))
            })?
            .map_err(|e| Refusal::BadRequestBody(e.etype().as_str().to_lowercase()))?;
        match chunk {
            Some(bytes) => {
                total += bytes.len() as u64;
                if total > limit {
                    return Err(too_large());
                }
            }
            None => break,
        }
    }
    // pingora replays what it kept; had it kept less than was read, the
    // registry would get a truncated body: refuse instead (fail closed).
    if session.as_mut().retry_buffer_truncated() {
        return Err(too_large());
    }
    Ok(total)
}

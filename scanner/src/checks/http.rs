//! HTTP response header controls.

use super::Outcome;
use crate::evidence::{EndpointFacts, HttpEvidence};
use crate::policy::HttpCheck;

pub(super) fn check(c: &HttpCheck, ep: &EndpointFacts, h: &HttpEvidence, out: &mut Outcome) {
    let at = &ep.label;
    match c {
        HttpCheck::Hsts { min_max_age } => match h.header("strict-transport-security") {
            None => out.fail(format!("{at}: no Strict-Transport-Security header")),
            Some(v) => match hsts_max_age(v) {
                Some(age) if age >= *min_max_age => {
                    out.ok(format!("{at}: Strict-Transport-Security: {v}"))
                }
                Some(age) => out.fail(format!(
                    "{at}: Strict-Transport-Security max-age={age} is below {min_max_age}"
                )),
                None => out.fail(format!(
                    "{at}: Strict-Transport-Security {v:?} has no valid max-age"
                )),
            },
        },
        HttpCheck::Header { header, value } => match h.header(header) {
            Some(v) if v.eq_ignore_ascii_case(value) => out.ok(format!("{at}: {header}: {v}")),
            Some(v) => out.fail(format!("{at}: {header}: {v:?}, expected {value:?}")),
            None => out.fail(format!("{at}: no {header} header")),
        },
        HttpCheck::ServerBanner => match h.header("server") {
            Some(v) if v.chars().any(|c| c.is_ascii_digit()) => {
                out.fail(format!("{at}: Server header reveals a version: {v:?}"))
            }
            Some(v) => out.ok(format!("{at}: Server: {v} (no version)")),
            None => out.ok(format!("{at}: no Server header")),
        },
    }
}

/// `max-age` of an HSTS value (RFC 6797 §6.1: directives separated by `;`,
/// value optionally quoted).
fn hsts_max_age(v: &str) -> Option<u64> {
    v.split(';').find_map(|d| {
        let (k, val) = d.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        val.trim().trim_matches('"').parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hsts_values() {
        assert_eq!(
            super::hsts_max_age("max-age=31536000; includeSubDomains"),
            Some(31536000)
        );
        assert_eq!(
            super::hsts_max_age("includeSubDomains; MAX-AGE=\"600\""),
            Some(600)
        );
        assert_eq!(super::hsts_max_age("max-age=abc"), None);
    }
}

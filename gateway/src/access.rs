//! Which route a request is, and whether its agency may call it: the route
//! found for a normalised path, its parameters and query in their declared
//! shapes, the stated purpose, and what of all that may reach the log.

use percent_encoding::percent_decode_str;

use crate::routes::{Method, NormalPath, Route};

/// A route the request matched, with its parameters.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    pub route_index: usize,
    /// Path parameters by name, as they appear in the normalised path.
    pub params: Vec<(String, String)>,
}

impl MatchedRoute {
    pub fn citizen_id(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == "citizen_id")
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request's parameters were refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("path parameter {name} does not have the shape {shape}")]
    PathShape { name: String, shape: String },
    #[error("query parameter {name:?} is not accepted by this route")]
    QueryNotAllowed { name: String },
    #[error("query parameter {name:?} appears more than once")]
    QueryRepeated { name: String },
    #[error("query parameter {name} does not have the shape {shape}")]
    QueryShape { name: String, shape: String },
    #[error("the query string is malformed (bad percent-escape or not UTF-8)")]
    QueryMalformed,
}

/// Every path parameter must have its declared shape, so one citizen has
/// one spelling (`001203012345;jsessionid=x` or `%30…` variants are
/// refused, not logged as another citizen).
pub fn check_params(route: &Route, matched: &MatchedRoute) -> Result<(), ParamError> {
    for (name, value) in &matched.params {
        if let Some((_, shape)) = route.params.iter().find(|(n, _)| n == name) {
            if !shape.matches(value) {
                return Err(ParamError::PathShape {
                    name: name.clone(),
                    shape: shape.as_str().to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// A query string reduced to what the route accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedQuery {
    /// What the upstream receives after `?`, parameters in name order,
    /// re-encoded; `None` when there were none.
    pub upstream: Option<String>,
    /// What the audit record shows: values, with citizen IDs as
    /// `hmac:<citizen_ref>`.
    pub audit: Option<std::collections::BTreeMap<String, String>>,
}

/// Checks a raw query string against the route's accepted parameters.
pub fn check_query(
    route: &Route,
    raw: Option<&str>,
    citizen_ref: impl Fn(&str) -> String,
) -> Result<CheckedQuery, ParamError> {
    let Some(raw) = raw.filter(|q| !q.is_empty()) else {
        return Ok(CheckedQuery::default());
    };
    let mut values: std::collections::BTreeMap<String, String> = Default::default();
    for pair in raw.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |x: &str| {
            // A literal '%' that is not an escape is malformed, not data.
            let bytes = x.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let ok = bytes
                        .get(i + 1..i + 3)
                        .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                    if !ok {
                        return Err(ParamError::QueryMalformed);
                    }
                    i += 3;
                } else {
                    i += 1;
                }
            }
            percent_decode_str(x)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ParamError::QueryMalformed)
        };
        let (k, v) = (decode(k)?, decode(v)?);
        let Some((_, param)) = route.query.iter().find(|(n, _)| *n == k) else {
            return Err(ParamError::QueryNotAllowed { name: k });
        };
        if !param.shape.matches(&v) {
            return Err(ParamError::QueryShape {
                name: k,
                shape: param.shape.as_str().to_owned(),
            });
        }
        if values.insert(k.clone(), v).is_some() {
            return Err(ParamError::QueryRepeated { name: k });
        }
    }
    if values.is_empty() {
        return Ok(CheckedQuery::default());
    }
    let mut upstream = String::new();
    let mut audit = std::collections::BTreeMap::new();
    for (k, v) in &values {
        if !upstream.is_empty() {
            upstream.push('&');
        }
        upstream.push_str(&encode_component(k));
        upstream.push('=');
        upstream.push_str(&encode_component(v));
        let citizen = route.query.iter().any(|(n, p)| n == k && p.citizen);
        let shown = if citizen {
            format!("hmac:{}", citizen_ref(v))
        } else {
            v.clone()
        };
        audit.insert(k.clone(), shown);
    }
    Ok(CheckedQuery {
        upstream: Some(upstream),
        audit: Some(audit),
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters and the
/// few delimiters that mean nothing to query parsers (`,` `:` `@` `/`);
/// `&`, `=`, `+`, `;` and `%` are always encoded, so no parser can split a
/// value differently from popgate.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Finds the declared route for a method and normalised path, among all
/// routes (not only the agency's): "exists but not yours" and "does not
/// exist" are both refusals, but audit and metrics can tell them apart.
pub fn find_route(routes: &[Route], method: &str, path: &NormalPath) -> Option<MatchedRoute> {
    let method = Method::parse(method)?;
    routes.iter().enumerate().find_map(|(i, r)| {
        if r.method != method {
            return None;
        }
        let params = r.template.matches(path)?;
        Some(MatchedRoute {
            route_index: i,
            params: params
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        })
    })
}

/// Validates an `X-Purpose` value: present, short, printable, and free of
/// identifiers. Purposes end up in audit records a citizen may read, so
/// they must be readable text that shows what it says: no control
/// characters and no invisible or direction-changing ones (U+202E makes
/// "…ecnarusni" read as "insurance…"). A citizen ID typed into the purpose
/// is replaced by `{redacted}` so it never lands in the log in clear.
pub fn check_purpose(value: Option<&[u8]>) -> Result<Option<String>, &'static str> {
    let Some(v) = value else { return Ok(None) };
    let s = std::str::from_utf8(v).map_err(|_| "X-Purpose is not UTF-8")?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.len() > 256 {
        return Err("X-Purpose is longer than 256 bytes");
    }
    if s.chars().any(|c| c.is_control()) {
        return Err("X-Purpose contains control characters");
    }
    if s.chars().any(is_invisible_format) {
        return Err("X-Purpose contains invisible or bidirectional formatting characters");
    }
    Ok(Some(redact_identifiers(s)))
}

/// Unicode format characters (category Cf) that change how text reads
/// without being seen: bidirectional overrides and isolates, zero-width
/// characters, the BOM.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// How many digits make a run an identifier worth hiding: citizen IDs have
/// 12, old identity card numbers 9.
const IDENTIFIER_DIGITS: usize = 9;

/// Replaces every run of digits that forms an identifier with
/// `{redacted}`. A run may be broken by single separators (space, `-`, `.`,
/// `_`, `/`), as people type IDs: `001 203 012 345`, `00120301-5555`.
pub fn redact_identifiers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // Extend over digits and single separators between digits.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                digits += 1;
                j += 1;
                end = j;
            } else if is_id_separator(chars[j])
                && chars.get(j + 1).is_some_and(|c| c.is_ascii_digit())
            {
                j += 1;
            } else {
                break;
            }
        }
        if digits >= IDENTIFIER_DIGITS {
            out.push_str("{redacted}");
        } else {
            out.extend(&chars[start..end]);
        }
        i = end;
    }
    out
}

fn is_id_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '_' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_redacted_however_they_are_typed() {
        for (input, want) in [
            ("tra cuu 001203012345", "tra cuu {redacted}"),
            ("001 203 012 345 ho so", "{redacted} ho so"),
            ("/v1/foo/00120301-5555", "/v1/foo/{redacted}"),
            ("1.2.3.4.5.6.7.8.9", "{redacted}"),
            ("ho so 2026-11 so 12", "ho so 2026-11 so 12"),
            ("/v1/citizens/12345678", "/v1/citizens/12345678"),
            ("a123456789", "a{redacted}"),
            ("12345678 9", "{redacted}"),
        ] {
            assert_eq!(redact_identifiers(input), want, "{input}");
        }
    }

    #[test]
    fn purpose_rules() {
        assert_eq!(check_purpose(None), Ok(None));
        assert_eq!(check_purpose(Some(b"  ")), Ok(None));
        assert_eq!(
            check_purpose(Some("Xác minh BHYT".as_bytes())),
            Ok(Some("Xác minh BHYT".into()))
        );
        assert!(check_purpose(Some(b"a\x01b")).is_err());
        assert!(check_purpose(Some(&[0xff, 0xfe])).is_err());
        assert!(check_purpose(Some("x".repeat(300).as_bytes())).is_err());
        assert!(check_purpose(Some("kiem tra \u{202e}ecnarusni".as_bytes())).is_err());
        assert!(check_purpose(Some("a\u{200b}b".as_bytes())).is_err());
        assert_eq!(
            check_purpose(Some(b"xac minh cccd 001203012345")),
            Ok(Some("xac minh cccd {redacted}".into()))
        );
    }
}

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
    /// The first citizen ID among the accepted parameters (in name order),
    /// so a lookup by query is found by `audit search` like one by path.
    pub citizen: Option<String>,
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
    let mut first_citizen = None;
    for (k, v) in &values {
        if !upstream.is_empty() {
            upstream.push('&');
        }
        upstream.push_str(&encode_component(k));
        upstream.push('=');
        upstream.push_str(&encode_component(v));
        let citizen = route.query.iter().any(|(n, p)| n == k && p.citizen);
        let shown = if citizen {
            first_citizen.get_or_insert_with(|| v.clone());
            format!("hmac:{}", citizen_ref(v))
        } else {
            v.clone()
        };
        audit.insert(k.clone(), shown);
    }
    Ok(CheckedQuery {
        upstream: Some(upstream),
        audit: Some(audit),
        citizen: first_citizen,
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

/// Characters that change how text reads without being seen: Unicode
/// format characters (bidirectional overrides and isolates, zero-width
/// characters, the BOM, tag characters, variation selectors) and the
/// invisible fillers.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// The longest path an audit record keeps for a request that matched no
/// route; the rest is replaced by `…`.
const AUDIT_PATH_MAX: usize = 256;

/// What an audit record shows of a path that matched no route (or was
/// refused before matching): percent-decoded, so an encoded identifier is
/// seen for what it is, identifiers redacted, control characters dropped,
/// and at most [`AUDIT_PATH_MAX`] characters, so a megabyte path costs a
/// small record.
pub fn audit_path(raw: &str) -> String {
    let head: String = raw.chars().take(AUDIT_PATH_MAX * 3).collect();
    let decoded = percent_decode_str(&head).decode_utf8_lossy();
    let mut shown: String = redact_identifiers(&decoded)
        .chars()
        .filter(|c| !c.is_control())
        .take(AUDIT_PATH_MAX)
        .collect();
    if shown.chars().count() == AUDIT_PATH_MAX || head.len() < raw.len() {
        shown.push('…');
    }
    shown
}

/// How many digits make a run an identifier worth hiding: citizen IDs have
/// 12, old identity card numbers 9.
const IDENTIFIER_DIGITS: usize = 9;

/// Replaces every run of digits that forms an identifier with
/// `{redacted}`. Digits of any script count (fullwidth `０１２`, Arabic-Indic,
/// …), and a run may be broken by up to two separators (spaces of any kind,
/// `-`, `.`, `_`, `/`, `,`), as people type IDs: `001 203 012 345`,
/// `00120301-5555`, `001203,012345`.
pub fn redact_identifiers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if !is_digit(chars[i]) {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // Extend over digits and short separator runs between digits.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        while j < chars.len() {
            if is_digit(chars[j]) {
                digits += 1;
                j += 1;
                end = j;
                continue;
            }
            let seps = chars[j..]
                .iter()
                .take(3)
                .take_while(|c| is_id_separator(**c))
                .count();
            if (1..=2).contains(&seps) && chars.get(j + seps).is_some_and(|c| is_digit(*c)) {
                j += seps;
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

/// A decimal digit of any script (`char::to_digit` knows only ASCII).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn is_id_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '.' | '_' | '/' | ',' | '\u{2010}'..='\u{2015}')
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
            ("001203,012345", "{redacted}"),
            ("001  203  012  345", "{redacted}"),
            (
                "\u{ff10}\u{ff10}\u{ff11}\u{ff12}\u{ff10}\u{ff13}\u{ff10}\u{ff11}\u{ff12}",
                "{redacted}",
            ),
            ("001\u{a0}203\u{a0}012\u{a0}345", "{redacted}"),
            ("so 12, ngay 3", "so 12, ngay 3"),
        ] {
            assert_eq!(redact_identifiers(input), want, "{input}");
        }
    }

    #[test]
    fn audit_paths_are_decoded_redacted_and_bounded() {
        assert_eq!(
            audit_path("/v1/foo/%30%30%31203012345"),
            "/v1/foo/{redacted}"
        );
        let long = format!("/{}", "a".repeat(1 << 20));
        let shown = audit_path(&long);
        assert!(
            shown.chars().count() <= 257 && shown.ends_with('…'),
            "{}",
            shown.len()
        );
        assert_eq!(audit_path("/a%0Ab"), "/ab");
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
        assert!(check_purpose(Some("a\u{e0031}\u{e0032}b".as_bytes())).is_err());
        assert_eq!(
            check_purpose(Some(b"xac minh cccd 001203012345")),
            Ok(Some("xac minh cccd {redacted}".into()))
        );
    }
}

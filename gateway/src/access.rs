//! Which route a request is, and whether its agency may call it.
//!
//! The path is normalised *before* matching and the normalised form is what
//! goes upstream, so the upstream sees exactly the resource that was
//! authorised. Anything that could be read two ways by two parsers (encoded
//! slashes, NUL, backslashes, dot-segments escaping the root, bad UTF-8) is
//! refused outright rather than guessed at.

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Methods are case-sensitive in HTTP (RFC 9110 §9.1): `get` is not `GET`.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A path template such as `/v1/citizens/{citizen_id}/residence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    segments: Vec<Segment>,
    text: String,
}

impl RouteTemplate {
    pub fn parse(t: &str) -> Result<Self, String> {
        if !t.starts_with('/') {
            return Err("path template must start with '/'".into());
        }
        let mut segments = Vec::new();
        let mut names = Vec::new();
        for seg in t.split('/').skip(1) {
            if seg.is_empty() {
                return Err("empty segment ('//' or trailing '/') in template".into());
            }
            if let Some(name) = seg.strip_prefix('{') {
                let name = name
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed parameter {seg:?}"))?;
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
                {
                    return Err(format!("parameter name {name:?} must be lower_snake_case"));
                }
                if names.contains(&name) {
                    return Err(format!("parameter {name:?} appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_owned()));
            } else {
                if seg.contains(['{', '}', '%', '?', '#']) || seg == "." || seg == ".." {
                    return Err(format!("literal segment {seg:?} has reserved characters"));
                }
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        Ok(RouteTemplate {
            segments,
            text: t.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches a normalised path; returns the captured parameters.
    pub fn matches<'p>(&self, path: &'p NormalPath) -> Option<Vec<(&str, &'p str)>> {
        let segs: Vec<&str> = path.segments().collect();
        if segs.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (t, s) in self.segments.iter().zip(segs) {
            match t {
                Segment::Literal(l) if l == s => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.as_str(), s)),
            }
        }
        Some(params)
    }
}

/// A path that has been decoded and normalised: starts with '/', no empty,
/// '.' or '..' segments, no trailing slash (except the root), and every byte
/// is safe to send upstream unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath(String);

impl NormalPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').skip(1).filter(|s| !s.is_empty())
    }
}

/// Why a path was refused as malformed or ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("path contains an encoded '/' or '\\' (%2F, %5C), which upstreams disagree on")]
    EncodedSeparator,
    #[error("path contains a NUL, control character or backslash")]
    ForbiddenByte,
    #[error("path has a malformed percent-escape")]
    BadEscape,
    #[error("path does not decode to UTF-8")]
    NotUtf8,
    #[error("path climbs above the root with '..'")]
    EscapesRoot,
    #[error("path is longer than {0} bytes")]
    TooLong(usize),
}

const MAX_PATH: usize = 2048;

/// Normalises the path part of a request target (no query string).
pub fn normalise_path(raw: &str) -> Result<NormalPath, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong(MAX_PATH));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Inspect escapes before decoding: an encoded separator changes the
    // segment structure depending on who decodes it, so it is never allowed.
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let s = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let v = u8::from_str_radix(s, 16).map_err(|_| PathError::BadEscape)?;
            if v == b'/' || v == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            if v < 0x20 || v == 0x7f {
                return Err(PathError::ForbiddenByte);
            }
            i += 3;
            continue;
        }
        if b < 0x20 || b == 0x7f || b == b'\\' {
            return Err(PathError::ForbiddenByte);
        }
        i += 1;
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for seg in &out {
        path.push('/');
        // Re-encode what must not travel raw in a request line.
        for ch in seg.chars() {
            if ch.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(ch) {
                path.push(ch);
            } else {
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    path.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(NormalPath(path))
}

/// A route the request matched, with its parameters.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    pub route_index: usize,
    pub citizen_id: Option<String>,
}

/// Finds the declared route for a method and normalised path, among all
/// routes (not only the agency's): "exists but not yours" and "does not
/// exist" are both refusals, but audit and metrics can tell them apart.
pub fn find_route(
    routes: &[crate::registry::Route],
    method: &str,
    path: &NormalPath,
) -> Option<MatchedRoute> {
    let method = Method::parse(method)?;
    routes.iter().enumerate().find_map(|(i, r)| {
        if r.method != method {
            return None;
        }
        let params = r.template.matches(path)?;
        Some(MatchedRoute {
            route_index: i,
            citizen_id: params
                .iter()
                .find(|(n, _)| *n == "citizen_id")
                .map(|(_, v)| (*v).to_owned()),
        })
    })
}

/// Validates an `X-Purpose` value: present, short, printable. Purposes end up
/// in audit records a citizen may read, so they must be readable text.
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
    Ok(Some(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalise_path(p).map(|p| p.0)
    }

    #[test]
    fn normalises_harmless_variants_to_one_form() {
        assert_eq!(n("/v1/citizens/001").unwrap(), "/v1/citizens/001");
        assert_eq!(n("/v1//citizens/001/").unwrap(), "/v1/citizens/001");
        assert_eq!(n("/v1/./citizens/%30%301").unwrap(), "/v1/citizens/001");
        assert_eq!(n("/v1/citizens/x/../001").unwrap(), "/v1/citizens/001");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        assert_eq!(n("/v1/citizens%2f001"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/v1/citizens%2F001"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/v1/%5c"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/v1/\\x"), Err(PathError::ForbiddenByte));
        assert_eq!(n("/v1/%00"), Err(PathError::ForbiddenByte));
        assert_eq!(n("/v1/%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/v1/%4"), Err(PathError::BadEscape));
        assert_eq!(n("/%ff%fe"), Err(PathError::NotUtf8));
        assert_eq!(n("/.."), Err(PathError::EscapesRoot));
        assert_eq!(n("/v1/%2e%2e/%2e%2e/x"), Err(PathError::EscapesRoot));
        assert_eq!(n("v1"), Err(PathError::NotAbsolute));
        assert!(matches!(n(&"/a".repeat(2000)), Err(PathError::TooLong(_))));
    }

    #[test]
    fn dot_dot_encoded_resolves_before_matching() {
        // `/v1/citizens/%2e%2e/admin` must not match a citizens route.
        let t = RouteTemplate::parse("/v1/citizens/{citizen_id}").unwrap();
        let p = normalise_path("/v1/citizens/%2e%2e/admin").unwrap();
        assert_eq!(p.as_str(), "/v1/admin");
        assert!(t.matches(&p).is_none());
    }

    #[test]
    fn templates_match_exactly_and_case_sensitively() {
        let t = RouteTemplate::parse("/v1/citizens/{citizen_id}/residence").unwrap();
        let ok = normalise_path("/v1/citizens/001/residence").unwrap();
        assert_eq!(t.matches(&ok).unwrap(), vec![("citizen_id", "001")]);
        for p in [
            "/V1/citizens/001/residence",
            "/v1/Citizens/001/residence",
            "/v1/citizens/001",
            "/v1/citizens/001/residence/x",
        ] {
            assert!(t.matches(&normalise_path(p).unwrap()).is_none(), "{p}");
        }
        assert!(RouteTemplate::parse("v1/x").is_err());
        assert!(RouteTemplate::parse("/v1/{X}").is_err());
        assert!(RouteTemplate::parse("/v1/{a}/{a}").is_err());
        assert!(RouteTemplate::parse("/v1//x").is_err());
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::parse("GET"), Some(Method::Get));
        assert_eq!(Method::parse("get"), None);
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
    }
}

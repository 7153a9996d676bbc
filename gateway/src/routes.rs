//! The route catalogue's vocabulary: methods, path templates, the normal
//! form of a request path that templates match, parameter shapes, and the
//! declared route itself. `registry` builds routes from agencies.yaml;
//! `access` matches requests against them; neither needs the other.
//!
//! The path is normalised *before* matching and the normalised form is what
//! goes upstream, so the upstream sees exactly the resource that was
//! authorised. Anything that could be read two ways by two parsers (encoded
//! slashes, NUL, backslashes, dot-segments escaping the root, bad UTF-8) is
//! refused outright rather than guessed at.

use percent_encoding::percent_decode_str;

/// pingora keeps at most this much of a request body for replay; popgate
/// reads a body whole before forwarding it, so no route may allow more.
pub const BODY_LIMIT_CEILING: u64 = 64 * 1024;

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

    /// The names of the template's parameters, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
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

#[derive(Debug, Clone)]
pub struct Route {
    pub id: String,
    pub method: Method,
    pub template: RouteTemplate,
    /// Shape of each path parameter, by name.
    pub params: Vec<(String, Shape)>,
    /// Accepted query parameters, by name.
    pub query: Vec<(String, QueryParam)>,
    pub max_body_bytes: Option<u64>,
}

/// What a value must look like, as a regular expression matched against
/// the whole value (after percent-decoding and normalisation).
#[derive(Debug, Clone)]
pub struct Shape {
    source: String,
    re: regex::Regex,
}

impl Shape {
    pub fn new(source: &str) -> Result<Shape, String> {
        // It must be a regular expression on its own, so it cannot close
        // the anchoring group (`a)|(.*` would match anything once wrapped).
        regex::Regex::new(source)
            .map_err(|e| format!("shape {source:?} is not a regular expression: {e}"))?;
        let re = regex::Regex::new(&format!("^(?:{source})$"))
            .map_err(|e| format!("shape {source:?} is not a regular expression: {e}"))?;
        Ok(Shape {
            source: source.to_owned(),
            re,
        })
    }
    pub fn matches(&self, value: &str) -> bool {
        self.re.is_match(value)
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// The shape of a citizen ID: 12 digits (3 province, 1 century/gender,
/// 2 birth year, 6 serial).
pub const CITIZEN_ID_SHAPE: &str = "[0-9]{12}";

#[derive(Debug, Clone)]
pub struct QueryParam {
    pub shape: Shape,
    /// The value is a citizen ID: recorded as its HMAC, never in clear.
    pub citizen: bool,
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
    fn shapes_match_whole_values_and_cannot_escape_their_anchors() {
        let s = Shape::new("[0-9]{12}").unwrap();
        assert!(s.matches("001203012345"));
        assert!(!s.matches("001203012345;x") && !s.matches(" 001203012345"));
        assert!(Shape::new("a)|(.*").is_err());
        assert!(Shape::new("(").is_err());
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::parse("GET"), Some(Method::Get));
        assert_eq!(Method::parse("get"), None);
    }
}

//! Where admitted requests go: the `upstream:` section of `gateway.yaml`
//! (the population registry's address, timeouts, and which client headers
//! may travel on).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use yamlconf::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    url: String,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout_ms")]
    read_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    /// Client request headers passed on to the registry; all others are
    /// dropped. popgate sets Host, X-Agency-Id, X-Request-Id, X-Purpose,
    /// Forwarded, X-Forwarded-For/-Proto and Content-Length itself.
    #[serde(default = "default_forward_headers")]
    forward_headers: Vec<Spanned<String>>,
}

fn default_forward_headers() -> Vec<Spanned<String>> {
    [
        "accept",
        "accept-language",
        "content-type",
        "traceparent",
        "tracestate",
    ]
    .into_iter()
    .map(|h| Spanned {
        value: h.to_owned(),
        referenced: serde_saphyr::Location::UNKNOWN,
        defined: serde_saphyr::Location::UNKNOWN,
    })
    .collect()
}

/// Headers popgate sets or that describe the connection: never taken from
/// the client, whatever `forward_headers` says.
const NEVER_FORWARDED: [&str; 18] = [
    "expect",
    "host",
    "x-agency-id",
    "x-request-id",
    "x-purpose",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_read_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}

/// Where allowed requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Client headers passed on (lower-case names).
    pub forward_headers: Vec<http::HeaderName>,
}

pub fn parse_upstream(file: &Path, raw: &RawUpstream) -> Result<Upstream, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            file,
            format!(
                "upstream.url: {:?} {why} (expected http://host:port or https://host:port)",
                raw.url
            ),
        )
    };
    let (tls, rest) = if let Some(r) = raw.url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = raw.url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(bad("has no http:// or https:// scheme"));
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return Err(bad("must not contain a path"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port: u16 = p.parse().map_err(|_| bad("has an invalid port"))?;
            (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                port,
            )
        }
        _ => (
            authority
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            if tls { 443 } else { 80 },
        ),
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    for (name, v) in [
        ("connect_timeout_ms", raw.connect_timeout_ms),
        ("read_timeout_ms", raw.read_timeout_ms),
        ("idle_timeout_ms", raw.idle_timeout_ms),
    ] {
        if v == 0 || v > 600_000 {
            return Err(ConfigError::new(
                file,
                format!("upstream.{name}: {v} must be between 1 and 600000"),
            ));
        }
    }
    let mut forward_headers = Vec::new();
    for h in &raw.forward_headers {
        let bad = |why: String| {
            if h.referenced == serde_saphyr::Location::UNKNOWN {
                ConfigError::new(file, why)
            } else {
                ConfigError::at(file, &h.referenced, why)
            }
        };
        let name = http::HeaderName::from_bytes(h.value.to_ascii_lowercase().as_bytes()).map_err(
            |_| {
                bad(format!(
                    "upstream.forward_headers: {:?} is not a header name",
                    h.value
                ))
            },
        )?;
        if NEVER_FORWARDED.contains(&name.as_str()) {
            return Err(bad(format!(
                "upstream.forward_headers: {:?} is set by popgate or describes the connection; it is never taken from the agency",
                h.value
            )));
        }
        forward_headers.push(name);
    }
    Ok(Upstream {
        forward_headers,
        url: raw.url.clone(),
        tls,
        host,
        port,
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms),
        read_timeout: Duration::from_millis(raw.read_timeout_ms),
        idle_timeout: Duration::from_millis(raw.idle_timeout_ms),
    })
}

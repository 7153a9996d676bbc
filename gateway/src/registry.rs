//! `agencies.yaml`: the route catalogue and the agencies allowed to call it.
//!
//! Routes are declared once, each with a stable id (the id is what metrics,
//! audit records and agency grants name, so a path template can change
//! without rewriting history). An agency is granted route ids; anything not
//! granted is refused (deny by default).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::quota::QuotaSpec;
use crate::routes::{Method, QueryParam, Route, RouteTemplate, Shape, CITIZEN_ID_SHAPE};
use certs::identity::CertIdentity;
use yamlconf::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    routes: Vec<RawRoute>,
    agencies: Vec<RawAgency>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: Spanned<String>,
    /// `"GET /v1/citizens/{citizen_id}"`
    route: Spanned<String>,
    /// Shape (a regular expression the whole value must match) of each
    /// path parameter. `citizen_id` is 12 digits unless given here; any
    /// other parameter must be named here.
    #[serde(default)]
    params: HashMap<String, Spanned<String>>,
    /// The query parameters this route accepts, each with its shape;
    /// anything else in a query string is refused (400).
    #[serde(default)]
    query: HashMap<String, Spanned<RawQueryParam>>,
    /// Request body limit for this route (default `limits.max_body_bytes`).
    #[serde(default)]
    max_body_bytes: Option<Spanned<u64>>,
}

/// A query parameter: its shape, or its shape and whether its value is a
/// citizen ID (recorded only as its HMAC).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawQueryParam {
    Shape(String),
    Full {
        shape: String,
        #[serde(default)]
        citizen: bool,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgency {
    id: Spanned<String>,
    name: String,
    kind: AgencyKind,
    #[serde(default)]
    status: AgencyStatus,
    identity: Spanned<RawIdentity>,
    #[serde(default)]
    purpose_required: bool,
    allow: Vec<Spanned<String>>,
    /// Limits for the agency as a whole.
    #[serde(default)]
    quota: Option<Spanned<QuotaSpec>>,
    /// Per-route overrides: route id → limits replacing the agency's.
    #[serde(default)]
    route_quota: HashMap<String, Spanned<QuotaSpec>>,
}

/// How an agency's certificate is recognised. Exactly one way per agency so
/// there is never a question which rule matched.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawIdentity {
    UriSan(String),
    Subject(SubjectMatch),
    Sha256Pin(String),
}

/// Subject attributes that must all be present (missing ones are not checked).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubjectMatch {
    #[serde(default)]
    pub o: Option<String>,
    #[serde(default)]
    pub ou: Option<String>,
    #[serde(default)]
    pub cn: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AgencyKind {
    Ministry,
    Province,
    Enterprise,
    Telco,
}

impl AgencyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgencyKind::Ministry => "ministry",
            AgencyKind::Province => "province",
            AgencyKind::Enterprise => "enterprise",
            AgencyKind::Telco => "telco",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgencyStatus {
    #[default]
    Active,
    Suspended,
}

#[derive(Debug, Clone)]
pub struct Agency {
    pub id: String,
    pub name: String,
    pub kind: AgencyKind,
    pub status: AgencyStatus,
    pub purpose_required: bool,
    /// Indices into [`Registry::routes`].
    pub allowed: Vec<usize>,
    pub quota: Option<QuotaSpec>,
    /// Route id → override.
    pub route_quotas: Vec<(String, QuotaSpec)>,
}

impl Agency {
    /// Who this agency's dev-PKI client certificate is issued to.
    pub fn pki_subject(&self) -> certs::pki::AgencySubject {
        certs::pki::AgencySubject {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }
}

/// The loaded, validated registry.
#[derive(Debug)]
pub struct Registry {
    pub source: PathBuf,
    pub routes: Vec<Route>,
    pub agencies: Vec<Agency>,
    by_uri: HashMap<String, usize>,
    by_pin: HashMap<String, usize>,
    by_subject: Vec<(SubjectMatch, usize)>,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = yamlconf::read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawRegistry = yamlconf::parse(path, text)?;

        let mut routes = Vec::new();
        let mut route_index: HashMap<String, usize> = HashMap::new();
        for r in raw.routes {
            check_id(path, &r.id)?;
            if route_index.contains_key(&r.id.value) {
                return Err(ConfigError::at(
                    path,
                    &r.id.referenced,
                    format!("routes: duplicate route id {:?}", r.id.value),
                ));
            }
            route_index.insert(r.id.value.clone(), routes.len());
            routes.push(parse_route(path, r)?);
        }

        let mut agencies = Vec::new();
        let mut seen_ids = HashSet::new();
        let mut by_uri = HashMap::new();
        let mut by_pin = HashMap::new();
        let mut by_subject: Vec<(SubjectMatch, usize)> = Vec::new();
        for a in raw.agencies {
            check_id(path, &a.id)?;
            if !seen_ids.insert(a.id.value.clone()) {
                return Err(ConfigError::at(
                    path,
                    &a.id.referenced,
                    format!("agencies: duplicate agency id {:?}", a.id.value),
                ));
            }
            register_identity(
                path,
                &a,
                agencies.len(),
                &mut by_uri,
                &mut by_pin,
                &mut by_subject,
            )?;
            let (allowed, route_quotas) = grants(path, &a, &route_index)?;
            agencies.push(Agency {
                quota: a.quota.map(|q| q.value),
                route_quotas,
                id: a.id.value,
                name: a.name,
                kind: a.kind,
                status: a.status,
                purpose_required: a.purpose_required,
                allowed,
            });
        }
        Ok(Registry {
            source: path.to_owned(),
            routes,
            agencies,
            by_uri,
            by_pin,
            by_subject,
        })
    }

    /// Each agency's declared quotas, for the quota engine.
    pub fn quota_limits(&self) -> Vec<crate::quota::AgencyLimits<'_>> {
        self.agencies
            .iter()
            .map(|a| crate::quota::AgencyLimits {
                agency: &a.id,
                quota: a.quota.as_ref(),
                per_route: &a.route_quotas,
            })
            .collect()
    }

    /// Maps a verified certificate to the agency it belongs to. A certificate
    /// matching more than one agency by different rules is refused: an
    /// ambiguous identity is no identity.
    pub fn agency_for(&self, cert: &CertIdentity) -> Option<&Agency> {
        let mut found: Option<usize> = None;
        let mut consider = |i: usize| -> bool {
            match found {
                Some(f) if f != i => false,
                _ => {
                    found = Some(i);
                    true
                }
            }
        };
        if let Some(&i) = self.by_pin.get(&cert.fingerprint_sha256) {
            if !consider(i) {
                return None;
            }
        }
        for uri in &cert.uri_sans {
            if let Some(&i) = self.by_uri.get(uri) {
                if !consider(i) {
                    return None;
                }
            }
        }
        for (m, i) in &self.by_subject {
            let ok = m.o.as_ref().is_none_or(|o| cert.organizations.contains(o))
                && m.ou
                    .as_ref()
                    .is_none_or(|ou| cert.organizational_units.contains(ou))
                && m.cn
                    .as_ref()
                    .is_none_or(|cn| cert.common_names.contains(cn));
            if ok && !consider(*i) {
                return None;
            }
        }
        found.map(|i| &self.agencies[i])
    }

    pub fn agency(&self, id: &str) -> Option<&Agency> {
        self.agencies.iter().find(|a| a.id == id)
    }
}

fn check_id(path: &Path, id: &Spanned<String>) -> Result<(), ConfigError> {
    let ok = !id.value.is_empty()
        && id.value.len() <= 64
        && id.value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::at(
            path,
            &id.referenced,
            format!(
                "id {:?}: use 1-64 lower-case letters, digits, '.', '-', '_'",
                id.value
            ),
        ))
    }
}

/// One declared route: "METHOD /template", parameter shapes, accepted
/// query parameters and body limit, each mistake located.
fn parse_route(path: &Path, r: RawRoute) -> Result<Route, ConfigError> {
    let (method, template) = r.route.value.split_once(' ').ok_or_else(|| {
        ConfigError::at(
            path,
            &r.route.referenced,
            format!(
                "route {:?}: expected \"METHOD /path/{{param}}\"",
                r.route.value
            ),
        )
    })?;
    let method = Method::parse(method).ok_or_else(|| {
        ConfigError::at(
            path,
            &r.route.referenced,
            format!("route {:?}: unknown method {method:?}", r.route.value),
        )
    })?;
    let template = RouteTemplate::parse(template.trim()).map_err(|why| {
        ConfigError::at(
            path,
            &r.route.referenced,
            format!("route {:?}: {why}", r.route.value),
        )
    })?;
    let at = |loc: &serde_saphyr::Location, why: String| {
        ConfigError::at(path, loc, format!("route {:?}: {why}", r.id.value))
    };
    let mut params = Vec::new();
    for name in template.param_names() {
        let shape = match r.params.get(name) {
            Some(s) => Shape::new(&s.value).map_err(|why| at(&s.referenced, why))?,
            None if name == "citizen_id" => {
                Shape::new(CITIZEN_ID_SHAPE).map_err(|why| at(&r.route.referenced, why))?
            }
            None => {
                return Err(at(
                    &r.route.referenced,
                    format!("parameter {{{name}}} needs a shape under params:"),
                ))
            }
        };
        params.push((name.to_owned(), shape));
    }
    if let Some((name, s)) = r
        .params
        .iter()
        .find(|(n, _)| !template.param_names().any(|p| p == n.as_str()))
    {
        return Err(at(
            &s.referenced,
            format!("params names {name:?}, which the route template does not have"),
        ));
    }
    let mut query = Vec::new();
    for (name, q) in &r.query {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(at(
                &q.referenced,
                format!("query parameter name {name:?} must be letters, digits, '_', '-' or '.'"),
            ));
        }
        let (shape, citizen) = match &q.value {
            RawQueryParam::Shape(s) => (s.as_str(), name == "citizen_id"),
            RawQueryParam::Full { shape, citizen } => (shape.as_str(), *citizen),
        };
        let shape = Shape::new(shape).map_err(|why| at(&q.referenced, why))?;
        query.push((name.clone(), QueryParam { shape, citizen }));
    }
    query.sort_by(|a, b| a.0.cmp(&b.0));
    let max_body_bytes = match &r.max_body_bytes {
        Some(m) if m.value > crate::routes::BODY_LIMIT_CEILING => {
            return Err(at(
                &m.referenced,
                format!(
                    "max_body_bytes {} exceeds {} (bodies are read whole before forwarding)",
                    m.value,
                    crate::routes::BODY_LIMIT_CEILING
                ),
            ))
        }
        Some(m) => Some(m.value),
        None => None,
    };
    Ok(Route {
        id: r.id.value,
        method,
        template,
        params,
        query,
        max_body_bytes,
    })
}

/// Records how an agency's certificate is recognised; an identity used
/// twice is a config error (an ambiguous identity is no identity).
fn register_identity(
    path: &Path,
    a: &RawAgency,
    idx: usize,
    by_uri: &mut HashMap<String, usize>,
    by_pin: &mut HashMap<String, usize>,
    by_subject: &mut Vec<(SubjectMatch, usize)>,
) -> Result<(), ConfigError> {
    let dup = |what: &str| {
        ConfigError::at(
            path,
            &a.identity.referenced,
            format!(
                "agency {:?}: identity {what} is already used by another agency",
                a.id.value
            ),
        )
    };
    match &a.identity.value {
        RawIdentity::UriSan(u) => {
            if by_uri.insert(u.clone(), idx).is_some() {
                return Err(dup(u));
            }
        }
        RawIdentity::Sha256Pin(p) => {
            let p = p.to_ascii_lowercase().replace(':', "");
            if p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::at(
                    path,
                    &a.identity.referenced,
                    format!(
                        "agency {:?}: sha256_pin must be 64 hex digits (colons allowed)",
                        a.id.value
                    ),
                ));
            }
            if by_pin.insert(p.clone(), idx).is_some() {
                return Err(dup(&p));
            }
        }
        RawIdentity::Subject(s) => {
            if s.o.is_none() && s.ou.is_none() && s.cn.is_none() {
                return Err(ConfigError::at(
                    path,
                    &a.identity.referenced,
                    format!(
                        "agency {:?}: subject match needs at least one of o, ou, cn",
                        a.id.value
                    ),
                ));
            }
            if by_subject.iter().any(|(m, _)| m == s) {
                return Err(dup("subject"));
            }
            by_subject.push((s.clone(), idx));
        }
    }
    Ok(())
}

/// Route indices an agency may call, and its per-route quota overrides.
type Grants = (Vec<usize>, Vec<(String, QuotaSpec)>);

/// The routes an agency is granted, and its per-route quotas, checked
/// against the catalogue.
fn grants(
    path: &Path,
    a: &RawAgency,
    route_index: &HashMap<String, usize>,
) -> Result<Grants, ConfigError> {
    let mut allowed = Vec::new();
    for r in &a.allow {
        let i = route_index.get(&r.value).ok_or_else(|| {
            ConfigError::at(
                path,
                &r.referenced,
                format!(
                    "agency {:?}: allow names unknown route id {:?} (declared: {})",
                    a.id.value,
                    r.value,
                    route_index.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        allowed.push(*i);
    }
    let check_quota = |q: &Spanned<QuotaSpec>| {
        q.value.validate().map_err(|why| {
            ConfigError::at(
                path,
                &q.referenced,
                format!("agency {:?}: {why}", a.id.value),
            )
        })
    };
    if let Some(q) = &a.quota {
        check_quota(q)?;
    }
    let mut route_quotas = Vec::new();
    for (route, q) in &a.route_quota {
        check_quota(q)?;
        if !route_index.contains_key(route) {
            return Err(ConfigError::at(
                path,
                &q.referenced,
                format!(
                    "agency {:?}: route_quota names unknown route id {route:?}",
                    a.id.value
                ),
            ));
        }
        route_quotas.push((route.clone(), q.value.clone()));
    }
    route_quotas.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((allowed, route_quotas))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: &str = r#"
routes:
  - id: citizen.read
    route: GET /v1/citizens/{citizen_id}
  - id: citizen.verify
    route: POST /v1/citizens/{citizen_id}/verify
agencies:
  - id: vss
    name: Bảo hiểm xã hội Việt Nam
    kind: ministry
    identity:
      uri_san: spiffe://dancu.gov.vn/agency/vss
    purpose_required: true
    allow: [citizen.read]
  - id: bank
    name: Ngân hàng
    kind: enterprise
    status: suspended
    identity:
      subject: { o: Ngân hàng }
    allow: [citizen.verify]
"#;

    fn ident(uri: &str, o: &str) -> CertIdentity {
        CertIdentity {
            fingerprint_sha256: "00".repeat(32),
            serial: "01".into(),
            subject: String::new(),
            uri_sans: vec![uri.into()],
            organizations: vec![o.into()],
            organizational_units: vec![],
            common_names: vec![],
        }
    }

    #[test]
    fn maps_by_uri_and_by_subject() {
        let r = Registry::parse(Path::new("a.yaml"), REG).unwrap();
        let a = r
            .agency_for(&ident("spiffe://dancu.gov.vn/agency/vss", "x"))
            .unwrap();
        assert_eq!(a.id, "vss");
        assert!(a.purpose_required);
        let b = r.agency_for(&ident("spiffe://other", "Ngân hàng")).unwrap();
        assert_eq!(b.id, "bank");
        assert_eq!(b.status, AgencyStatus::Suspended);
        assert!(r.agency_for(&ident("spiffe://other", "nobody")).is_none());
    }

    #[test]
    fn ambiguous_certificate_maps_to_nobody() {
        let r = Registry::parse(Path::new("a.yaml"), REG).unwrap();
        assert!(r
            .agency_for(&ident("spiffe://dancu.gov.vn/agency/vss", "Ngân hàng"))
            .is_none());
    }

    #[test]
    fn unknown_route_in_allow_is_located() {
        let bad = REG.replace("allow: [citizen.read]", "allow: [citizen.raed]");
        let e = Registry::parse(Path::new("a.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.yaml:14:"), "{e}");
        assert!(e.contains("citizen.raed"), "{e}");
    }

    #[test]
    fn unknown_kind_and_field_are_located() {
        let bad = REG.replace("kind: ministry", "kind: ministery");
        let e = Registry::parse(Path::new("a.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("a.yaml:10:11: unknown variant `ministery`"),
            "{e}"
        );
        let bad = REG.replace("purpose_required: true", "purpose_requried: true");
        let e = Registry::parse(Path::new("a.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.yaml:"), "{e}");
        assert!(e.contains("purpose_requried"), "{e}");
    }

    #[test]
    fn duplicate_ids_and_bad_templates_are_refused() {
        let bad = REG.replace("id: bank", "id: vss");
        assert!(Registry::parse(Path::new("a.yaml"), &bad)
            .unwrap_err()
            .to_string()
            .contains("duplicate agency id"));
        let bad = REG.replace(
            "/v1/citizens/{citizen_id}/verify",
            "/v1/citizens/{citizen_id/verify",
        );
        assert!(Registry::parse(Path::new("a.yaml"), &bad).is_err());
    }
}

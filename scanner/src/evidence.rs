//! The evidence model every source fills and every check reads: what was
//! observed on one endpoint (host:port) of one system.
//!
//! Sources (live probes, nmap XML) each produce [`EndpointEvidence`] values;
//! [`merge`] folds several into one per endpoint so a control is evaluated
//! once on everything known. A fact no source established stays `None` and a
//! check that needs it reports an error ("not established"), never a pass.

use serde::{Deserialize, Serialize};

use crate::probe::tls::TlsEvidence;

/// State of a TCP port as seen by a connect probe or by nmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    Open,
    Closed,
    Filtered,
    /// nmap's `open|filtered`, `closed|filtered` and `unfiltered` collapse
    /// here: the port's state could not be decided.
    Unknown,
}

/// What nmap's service detection (`-sV`) said is listening on a port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// nmap service name, e.g. `http`, `ssh`, `telnet`, `ms-wbt-server`.
    pub name: String,
    pub product: Option<String>,
    pub version: Option<String>,
    pub extrainfo: Option<String>,
    /// `ssl` when nmap found the service wrapped in TLS.
    pub tunnel: Option<String>,
}

/// One TCP port on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortEvidence {
    pub port: u16,
    pub state: PortState,
    pub service: Option<ServiceInfo>,
}

/// HTTP response headers of one request to the endpoint (names lowercased,
/// in the order received).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpEvidence {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl HttpEvidence {
    /// First value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Everything established about one host: its scanned ports and, per TLS
/// endpoint, TLS and HTTP facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvidence {
    /// Address or name as the source named it (`127.0.0.1`, `db.moj.gov.vn`).
    pub host: String,
    /// Other names the source reported for this host (nmap `<hostnames>`).
    pub hostnames: Vec<String>,
    /// Ports the source scanned, with their state. Ports not listed were
    /// not scanned by this source.
    pub ports: Vec<PortEvidence>,
    /// Per-port TLS and HTTP evidence.
    pub endpoints: Vec<EndpointEvidence>,
    /// Where this came from, e.g. `nmap:scans/moj.xml` or `probe`.
    pub source: String,
}

/// TLS/HTTP evidence for one host:port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointEvidence {
    pub port: u16,
    pub tls: Option<TlsEvidence>,
    pub http: Option<HttpEvidence>,
}

/// A fact a probe tried to establish: the value, or why it could not be
/// established (unreachable, timed out, not TLS, ...).
pub type Fact<T> = Result<T, String>;

/// Everything gathered for one inventory endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointFacts {
    /// `host:port` as the inventory names it.
    pub label: String,
    /// Name the certificate must be valid for.
    pub hostname: String,
    pub service: crate::inventory::ServiceKind,
    /// Present for TLS endpoints.
    pub tls: Option<Fact<TlsEvidence>>,
    /// Present for HTTPS endpoints.
    pub http: Option<Fact<HttpEvidence>>,
}

/// A port state and the source that saw it.
#[derive(Debug, Clone, Serialize)]
pub struct SeenPort {
    pub port: PortEvidence,
    pub source: String,
}

/// Ports observed on one host of a system.
#[derive(Debug, Clone, Serialize)]
pub struct HostPorts {
    pub host: String,
    pub ports: Vec<SeenPort>,
}

impl HostPorts {
    /// The most telling observation of a port: any source that saw it open
    /// wins (it was reachable at some point), then closed, then the rest.
    pub fn state(&self, port: u16) -> Option<&SeenPort> {
        let rank = |s: &PortState| match s {
            PortState::Open => 0,
            PortState::Closed => 1,
            PortState::Filtered => 2,
            PortState::Unknown => 3,
        };
        self.ports
            .iter()
            .filter(|p| p.port.port == port)
            .min_by_key(|p| rank(&p.port.state))
    }
}

/// Everything gathered for one system, the input of every check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemEvidence {
    pub endpoints: Vec<EndpointFacts>,
    pub hosts: Vec<HostPorts>,
}

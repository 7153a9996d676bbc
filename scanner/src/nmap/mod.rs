//! nmap XML (`nmap -oX`) reader: turns a finished nmap run into
//! [`HostEvidence`], one per host that was up.
//!
//! What is read:
//! - hosts whose `<status state="up">`; hosts that are down are skipped;
//! - the first `<address addrtype="ipv4|ipv6">` as the host, every
//!   `<hostnames><hostname name=…>` (deduplicated, in file order);
//! - TCP `<port>`s with their `<state>` and `-sV` `<service>`; other
//!   protocols (UDP, SCTP, IP) are not endpoints popscan judges and are skipped;
//! - the `ssl-enum-ciphers` and `ssl-cert` port scripts, as that port's
//!   [`TlsEvidence`] (the doc of `Cx::tls_from_scripts` below says exactly what nmap
//!   establishes and what it does not).
//!
//! Everything else nmap writes (OS detection, traceroute, other scripts) is
//! ignored. Nonsense (a port number out of range, a missing required
//! attribute, a truncated file) is an [`NmapError`] that names
//! `file:line:column`, never a panic and never a silently dropped port.

use std::path::Path;

use roxmltree::{Document, Node, ParsingOptions};

mod script;
mod tls;
mod xml;

use xml::{check_nesting, elements, first, xml_error};

use crate::evidence::{EndpointEvidence, HostEvidence, PortEvidence, PortState, ServiceInfo};
use crate::probe::tls::evidence::{Protocol, TlsEvidence};
use tls::tested_protocols;

/// One nmap run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NmapScan {
    /// The command line nmap recorded (`<nmaprun args=…>`).
    pub args: Option<String>,
    /// The nmap version that wrote the file (`<nmaprun version=…>`).
    pub version: Option<String>,
    /// Hosts that were up, in file order.
    pub hosts: Vec<HostEvidence>,
}

/// Why an nmap XML file could not be read. Every variant but [`NmapError::Read`]
/// names `file:line:column`.
#[derive(Debug, thiserror::Error)]
pub enum NmapError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("{path}: cannot read nmap XML: {error}")]
    Read {
        path: String,
        #[source]
        error: std::io::Error,
    },
    /// Not well-formed XML (corrupt, or nmap was killed mid-run).
    #[error("{file}:{line}:{column}: {message}")]
    Xml {
        file: String,
        line: u32,
        column: u32,
        message: String,
    },
    /// Well-formed XML that is not a sensible nmap report.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: u32,
        column: u32,
        message: String,
    },
}

/// Parses nmap XML text. `source` is the file name used in errors and in
/// [`HostEvidence::source`] / [`TlsEvidence::source`] (`nmap:<source>`).
pub fn parse_str(xml: &str, source: &str) -> Result<NmapScan, NmapError> {
    let opts = ParsingOptions {
        // nmap writes `<!DOCTYPE nmaprun>`; roxmltree bounds entity expansion.
        allow_dtd: true,
        ..ParsingOptions::default()
    };
    check_nesting(xml, source)?;
    let doc = Document::parse_with_options(xml, opts).map_err(|e| xml_error(xml, source, &e))?;
    let cx = Cx {
        doc: &doc,
        file: source,
    };
    let root = doc.root_element();
    if root.tag_name().name() != "nmaprun" {
        return Err(cx.invalid(
            root,
            format!(
                "expected <nmaprun> root element, found <{}>",
                root.tag_name().name()
            ),
        ));
    }
    let version = root.attribute("version").map(str::to_string);
    let tested = tested_protocols(version.as_deref());
    let mut hosts = Vec::new();
    for host in elements(root, "host") {
        if let Some(h) = cx.host(host, &tested)? {
            hosts.push(h);
        }
    }
    Ok(NmapScan {
        args: root.attribute("args").map(str::to_string),
        version,
        hosts,
    })
}

/// Reads and parses an nmap XML file; the path (as displayed) is the source.
pub fn parse_file(path: &Path) -> Result<NmapScan, NmapError> {
    let name = path.display().to_string();
    let xml = std::fs::read_to_string(path).map_err(|error| NmapError::Read {
        path: name.clone(),
        error,
    })?;
    parse_str(&xml, &name)
}

/// Parse context: the document (for positions) and the file name.
pub(super) struct Cx<'d, 'i> {
    doc: &'d Document<'i>,
    file: &'d str,
}

impl Cx<'_, '_> {
    pub(super) fn invalid(&self, node: Node, message: String) -> NmapError {
        let p = self.doc.text_pos_at(node.range().start);
        NmapError::Invalid {
            file: self.file.to_string(),
            line: p.row,
            column: p.col,
            message,
        }
    }

    pub(super) fn attr<'a>(&self, node: Node<'a, '_>, name: &str) -> Result<&'a str, NmapError> {
        node.attribute(name).ok_or_else(|| {
            self.invalid(node, format!("<{}> without {name}", node.tag_name().name()))
        })
    }

    pub(super) fn source(&self) -> String {
        format!("nmap:{}", self.file)
    }

    pub(super) fn host(
        &self,
        host: Node,
        tested: &[Protocol],
    ) -> Result<Option<HostEvidence>, NmapError> {
        let status = first(host, "status")
            .ok_or_else(|| self.invalid(host, "<host> without <status>".to_string()))?;
        if self.attr(status, "state")? != "up" {
            return Ok(None);
        }
        let mut addr = None;
        for a in elements(host, "address") {
            let kind = self.attr(a, "addrtype")?;
            if kind == "ipv4" || kind == "ipv6" {
                addr = Some(self.attr(a, "addr")?.to_string());
                break;
            }
        }
        let host_name = addr.ok_or_else(|| {
            self.invalid(host, "<host> without an ipv4/ipv6 <address>".to_string())
        })?;
        let mut hostnames: Vec<String> = Vec::new();
        for hn in elements(host, "hostnames") {
            for h in elements(hn, "hostname") {
                let name = self.attr(h, "name")?;
                if !hostnames.iter().any(|n| n == name) {
                    hostnames.push(name.to_string());
                }
            }
        }
        let mut ports = Vec::new();
        let mut endpoints = Vec::new();
        for ps in elements(host, "ports") {
            for port in elements(ps, "port") {
                let Some((p, tls)) = self.port(port, tested)? else {
                    continue;
                };
                if let Some(tls) = tls {
                    endpoints.push(EndpointEvidence {
                        port: p.port,
                        tls: Some(tls),
                        http: None,
                    });
                }
                ports.push(p);
            }
        }
        Ok(Some(HostEvidence {
            host: host_name,
            hostnames,
            ports,
            endpoints,
            source: self.source(),
        }))
    }

    /// One `<port>`: `None` for non-TCP ports.
    pub(super) fn port(
        &self,
        port: Node,
        tested: &[Protocol],
    ) -> Result<Option<(PortEvidence, Option<TlsEvidence>)>, NmapError> {
        let proto = self.attr(port, "protocol")?;
        let id = self.attr(port, "portid")?;
        if proto != "tcp" {
            return Ok(None);
        }
        let number = id.parse::<u16>().ok().filter(|n| *n != 0).ok_or_else(|| {
            self.invalid(
                port,
                format!("<port> portid {id:?} is not a TCP port number (1..=65535)"),
            )
        })?;
        let state_el = first(port, "state")
            .ok_or_else(|| self.invalid(port, "<port> without <state>".to_string()))?;
        let state = match self.attr(state_el, "state")? {
            "open" => PortState::Open,
            "closed" => PortState::Closed,
            "filtered" => PortState::Filtered,
            _ => PortState::Unknown,
        };
        let service = match first(port, "service") {
            Some(s) => {
                let opt = |n: &str| s.attribute(n).map(str::to_string);
                Some(ServiceInfo {
                    name: self.attr(s, "name")?.to_string(),
                    product: opt("product"),
                    version: opt("version"),
                    extrainfo: opt("extrainfo"),
                    tunnel: opt("tunnel"),
                })
            }
            None => None,
        };
        let mut ciphers = None;
        let mut cert = None;
        for script in elements(port, "script") {
            match self.attr(script, "id")? {
                "ssl-enum-ciphers" => ciphers = Some((script, self.script_table(script)?)),
                "ssl-cert" => cert = Some((script, self.script_table(script)?)),
                _ => {}
            }
        }
        let tls = self.tls_from_scripts(ciphers.as_ref(), cert.as_ref(), tested)?;
        Ok(Some((
            PortEvidence {
                port: number,
                state,
                service,
            },
            tls,
        )))
    }
}

#[cfg(test)]
mod tests;

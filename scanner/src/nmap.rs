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

use crate::evidence::{EndpointEvidence, HostEvidence, PortEvidence, PortState, ServiceInfo};
use crate::probe::tls::evidence::{
    OfferedGroup, OfferedSuite, Protocol, ProtocolSupport, TlsEvidence,
};
use crate::probe::tls::{groups, suites};

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

/// Maps a roxmltree error to a located [`NmapError::Xml`]. roxmltree reports
/// "root never closed" / "unexpected end" at 1:1; those mean the text stops
/// early (nmap killed mid-run), so they are located at the end of the input.
fn xml_error(xml: &str, file: &str, e: &roxmltree::Error) -> NmapError {
    let (line, column, message) = match e {
        roxmltree::Error::UnclosedRootNode | roxmltree::Error::UnexpectedEndOfStream => {
            let (l, c) = end_pos(xml);
            (
                l,
                c,
                "XML ends before </nmaprun>: truncated nmap output (was nmap killed mid-run?)"
                    .to_string(),
            )
        }
        roxmltree::Error::NoRootNode => {
            let (l, c) = end_pos(xml);
            (
                l,
                c,
                "no XML element at all: expected <nmaprun>".to_string(),
            )
        }
        other => {
            let p = other.pos();
            (p.row, p.col, format!("malformed XML: {other}"))
        }
    };
    NmapError::Xml {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) just past the last character.
fn end_pos(text: &str) -> (u32, u32) {
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    let col = last.chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

/// Deepest element nesting accepted in the whole document. nmap writes
/// about 10 levels; roxmltree parses nested elements recursively, so an
/// unbounded depth would overflow the stack (an abort, not a panic) before
/// any error could be reported.
const MAX_XML_DEPTH: usize = 320;

/// Rejects, before roxmltree sees them, documents nested deeper than
/// [`MAX_XML_DEPTH`] and DTD internal subsets (nmap writes a bare
/// `<!DOCTYPE nmaprun>`; declared entities could expand into nesting this
/// scan cannot see). A quick tag scanner: anything else malformed is left for
/// roxmltree to report precisely.
fn check_nesting(xml: &str, file: &str) -> Result<(), NmapError> {
    let fail = |at: usize, message: String| {
        let head = xml.get(..at).unwrap_or(xml);
        let (line, column) = end_pos(head);
        Err(NmapError::Xml {
            file: file.to_string(),
            line,
            column,
            message,
        })
    };
    let b = xml.as_bytes();
    let find = |from: usize, pat: &str| -> Option<usize> {
        xml.get(from..).and_then(|t| t.find(pat)).map(|i| i + from)
    };
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(lt) = find(i, "<") {
        let rest = xml.get(lt..).unwrap_or("");
        let skip_to = |pat: &str| find(lt, pat).map(|e| e + pat.len());
        let next = if rest.starts_with("<!--") {
            skip_to("-->")
        } else if rest.starts_with("<![CDATA[") {
            skip_to("]]>")
        } else if rest.starts_with("<?") {
            skip_to("?>")
        } else {
            // A tag or declaration: up to the `>` outside quotes.
            let mut quote = None;
            let mut end = None;
            let mut j = lt + 1;
            while let Some(&c) = b.get(j) {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(c),
                    (None, b'[') if rest.starts_with("<!") => return fail(
                        lt,
                        "DTD internal subset not accepted (nmap writes a bare <!DOCTYPE nmaprun>)"
                            .to_string(),
                    ),
                    (None, b'>') => {
                        end = Some(j);
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            if let Some(e) = end {
                if rest.starts_with("</") {
                    depth = depth.saturating_sub(1);
                } else if !rest.starts_with("<!") && b.get(e.wrapping_sub(1)) != Some(&b'/') {
                    depth += 1;
                    if depth > MAX_XML_DEPTH {
                        return fail(
                            lt,
                            format!("elements nested deeper than {MAX_XML_DEPTH} levels"),
                        );
                    }
                }
            }
            end.map(|e| e + 1)
        };
        match next {
            Some(n) => i = n,
            // Unterminated construct: roxmltree reports it with its position.
            None => break,
        }
    }
    Ok(())
}

/// Child elements of `node` with the given tag name.
fn elements<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn first<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> Option<Node<'a, 'i>> {
    elements(node, name).next()
}

/// Parse context: the document (for positions) and the file name.
struct Cx<'d, 'i> {
    doc: &'d Document<'i>,
    file: &'d str,
}

impl Cx<'_, '_> {
    fn invalid(&self, node: Node, message: String) -> NmapError {
        let p = self.doc.text_pos_at(node.range().start);
        NmapError::Invalid {
            file: self.file.to_string(),
            line: p.row,
            column: p.col,
            message,
        }
    }

    fn attr<'a>(&self, node: Node<'a, '_>, name: &str) -> Result<&'a str, NmapError> {
        node.attribute(name).ok_or_else(|| {
            self.invalid(node, format!("<{}> without {name}", node.tag_name().name()))
        })
    }

    fn source(&self) -> String {
        format!("nmap:{}", self.file)
    }

    fn host(&self, host: Node, tested: &[Protocol]) -> Result<Option<HostEvidence>, NmapError> {
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
    fn port(
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

/// Deepest `<table>` nesting accepted inside a `<script>`. Real nmap output
/// nests 3–4 levels; the bound keeps hostile input from exhausting the stack
/// when the tree is dropped.
const MAX_SCRIPT_DEPTH: usize = 256;

/// A script's structured output: nmap's `<table>`/`<elem>` tree
/// (nmap.dtd: `<!ELEMENT script (#PCDATA|table|elem)*>`,
/// `<!ELEMENT table (table|elem)*>`, both with an optional `key`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Table {
    entries: Vec<Entry>,
    /// Byte offset of the element, for located errors.
    at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: Option<String>,
    value: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Elem { text: String, at: usize },
    Table(Table),
}

impl Table {
    fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .map(|e| &e.value)
    }

    fn table(&self, key: &str) -> Option<&Table> {
        match self.get(key) {
            Some(Value::Table(t)) => Some(t),
            _ => None,
        }
    }

    fn elem(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Elem { text, .. }) => Some(text),
            _ => None,
        }
    }

    /// Values of the entries without a key (nmap's list items).
    fn items(&self) -> impl Iterator<Item = &Value> {
        self.entries
            .iter()
            .filter(|e| e.key.is_none())
            .map(|e| &e.value)
    }
}

/// All text inside an element (entity references already decoded).
fn text_of(node: Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

impl Cx<'_, '_> {
    fn invalid_at(&self, at: usize, message: String) -> NmapError {
        let p = self.doc.text_pos_at(at);
        NmapError::Invalid {
            file: self.file.to_string(),
            line: p.row,
            column: p.col,
            message,
        }
    }

    /// Builds the [`Table`] tree of a `<script>` without recursion.
    fn script_table(&self, script: Node) -> Result<Table, NmapError> {
        struct Open<'a, 'i> {
            children: roxmltree::Children<'a, 'i>,
            table: Table,
            key: Option<String>,
        }
        let mut stack = vec![Open {
            children: script.children(),
            table: Table {
                entries: Vec::new(),
                at: script.range().start,
            },
            key: None,
        }];
        loop {
            let Some(top) = stack.last_mut() else {
                // Unreachable: the loop returns when the script element closes.
                return Ok(Table::default());
            };
            match top.children.next() {
                Some(child) if child.is_element() => {
                    let key = child.attribute("key").map(str::to_string);
                    match child.tag_name().name() {
                        "elem" => top.table.entries.push(Entry {
                            key,
                            value: Value::Elem {
                                text: text_of(child),
                                at: child.range().start,
                            },
                        }),
                        "table" => {
                            if stack.len() > MAX_SCRIPT_DEPTH {
                                return Err(self.invalid(
                                    child,
                                    format!(
                                        "<script> output nested deeper than {MAX_SCRIPT_DEPTH} tables"
                                    ),
                                ));
                            }
                            stack.push(Open {
                                children: child.children(),
                                table: Table {
                                    entries: Vec::new(),
                                    at: child.range().start,
                                },
                                key,
                            });
                        }
                        other => {
                            return Err(self.invalid(
                                child,
                                format!("unexpected <{other}> in <script> output: expected <table> or <elem>"),
                            ))
                        }
                    }
                }
                Some(_) => {} // whitespace text, comments
                None => {
                    let Some(done) = stack.pop() else {
                        return Ok(Table::default());
                    };
                    match stack.last_mut() {
                        Some(parent) => parent.table.entries.push(Entry {
                            key: done.key,
                            value: Value::Table(done.table),
                        }),
                        None => return Ok(done.table),
                    }
                }
            }
        }
    }
}

/// nmap's version as (major, minor): "7.93" → (7, 93), "7.94SVN" → (7, 94).
fn version_tuple(v: &str) -> Option<(u32, u32)> {
    let (major, rest) = v.split_once('.')?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.trim().parse().ok()?, digits.parse().ok()?))
}

/// The protocol versions nmap's `ssl-enum-ciphers` tried, so that one it
/// does not list is known **not offered** (rather than not tested).
///
/// The rule, read from nmap's own sources (`nselib/tls.lua` `PROTOCOLS`, which
/// `ssl-enum-ciphers` iterates in full, and the nmap changelog):
/// - SSLv3, TLSv1.0, TLSv1.1, TLSv1.2: tried by every nmap that writes
///   structured `ssl-enum-ciphers` output, with nmap's own hand-built
///   ClientHello (not the local OpenSSL, so OpenSSL builds without SSLv3 do not
///   matter). Verified on nmap 7.93 with `-d`: "Trying protocol SSLv3."
/// - TLSv1.3: tried from nmap 7.92 on (changelog: "[GH#1691] TLS 1.3 now
///   supported by most scripts"); the file's `<nmaprun version>` decides, and
///   an unreadable version does not count as ≥ 7.92.
/// - SSLv2: never by `ssl-enum-ciphers` (that is the separate `sslv2`
///   script), so it is never claimed absent.
///
/// The fixtures were made with nmap 7.93.
fn tested_protocols(version: Option<&str>) -> Vec<Protocol> {
    let mut v = vec![
        Protocol::Ssl3,
        Protocol::Tls10,
        Protocol::Tls11,
        Protocol::Tls12,
    ];
    if version
        .and_then(version_tuple)
        .is_some_and(|mv| mv >= (7, 92))
    {
        v.push(Protocol::Tls13);
    }
    v
}

/// nmap's suite name → evidence entry. nmap spells TLS 1.3 suites in the
/// draft style `TLS_AKE_WITH_AES_128_GCM_SHA256` (IANA `TLS_AES_128_GCM_SHA256`)
/// and the RFC 9150 integrity-only ones `TLS_AKE_WITH_NULL_SHA256` (IANA
/// `TLS_SHA256_SHA256`). Names the registry does not know (nmap also lists
/// pre-standard suites such as `TLS_RSA_EXPORT1024_WITH_RC4_56_MD5`) are kept
/// with id 0 and the classes their name implies, never dropped.
fn offered_suite(nmap_name: &str) -> OfferedSuite {
    let iana = match nmap_name.strip_prefix("TLS_AKE_WITH_") {
        Some("NULL_SHA256") => "TLS_SHA256_SHA256".to_string(),
        Some("NULL_SHA384") => "TLS_SHA384_SHA384".to_string(),
        Some(rest) => format!("TLS_{rest}"),
        None => nmap_name.to_string(),
    };
    match suites::by_name(&iana) {
        Some(s) => s.offered(),
        None => OfferedSuite {
            id: 0,
            classes: suites::classes_of(&iana),
            iana,
            openssl: None,
        },
    }
}

/// A `kex_info` value naming a key-exchange group: nmap's curve names are the
/// IANA ones except `ecdh_x25519` / `ecdh_x448`. Non-named (explicit) curves
/// and `rsa 2048`-style certificate sizes are not groups.
fn kex_group(kex: &str) -> Option<OfferedGroup> {
    if kex.contains(' ') || kex.starts_with("arbitrary_explicit") {
        return None;
    }
    let name = kex.strip_prefix("ecdh_").unwrap_or(kex);
    Some(match groups::by_name(name) {
        Some(id) => groups::offered(id),
        // e.g. GOST curves or curveSM2: keep nmap's name, id 0 (unassigned).
        None => OfferedGroup {
            id: 0,
            name: name.to_string(),
        },
    })
}

impl Cx<'_, '_> {
    /// `ssl-enum-ciphers` and `ssl-cert` of one port → [`TlsEvidence`], or
    /// `None` when neither carried TLS facts.
    ///
    /// From `ssl-enum-ciphers`, per protocol table (`TLSv1.2`, …):
    /// - listed → `offered: true`, its `ciphers` (in nmap's order, which is the
    ///   server's order when `cipher preference` is `server`), `server_order`
    ///   from `cipher preference` (`server` → true, `client` → false, anything
    ///   else → unknown);
    /// - not listed but tried (see [`tested_protocols`]) → `offered: false`.
    ///   That is only claimed when the script produced at least one protocol
    ///   table (a script error leaves all protocols unknown);
    /// - `groups`: the distinct groups named by `kex_info` of ECDHE and TLS 1.3
    ///   suites. nmap does not enumerate groups: this is what the server chose
    ///   from nmap's offer (secp256r1, secp384r1, secp521r1, x25519, ffdhe2048
    ///   in 7.93), so it is a subset of what the server accepts. `None` if no
    ///   suite named one;
    /// - `dhe_bits`: the smallest `dh N` of DHE suites;
    /// - `compression`: `Some(true)` if any protocol's `compressors` lists
    ///   anything but `NULL`, `Some(false)` if lists were seen and all `NULL`.
    ///
    /// From `ssl-cert`: `pem` → `chain[0]`. nmap only reports the leaf
    /// certificate, so `chain` never has intermediates from nmap; a check that
    /// needs the chain must use a live probe.
    ///
    /// Secure renegotiation and fallback SCSV are not tested by these scripts
    /// and stay `None`.
    fn tls_from_scripts(
        &self,
        ciphers: Option<&(Node, Table)>,
        cert: Option<&(Node, Table)>,
        tested: &[Protocol],
    ) -> Result<Option<TlsEvidence>, NmapError> {
        let mut ev = TlsEvidence {
            source: self.source(),
            ..TlsEvidence::default()
        };
        let mut found = false;
        if let Some((_, t)) = ciphers {
            let mut groups_seen: Vec<OfferedGroup> = Vec::new();
            let mut compression: Option<bool> = None;
            for entry in &t.entries {
                let Some(protocol) = entry.key.as_deref().and_then(Protocol::from_name) else {
                    continue; // "least strength" and the like
                };
                let Value::Table(pt) = &entry.value else {
                    return Err(self.invalid_at(
                        value_at(&entry.value),
                        format!("ssl-enum-ciphers: {protocol} is not a <table>"),
                    ));
                };
                if ev.protocols.iter().any(|p| p.protocol == protocol) {
                    return Err(self
                        .invalid_at(pt.at, format!("ssl-enum-ciphers: {protocol} listed twice")));
                }
                let mut offered = Vec::new();
                if let Some(list) = pt.table("ciphers") {
                    for item in list.items() {
                        let Value::Table(c) = item else {
                            return Err(self.invalid_at(
                                value_at(item),
                                "ssl-enum-ciphers: cipher entry is not a <table>".to_string(),
                            ));
                        };
                        let name = c.elem("name").ok_or_else(|| {
                            self.invalid_at(
                                c.at,
                                "ssl-enum-ciphers: cipher <table> without <elem key=\"name\">"
                                    .to_string(),
                            )
                        })?;
                        let suite = offered_suite(name);
                        if let Some(kex) = c.elem("kex_info") {
                            let ecdhe = suites::by_name(&suite.iana)
                                .map(|s| s.is_ecdhe() || s.is_tls13())
                                .unwrap_or(false)
                                || suite.iana.starts_with("TLS_ECDH_anon_");
                            let dhe = suites::by_name(&suite.iana).is_some_and(|s| s.is_dhe());
                            if dhe {
                                if let Some(bits) = kex
                                    .strip_prefix("dh ")
                                    .and_then(|b| b.trim().parse::<u32>().ok())
                                {
                                    ev.dhe_bits = Some(ev.dhe_bits.map_or(bits, |b| b.min(bits)));
                                }
                            } else if ecdhe {
                                if let Some(g) = kex_group(kex) {
                                    if !groups_seen.contains(&g) {
                                        groups_seen.push(g);
                                    }
                                }
                            }
                        }
                        if !offered.contains(&suite) {
                            offered.push(suite);
                        }
                    }
                }
                if let Some(comp) = pt.table("compressors") {
                    for item in comp.items() {
                        if let Value::Elem { text, .. } = item {
                            let on = text.trim() != "NULL";
                            compression = Some(compression.unwrap_or(false) || on);
                        }
                    }
                }
                let server_order = match pt.elem("cipher preference") {
                    Some("server") => Some(true),
                    Some("client") => Some(false),
                    _ => None,
                };
                ev.protocols.push(ProtocolSupport {
                    protocol,
                    offered: true,
                    suites: offered,
                    server_order,
                });
            }
            if !ev.protocols.is_empty() {
                found = true;
                for p in tested {
                    if !ev.protocols.iter().any(|s| s.protocol == *p) {
                        ev.protocols.push(ProtocolSupport {
                            protocol: *p,
                            offered: false,
                            suites: Vec::new(),
                            server_order: None,
                        });
                    }
                }
                ev.protocols.sort_by_key(|p| p.protocol);
                ev.groups = (!groups_seen.is_empty()).then_some(groups_seen);
                ev.compression = compression;
            }
        }
        if let Some((node, t)) = cert {
            if let Some(Value::Elem { text, at }) = t.get("pem") {
                let der = pem_leaf(text).ok_or_else(|| {
                    self.invalid_at(
                        *at,
                        "ssl-cert: <elem key=\"pem\"> is not a PEM certificate".to_string(),
                    )
                })?;
                ev.chain = vec![der];
                found = true;
            } else if !t.entries.is_empty() {
                return Err(self.invalid(
                    *node,
                    "ssl-cert: output without <elem key=\"pem\">".to_string(),
                ));
            }
        }
        Ok(found.then_some(ev))
    }
}

fn value_at(v: &Value) -> usize {
    match v {
        Value::Elem { at, .. } => *at,
        Value::Table(t) => t.at,
    }
}

/// First `CERTIFICATE` block of a PEM text, as DER.
fn pem_leaf(pem: &str) -> Option<Vec<u8>> {
    let mut reader = pem.as_bytes();
    let der = rustls_pemfile::certs(&mut reader).next()?.ok()?;
    let bytes = der.as_ref().to_vec();
    (!bytes.is_empty()).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tls::evidence::CipherClass;
    use x509_cert::der::Decode;

    const MODERN: &str = include_str!("../tests/fixtures/nmap/tls-modern.xml");
    const LEGACY: &str = include_str!("../tests/fixtures/nmap/tls-legacy.xml");
    const PORTS: &str = include_str!("../tests/fixtures/nmap/ports.xml");
    const HOSTNAMES: &str = include_str!("../tests/fixtures/nmap/hostnames.xml");
    const TRUNCATED: &str = include_str!("../tests/fixtures/nmap/truncated.xml");

    fn parse(xml: &str, name: &str) -> NmapScan {
        match parse_str(xml, name) {
            Ok(s) => s,
            Err(e) => panic!("{name} should parse: {e}"),
        }
    }

    fn err(xml: &str, name: &str) -> String {
        match parse_str(xml, name) {
            Ok(s) => panic!("{name} should not parse: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// 1-based line of the first occurrence of `needle`.
    fn line_of(xml: &str, needle: &str) -> usize {
        let at = xml.find(needle).expect("needle in fixture");
        xml[..at].matches('\n').count() + 1
    }

    fn only_tls(scan: &NmapScan, port: u16) -> &TlsEvidence {
        assert_eq!(scan.hosts.len(), 1);
        let h = &scan.hosts[0];
        assert_eq!(h.endpoints.len(), 1, "{:?}", h.endpoints);
        assert_eq!(h.endpoints[0].port, port);
        assert_eq!(h.endpoints[0].http, None);
        h.endpoints[0].tls.as_ref().expect("tls evidence")
    }

    fn ids(p: &ProtocolSupport) -> Vec<u16> {
        p.suites.iter().map(|s| s.id).collect()
    }

    fn proto(t: &TlsEvidence, p: Protocol) -> &ProtocolSupport {
        t.protocols
            .iter()
            .find(|s| s.protocol == p)
            .expect("protocol entry")
    }

    fn leaf_cn(t: &TlsEvidence) -> String {
        assert_eq!(t.chain.len(), 1, "nmap reports only the leaf");
        let cert = x509_cert::Certificate::from_der(&t.chain[0]).expect("leaf DER parses");
        cert.tbs_certificate.subject.to_string()
    }

    /// s_server -tls1_2+ -serverpref, TLS 1.2 list
    /// ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256,
    /// TLS 1.3 list TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256,
    /// groups x25519:secp256r1.
    #[test]
    fn modern_server() {
        let scan = parse(MODERN, "tls-modern.xml");
        assert_eq!(scan.version.as_deref(), Some("7.93"));
        assert!(scan
            .args
            .as_deref()
            .is_some_and(|a| a.contains("ssl-enum-ciphers")));
        let h = &scan.hosts[0];
        assert_eq!(h.host, "127.0.0.1");
        assert!(h.hostnames.is_empty());
        assert_eq!(h.source, "nmap:tls-modern.xml");
        assert_eq!(
            h.ports,
            vec![PortEvidence {
                port: 47111,
                state: PortState::Open,
                service: Some(ServiceInfo {
                    name: "http".into(),
                    product: Some("OpenSSL s_server -www httpd".into()),
                    version: None,
                    extrainfo: None,
                    tunnel: Some("ssl".into()),
                }),
            }]
        );
        let t = only_tls(&scan, 47111);
        assert_eq!(t.source, "nmap:tls-modern.xml");
        let offered: Vec<(Protocol, bool)> = t
            .protocols
            .iter()
            .map(|p| (p.protocol, p.offered))
            .collect();
        assert_eq!(
            offered,
            vec![
                (Protocol::Ssl3, false),
                (Protocol::Tls10, false),
                (Protocol::Tls11, false),
                (Protocol::Tls12, true),
                (Protocol::Tls13, true),
            ]
        );
        assert_eq!(
            t.offered_protocols(),
            vec![Protocol::Tls12, Protocol::Tls13]
        );
        let t12 = proto(t, Protocol::Tls12);
        // Exactly the configured list, in the server's order.
        assert_eq!(ids(t12), vec![0xC030, 0xCCA8, 0xC02F, 0x009E]);
        assert_eq!(
            t12.suites[0].openssl.as_deref(),
            Some("ECDHE-RSA-AES256-GCM-SHA384")
        );
        assert_eq!(t12.server_order, Some(true));
        let t13 = proto(t, Protocol::Tls13);
        // nmap's TLS_AKE_WITH_* names map to the IANA TLS 1.3 suites.
        assert_eq!(ids(t13), vec![0x1302, 0x1303, 0x1301]);
        assert_eq!(t13.suites[0].iana, "TLS_AES_256_GCM_SHA384");
        assert_eq!(t13.server_order, Some(true));
        for p in [Protocol::Ssl3, Protocol::Tls10, Protocol::Tls11] {
            let s = proto(t, p);
            assert!(s.suites.is_empty() && s.server_order.is_none());
        }
        assert_eq!(t.groups, Some(vec![groups::offered(0x001D)]));
        assert_eq!(t.dhe_bits, Some(2048));
        assert_eq!(t.compression, Some(false));
        assert_eq!(t.secure_renegotiation, None);
        assert_eq!(t.fallback_scsv, None);
        assert_eq!(leaf_cn(t), "CN=localhost");
        assert_eq!(t.chain[0].first(), Some(&0x30));
    }

    /// s_server TLS 1.0–1.2, client order, groups secp384r1:secp256r1, list
    /// AES128-SHA:ECDHE-RSA-AES128-SHA:DHE-RSA-AES256-SHA:CAMELLIA128-SHA:NULL-SHA:ECDHE-RSA-NULL-SHA.
    #[test]
    fn legacy_server() {
        let scan = parse(LEGACY, "tls-legacy.xml");
        let t = only_tls(&scan, 40675);
        let offered: Vec<(Protocol, bool)> = t
            .protocols
            .iter()
            .map(|p| (p.protocol, p.offered))
            .collect();
        assert_eq!(
            offered,
            vec![
                (Protocol::Ssl3, false),
                (Protocol::Tls10, true),
                (Protocol::Tls11, true),
                (Protocol::Tls12, true),
                (Protocol::Tls13, false),
            ]
        );
        // nmap lists client-order suites by name.
        let want = vec![0x0039, 0xC013, 0xC010, 0x002F, 0x0041, 0x0002];
        for p in [Protocol::Tls10, Protocol::Tls11, Protocol::Tls12] {
            let s = proto(t, p);
            assert_eq!(ids(s), want, "{p}");
            assert_eq!(s.server_order, Some(false), "{p}");
        }
        let t10 = proto(t, Protocol::Tls10);
        let classes = |iana: &str| {
            t10.suites
                .iter()
                .find(|s| s.iana == iana)
                .map(|s| s.classes.clone())
                .expect("suite")
        };
        assert!(classes("TLS_RSA_WITH_NULL_SHA").contains(&CipherClass::Null));
        assert!(classes("TLS_RSA_WITH_AES_128_CBC_SHA").contains(&CipherClass::CbcSha1));
        assert!(classes("TLS_RSA_WITH_AES_128_CBC_SHA").contains(&CipherClass::NoForwardSecrecy));
        // The curve nmap's ECDHE suites were given; `rsa 2048` is not a group.
        assert_eq!(t.groups, Some(vec![groups::offered(0x0017)]));
        assert_eq!(t.dhe_bits, Some(2048));
        assert_eq!(t.compression, Some(false));
        assert_eq!(leaf_cn(t), "CN=localhost");
    }

    #[test]
    fn ports_and_services() {
        let scan = parse(PORTS, "ports.xml");
        assert_eq!(scan.hosts.len(), 1);
        let h = &scan.hosts[0];
        assert_eq!(h.host, "127.0.0.1");
        assert!(h.endpoints.is_empty(), "no TLS scripts were run");
        let got: Vec<(u16, PortState, Option<&str>, Option<&str>)> = h
            .ports
            .iter()
            .map(|p| {
                (
                    p.port,
                    p.state,
                    p.service.as_ref().map(|s| s.name.as_str()),
                    p.service.as_ref().and_then(|s| s.tunnel.as_deref()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (35703, PortState::Open, Some("http"), None),
                (41479, PortState::Closed, None, None),
                (47111, PortState::Open, Some("http"), Some("ssl")),
            ]
        );
        let http = h.ports[0].service.as_ref().expect("service");
        assert_eq!(http.product.as_deref(), Some("SimpleHTTPServer"));
        assert!(http.version.is_some());
        assert!(http
            .extrainfo
            .as_deref()
            .is_some_and(|e| e.starts_with("Python")));
    }

    #[test]
    fn hostnames_are_kept_once() {
        let scan = parse(HOSTNAMES, "hostnames.xml");
        let h = &scan.hosts[0];
        assert_eq!(h.host, "127.0.0.1");
        // nmap lists "localhost" twice (type user and type PTR).
        assert_eq!(h.hostnames, vec!["localhost".to_string()]);
        let states: Vec<(u16, PortState)> = h.ports.iter().map(|p| (p.port, p.state)).collect();
        assert_eq!(
            states,
            vec![(35703, PortState::Open), (41479, PortState::Closed)]
        );
    }

    #[test]
    fn truncated_run_is_located_at_the_end() {
        let e = err(TRUNCATED, "truncated.xml");
        let lines = TRUNCATED.matches('\n').count() + 1;
        assert!(e.starts_with(&format!("truncated.xml:{lines}:")), "{e}");
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn every_prefix_of_a_real_file_errs_without_panicking() {
        let mut cut = 0;
        while cut < MODERN.len() {
            if MODERN.is_char_boundary(cut) {
                let e = err(&MODERN[..cut], "cut.xml");
                assert!(e.starts_with("cut.xml:"), "{e}");
            }
            cut += 37;
        }
    }

    #[test]
    fn broken_tag_is_located() {
        let needle = "<table key=\"compressors\">";
        let line = line_of(MODERN, needle);
        let xml = MODERN.replacen(needle, "<table key=\"compressors\"<", 1);
        let e = err(&xml, "broken.xml");
        assert!(e.starts_with(&format!("broken.xml:{line}:")), "{e}");
        assert!(e.contains("malformed XML"), "{e}");
    }

    #[test]
    fn out_of_range_port_is_located() {
        let line = line_of(MODERN, "portid=\"47111\"");
        let xml = MODERN.replacen("portid=\"47111\"", "portid=\"99999\"", 1);
        let e = err(&xml, "scans/moj.xml");
        assert!(e.starts_with(&format!("scans/moj.xml:{line}:")), "{e}");
        assert!(e.contains("99999"), "{e}");
        for bad in ["0", "-1", "http", ""] {
            let xml = MODERN.replacen("portid=\"47111\"", &format!("portid=\"{bad}\""), 1);
            assert!(err(&xml, "x.xml").contains("not a TCP port number"));
        }
    }

    #[test]
    fn missing_required_attributes_are_located() {
        let line = line_of(MODERN, "portid=\"47111\"");
        let xml = MODERN.replacen(" portid=\"47111\"", "", 1);
        let e = err(&xml, "a.xml");
        assert!(e.starts_with(&format!("a.xml:{line}:")), "{e}");
        assert!(e.ends_with("<port> without portid"), "{e}");

        let xml = MODERN.replacen("<service name=\"http\" ", "<service ", 1);
        assert!(err(&xml, "b.xml").ends_with("<service> without name"));

        let xml = MODERN.replacen("<elem key=\"name\">TLS_DHE", "<elem key=\"nom\">TLS_DHE", 1);
        let e = err(&xml, "c.xml");
        assert!(
            e.contains("cipher <table> without <elem key=\"name\">"),
            "{e}"
        );

        let e = err("<?xml version=\"1.0\"?>\n<scan/>\n", "d.xml");
        assert_eq!(
            e,
            "d.xml:2:1: expected <nmaprun> root element, found <scan>"
        );
    }

    #[test]
    fn non_tcp_and_down_hosts_are_skipped() {
        let xml = MODERN.replacen("protocol=\"tcp\" portid", "protocol=\"udp\" portid", 1);
        let scan = parse(&xml, "udp.xml");
        assert!(scan.hosts[0].ports.is_empty() && scan.hosts[0].endpoints.is_empty());

        let xml = MODERN.replacen("<status state=\"up\"", "<status state=\"down\"", 1);
        assert!(parse(&xml, "down.xml").hosts.is_empty());
    }

    #[test]
    fn deeply_nested_script_tables_parse() {
        // A hand-edited copy of a real file: the trailing "least strength"
        // elem is buried 200 tables deep. Same evidence as before.
        let needle = "<elem key=\"least strength\">A</elem>";
        let deep = |n: usize| {
            let wrapped = format!(
                "{}{needle}{}",
                "<table key=\"x\">".repeat(n),
                "</table>".repeat(n)
            );
            MODERN.replacen(needle, &wrapped, 1)
        };
        let want = parse(MODERN, "m.xml");
        assert_eq!(parse(&deep(200), "m.xml"), want);
        // Beyond the script bound, and far beyond the document bound: located
        // errors, not a stack overflow.
        let line = line_of(MODERN, needle);
        for n in [300, 100_000] {
            let e = err(&deep(n), "deep.xml");
            assert!(e.starts_with(&format!("deep.xml:{line}:")), "{e}");
            assert!(e.contains("nested deeper"), "{e}");
        }
    }

    #[test]
    fn nesting_guard_counts_like_xml() {
        // Just under the document bound parses (on a 2 MB test thread).
        let n = MAX_XML_DEPTH - 1;
        let xml = format!(
            "<nmaprun>{}{}</nmaprun>",
            "<a x='>'>".repeat(n - 1),
            "</a>".repeat(n - 1)
        );
        assert_eq!(parse(&xml, "ok.xml").hosts, vec![]);
        // Self-closing tags, comments, CDATA and quoted '>' do not nest.
        let flat = format!(
            "<nmaprun>{}</nmaprun>",
            "<a/><!-- <b> --><![CDATA[<c>]]><?pi <d>?><e y='>'/>".repeat(1000)
        );
        assert!(parse_str(&flat, "flat.xml").is_ok());
        let e = err(
            "<!DOCTYPE nmaprun [<!ENTITY a \"<x/>\">]>\n<nmaprun/>",
            "dtd.xml",
        );
        assert!(e.starts_with("dtd.xml:1:1: DTD internal subset"), "{e}");
    }

    #[test]
    fn script_error_claims_nothing() {
        // A script that failed writes output text but no tables: no protocol
        // may then be claimed absent.
        let start = MODERN
            .find("<script id=\"ssl-enum-ciphers\"")
            .expect("script");
        let end = MODERN[start..].find("</script>").expect("end") + start + "</script>".len();
        let xml = format!(
            "{}<script id=\"ssl-enum-ciphers\" output=\"ERROR: Script execution failed\"/>{}",
            &MODERN[..start],
            &MODERN[end..]
        );
        let scan = parse(&xml, "e.xml");
        let t = only_tls(&scan, 47111);
        assert!(t.protocols.is_empty());
        assert_eq!(t.groups, None);
        assert_eq!(t.compression, None);
        assert_eq!(t.chain.len(), 1, "ssl-cert still counts");
    }

    #[test]
    fn bad_pem_is_located() {
        let xml = MODERN.replacen("MIIDCTCCA", "!!!!", 1);
        let e = err(&xml, "pem.xml");
        assert!(
            e.starts_with(&format!(
                "pem.xml:{}:",
                line_of(MODERN, "<elem key=\"pem\">")
            )),
            "{e}"
        );
    }

    #[test]
    fn nmap_suite_names() {
        assert_eq!(offered_suite("TLS_AKE_WITH_AES_128_GCM_SHA256").id, 0x1301);
        assert_eq!(offered_suite("TLS_AKE_WITH_NULL_SHA256").id, 0xC0B4);
        assert_eq!(offered_suite("TLS_RSA_WITH_AES_128_CBC_SHA").id, 0x002F);
        let odd = offered_suite("TLS_RSA_EXPORT1024_WITH_RC4_56_MD5");
        assert_eq!(
            (odd.id, odd.iana.as_str()),
            (0, "TLS_RSA_EXPORT1024_WITH_RC4_56_MD5")
        );
        assert!(odd.classes.contains(&CipherClass::Export));
        assert_eq!(kex_group("ecdh_x25519"), Some(groups::offered(0x001D)));
        assert_eq!(kex_group("secp384r1"), Some(groups::offered(0x0018)));
        assert_eq!(kex_group("rsa 2048"), None);
        assert_eq!(kex_group("curveSM2").map(|g| g.id), Some(0));
    }

    #[test]
    fn tls13_counts_as_tested_from_nmap_7_92() {
        let has13 = |v: Option<&str>| tested_protocols(v).contains(&Protocol::Tls13);
        assert!(!has13(Some("7.91")));
        assert!(has13(Some("7.92")));
        assert!(has13(Some("7.93")));
        assert!(has13(Some("7.94SVN")));
        assert!(has13(Some("8.0")));
        assert!(!has13(None));
        assert!(!has13(Some("garbage")));
        assert!(!tested_protocols(Some("7.93")).contains(&Protocol::Ssl2));
    }

    #[test]
    fn read_error_names_the_path() {
        let e = match parse_file(Path::new("/nonexistent/scan.xml")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("no such file"),
        };
        assert!(e.starts_with("/nonexistent/scan.xml: cannot read"), "{e}");
    }
}

//! The nmap reader against real nmap output and hostile files.

use super::tls::{kex_group, offered_suite, tested_protocols};
use super::xml::MAX_XML_DEPTH;
use super::*;
use crate::probe::tls::evidence::CipherClass;
use crate::probe::tls::evidence::ProtocolSupport;
use crate::probe::tls::groups;
use x509_cert::der::Decode;

const MODERN: &str = include_str!("../../tests/fixtures/nmap/tls-modern.xml");
const LEGACY: &str = include_str!("../../tests/fixtures/nmap/tls-legacy.xml");
const PORTS: &str = include_str!("../../tests/fixtures/nmap/ports.xml");
const HOSTNAMES: &str = include_str!("../../tests/fixtures/nmap/hostnames.xml");
const TRUNCATED: &str = include_str!("../../tests/fixtures/nmap/truncated.xml");

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

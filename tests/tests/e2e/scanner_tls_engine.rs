//! popscan's TLS engine against real `openssl s_server` instances with chosen
//! settings: the exact protocols, suites and groups each was configured with
//! must be found, no more, no fewer. And hostile servers must give a clean
//! per-endpoint error within the timeout.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use e2e::targets::{tool_available, HostileServer, Hostility, LeafKey, OpenSslServer, TargetPki};
use scanner::probe::tls::{probe, FallbackScsv, ProbeLimits, Protocol, Target, TlsEvidence};

fn target(port: u16) -> Target {
    Target {
        addr: ([127, 0, 0, 1], port).into(),
        sni: Some("localhost".into()),
        connect_timeout: Duration::from_secs(2),
        exchange_timeout: Duration::from_secs(2),
    }
}

fn run(port: u16) -> TlsEvidence {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(probe(target(port), &ProbeLimits::default()))
        .expect("probe succeeds")
}

fn offered(ev: &TlsEvidence) -> Vec<Protocol> {
    ev.offered_protocols()
}

fn suites(ev: &TlsEvidence, p: Protocol) -> Vec<String> {
    ev.protocols
        .iter()
        .find(|s| s.protocol == p)
        .map(|s| {
            s.suites
                .iter()
                .filter_map(|s| s.openssl.clone().or(Some(s.iana.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn group_names(ev: &TlsEvidence) -> BTreeSet<String> {
    ev.groups
        .as_ref()
        .expect("groups enumerated")
        .iter()
        .map(|g| g.name.clone())
        .collect()
}

#[test]
fn tls12_only_server_with_its_own_order() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("rsa", LeafKey::Rsa(2048));
    let cipher = "ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256:AES128-SHA:ECDHE-RSA-CHACHA20-POLY1305";
    let s = OpenSslServer::start(
        &c,
        &k,
        &[
            "-tls1_2",
            "-cipher",
            cipher,
            "-serverpref",
            "-groups",
            "P-256:P-384",
        ],
    );
    let ev = run(s.port);
    assert_eq!(offered(&ev), vec![Protocol::Tls12]);
    // Server order enforced: found order is the configured order.
    assert_eq!(
        suites(&ev, Protocol::Tls12),
        cipher.split(':').map(String::from).collect::<Vec<_>>()
    );
    let p12 = ev
        .protocols
        .iter()
        .find(|p| p.protocol == Protocol::Tls12)
        .unwrap();
    assert_eq!(p12.server_order, Some(true));
    assert_eq!(group_names(&ev), set(&["secp256r1", "secp384r1"]));
    assert_eq!(
        ev.dhe_bits,
        Some(2048),
        "OpenSSL's automatic DH group for RSA-2048"
    );
    assert_eq!(ev.chain.len(), 1);
    assert_eq!(ev.secure_renegotiation, Some(true));
    assert_eq!(ev.compression, Some(false));
    assert_eq!(ev.fallback_scsv, Some(FallbackScsv::NotApplicable));
}

#[test]
fn legacy_protocols_and_weak_suites_are_found_exactly() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("rsa", LeafKey::Rsa(2048));
    // Debian's OpenSSL 3 has no 3DES/RC4 left to serve; NULL and anonymous
    // suites are the weak ones it can still be talked into.
    let cipher = "NULL-SHA:AES128-SHA:ECDHE-RSA-AES128-SHA:AECDH-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0";
    let s = OpenSslServer::start(
        &c,
        &k,
        &[
            "-min_protocol",
            "TLSv1",
            "-max_protocol",
            "TLSv1.2",
            "-cipher",
            cipher,
        ],
    );
    let ev = run(s.port);
    assert_eq!(
        offered(&ev),
        vec![Protocol::Tls10, Protocol::Tls11, Protocol::Tls12]
    );
    let legacy = set(&[
        "NULL-SHA",
        "AES128-SHA",
        "ECDHE-RSA-AES128-SHA",
        "AECDH-AES128-SHA",
    ]);
    for p in [Protocol::Tls10, Protocol::Tls11] {
        let found: BTreeSet<String> = suites(&ev, p).into_iter().collect();
        assert_eq!(found, legacy, "{p}");
    }
    let mut tls12 = legacy.clone();
    tls12.insert("ECDHE-RSA-AES128-GCM-SHA256".into());
    assert_eq!(
        suites(&ev, Protocol::Tls12)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        tls12
    );
    let p12 = ev
        .protocols
        .iter()
        .find(|p| p.protocol == Protocol::Tls12)
        .unwrap();
    assert_eq!(
        p12.server_order,
        Some(false),
        "no -serverpref: client order"
    );
    assert_eq!(ev.fallback_scsv, Some(FallbackScsv::Enforced));
    // Weak suites are classified for the policy.
    use scanner::probe::tls::CipherClass;
    let tls10 = &ev
        .protocols
        .iter()
        .find(|p| p.protocol == Protocol::Tls10)
        .unwrap()
        .suites;
    let class_of = |iana: &str| {
        tls10
            .iter()
            .find(|s| s.iana == iana)
            .unwrap()
            .classes
            .clone()
    };
    assert!(class_of("TLS_RSA_WITH_NULL_SHA").contains(&CipherClass::Null));
    assert!(class_of("TLS_ECDH_anon_WITH_AES_128_CBC_SHA").contains(&CipherClass::Anonymous));
}

#[test]
fn tls13_only_server_suites_groups_and_chain() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("ec", LeafKey::EcP256);
    let s = OpenSslServer::start(
        &c,
        &k,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
            "-groups",
            "X25519:P-384:ffdhe3072",
        ],
    );
    let ev = run(s.port);
    assert_eq!(offered(&ev), vec![Protocol::Tls13]);
    assert_eq!(
        suites(&ev, Protocol::Tls13)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        set(&["TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"])
    );
    assert_eq!(group_names(&ev), set(&["x25519", "secp384r1", "ffdhe3072"]));
    // Chain fetched through a real TLS 1.3 handshake; it is the leaf served.
    let served = std::fs::read_to_string(&c).unwrap();
    let der = pem_der(&served);
    assert_eq!(ev.chain, vec![der]);
    assert_eq!(ev.fallback_scsv, Some(FallbackScsv::NotApplicable));
    assert_eq!(ev.secure_renegotiation, None);
}

#[test]
fn dhe_parameter_size_from_dhparam() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("rsa", LeafKey::Rsa(2048));
    let dh = pki.dir.path().join("dh1024.pem");
    let out = std::process::Command::new("openssl")
        .args(["dhparam", "-out"])
        .arg(&dh)
        .arg("1024")
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = OpenSslServer::start(
        &c,
        &k,
        &[
            "-tls1_2",
            "-cipher",
            "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0",
            "-dhparam",
            dh.to_str().unwrap(),
        ],
    );
    let ev = run(s.port);
    assert_eq!(
        suites(&ev, Protocol::Tls12),
        vec!["DHE-RSA-AES128-GCM-SHA256"]
    );
    assert_eq!(ev.dhe_bits, Some(1024));
    assert_eq!(
        ev.groups.as_deref(),
        Some(&[][..]),
        "no ECDHE suite, no groups"
    );
}

#[test]
fn default_modern_server_offers_12_and_13_with_downgrade_protection() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("ec", LeafKey::EcP256);
    let s = OpenSslServer::start(&c, &k, &[]);
    let ev = run(s.port);
    assert_eq!(offered(&ev), vec![Protocol::Tls12, Protocol::Tls13]);
    assert_eq!(ev.fallback_scsv, Some(FallbackScsv::Enforced));
    // An ECDSA certificate: every TLS 1.2 suite found authenticates with ECDSA.
    let s12 = suites(&ev, Protocol::Tls12);
    assert!(!s12.is_empty());
    assert!(s12.iter().all(|s| s.contains("ECDSA")), "{s12:?}");
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[test]
fn hostile_servers_give_clean_errors_within_the_timeout() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (how, expect) in [
        (Hostility::Garbage, "not a TLS record"),
        (Hostility::HugeLength, "limit"),
        (Hostility::WrongLengths, "ServerHello"),
        (Hostility::Stall, "within"),
        (Hostility::StallMidRecord, "within"),
    ] {
        let server = HostileServer::start(how);
        let start = Instant::now();
        let err = rt
            .block_on(probe(target(server.port), &ProbeLimits::default()))
            .expect_err("hostile server must be an error");
        let took = start.elapsed();
        let msg = err.to_string();
        assert!(msg.contains(expect), "{how:?}: {msg}");
        assert!(
            msg.contains(&server.port.to_string()),
            "names the endpoint: {msg}"
        );
        // One exchange timeout (2 s) plus slack; never a hang.
        assert!(took < Duration::from_secs(4), "{how:?} took {took:?}");
    }
}

#[test]
fn closed_port_is_a_connect_error() {
    let port = e2e::free_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(probe(target(port), &ProbeLimits::default()))
        .expect_err("nothing listens");
    assert!(err.to_string().contains("connect failed"), "{err}");
}

//! `popscan scan` end to end against real targets on loopback, judged by the
//! shipped level-3 policy (extended only to point its port controls at ports
//! the test owns): each fault is reported by exactly the right control, the
//! good system passes, an unreachable system is an error, waivers apply until
//! they expire, and every report format parses back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::targets::{tool_available, HttpsTarget, LeafKey, OpenPort, OpenSslServer, TargetPki};
use time::OffsetDateTime;

const HSTS: (&str, &str) = (
    "Strict-Transport-Security",
    "max-age=31536000; includeSubDomains",
);
const NOSNIFF: (&str, &str) = ("X-Content-Type-Options", "nosniff");
/// Forward-secret AEAD suites only, so the TLS controls pass and each case
/// isolates its certificate fault.
const CLEAN_RSA: &str = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:@SECLEVEL=0";
const CLEAN_EC: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";

fn repo() -> PathBuf {
    e2e::repo_root()
}

fn policy_dir(dir: &Path, telnet: u16, spare: u16) -> PathBuf {
    e2e::targets::site_policies(dir, telnet, spare)
}

struct Case {
    id: &'static str,
    host: &'static str,
    port: u16,
    service: &'static str,
    expect_failed: &'static [&'static str],
}

fn inventory(dir: &Path, cases: &[Case]) -> PathBuf {
    let mut s = String::from("systems:\n");
    for c in cases {
        s += &format!(
            "  - id: {}\n    agency: {}\n    agency_kind: province\n    name: {} system\n    level: 3\n    endpoints:\n      - {{address: '{}:{}', service: {}, hostname: localhost}}\n",
            c.id, c.id, c.id, c.host, c.port, c.service
        );
    }
    let f = dir.join("inventory.yaml");
    std::fs::write(&f, s).unwrap();
    f
}

/// `popscan scan` on an inventory with the given policies and trust bundle,
/// plus `extra` arguments.
fn scan(inv: &Path, policies: &Path, trust: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "scan",
        "--inventory",
        inv.to_str().unwrap(),
        "--policies",
        policies.to_str().unwrap(),
        "--trust-bundle",
        trust.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    popscan(&args)
}

fn popscan(args: &[&str]) -> std::process::Output {
    Command::new(e2e::bin("popscan"))
        .args(args)
        .output()
        .expect("run popscan")
}

fn failed_controls(report: &serde_json::Value) -> BTreeMap<String, (String, BTreeSet<String>)> {
    report["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let failed = s["controls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["status"] == "fail")
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect();
            (
                s["id"].as_str().unwrap().to_string(),
                (s["result"].as_str().unwrap().to_string(), failed),
            )
        })
        .collect()
}

#[test]
fn each_fault_is_reported_by_the_right_control() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);

    let (good_c, good_k) = pki.good_leaf("good", LeafKey::EcP256);
    let good = HttpsTarget::start("127.0.0.1", &good_c, &good_k, &[HSTS, NOSNIFF]);
    let no_hsts = HttpsTarget::start("127.0.0.1", &good_c, &good_k, &[NOSNIFF]);
    // The "telnet" system lives on 127.0.0.2 so its open port is its own.
    let telnet_sys = HttpsTarget::start("127.0.0.2", &good_c, &good_k, &[HSTS, NOSNIFF]);
    let telnet = OpenPort::start("127.0.0.2");
    let spare = e2e::free_port();

    let (c, k) = pki.leaf(
        "expired",
        &["localhost"],
        LeafKey::EcP256,
        now - 400 * day,
        now - 10 * day,
    );
    let expired = OpenSslServer::start(&c, &k, &["-cipher", CLEAN_EC]);
    let (c, k) = pki.self_signed("selfsigned");
    let self_signed = OpenSslServer::start(&c, &k, &["-cipher", CLEAN_RSA]);
    let (c, k) = pki.rsa1024_leaf("rsa1024");
    let rsa1024 = OpenSslServer::start(&c, &k, &["-cipher", CLEAN_RSA]);
    let (c, k) = pki.sha1_leaf("sha1");
    let sha1 = OpenSslServer::start(&c, &k, &["-cipher", CLEAN_RSA]);
    let (c, k) = pki.leaf(
        "mismatch",
        &["portal.other-province.gov.vn"],
        LeafKey::EcP256,
        now - day,
        now + 90 * day,
    );
    let mismatch = OpenSslServer::start(&c, &k, &["-cipher", CLEAN_EC]);
    let (c, k) = pki.good_leaf("legacy", LeafKey::Rsa(2048));
    let legacy = OpenSslServer::start(
        &c,
        &k,
        &[
            "-min_protocol",
            "TLSv1",
            "-cipher",
            "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0",
        ],
    );
    let closed = e2e::free_port();

    let cases = [
        Case {
            id: "good",
            host: "127.0.0.1",
            port: good.port,
            service: "https",
            expect_failed: &[],
        },
        Case {
            id: "no-hsts",
            host: "127.0.0.1",
            port: no_hsts.port,
            service: "https",
            expect_failed: &["http.hsts"],
        },
        Case {
            id: "telnet",
            host: "127.0.0.2",
            port: telnet_sys.port,
            service: "https",
            expect_failed: &["ports.cleartext-admin"],
        },
        Case {
            id: "expired",
            host: "127.0.0.1",
            port: expired.port,
            service: "tls",
            expect_failed: &["cert.expiry"],
        },
        Case {
            id: "self-signed",
            host: "127.0.0.1",
            port: self_signed.port,
            service: "tls",
            expect_failed: &["cert.chain"],
        },
        Case {
            id: "rsa1024",
            host: "127.0.0.1",
            port: rsa1024.port,
            service: "tls",
            expect_failed: &["cert.key-size"],
        },
        // rustls-webpki cannot verify SHA-1 signatures at all, so the chain
        // control fails alongside the signature control.
        Case {
            id: "sha1",
            host: "127.0.0.1",
            port: sha1.port,
            service: "tls",
            expect_failed: &["cert.chain", "cert.signature"],
        },
        Case {
            id: "mismatch",
            host: "127.0.0.1",
            port: mismatch.port,
            service: "tls",
            expect_failed: &["cert.hostname"],
        },
        Case {
            id: "legacy",
            host: "127.0.0.1",
            port: legacy.port,
            service: "tls",
            expect_failed: &["tls.cipher-classes", "tls.protocols"],
        },
        Case {
            id: "unreachable",
            host: "127.0.0.1",
            port: closed,
            service: "tls",
            expect_failed: &[],
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), telnet.port, spare);
    let inv = inventory(dir.path(), &cases);
    let report_path = dir.path().join("report.json");
    let out = scan(
        &inv,
        &policies,
        &pki.ca_path(),
        &[
            "--timeout",
            "3",
            "--format",
            "json",
            "--output",
            report_path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "some systems fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let got = failed_controls(&report);
    for c in &cases {
        let (result, failed) = &got[c.id];
        let want: BTreeSet<String> = c.expect_failed.iter().map(|s| s.to_string()).collect();
        assert_eq!(failed, &want, "{}: failed controls", c.id);
        let want_result = match (c.id, want.is_empty()) {
            ("unreachable", _) => "error",
            (_, true) => "pass",
            (_, false) => "fail",
        };
        assert_eq!(result, want_result, "{}", c.id);
    }
    // Evidence is quoted in the findings.
    let text = report.to_string();
    assert!(
        text.contains(&format!("TLSv1.0 offered on 127.0.0.1:{}", legacy.port)),
        "quotes protocol evidence"
    );
    assert!(text.contains(&format!("telnet ({}/tcp) open on 127.0.0.2", telnet.port)));
    assert!(text.contains("certificate expired on"));
    assert!(text.contains(&format!(
        "127.0.0.1:{closed}: TLS not established: connect failed"
    )));
    assert_eq!(report["schema"], "popscan-report/1");
    assert_eq!(report["summary"]["systems"], 10);
    assert_eq!(report["summary"]["pass"], 1);
    assert_eq!(report["summary"]["error"], 1);
}

#[test]
fn waivers_apply_until_they_expire() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("good", LeafKey::EcP256);
    let no_hsts = HttpsTarget::start("127.0.0.1", &c, &k, &[NOSNIFF]);
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), e2e::free_port(), e2e::free_port());
    let cases = [Case {
        id: "portal",
        host: "127.0.0.1",
        port: no_hsts.port,
        service: "https",
        expect_failed: &[],
    }];
    let inv = inventory(dir.path(), &cases);
    let today = OffsetDateTime::now_utc().date();
    let scan = |expires: time::Date| {
        let w = dir.path().join("waivers.yaml");
        std::fs::write(
            &w,
            format!(
                "waivers:\n  - system: portal\n    control: http.hsts\n    justification: Legacy kiosk clients break with HSTS until replaced.\n    approver: Provincial CIO\n    expires: {}\n",
                scanner::waiver::format_date(expires)
            ),
        )
        .unwrap();
        let out = scan(
            &inv,
            &policies,
            &pki.ca_path(),
            &["--waivers", w.to_str().unwrap(), "--format", "json"],
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let hsts = report["systems"][0]["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "http.hsts")
            .unwrap()
            .clone();
        (out.status.code(), hsts)
    };
    // Valid through today: waived, the system passes.
    let (code, hsts) = scan(today);
    assert_eq!(code, Some(0));
    assert_eq!(hsts["status"], "waived");
    assert_eq!(hsts["waiver"]["expired"], false);
    assert!(hsts["failures"][0]
        .as_str()
        .unwrap()
        .contains("no Strict-Transport-Security"));
    // Expired yesterday: no longer applies.
    let (code, hsts) = scan(today - time::Duration::days(1));
    assert_eq!(code, Some(1));
    assert_eq!(hsts["status"], "fail");
    assert_eq!(hsts["waiver"]["expired"], true);
}

#[test]
fn every_report_format_parses_back() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("good", LeafKey::EcP256);
    let good = HttpsTarget::start("127.0.0.1", &c, &k, &[HSTS, NOSNIFF]);
    let no_hsts = HttpsTarget::start("127.0.0.1", &c, &k, &[NOSNIFF]);
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), e2e::free_port(), e2e::free_port());
    let cases = [
        Case {
            id: "good",
            host: "127.0.0.1",
            port: good.port,
            service: "https",
            expect_failed: &[],
        },
        Case {
            id: "bad",
            host: "127.0.0.1",
            port: no_hsts.port,
            service: "https",
            expect_failed: &[],
        },
    ];
    let inv = inventory(dir.path(), &cases);
    let run = |format: &str| {
        let out = scan(&inv, &policies, &pki.ca_path(), &["--format", format]);
        assert_eq!(out.status.code(), Some(1), "{format}");
        String::from_utf8(out.stdout).unwrap()
    };
    // JSON against the published schema.
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("scanner/schema/report-v1.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    // JUnit: one testcase per system × control, the failure present.
    let junit = run("junit");
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let cases_n = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    let controls_n: usize = json["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["controls"].as_array().unwrap().len())
        .sum();
    assert_eq!(cases_n, controls_n);
    let failures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .collect();
    assert_eq!(failures.len(), 1);
    // CSV: a row per system × control.
    let csv_text = run("csv");
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), controls_n);
    assert!(rows
        .iter()
        .any(|r| r.iter().any(|c| c == "http.hsts") && r.iter().any(|c| c == "fail")));
    // HTML: self-contained, names both systems.
    let html = run("html");
    assert!(html.starts_with("<!DOCTYPE html>") || html.starts_with("<!doctype html>"));
    assert!(html.contains("good") && html.contains("bad"));
    assert!(!html.contains("<script src") && !html.contains("<link "));
}

#[test]
fn bad_inputs_exit_2_with_a_location() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, "systems:\n  - id: x\n    agency: a\n    agency_kind: province\n    name: n\n    level: 9\n    endpoints: [{address: 'h:1', service: tls}]\n").unwrap();
    let out = popscan(&[
        "scan",
        "--inventory",
        inv.to_str().unwrap(),
        "--policies",
        repo().join("policies/scan").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inventory.yaml:6:"), "{err}");
    let out = popscan(&[
        "policy",
        "validate",
        repo().join("policies/scan").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "shipped policies validate");
    let out = popscan(&["scan", "--shard", "3/2"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_nmap_evidence_alone_finds_legacy_tls() {
    if !tool_available("openssl", "openssl") || !tool_available("nmap", "nmap") {
        return;
    }
    let pki = TargetPki::new();
    let (c, k) = pki.good_leaf("legacy", LeafKey::Rsa(2048));
    let legacy = OpenSslServer::start(
        &c,
        &k,
        &[
            "-min_protocol",
            "TLSv1",
            "-cipher",
            "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let policies = policy_dir(dir.path(), e2e::free_port(), e2e::free_port());
    let cases = [Case {
        id: "legacy",
        host: "127.0.0.1",
        port: legacy.port,
        service: "tls",
        expect_failed: &[],
    }];
    let inv = inventory(dir.path(), &cases);
    let out = scan(
        &inv,
        &policies,
        &pki.ca_path(),
        &["--run-nmap", "--no-probe", "--format", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let controls = report["systems"][0]["controls"].as_array().unwrap();
    let get = |id: &str| controls.iter().find(|c| c["id"] == id).unwrap().clone();
    let protocols = get("tls.protocols");
    assert_eq!(protocols["status"], "fail");
    let finding = protocols["failures"][0].as_str().unwrap();
    assert!(
        finding.starts_with(&format!("TLSv1.0 offered on 127.0.0.1:{}", legacy.port)),
        "{finding}"
    );
    assert!(
        finding.contains("[nmap:"),
        "evidence names its source: {finding}"
    );
    // nmap saw the leaf certificate, so certificate controls are decided too.
    assert_eq!(get("cert.chain")["status"], "pass");
    assert_eq!(get("cert.hostname")["status"], "pass");
    // What nmap cannot tell (TLS_FALLBACK_SCSV) is an error, never a pass.
    assert_eq!(get("tls.downgrade")["status"], "error");
}

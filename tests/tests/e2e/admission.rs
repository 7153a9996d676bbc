//! Admission end to end, all real processes: a province system served by
//! `openssl s_server` with TLS 1.0 and an expired certificate fails popscan,
//! so the province's calls through popgate get 403 `not_compliant` naming the
//! failed controls; the server is fixed and re-scanned, popgate picks up the
//! new verdict without a restart and the calls succeed. Tampered, foreign-key
//! and expired verdicts are each refused with their reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use e2e::targets::{site_policies, tool_available, LeafKey, OpenSslServer, TargetPki};
use e2e::{admin_get, free_port, metric};
use time::OffsetDateTime;

const CITIZEN: &str = "/v1/citizens/001203012345";
const CLEAN: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";

struct Scan<'a> {
    inventory: PathBuf,
    policies: PathBuf,
    trust: &'a Path,
    verdicts: PathBuf,
}

impl Scan<'_> {
    fn run(&self, key: &Path) -> i32 {
        let out = Command::new(e2e::bin("popscan"))
            .args([
                "scan",
                "--format",
                "json",
                "--timeout",
                "3",
                "--log-format",
                "json",
            ])
            .arg("--inventory")
            .arg(&self.inventory)
            .arg("--policies")
            .arg(&self.policies)
            .arg("--trust-bundle")
            .arg(self.trust)
            .arg("--sign-key")
            .arg(key)
            .arg("--verdicts-dir")
            .arg(&self.verdicts)
            .output()
            .expect("run popscan");
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "popscan: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `--log-format json`: stderr is one JSON object per line, for a
        // timer's journal: a line per system scanned, and the verdicts.
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let said = |m: &str| lines.iter().filter(|l| l["fields"]["message"] == m).count();
        assert!(said("system scanned") >= 1, "{lines:?}");
        assert_eq!(said("signed verdicts written"), 1, "{lines:?}");
        out.status.code().unwrap_or(-1)
    }
}

/// Polls until `f` holds (verdicts are picked up by a file watcher).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within 10 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_province_is_admitted_only_while_its_system_passes() {
    if !tool_available("openssl", "openssl") {
        return;
    }
    // popgate with admission required for provinces.
    let pki = TestPki::new();
    let pki_dir = pki.dir.path().join("pki");
    certs::signing::generate_keypair(&pki_dir, "verdict-signing").unwrap();
    certs::signing::generate_keypair(&pki_dir, "rogue").unwrap();
    let verdicts = pki.dir.path().join("verdicts");
    std::fs::create_dir_all(&verdicts).unwrap();
    let registry = RegistryProcess::start();
    let audit_dir = pki.dir.path().join("audit");
    let e2e::gateway::TestConfig { path: config, port, admin: admin_port, .. } = pki.config(&registry.addr).audit_dir(&audit_dir).admin().extra("admission:\n  verdicts_dir: verdicts\n  trusted_keys: [pki/verdict-signing.pub]\n  require: {kinds: [province]}\n  poll_interval_ms: 100\n").write();
    let admin = admin_port.expect("admin listener");
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let hanam = pki.client(&pki.agency("hanam"));
    let vss = pki.client(&pki.agency("vss"));

    // Ministries are not required to hold a verdict; provinces without one are refused.
    let r = vss
        .get(port, CITIZEN, &[("X-Purpose", "pension")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = hanam.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (403, "not_compliant"));
    assert!(
        r.body.contains("no compliance verdict for agency hanam"),
        "{}",
        r.body
    );

    // Hanoi's system: TLS 1.0 and an expired certificate.
    let targets = TargetPki::new();
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let (bad_c, bad_k) = targets.leaf(
        "old",
        &["localhost"],
        LeafKey::EcP256,
        now - 400 * day,
        now - 30 * day,
    );
    let sys_port = free_port();
    let bad = OpenSslServer::start_at(
        sys_port,
        &bad_c,
        &bad_k,
        &[
            "-min_protocol",
            "TLSv1",
            "-cipher",
            &format!("{CLEAN}:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"),
        ],
    );
    let work = tempfile::tempdir().unwrap();
    let inventory = work.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        format!("systems:\n  - id: hanoi-portal\n    agency: hanoi\n    agency_kind: province\n    name: Hanoi public services\n    level: 3\n    endpoints:\n      - {{address: '127.0.0.1:{sys_port}', service: tls, hostname: localhost}}\n"),
    )
    .unwrap();
    let scan = Scan {
        inventory,
        policies: site_policies(work.path(), free_port(), free_port()),
        trust: &targets.ca_path(),
        verdicts: verdicts.clone(),
    };
    let key = pki_dir.join("verdict-signing.key");
    assert_eq!(scan.run(&key), 1, "the system fails its audit");

    let refused = |body: &str| {
        body.contains("control tls.protocols failed on hanoi-portal")
            && body.contains("control cert.expiry failed on hanoi-portal")
    };
    eventually("hanoi refused as not compliant", || async {
        let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
        r.status == 403 && r.error_code() == "not_compliant" && refused(&r.body)
    })
    .await;

    // Fixed: a valid certificate and modern TLS only, on the same address.
    drop(bad);
    let (good_c, good_k) = targets.good_leaf("new", LeafKey::EcP256);
    let _good = OpenSslServer::start_at(
        sys_port,
        &good_c,
        &good_k,
        &["-min_protocol", "TLSv1.2", "-cipher", CLEAN],
    );
    assert_eq!(scan.run(&key), 0, "the fixed system passes");
    eventually("hanoi admitted after the clean re-scan", || async {
        hanoi.get(port, CITIZEN, &[]).await.unwrap().status == 200
    })
    .await;

    let agency_file = verdicts.join("agency-hanoi.verdict.json");
    let good_bytes = std::fs::read(&agency_file).unwrap();

    // Expiry is visible to ops before it bites.
    let (_, text) = admin_get(admin, "/metrics");
    let days = metric(
        &text,
        "popgate_admission_verdict_expiry_days{agency=\"hanoi\"}",
    )
    .unwrap();
    assert!((88.0..=90.0).contains(&days), "{days}");
    assert!(metric(&text, "popgate_refusals_total{code=\"not_compliant\"}").unwrap() >= 2.0);

    // One byte changed inside the signed payload.
    let mut tampered = good_bytes.clone();
    let text_v = String::from_utf8(good_bytes.clone()).unwrap();
    let at = text_v.find("\"payload\": \"").unwrap() + 40;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&agency_file, &tampered).unwrap();
    eventually("tampered verdict refused", || async {
        let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
        r.status == 403 && r.body.contains("signature does not verify")
    })
    .await;

    // Signed by a key popgate does not trust.
    assert_eq!(scan.run(&pki_dir.join("rogue.key")), 0);
    eventually("foreign-key verdict refused", || async {
        let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
        r.status == 403 && r.body.contains("signed by unknown key")
    })
    .await;

    // A genuine verdict past its validity.
    let (_, mut v) = certs::verdict::open_unverified(&good_bytes).unwrap();
    v.scanned_at = "2026-01-01T00:00:00Z".into();
    v.valid_until = "2026-04-01T00:00:00Z".into();
    let signing = certs::signing::load_signing_key(&key).unwrap();
    let env = certs::verdict::sign(&v, &signing);
    std::fs::write(&agency_file, serde_json::to_vec(&env).unwrap()).unwrap();
    eventually("expired verdict refused", || async {
        let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
        r.status == 403 && r.body.contains("verdict expired 2026-04-01")
    })
    .await;

    // Every refusal was audited with its code.
    let records = e2e::gateway::audit_records(&audit_dir);
    let not_compliant = records
        .iter()
        .filter(|r| r["code"] == "not_compliant" && r["agency"] == "hanoi")
        .count();
    assert!(not_compliant >= 4, "{not_compliant} audited refusals");
}

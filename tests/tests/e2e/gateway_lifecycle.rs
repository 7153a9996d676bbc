//! Operations over a gateway's life: a reload applies a new route while a
//! slow request is in flight, a broken registry is rejected and counted,
//! handshake failures are counted by reason, and SIGTERM drains in-flight
//! requests, seals the audit log and exits 0.

use std::time::{Duration, Instant};

use certs::pki::LeafUsage;
use e2e::gateway::{GatewayProcess, TestPki, REGISTRY};
use e2e::upstream::RecordingUpstream;
use e2e::{admin_get, metric};

const CITIZEN: &str = "/v1/citizens/001203012345";

#[tokio::test(flavor = "multi_thread")]
async fn reload_adds_a_route_without_disturbing_a_slow_request() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start_delayed(Duration::from_millis(1500)).await;
    let audit = pki.dir.path().join("audit");
    let e2e::gateway::TestConfig {
        path: config,
        port,
        admin: admin_port,
        ..
    } = pki
        .config(&upstream.addr.to_string())
        .audit_dir(&audit)
        .admin()
        .write();
    let admin = admin_port.expect("admin listener");
    let gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    let family = format!("{CITIZEN}/family");
    assert_eq!(hanoi.get(port, &family, &[]).await.unwrap().status, 403);

    // A slow request is in flight when the registry changes.
    let slow = {
        let c = hanoi.clone();
        tokio::spawn(async move { c.get(port, CITIZEN, &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let registry = REGISTRY
        .replace(
            "agencies:",
            "  - id: citizen.family\n    route: GET /v1/citizens/{citizen_id}/family\nagencies:",
        )
        .replace(
            "allow: [citizen.read, citizen.residence]",
            "allow: [citizen.read, citizen.residence, citizen.family]",
        );
    std::fs::write(pki.dir.path().join("agencies.yaml"), registry).unwrap();
    gw.signal(libc::SIGHUP);
    let started = Instant::now();
    loop {
        let r = hanoi.get(port, &family, &[]).await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new route never applied: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = slow.await.unwrap().unwrap();
    assert_eq!(
        r.status, 200,
        "the in-flight request finished undisturbed: {}",
        r.body
    );

    // A broken registry is rejected, counted, and the current one keeps serving.
    std::fs::write(pki.dir.path().join("agencies.yaml"), "routes: [oops").unwrap();
    gw.signal(libc::SIGHUP);
    let started = Instant::now();
    loop {
        let (_, text) = admin_get(admin, "/metrics");
        if metric(&text, "popgate_config_reloads_total{result=\"rejected\"}").unwrap_or(0.0) >= 1.0
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rejection not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hanoi.get(port, &family, &[]).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_registry_file_is_applied_without_a_signal() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start_delayed(Duration::from_millis(1)).await;
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&upstream.addr.to_string()).write();
    let _gw = GatewayProcess::start(&config, port);
    let hanam = pki.client(&pki.agency("hanam"));
    let residence = format!("{CITIZEN}/residence");
    assert_eq!(hanam.get(port, &residence, &[]).await.unwrap().status, 403);
    let registry = REGISTRY.replace(
        "identity: { uri_san: \"spiffe://dancu.gov.vn/agency/hanam\" }\n    allow: [citizen.read]",
        "identity: { uri_san: \"spiffe://dancu.gov.vn/agency/hanam\" }\n    allow: [citizen.read, citizen.residence]",
    );
    assert_ne!(registry, REGISTRY);
    std::fs::write(pki.dir.path().join("agencies.yaml"), registry).unwrap();
    let started = Instant::now();
    while hanam.get(port, &residence, &[]).await.unwrap().status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "file change not applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_failures_are_counted_by_reason() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start_delayed(Duration::from_millis(1)).await;
    let e2e::gateway::TestConfig {
        path: config,
        port,
        admin: admin_port,
        ..
    } = pki.config(&upstream.addr.to_string()).admin().write();
    let admin = admin_port.expect("admin listener");
    let _gw = GatewayProcess::start(&config, port);
    let now = time::OffsetDateTime::now_utc();
    let expired = pki.custom(
        "expired",
        "hanoi",
        now - time::Duration::days(60),
        now - time::Duration::days(1),
        LeafUsage::ClientAuth,
    );
    let other = TestPki::new();
    let foreign = other.agency("hanoi");
    let foreign_client = e2e::client::Client::new(
        &pki.pki.ca_cert_path(),
        Some((&foreign.cert_path, &foreign.key_path)),
    );
    assert!(pki.client(&expired).get(port, CITIZEN, &[]).await.is_err());
    assert!(foreign_client.get(port, CITIZEN, &[]).await.is_err());
    assert_eq!(
        pki.client(&pki.agency("hanoi"))
            .get(port, CITIZEN, &[])
            .await
            .unwrap()
            .status,
        200
    );
    let (_, text) = admin_get(admin, "/metrics");
    assert_eq!(
        metric(
            &text,
            "popgate_tls_handshake_failures_total{reason=\"expired\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "popgate_tls_handshake_failures_total{reason=\"unknown_ca\"}"
        ),
        Some(1.0)
    );
    assert!(metric(&text, "popgate_tls_handshakes_total").unwrap() >= 1.0);
    assert!(
        metric(
            &text,
            "popgate_upstream_duration_seconds_count{route=\"citizen.read\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(metric(&text, "popgate_audit_fsync_duration_seconds_count").unwrap() >= 1.0);
    assert_eq!(metric(&text, "popgate_inflight_requests"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_seals_the_log_and_exits_0() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start_delayed(Duration::from_millis(1500)).await;
    let audit = pki.dir.path().join("audit");
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki
        .config(&upstream.addr.to_string())
        .audit_dir(&audit)
        .write();
    let mut gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let in_flight: Vec<_> = (0..4)
        .map(|_| {
            let c = hanoi.clone();
            tokio::spawn(async move { c.get(port, CITIZEN, &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // While draining, new requests are refused (and audited), not queued.
    if let Ok(r) = hanoi.get(port, CITIZEN, &[]).await {
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (503, "shutting_down"),
            "{}",
            r.body
        );
    }
    for t in in_flight {
        let r = t.await.unwrap().expect("in-flight request completes");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "popgate did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    // The log at rest is whole and has no unsealed records.
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
    let records = e2e::gateway::audit_records(&audit);
    assert!(records.iter().filter(|r| r["status"] == 200).count() >= 4);
    let segments = std::fs::read_dir(&audit)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jsonl")
        })
        .count();
    let seals = std::fs::read_dir(&audit)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seal")
        })
        .count();
    assert_eq!(
        seals,
        segments - 1,
        "every segment with records is sealed; the last is the fresh empty one"
    );
}

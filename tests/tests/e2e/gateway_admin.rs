//! The admin listener: metrics move with traffic, readiness follows the
//! upstream.

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use e2e::{admin_get, metric};

const CITIZEN: &str = "/v1/citizens/001203012345";

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_happened_and_readiness_follows_the_upstream() {
    let pki = TestPki::new();
    let mut registry = Some(RegistryProcess::start());
    let upstream = registry.as_ref().unwrap().addr.clone();
    let e2e::gateway::TestConfig {
        path: config,
        port,
        admin: admin_port,
        ..
    } = pki.config(&upstream).admin().write();
    let admin = admin_port.expect("admin listener");
    let _gw = GatewayProcess::start(&config, port);
    assert_eq!(admin_get(admin, "/healthz").0, 200);
    let (status, body) = admin_get(admin, "/readyz");
    assert_eq!(status, 200, "{body}");

    let hanoi = pki.client(&pki.agency("hanoi"));
    let hanam = pki.client(&pki.agency("hanam"));
    for _ in 0..3 {
        assert_eq!(hanoi.get(port, CITIZEN, &[]).await.unwrap().status, 200);
    }
    assert_eq!(
        hanam
            .get(port, &format!("{CITIZEN}/residence"), &[])
            .await
            .unwrap()
            .status,
        403
    );
    assert_eq!(hanam.get(port, "/v1/%2f", &[]).await.unwrap().status, 400);
    // A failed handshake produces no HTTP request: nothing is counted as one.
    assert!(pki
        .anonymous_client()
        .get(port, CITIZEN, &[])
        .await
        .is_err());

    let (status, text) = admin_get(admin, "/metrics");
    assert_eq!(status, 200);
    let m = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("no sample {s} in:\n{text}"));
    assert_eq!(
        m(r#"popgate_requests_total{agency="hanoi",route="citizen.read",status="200"}"#),
        3.0
    );
    assert_eq!(
        m(r#"popgate_requests_total{agency="hanam",route="citizen.residence",status="403"}"#),
        1.0
    );
    assert_eq!(
        m(r#"popgate_refusals_total{code="route_not_allowed"}"#),
        1.0
    );
    assert_eq!(m(r#"popgate_refusals_total{code="bad_path"}"#), 1.0);
    // 3 allowed requests × (access record before forwarding + outcome after)
    // + 2 refusals; outcome records are queued as the response ends, so
    // the last one may land just after the client has its answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut text = text;
    while metric(&text, "popgate_audit_records_total") != Some(8.0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
        text = admin_get(admin, "/metrics").1;
    }
    let m = |s: &str| metric(&text, s).unwrap_or_else(|| panic!("no sample {s} in:\n{text}"));
    assert_eq!(m("popgate_audit_records_total"), 8.0);
    assert!(m("popgate_audit_fsyncs_total") >= 1.0);
    assert_eq!(m("popgate_audit_writable"), 1.0);
    assert_eq!(
        m(r#"popgate_request_duration_seconds_count{agency="hanoi",route="citizen.read"}"#),
        3.0
    );
    assert!(
        !text.contains("001203012345"),
        "no citizen ID may become a label"
    );

    // Upstream stops: not ready, saying why; it returns: ready again.
    registry.take();
    let (status, body) = admin_get(admin, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("upstream") && body.contains("unreachable"),
        "{body}"
    );
    let back = RegistryProcess::start_at(&upstream);
    let (status, body) = admin_get(admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    drop(back);
}

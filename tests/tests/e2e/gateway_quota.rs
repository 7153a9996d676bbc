//! Quotas and registry reload against real popgate processes.

use std::time::Duration;

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use e2e::upstream::SilentUpstream;

const CITIZEN: &str = "/v1/citizens/001203012345";

/// Rewrites the test registry with extra lines under agency `hanoi`.
fn with_hanoi(pki: &TestPki, extra: &str) {
    let path = pki.dir.path().join("agencies.yaml");
    let text = e2e::gateway::REGISTRY.replace(
        "    allow: [citizen.read, citizen.residence]\n",
        &format!("    allow: [citizen.read, citizen.residence]\n{extra}"),
    );
    assert_ne!(
        text,
        e2e::gateway::REGISTRY,
        "hanoi's grant line moved: the quota was not added"
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn daily_quota_is_enforced_with_headers_and_survives_a_restart() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    with_hanoi(&pki, "    quota: { daily: 2 }\n");
    let gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let hanam = pki.client(&pki.agency("hanam"));

    let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("ratelimit-policy"), Some("\"daily\";q=2;w=86400"));
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with("\"daily\";r=1;t="),
        "{:?}",
        r.header("ratelimit")
    );
    assert_eq!(hanoi.get(port, CITIZEN, &[]).await.unwrap().status, 200);
    let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "quota_exceeded"),
        "{}",
        r.body
    );
    assert!(r.body.contains("\"limit\":\"daily\""), "{}", r.body);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    // Another agency is unaffected.
    assert_eq!(hanam.get(port, CITIZEN, &[]).await.unwrap().status, 200);

    drop(gw);
    let _gw = GatewayProcess::start(&config, port);
    let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "quota_exceeded"),
        "a restart must not hand out a fresh day"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_refuses_exactly_the_excess_against_a_slow_upstream() {
    let pki = TestPki::new();
    let slow = SilentUpstream::start().await;
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki
        .config(&slow.addr.to_string())
        .read_timeout_ms(3000)
        .write();
    with_hanoi(&pki, "    quota: { max_concurrent: 3 }\n");
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    // Three requests occupy the slots (the upstream never answers)...
    let mut holders = Vec::new();
    for _ in 0..3 {
        let c = hanoi.clone();
        holders.push(tokio::spawn(async move {
            c.get(port, CITIZEN, &[]).await.unwrap().status
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    // ...so the next k = 4 are refused at once.
    let mut extra = Vec::new();
    for _ in 0..4 {
        let c = hanoi.clone();
        extra.push(tokio::spawn(async move {
            c.get(port, CITIZEN, &[]).await.unwrap()
        }));
    }
    let mut refused = 0;
    for t in extra {
        let r = t.await.unwrap();
        if r.status == 429 {
            assert!(r.body.contains("\"limit\":\"concurrency\""), "{}", r.body);
            refused += 1;
        }
    }
    assert_eq!(refused, 4);
    for h in holders {
        assert_eq!(
            h.await.unwrap(),
            504,
            "the slot holders end at the upstream timeout"
        );
    }
    // Slots are free again (this one also waits for the hung upstream).
    let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_new_registry_and_rejects_a_broken_one() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    let gw = GatewayProcess::start(&config, port);
    let hanam = pki.client(&pki.agency("hanam"));
    let residence = format!("{CITIZEN}/residence");
    assert_eq!(hanam.get(port, &residence, &[]).await.unwrap().status, 403);

    let reg = pki.dir.path().join("agencies.yaml");
    let granted = e2e::gateway::REGISTRY.replace(
        "  - id: hanam\n    name: UBND tỉnh Hà Nam\n    kind: province\n    identity: { uri_san: \"spiffe://dancu.gov.vn/agency/hanam\" }\n    allow: [citizen.read]",
        "  - id: hanam\n    name: UBND tỉnh Hà Nam\n    kind: province\n    identity: { uri_san: \"spiffe://dancu.gov.vn/agency/hanam\" }\n    allow: [citizen.read, citizen.residence]",
    );
    assert_ne!(granted, e2e::gateway::REGISTRY);
    std::fs::write(&reg, &granted).unwrap();
    gw.signal(libc::SIGHUP);
    let mut ok = false;
    for _ in 0..50 {
        if hanam.get(port, &residence, &[]).await.unwrap().status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the new grant was not applied after SIGHUP");

    // A broken registry is rejected; the current one keeps serving.
    std::fs::write(&reg, "routes: [oops\n").unwrap();
    gw.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hanam.get(port, &residence, &[]).await.unwrap().status, 200);
}

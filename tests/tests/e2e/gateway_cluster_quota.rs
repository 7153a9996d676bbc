//! Two popgate instances share one agency budget through a real Redis, and
//! follow their failure_mode when Redis dies.

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use e2e::redis::RedisServer;

const CITIZEN: &str = "/v1/citizens/001203012345";

#[tokio::test(flavor = "multi_thread")]
async fn instances_share_the_budget_and_follow_failure_mode() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let reg = pki.dir.path().join("agencies.yaml");
    std::fs::write(
        &reg,
        e2e::gateway::REGISTRY.replace(
            "    allow: [citizen.read, citizen.residence]\n",
            "    allow: [citizen.read, citizen.residence]\n    quota: { daily: 6 }\n",
        ),
    )
    .unwrap();
    let quota = |mode: &str, name: &str| {
        format!(
            "quota:\n  state_dir: state-{name}\n  backend: redis\n  failure_mode: {mode}\n  redis:\n    url: redis://127.0.0.1:{}/\n    key_prefix: \"t:\"\n",
            redis.port
        )
    };
    let e2e::gateway::TestConfig {
        path: ca, port: pa, ..
    } = pki
        .config(&registry.addr)
        .name("a.yaml")
        .audit_dir(&pki.dir.path().join("audit-a"))
        .extra(&quota("deny", "a"))
        .write();
    let e2e::gateway::TestConfig {
        path: cb, port: pb, ..
    } = pki
        .config(&registry.addr)
        .name("b.yaml")
        .audit_dir(&pki.dir.path().join("audit-b"))
        .extra(&quota("local", "b"))
        .write();
    let _a = GatewayProcess::start(&ca, pa);
    let _b = GatewayProcess::start(&cb, pb);
    let hanoi = pki.client(&pki.agency("hanoi"));

    // 10 requests alternating between the instances: exactly the budget of 6 pass.
    let mut admitted = 0;
    for i in 0..10 {
        let port = if i % 2 == 0 { pa } else { pb };
        let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
        match r.status {
            200 => admitted += 1,
            429 => assert_eq!(r.error_code(), "quota_exceeded", "{}", r.body),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!(admitted, 6, "the two instances must share one daily budget");

    // Redis dies.
    redis.kill();
    let r = hanoi.get(pa, CITIZEN, &[]).await.unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "quota_unavailable"),
        "deny mode: {}",
        r.body
    );
    let r = hanoi.get(pb, CITIZEN, &[]).await.unwrap();
    assert_eq!(
        r.status, 200,
        "local mode falls back to the instance's own daily count: {}",
        r.body
    );
}

//! Client certificates are judged in the TLS handshake: anything but a
//! valid, unrevoked clientAuth certificate from the agency CA gets no HTTP
//! response at all.

use certs::pki::LeafUsage;
use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use time::{Duration, OffsetDateTime};

const CITIZEN: &str = "/v1/citizens/001203012345";

/// The handshake (or the first read, in TLS 1.3 where the client learns of
/// the server's refusal late) must fail; an HTTP status would be a bypass.
async fn assert_refused(client: &e2e::client::Client, port: u16, what: &str) {
    match client.get(port, CITIZEN, &[]).await {
        Ok(r) => panic!(
            "{what}: got an HTTP {} response, expected a failed handshake",
            r.status
        ),
        Err(e) => eprintln!("{what}: refused as expected: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_valid_agency_certificates_complete_the_handshake() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let good = pki.agency("hanoi");
    let now = OffsetDateTime::now_utc();
    let expired = pki.custom(
        "expired",
        "hanoi",
        now - Duration::days(10),
        now - Duration::days(1),
        LeafUsage::ClientAuth,
    );
    let future = pki.custom(
        "future",
        "hanoi",
        now + Duration::days(1),
        now + Duration::days(10),
        LeafUsage::ClientAuth,
    );
    let server_only = pki.custom(
        "serveronly",
        "hanoi",
        now - Duration::hours(1),
        now + Duration::days(1),
        LeafUsage::ServerAuthOnly,
    );
    let revoked = pki.agency("hanam");
    pki.pki.revoke(&revoked.cert_path).expect("revoke");

    let other = TestPki::new();
    let foreign = other.agency("hanoi");

    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    let _gw = GatewayProcess::start(&config, port);

    // The control: the good certificate works, so failures below are real refusals.
    let ok = pki
        .client(&good)
        .get(port, CITIZEN, &[])
        .await
        .expect("good cert");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("\"synthetic\":true"), "{}", ok.body);

    assert_refused(&pki.anonymous_client(), port, "no client certificate").await;
    // The foreign agency cert is presented to a client that trusts our server CA.
    let foreign_client = e2e::client::Client::new(
        &pki.pki.ca_cert_path(),
        Some((&foreign.cert_path, &foreign.key_path)),
    );
    assert_refused(&foreign_client, port, "certificate from an unknown CA").await;
    assert_refused(&pki.client(&expired), port, "expired certificate").await;
    assert_refused(&pki.client(&future), port, "not-yet-valid certificate").await;
    assert_refused(&pki.client(&revoked), port, "revoked certificate").await;
    assert_refused(
        &pki.client(&server_only),
        port,
        "serverAuth-only certificate",
    )
    .await;
}

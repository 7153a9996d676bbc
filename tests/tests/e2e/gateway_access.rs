//! After the handshake: agency mapping, route ACL on normalised paths,
//! purpose, header hygiene toward the upstream, upstream failures, HTTP/2.

use std::time::{Duration, Instant};

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use e2e::upstream::{RecordingUpstream, SilentUpstream};

const CITIZEN: &str = "/v1/citizens/001203012345";

#[tokio::test(flavor = "multi_thread")]
async fn agencies_get_exactly_what_they_are_granted() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let hanam = pki.client(&pki.agency("hanam"));
    let vss = pki.client(&pki.agency("vss"));
    let suspended = pki.client(&pki.agency("saomai-telecom"));
    let stranger = pki.client(&pki.agency("nobody"));

    let r = hanoi.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Hà Nội"), "{}", r.body);
    assert!(r.header("x-request-id").is_some_and(|v| v.len() >= 32));

    let r = hanoi
        .get(port, &format!("{CITIZEN}/residence"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // Granted read but not residence.
    let r = hanam
        .get(port, &format!("{CITIZEN}/residence"), &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "route_not_allowed")
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["request_id"].as_str(), r.header("x-request-id"));
    assert!(v["message"].as_str().unwrap().contains("/residence"));

    // Method matters: POST to a GET route.
    let r = hanam.send(port, "POST", CITIZEN, &[], "{}").await.unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "route_not_allowed")
    );

    let r = suspended
        .send(port, "POST", &format!("{CITIZEN}/verify"), &[], "{}")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "agency_suspended")
    );

    let r = stranger.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (403, "unknown_agency"));

    // Purpose is required for vss.
    let r = vss.get(port, CITIZEN, &[]).await.unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "purpose_required")
    );
    let r = vss
        .get(port, CITIZEN, &[("X-Purpose", "giam dinh BHYT")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // The verify route answers match/no-match and nothing else.
    let r = vss
        .send(
            port,
            "POST",
            &format!("{CITIZEN}/verify"),
            &[
                ("X-Purpose", "xac minh"),
                ("Content-Type", "application/json"),
            ],
            r#"{"full_name":"Không Phải Tên","date_of_birth":"2003-01-01"}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"match\":false"), "{}", r.body);
    assert!(
        !r.body.contains("full_name"),
        "verify must not disclose: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn encoding_tricks_do_not_bypass_the_route_acl() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&upstream.addr.to_string()).write();
    let _gw = GatewayProcess::start(&config, port);
    let hanam = pki.client(&pki.agency("hanam")); // may read, not residence

    let refused_403 = [
        "/v1/citizens/001203012345/residence",
        "//v1//citizens//001203012345//residence//",
        "/v1/citizens/001203012345/./residence",
        "/v1/citizens/001203012345/%72esidence",
        "/v1/citizens/001203012345/RESIDENCE",
        "/V1/citizens/001203012345/residence",
        "/v1/citizens/%2e%2e/citizens/001203012345/residence",
        "/v1/citizens/001203012345/x/%2E%2E/residence",
        "/v1/citizens/x/../001203012345/residence",
    ];
    for target in refused_403 {
        let r = hanam.get(port, target, &[]).await.unwrap();
        assert_eq!(r.status, 403, "{target}: {}", r.body);
        assert_eq!(r.error_code(), "route_not_allowed", "{target}");
    }
    let refused_400 = [
        "/v1/citizens/001203012345%2fresidence",
        "/v1/citizens/001203012345%2Fresidence",
        "/v1/citizens/001203012345%5cresidence",
        "/v1/citizens/%00/residence",
        "/v1/citizens/%zz",
        "/../../etc/passwd",
    ];
    for target in refused_400 {
        let r = hanam.get(port, target, &[]).await.unwrap();
        assert_eq!(r.status, 400, "{target}: {}", r.body);
        assert_eq!(r.error_code(), "bad_path", "{target}");
    }
    assert!(
        upstream.requests().is_empty(),
        "nothing refused may reach the upstream: {:?}",
        upstream.requests()
    );

    // An allowed request in a non-canonical spelling is forwarded in canonical form.
    let r = hanam
        .get(port, "//v1/citizens/./001203012345/?fields=name,dob&", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/v1/citizens/001203012345?fields=name,dob");
}

#[tokio::test(flavor = "multi_thread")]
async fn spoofed_gateway_headers_never_reach_the_upstream() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&upstream.addr.to_string()).write();
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    let r = hanoi
        .get(
            port,
            CITIZEN,
            &[
                ("X-Agency-Id", "vss"),
                ("x-agency-id", "moj"),
                ("X-Request-Id", "forged-id"),
                ("X-Purpose", "dang ky tam tru"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("x-agency-id"), vec!["hanoi"]);
    let rid = seen[0].all("x-request-id");
    assert_eq!(rid.len(), 1);
    assert_ne!(rid[0], "forged-id");
    assert_eq!(Some(rid[0].as_str()), r.header("x-request-id"));
    assert_eq!(seen[0].all("x-purpose"), vec!["dang ky tam tru"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_or_hung_gives_json_errors_not_a_hang() {
    let pki = TestPki::new();
    let hanoi_cert = pki.agency("hanoi");

    // Nothing listens on this port.
    let closed = e2e::free_port();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki
        .config(&format!("127.0.0.1:{closed}"))
        .read_timeout_ms(1000)
        .write();
    let gw = GatewayProcess::start(&config, port);
    let start = Instant::now();
    let r = pki
        .client(&hanoi_cert)
        .get(port, CITIZEN, &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable"),
        "{}",
        r.body
    );
    eprintln!("closed upstream answered in {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    drop(gw);

    // Accepts, never answers: the read timeout (1 s) bounds the wait.
    let silent = SilentUpstream::start().await;
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki
        .config(&silent.addr.to_string())
        .read_timeout_ms(1000)
        .write();
    let _gw = GatewayProcess::start(&config, port);
    let start = Instant::now();
    let r = pki
        .client(&hanoi_cert)
        .get(port, CITIZEN, &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout"),
        "{}",
        r.body
    );
    eprintln!("hung upstream answered in {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_is_negotiated_and_served() {
    use http_body_util::{BodyExt, Empty};
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    let _gw = GatewayProcess::start(&config, port);
    let cert = pki.agency("hanoi");
    let client = e2e::client::Client::with_alpn(
        &pki.pki.ca_cert_path(),
        Some((&cert.cert_path, &cert.key_path)),
        vec![b"h2".to_vec()],
    );
    let tls = client.connect(port).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (path, status) in [
        (CITIZEN.to_owned(), 200),
        (format!("{CITIZEN}/verify"), 403),
    ] {
        let req = http::Request::get(format!("https://localhost:{port}{path}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty());
    }
}

//! The gateway under attack by an agency holding a valid certificate: each
//! test performs one attack from the hardening review against real
//! processes (raw TLS sockets, resets, tunnels, slow senders, forged log
//! files) and checks the guarantee that used to break.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::client::parse;
use e2e::gateway::{audit_records, write_config_full, GatewayProcess, TestPki};
use e2e::upstream::{RecordingUpstream, SwitchingUpstream};
use e2e::{admin_get, free_port, metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID: &str = "001203012345";

/// A gateway config forwarding to `upstream`, with an admin listener and
/// `extra` YAML; returns (config, port, admin port, audit dir).
fn gateway_config(pki: &TestPki, upstream: &str, extra: &str) -> (PathBuf, u16, u16, PathBuf) {
    let admin = free_port();
    let audit = pki.dir.path().join("audit");
    let (config, port) = write_config_full(
        pki,
        "gateway.yaml",
        upstream,
        5000,
        &audit,
        &format!("admin:\n  listen: 127.0.0.1:{admin}\n{extra}"),
    );
    (config, port, admin, audit)
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
async fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// The records (access and outcome) of one request id.
fn records_of(audit: &Path, request_id: &str) -> Vec<serde_json::Value> {
    audit_records(audit)
        .into_iter()
        .filter(|r| r["request_id"] == request_id)
        .collect()
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req.into_bytes()
}

fn metrics(admin: u16) -> String {
    admin_get(admin, "/metrics").1
}

/// Finding 1: an agency sends an allowed request and resets the connection
/// while the registry works on it. Every request that reached the registry
/// has a durable access record, and an outcome saying the agency left.
#[tokio::test(flavor = "multi_thread")]
async fn a_reset_after_forwarding_never_leaves_a_request_unaudited() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start_delayed(Duration::from_millis(400)).await;
    let (config, port, admin, audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    const N: usize = 25;
    for _ in 0..N {
        let mut s = hanoi.connect(port).await.unwrap();
        s.write_all(&request(
            "GET",
            &format!("/v1/citizens/{ID}"),
            &[("X-Purpose", "kiem tra")],
            "",
        ))
        .await
        .unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        // SO_LINGER 0: close sends RST, as an attacker's client would.
        socket2::SockRef::from(&s.get_ref().0)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    }
    assert!(
        eventually(10, || upstream.requests().len() == N).await,
        "only {} of {N} requests reached the registry",
        upstream.requests().len()
    );
    let forwarded: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.all("x-request-id")[0].clone())
        .collect();
    // Every forwarded request: its access record, then `client_closed`.
    assert!(
        eventually(10, || forwarded
            .iter()
            .all(|id| records_of(&audit, id).len() == 2))
        .await,
        "forwarded requests without both records: {:?}",
        forwarded
            .iter()
            .filter(|id| records_of(&audit, id).len() != 2)
            .collect::<Vec<_>>()
    );
    for id in &forwarded {
        let recs = records_of(&audit, id);
        assert_eq!(recs[0]["decision"], "allow", "{recs:?}");
        assert_eq!(recs[0]["purpose"], "kiem tra");
        assert_eq!(recs[1]["outcome"], "client_closed", "{recs:?}");
    }
    // Counted as the agency's doing, never as a registry failure.
    let text = metrics(admin);
    assert_eq!(
        metric(&text, "popgate_client_closed_total"),
        Some(N as f64),
        "{text}"
    );
    assert!(metric(
        &text,
        r#"popgate_refusals_total{code="upstream_unavailable"}"#
    )
    .is_none());
    assert_eq!(
        metric(
            &text,
            r#"popgate_requests_total{agency="hanoi",route="citizen.read",status="499"}"#
        ),
        Some(N as f64)
    );
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
}

/// Finding 2: `Upgrade`, `CONNECT` and a registry answering 101 never open
/// a tunnel; each refusal is audited.
#[tokio::test(flavor = "multi_thread")]
async fn no_request_or_response_opens_a_tunnel() {
    let pki = TestPki::new();
    let recording = RecordingUpstream::start().await;
    let (config, port, _admin, audit) = gateway_config(&pki, &recording.addr.to_string(), "");
    let gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    for (what, bytes) in [
        (
            "websocket upgrade",
            request(
                "GET",
                &format!("/v1/citizens/{ID}"),
                &[("Connection", "Upgrade"), ("Upgrade", "websocket")],
                "",
            ),
        ),
        (
            "h2c upgrade",
            request(
                "GET",
                &format!("/v1/citizens/{ID}"),
                &[
                    ("Connection", "Upgrade, HTTP2-Settings"),
                    ("Upgrade", "h2c"),
                    ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
                ],
                "",
            ),
        ),
        (
            "CONNECT",
            b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n".to_vec(),
        ),
    ] {
        // A second "request" rides along, as it would inside a tunnel.
        let mut bytes = bytes;
        bytes.extend_from_slice(&request("GET", "/v1/citizens/064185000001", &[], ""));
        let (out, closed) = hanoi
            .exchange(port, &bytes, Duration::from_secs(5))
            .await
            .unwrap();
        let r = parse(&out).unwrap();
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.error_code(), "tunnel_refused", "{what}");
        assert!(
            closed,
            "{what}: the connection must be closed after a tunnel attempt"
        );
    }
    assert!(
        recording.requests().is_empty(),
        "nothing may reach the registry: {:?}",
        recording.requests()
    );

    // HTTP/2 CONNECT is refused the same way (not by pingora, unrecorded).
    let h2 = e2e::client::Client::with_alpn(
        &pki.pki.ca_cert_path(),
        Some((
            &pki.dir.path().join("pki/agencies/hanoi.pem"),
            &pki.dir.path().join("pki/agencies/hanoi.key"),
        )),
        vec![b"h2".to_vec()],
    );
    let tls = h2.connect(port).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("CONNECT")
        .uri("127.0.0.1:22")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);

    drop(gw);
    let refused: Vec<serde_json::Value> = audit_records(&audit)
        .into_iter()
        .filter(|r| r["code"] == "tunnel_refused")
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "every tunnel attempt is audited: {refused:?}"
    );
    assert!(refused.iter().all(|r| r["agency"] == "hanoi"));

    // A registry that answers 101 anyway: the agency gets 502, never 101,
    // and nothing it sends afterwards reaches the registry.
    let switching = SwitchingUpstream::start().await;
    let (config, port, _admin, audit) = gateway_config(&pki, &switching.addr.to_string(), "");
    let _gw = GatewayProcess::start(&config, port);
    let mut s = hanoi.connect(port).await.unwrap();
    s.write_all(&request("GET", &format!("/v1/citizens/{ID}"), &[], ""))
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = parse(&buf[..n]).unwrap();
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&buf[..n]));
    assert_eq!(r.error_code(), "upstream_bad_response");
    let _ = s
        .write_all(&request("GET", "/v1/citizens/064185000001", &[], ""))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        switching.after_head.lock().unwrap().is_empty(),
        "bytes were tunnelled to the registry: {:?}",
        String::from_utf8_lossy(&switching.after_head.lock().unwrap())
    );
    let id = r.header("x-request-id").unwrap().to_owned();
    assert!(eventually(5, || records_of(&audit, &id).len() == 2).await);
    assert_eq!(
        records_of(&audit, &id)[1]["outcome"],
        "upstream_bad_response"
    );
}

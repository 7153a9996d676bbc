//! The gateway under attack by an agency holding a valid certificate: each
//! test performs one attack from the hardening review against real
//! processes (raw TLS sockets, resets, tunnels, slow senders, forged log
//! files) and checks the guarantee that used to break.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::client::parse;
use e2e::gateway::{audit_records, rewrite_and_rechain, GatewayProcess, TestPki};
use e2e::upstream::{RecordingUpstream, SwitchingUpstream};
use e2e::{admin_get, metric};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID: &str = "001203012345";

/// A gateway config forwarding to `upstream`, with an admin listener and
/// `extra` YAML; returns (config, port, admin port, audit dir).
fn gateway_config(pki: &TestPki, upstream: &str, extra: &str) -> (PathBuf, u16, u16, PathBuf) {
    let c = pki.config(upstream).admin().extra(extra).write();
    (c.path.clone(), c.port, c.admin_port(), c.audit)
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

/// Asserts that the peer closes `s` (EOF or error on read, waiting at most
/// `wait`), and that it did so less than `within` after `since`.
async fn assert_closed<S>(s: &mut S, since: Instant, wait: Duration, within: Duration, what: &str)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(wait, s.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "{what} still open: {r:?}"
    );
    assert!(
        since.elapsed() < within,
        "{what} closed only after {:?}",
        since.elapsed()
    );
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
    for i in 0..N {
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
        // Reset only once the registry holds the request (it answers after
        // 400 ms), however slow the machine: the attack is "after forwarding".
        assert!(
            eventually(10, || upstream.requests().len() == i + 1).await,
            "request {i} never reached the registry"
        );
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
    let (mut sender, _conn) = pki.h2(&pki.agency("hanoi"), port).await;
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
    assert!(
        !r.body.contains(&switching.addr.to_string()),
        "the refusal names the registry's address: {}",
        r.body
    );
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

/// Findings 3 and 4: the sealed segment's search index and the unsealed
/// tail cannot be edited without `audit verify` noticing.
#[tokio::test(flavor = "multi_thread")]
async fn edited_indexes_and_rewritten_tails_are_caught_by_verify() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, _admin, audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let hanoi = pki.client(&pki.agency("hanoi"));

    // Run 1: accesses to one citizen, then a clean stop (seals segment 1).
    let mut gw = GatewayProcess::start(&config, port);
    for _ in 0..5 {
        assert_eq!(
            hanoi
                .get(port, &format!("/v1/citizens/{ID}"), &[])
                .await
                .unwrap()
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal(libc::SIGTERM);
    assert!(gw.child.wait().unwrap().success());
    drop(gw);
    assert_eq!(pki.audit_search(&audit, ID, &[]).len(), 5);

    // Deleting one line of the index hides an access from search …
    let idx = audit.join("audit-000001.idx");
    let original_idx = std::fs::read_to_string(&idx).unwrap();
    let edited: String = original_idx
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&idx, edited).unwrap();
    assert_eq!(pki.audit_search(&audit, ID, &[]).len(), 4);
    // … and verify says so, naming the index.
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("audit-000001.idx:1: index does not match"),
        "{out}"
    );
    std::fs::write(&idx, original_idx).unwrap();
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "{out}");

    // Run 2: more accesses, checkpointed, then the process dies unsealed.
    let mut gw = GatewayProcess::start(&config, port);
    for _ in 0..5 {
        assert_eq!(
            hanoi
                .get(port, &format!("/v1/citizens/{ID}"), &[])
                .await
                .unwrap()
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.signal(libc::SIGKILL);
    let _ = gw.child.wait();
    drop(gw);
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
    assert!(!audit.join("audit-000002.seal").exists());

    // Rewriting a record of the open segment, chain recomputed: caught.
    let seg2 = audit.join("audit-000002.jsonl");
    let untouched = std::fs::read(&seg2).unwrap();
    let seal1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(audit.join("audit-000001.seal")).unwrap()).unwrap();
    rewrite_and_rechain(&seg2, 2, seal1["last_hash"].as_str().unwrap());
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit-000002.jsonl:"), "{out}");
    assert!(out.contains("rewritten after being checkpointed"), "{out}");

    // Truncating the open segment below its newest checkpoint: caught.
    let text = String::from_utf8(untouched).unwrap();
    let kept: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(&seg2, kept).unwrap();
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("are missing"), "{out}");
}

/// The HTTP/1.1 keep-alive loop runs in popgate's TLS front (an idle
/// connection holds no request state): requests on one connection are
/// served in turn, the next head is still bounded by the header deadline
/// once its first byte came, and a shutdown closes idle keep-alive
/// connections at once instead of leaving them to the drain timeout.
#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_requests_are_bounded_and_idle_ones_end_at_shutdown() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, _admin, audit) = gateway_config(
        &pki,
        &upstream.addr.to_string(),
        "limits:\n  header_timeout_ms: 1000\n  idle_timeout_s: 20\n",
    );
    let mut gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let get = request("GET", &format!("/v1/citizens/{ID}"), &[], "");

    // Three requests on one connection, each answered and audited.
    let mut s = hanoi.connect(port).await.unwrap();
    let mut buf = vec![0u8; 8192];
    for _ in 0..3 {
        s.write_all(&get).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(parse(&buf[..n]).unwrap().status, 200);
    }
    assert_eq!(upstream.requests().len(), 3);

    // The fourth head starts, then dribbles: cut off at the header
    // deadline (1 s), long before the idle time (20 s); nothing forwarded.
    s.write_all(&get[..1]).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in &get[1..] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let limit = Duration::from_secs(4);
    if cut {
        assert!(started.elapsed() < limit, "{:?}", started.elapsed());
    } else {
        assert_closed(
            &mut s,
            started,
            Duration::from_secs(1),
            limit,
            "dribbled head",
        )
        .await;
    }
    assert_eq!(upstream.requests().len(), 3);
    drop(s);

    // An idle keep-alive connection (idle time 20 s) ends with the shutdown.
    let mut idle = hanoi.connect(port).await.unwrap();
    idle.write_all(&get).await.unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert_eq!(parse(&buf[..n]).unwrap().status, 200);
    let stopping = Instant::now();
    gw.signal(libc::SIGTERM);
    let eight = Duration::from_secs(8);
    assert_closed(
        &mut idle,
        stopping,
        eight,
        eight,
        "idle connection at shutdown",
    )
    .await;
    assert!(gw.child.wait().unwrap().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
    drop(gw);
    assert_eq!(pki.audit_search(&audit, ID, &[]).len(), 4);
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
}

/// Finding 6: slow headers, idle keep-alive (HTTP/1.1 and HTTP/2) and one
/// agency hoarding connections are all bounded.
#[tokio::test(flavor = "multi_thread")]
async fn slow_idle_and_hoarded_connections_are_bounded() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, admin, audit) = gateway_config(
        &pki,
        &upstream.addr.to_string(),
        "limits:\n  header_timeout_ms: 1000\n  idle_timeout_s: 1\n  max_connections_per_agency: 2\n",
    );
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    // A request head sent one byte every 100 ms is cut off at the deadline.
    let mut s = hanoi.connect(port).await.unwrap();
    let head = request(
        "GET",
        &format!("/v1/citizens/{ID}"),
        &[("X-Filler", &"a".repeat(200))],
        "",
    );
    let started = Instant::now();
    let mut closed_after = None;
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let closed_after = match closed_after {
        Some(t) => t,
        None => {
            let mut buf = [0u8; 64];
            let r = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await;
            assert!(
                matches!(r, Ok(Ok(0)) | Ok(Err(_))),
                "slow head still accepted after {:?}",
                started.elapsed()
            );
            started.elapsed()
        }
    };
    assert!(
        closed_after < Duration::from_secs(4),
        "closed only after {closed_after:?}"
    );
    drop(s);
    assert!(upstream.requests().is_empty());

    // Idle HTTP/1.1 keep-alive: closed after about a second.
    let mut s = hanoi.connect(port).await.unwrap();
    s.write_all(&request("GET", &format!("/v1/citizens/{ID}"), &[], ""))
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(parse(&buf[..n]).unwrap().status, 200);
    let idle_from = Instant::now();
    let (six, four) = (Duration::from_secs(6), Duration::from_secs(4));
    assert_closed(&mut s, idle_from, six, four, "idle h1 connection").await;
    drop(s);

    // Idle HTTP/2: closed too.
    let (mut sender, conn) = pki.h2(&pki.agency("hanoi"), port).await;
    let req = http::Request::builder()
        .uri(format!("https://localhost/v1/citizens/{ID}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), conn).await;
    assert!(ended.is_ok(), "idle h2 connection still open after 6 s");
    assert!(
        idle_from.elapsed() < Duration::from_secs(4),
        "{:?}",
        idle_from.elapsed()
    );

    // Two open connections per agency; the third is refused, audited.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = hanoi.connect(port).await.unwrap();
        s.write_all(&request("GET", &format!("/v1/citizens/{ID}"), &[], ""))
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(parse(&buf[..n]).unwrap().status, 200);
        held.push(s);
    }
    let r = hanoi
        .get(port, &format!("/v1/citizens/{ID}"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.error_code(), "too_many_connections");
    let text = metrics(admin);
    assert_eq!(
        metric(
            &text,
            r#"popgate_connection_refusals_total{agency="hanoi",reason="too_many_connections"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"popgate_connections_open{agency="hanoi"}"#),
        Some(2.0),
        "{text}"
    );
    // Another agency is not affected; a closed connection frees its slot.
    let hanam = pki.client(&pki.agency("hanam"));
    assert_eq!(
        hanam
            .get(port, &format!("/v1/citizens/{ID}"), &[])
            .await
            .unwrap()
            .status,
        200
    );
    drop(held.pop());
    assert!(
        eventually(5, || metric(
            &metrics(admin),
            r#"popgate_connections_open{agency="hanoi"}"#
        ) == Some(1.0))
        .await
    );
    assert_eq!(
        hanoi
            .get(port, &format!("/v1/citizens/{ID}"), &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert!(
        eventually(5, || audit_records(&audit)
            .iter()
            .any(|r| r["code"] == "too_many_connections"))
        .await
    );
}

/// Findings 5 and 7: only allow-listed headers reach the registry, with
/// popgate's own forwarding headers; oversized heads, oversized or
/// malformed bodies and bodies on GET are refused before forwarding.
#[tokio::test(flavor = "multi_thread")]
async fn only_allow_listed_headers_and_bounded_bodies_are_forwarded() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, _admin, audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let vss = pki.client(&pki.agency("vss"));

    let smuggled = [
        ("Forwarded", "for=10.0.0.1;by=registry"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Real-IP", "10.0.0.1"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("Authorization", "Bearer stolen"),
        ("Cookie", "session=stolen"),
        ("X-Agency-Id", "vss"),
    ];
    let mut headers: Vec<(&str, &str)> = smuggled.to_vec();
    headers.push(("Accept", "application/json"));
    let r = hanoi
        .get(port, &format!("/v1/citizens/{ID}"), &headers)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("cache-control"),
        Some("no-store"),
        "citizen data must not be cached"
    );
    let seen = upstream.requests();
    let got = &seen[0];
    for (name, _) in smuggled
        .iter()
        .filter(|(n, _)| *n != "Forwarded" && *n != "X-Forwarded-For" && *n != "X-Agency-Id")
    {
        assert!(
            got.all(name).is_empty(),
            "{name} reached the registry: {:?}",
            got.headers
        );
    }
    assert_eq!(got.all("x-agency-id"), vec!["hanoi"]);
    assert_eq!(got.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(got.all("forwarded"), vec!["for=127.0.0.1;proto=https"]);
    assert_eq!(got.all("accept"), vec!["application/json"]);

    // ~40 KiB of headers: 431, audited, not forwarded.
    let big = "x".repeat(4000);
    let many: Vec<(String, String)> = (0..10)
        .map(|i| (format!("X-Pad-{i}"), big.clone()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = hanoi
        .get(port, &format!("/v1/citizens/{ID}"), &many)
        .await
        .unwrap();
    assert_eq!(r.status, 431, "{}", r.body);
    assert_eq!(r.error_code(), "headers_too_large");

    // Bodies: on GET refused; over the route limit refused, whether
    // declared or chunked; malformed chunking is the agency's fault (400).
    let (out, _) = hanoi
        .exchange(
            port,
            &request(
                "GET",
                &format!("/v1/citizens/{ID}"),
                &[("Content-Length", "5")],
                "GET /",
            ),
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let r = parse(&out).unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "body_not_allowed"),
        "{}",
        r.body
    );

    let verify = format!("/v1/citizens/{ID}/verify");
    let huge = "a".repeat(100 * 1024);
    let r = vss
        .send(port, "POST", &verify, &[("X-Purpose", "bhyt")], &huge)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "body_too_large"),
        "{}",
        r.body
    );

    let mut chunked = String::new();
    for _ in 0..30 {
        chunked.push_str(&format!("{:x}\r\n{}\r\n", 1024, "b".repeat(1024)));
    }
    chunked.push_str("0\r\n\r\n");
    let (out, _) = vss
        .exchange(
            port,
            &request(
                "POST",
                &verify,
                &[("X-Purpose", "bhyt"), ("Transfer-Encoding", "chunked")],
                &chunked,
            ),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let r = parse(&out).unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "body_too_large"),
        "{}",
        r.body
    );

    let (out, _) = vss
        .exchange(
            port,
            &request(
                "POST",
                &verify,
                &[("X-Purpose", "bhyt"), ("Transfer-Encoding", "chunked")],
                "zz\r\nnot a chunk\r\n",
            ),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let r = parse(&out).unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "bad_request_body"),
        "{}",
        r.body
    );
    assert_eq!(
        upstream.requests().len(),
        1,
        "nothing refused may be forwarded: {:?}",
        upstream.requests()
    );

    // A body within the limit arrives whole, chunked or not.
    let json = r#"{"full_name":"Nguyen Van A","date_of_birth":"1990-01-01"}"#;
    let r = vss
        .send(
            port,
            "POST",
            &verify,
            &[("X-Purpose", "bhyt"), ("Content-Type", "application/json")],
            json,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let chunked = format!(
        "{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        10,
        &json[..10],
        json.len() - 10,
        &json[10..]
    );
    let (out, _) = vss
        .exchange(
            port,
            &request(
                "POST",
                &verify,
                &[
                    ("X-Purpose", "bhyt"),
                    ("Transfer-Encoding", "chunked"),
                    ("Connection", "close"),
                ],
                &chunked,
            ),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(parse(&out).unwrap().status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    for s in &seen[1..] {
        assert_eq!(String::from_utf8_lossy(&s.body), json);
        assert_eq!(s.all("content-length"), vec![json.len().to_string()]);
    }
    let codes: Vec<String> = audit_records(&audit)
        .iter()
        .filter_map(|r| r["code"].as_str().map(str::to_owned))
        .collect();
    for code in [
        "headers_too_large",
        "body_not_allowed",
        "body_too_large",
        "bad_request_body",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} not audited: {codes:?}"
        );
    }
}

/// Finding 8: one citizen has one spelling; queries are declared.
#[tokio::test(flavor = "multi_thread")]
async fn parameters_and_queries_have_declared_shapes() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, _admin, audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    for target in [
        format!("/v1/citizens/{ID};jsessionid=x"),
        format!("/v1/citizens/%20{ID}"),
        format!("/v1/citizens/{ID}%252F"),
        format!("/v1/citizens/{ID}0"),
        "/v1/citizens/00120301234".to_owned(),
    ] {
        let r = hanoi.get(port, &target, &[]).await.unwrap();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "bad_parameter"),
            "{target}: {}",
            r.body
        );
    }
    for (query, code) in [
        ("?evil=1", "query_not_allowed"),
        ("?fields=name&fields=dob", "bad_parameter"),
        ("?fields=NAME", "bad_parameter"),
        ("?fields=%zz", "bad_parameter"),
    ] {
        let r = hanoi
            .get(port, &format!("/v1/citizens/{ID}{query}"), &[])
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, code),
            "{query}: {}",
            r.body
        );
    }
    assert!(upstream.requests().is_empty());
    let r = hanoi
        .get(port, &format!("/v1/citizens/{ID}?fields=name"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        upstream.requests()[0].target,
        format!("/v1/citizens/{ID}?fields=name")
    );
    // A citizen named in a query parameter is recorded only as its HMAC, and
    // found by search like one named in the path.
    let vss = pki.client(&pki.agency("vss"));
    let r = vss
        .get(
            port,
            &format!("/v1/lookup?citizen_id={ID}"),
            &[("X-Purpose", "bhyt")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    drop(gw);
    let rec = audit_records(&audit)
        .into_iter()
        .find(|r| r["decision"] == "allow")
        .unwrap();
    assert_eq!(rec["query"]["fields"], "name");
    let lookup = audit_records(&audit)
        .into_iter()
        .find(|r| r["route"] == "citizen.lookup" && r["decision"] == "allow")
        .unwrap();
    assert!(lookup["query"]["citizen_id"]
        .as_str()
        .unwrap()
        .starts_with("hmac:"));
    assert!(!lookup.to_string().contains(ID));
    // The citizen's history: the allowed access, the four refused queries
    // (the malformed spellings name no citizen at all), and the lookup by
    // query parameter.
    assert_eq!(pki.audit_search(&audit, ID, &[]).len(), 6);
}

/// Finding 9: what lands in the log is readable and holds no identifier in
/// clear; what leaves it for a spreadsheet cannot run.
#[tokio::test(flavor = "multi_thread")]
async fn audit_records_hold_no_identifier_in_clear_and_export_safely() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, _admin, audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));

    let r = hanoi
        .get(
            port,
            &format!("/v1/citizens/{ID}"),
            &[("X-Purpose", "doi chieu CCCD 064 185 000 001 cua me")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let r = hanoi
        .get(
            port,
            &format!("/v1/citizens/{ID}"),
            &[("X-Purpose", "kiem tra \u{202e}ecnarusni")],
        )
        .await
        .unwrap();
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_purpose"));
    let r = hanoi.get(port, "/v1/foo/00120301-5555", &[]).await.unwrap();
    assert_eq!(r.status, 403);
    let r = hanoi
        .get(
            port,
            &format!("/v1/citizens/{ID}"),
            &[("X-Purpose", "=HYPERLINK(\"http://x\",\"y\")")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(gw);

    let text: String = std::fs::read_dir(&audit)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    for clear in [
        ID,
        "064 185 000 001",
        "064185000001",
        "00120301-5555",
        "00120301",
    ] {
        assert!(!text.contains(clear), "{clear:?} in the log:\n{text}");
    }
    assert!(text.contains("doi chieu CCCD {redacted} cua me"), "{text}");
    assert!(text.contains("/v1/foo/{redacted}"), "{text}");
    assert!(!text.contains('\u{202e}'));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for e in std::fs::read_dir(&audit).unwrap() {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
    }

    let out = std::process::Command::new(e2e::bin("popgate"))
        .args([
            "audit",
            "search",
            "--format",
            "csv",
            "--citizen",
            ID,
            "--dir",
        ])
        .arg(&audit)
        .arg("--hmac-key")
        .arg(pki.dir.path().join("pki/audit-hmac.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let purposes: Vec<String> = rows.records().map(|r| r.unwrap()[3].to_owned()).collect();
    assert!(
        purposes
            .iter()
            .any(|p| p == "'=HYPERLINK(\"http://x\",\"y\")"),
        "{csv}"
    );
    assert!(purposes.iter().all(|p| !p.starts_with('=')), "{csv}");
}

/// Finding 10 (testssl.sh): the server's cipher order wins over the
/// client's, and handshakes that fail before a certificate is verified are
/// counted too.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_chooses_the_cipher_suite_and_counts_early_failures() {
    use rustls::crypto::ring::cipher_suite as cs;
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, admin, _audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let _gw = GatewayProcess::start(&config, port);
    let cert = pki.agency("hanoi");

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(pki.pki.ca_cert_path()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_file_iter(&cert.cert_path)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key: rustls::pki_types::PrivateKeyDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_file(&cert.key_path).unwrap();
    for (version, suites) in [
        (
            &rustls::version::TLS13,
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
            ],
        ),
        (
            &rustls::version::TLS12,
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
        ),
    ] {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..rustls::crypto::ring::default_provider()
        };
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let chosen = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert!(
            matches!(
                chosen,
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            ),
            "{version:?}: the client's first choice {chosen:?} won over the server's order"
        );
    }

    // No client certificate: refused in the handshake, and now counted.
    assert!(pki
        .anonymous_client()
        .get(port, &format!("/v1/citizens/{ID}"), &[])
        .await
        .is_err());
    assert!(
        eventually(5, || metric(
            &metrics(admin),
            r#"popgate_tls_handshake_failures_total{reason="no_cert"}"#
        ) == Some(1.0))
        .await,
        "{}",
        metrics(admin)
    );
}

/// Finding 10: after the CA bundle is reloaded, the CA names popgate sends
/// in CertificateRequest are the new bundle's (clients pick their
/// certificate by them).
#[tokio::test(flavor = "multi_thread")]
async fn certificate_request_names_follow_a_ca_bundle_reload() {
    #[derive(Debug)]
    struct RecordHints {
        seen: std::sync::Mutex<Vec<usize>>,
        key: std::sync::Arc<rustls::sign::CertifiedKey>,
    }
    impl rustls::client::ResolvesClientCert for RecordHints {
        fn resolve(
            &self,
            hints: &[&[u8]],
            _: &[rustls::SignatureScheme],
        ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
            self.seen.lock().unwrap().push(hints.len());
            Some(self.key.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, _admin, _audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let _gw = GatewayProcess::start(&config, port);
    let cert = pki.agency("hanoi");
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_file_iter(&cert.cert_path)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key: rustls::pki_types::PrivateKeyDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_file(&cert.key_path).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let resolver = std::sync::Arc::new(RecordHints {
        seen: Default::default(),
        key: std::sync::Arc::new(rustls::sign::CertifiedKey::new(chain, signer)),
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(pki.pki.ca_cert_path()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver.clone()),
    );
    let handshake = || async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
    };
    handshake().await;
    assert_eq!(*resolver.seen.lock().unwrap(), vec![1]);

    // A second agency CA joins the bundle; popgate notices the file change.
    let other = tempfile::tempdir().unwrap();
    let second = certs::pki::DevPki::create(&other.path().join("pki")).unwrap();
    let bundle = pki.pki.ca_cert_path();
    let mut text = std::fs::read_to_string(&bundle).unwrap();
    text.push_str(&std::fs::read_to_string(second.ca_cert_path()).unwrap());
    std::fs::write(&bundle, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        handshake().await;
        if resolver.seen.lock().unwrap().last() == Some(&2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CA names never followed the reload: {:?}",
            resolver.seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An agency that sends `Expect: 100-continue` is invited to send its body
/// once the request passed every other stage, and the body arrives whole.
#[tokio::test(flavor = "multi_thread")]
async fn expect_continue_is_answered_before_the_body_is_read() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, _admin, _audit) = gateway_config(&pki, &upstream.addr.to_string(), "");
    let _gw = GatewayProcess::start(&config, port);
    let vss = pki.client(&pki.agency("vss"));
    let json = r#"{"full_name":"Nguyen Van A","date_of_birth":"1990-01-01"}"#;
    let mut s = vss.connect(port).await.unwrap();
    s.write_all(&request(
        "POST",
        &format!("/v1/citizens/{ID}/verify"),
        &[
            ("X-Purpose", "bhyt"),
            ("Expect", "100-continue"),
            ("Content-Length", &json.len().to_string()),
        ],
        "",
    ))
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("no 100 Continue within 5 s")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(json.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(String::from_utf8_lossy(&upstream.requests()[0].body), json);
}

/// From the review of the hardening: an HTTP/2 connection that never sends
/// its preface, and one opened over the agency's cap, are closed within the
/// header deadline; `Connection` cannot nominate headers away; the 101
/// refusal does not reveal where the registry is.
#[tokio::test(flavor = "multi_thread")]
async fn silent_and_over_cap_http2_connections_are_closed() {
    let pki = TestPki::new();
    let upstream = RecordingUpstream::start().await;
    let (config, port, admin, _audit) = gateway_config(
        &pki,
        &upstream.addr.to_string(),
        "limits:\n  header_timeout_ms: 1000\n  max_connections_per_agency: 1\n",
    );
    let _gw = GatewayProcess::start(&config, port);
    let hanoi_cert = pki.agency("hanoi");
    let h2 = e2e::client::Client::with_alpn(
        &pki.pki.ca_cert_path(),
        Some((&hanoi_cert.cert_path, &hanoi_cert.key_path)),
        vec![b"h2".to_vec()],
    );
    // Negotiates h2, then sends nothing at all.
    let mut silent = h2.connect(port).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(6), silent.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue, // the server's SETTINGS, if any
            Err(_) => break false,
        }
    };
    assert!(closed, "a silent h2 connection was kept");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    assert!(
        eventually(5, || metric(
            &metrics(admin),
            r#"popgate_connections_open{agency="hanoi"}"#
        )
        .unwrap_or(0.0)
            == 0.0)
        .await
    );

    // One connection allowed: a second h2 connection gets 429 and is closed.
    let (mut first, _c1) = pki.h2(&hanoi_cert, port).await;
    let req = || {
        http::Request::builder()
            .uri(format!("https://localhost/v1/citizens/{ID}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(first.send_request(req()).await.unwrap().status(), 200);
    let (mut second, conn2) = pki.h2(&hanoi_cert, port).await;
    let r = second.send_request(req()).await.unwrap();
    assert_eq!(r.status(), 429);
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(6), conn2).await;
    assert!(ended.is_ok(), "an over-cap h2 connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(first.send_request(req()).await.unwrap().status(), 200);

    // `Connection` naming a header is refused before anything is forwarded.
    let before = upstream.requests().len();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hanoi = pki.client(&hanoi_cert);
    let r = hanoi
        .get(
            port,
            &format!("/v1/citizens/{ID}"),
            &[("Connection", "close, X-Forwarded-For")],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "bad_header"),
        "{}",
        r.body
    );
    assert_eq!(upstream.requests().len(), before);
}

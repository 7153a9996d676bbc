//! CRLs fetched from where the CA publishes them: no file copying. A
//! revocation at the CA reaches new and open connections within the refresh
//! interval; a distribution point serving garbage keeps the last good CRL;
//! the cached CRL serves a restart while the distribution point is down;
//! and with no CRL at all, nobody is admitted (fail closed).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use e2e::{admin_get, bin, free_port, metric};

const CITIZEN: &str = "/v1/citizens/001203012345";

/// `popgate pki serve-crl`, killed on drop.
struct CrlServer(Child);

impl CrlServer {
    fn start(pki: &TestPki, port: u16) -> Self {
        let child = Command::new(bin("popgate"))
            .args(["pki", "serve-crl", "--dir"])
            .arg(pki.dir.path().join("pki"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        e2e::wait_listening(port, "pki serve-crl");
        CrlServer(child)
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Answers every request on `port` with 200 and a body that is no CRL.
fn garbage_server(port: u16) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let body = "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n";
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    })
}

type Sender = hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>;

async fn get(send: &mut Sender, port: u16) -> u16 {
    let req = http::Request::get(format!("https://localhost:{port}{CITIZEN}"))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

async fn admitted(pki: &TestPki, cert: &certs::pki::IssuedCert, port: u16) -> bool {
    matches!(pki.client(cert).get(port, CITIZEN, &[]).await, Ok(r) if r.status == 200)
}

/// Polls `cond` for up to `secs`.
async fn within<F, Fut>(secs: u64, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn fetches(admin: u16, url: &str, result: &str) -> f64 {
    let (_, m) = admin_get(admin, "/metrics");
    metric(
        &m,
        &format!("popgate_revocation_crl_fetches_total{{result=\"{result}\",url=\"{url}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn fetched_crls_end_access_of_a_revoked_certificate_without_copying_files() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let crl_port = free_port();
    let url = format!("http://127.0.0.1:{crl_port}/crl.der");
    let cfg = pki
        .config(&registry.addr)
        .without_crl_file()
        .admin()
        .extra(&format!(
            "revocation:\n  crl:\n    urls: [\"{url}\"]\n    distribution_points: false\n    refresh_s: 5\n    timeout_ms: 2000\n"
        ))
        .write();
    let hanoi = pki.agency("hanoi");
    let hanam = pki.agency("hanam");

    // No CRL anywhere yet: nobody is admitted (rustls alone would check nothing).
    let mut gw = GatewayProcess::run(&cfg);
    assert!(
        !admitted(&pki, &hanoi, cfg.port).await,
        "admitted without any CRL"
    );
    let (ready, body) = admin_get(cfg.admin_port(), "/readyz");
    assert_eq!(ready, 503, "{body}");
    assert!(body.contains("no CRL fetched or cached yet"), "{body}");
    within(
        10,
        "the unreachable distribution point is counted",
        || async { fetches(cfg.admin_port(), &url, "unreachable") >= 1.0 },
    )
    .await;

    // The CA publishes: the CRL is fetched and agencies are admitted.
    let server = CrlServer::start(&pki, crl_port);
    within(20, "admitted once the CRL is fetched", || {
        admitted(&pki, &hanoi, cfg.port)
    })
    .await;
    assert!(fetches(cfg.admin_port(), &url, "ok") >= 1.0);
    assert_eq!(admin_get(cfg.admin_port(), "/readyz").0, 200);

    // A revocation at the CA: the open connection and new ones lose access.
    let (mut open, _conn) = pki.h2(&hanoi, cfg.port).await;
    let (mut other, _conn2) = pki.h2(&hanam, cfg.port).await;
    assert_eq!(get(&mut open, cfg.port).await, 200);
    pki.pki.revoke(&hanoi.cert_path).unwrap();
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&mut open, cfg.port).await != 403 {
        assert!(
            Instant::now() < deadline,
            "the open connection of the revoked certificate kept access"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    assert!(
        !admitted(&pki, &hanoi, cfg.port).await,
        "new connection admitted"
    );
    assert_eq!(
        get(&mut other, cfg.port).await,
        200,
        "other agencies are untouched"
    );
    eprintln!("revocation took effect after {took:?} (refresh_s 5)");

    // The distribution point serves garbage: rejected, counted, the last
    // good CRL keeps judging.
    drop(server);
    let _garbage = garbage_server(crl_port);
    within(20, "the garbage CRL is rejected and counted", || async {
        fetches(cfg.admin_port(), &url, "rejected") >= 1.0
    })
    .await;
    assert!(admitted(&pki, &hanam, cfg.port).await);
    assert!(!admitted(&pki, &hanoi, cfg.port).await);
    let (_, m) = admin_get(cfg.admin_port(), "/metrics");
    assert_eq!(
        metric(
            &m,
            &format!("popgate_revocation_crl_revoked_certificates{{url=\"{url}\"}}")
        ),
        Some(1.0),
        "{m}"
    );

    // A restart while the distribution point is useless: the cached CRL
    // judges from the first handshake.
    drop(gw);
    gw = GatewayProcess::run(&cfg);
    assert!(
        admitted(&pki, &hanam, cfg.port).await,
        "the cached CRL must serve a restart"
    );
    assert!(
        !admitted(&pki, &hanoi, cfg.port).await,
        "the cached CRL still revokes"
    );
    drop(gw);
}

//! OCSP for client certificates against a real responder (`openssl ocsp`):
//! a revocation at the CA ends access on new and open connections within
//! the cache time; with the responder down, `closed` refuses and `grace`
//! admits (counted); a response signed by the wrong key is rejected.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};
use e2e::{admin_get, free_port, metric};

const CITIZEN: &str = "/v1/citizens/001203012345";

/// `openssl ocsp` answering from an index file, killed on drop.
struct Responder(Child);

impl Responder {
    fn start(index: &Path, signer: &Path, key: &Path, ca: &Path, port: u16) -> Option<Self> {
        let child = match Command::new("openssl")
            .args(["ocsp", "-index"])
            .arg(index)
            .args(["-port", &port.to_string(), "-rsigner"])
            .arg(signer)
            .arg("-rkey")
            .arg(key)
            .arg("-CA")
            .arg(ca)
            .arg("-ignore_err")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                e2e::tool_missing(&format!("SKIPPED: openssl not runnable ({e})"));
                return None;
            }
        };
        // Probe with a whole (bad) request: openssl ocsp hangs on a
        // connection closed before it sent one.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
                let _ = s.read_to_end(&mut Vec::new());
                break;
            }
            assert!(Instant::now() < deadline, "openssl ocsp did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Responder(child))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fixed address for the responder, relaying to whichever responder
/// runs now (`openssl ocsp` cannot rebind its port at once after a
/// restart); target 0 closes every connection (the responder is down).
struct Relay {
    port: u16,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Relay {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
        let t = target.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = t.load(std::sync::atomic::Ordering::Acquire);
                tokio::spawn(async move {
                    if to == 0 {
                        return;
                    }
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Relay { port, target }
    }

    fn to(&self, port: u16) {
        self.target
            .store(port, std::sync::atomic::Ordering::Release);
    }
}

fn serial(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// An openssl CA index: each certificate valid, or revoked.
fn write_index(path: &Path, certs: &[(&Path, bool)]) {
    let fmt = time::macros::format_description!(
        "[year repr:last_two][month][day][hour][minute][second]Z"
    );
    let now = time::OffsetDateTime::now_utc();
    let exp = (now + time::Duration::days(30)).format(&fmt).unwrap();
    let rev = (now - time::Duration::seconds(5)).format(&fmt).unwrap();
    let mut text = String::new();
    for (cert, revoked) in certs {
        let s = serial(cert);
        if *revoked {
            text.push_str(&format!("R\t{exp}\t{rev}\t{s}\tunknown\t/CN={s}\n"));
        } else {
            text.push_str(&format!("V\t{exp}\t\t{s}\tunknown\t/CN={s}\n"));
        }
    }
    std::fs::write(path, text).unwrap();
}

fn queries(admin: u16, result: &str) -> f64 {
    let (_, m) = admin_get(admin, "/metrics");
    metric(
        &m,
        &format!("popgate_revocation_ocsp_queries_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

async fn status_and_code(client: &e2e::client::Client, port: u16) -> (u16, String) {
    match client.get(port, CITIZEN, &[]).await {
        Ok(r) => {
            let code = if r.status == 200 {
                String::new()
            } else {
                r.error_code()
            };
            (r.status, code)
        }
        Err(e) => (0, e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ocsp_revocation_outage_and_forgery_against_a_real_responder() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let dir = pki.dir.path().to_owned();
    let ca = pki.pki.ca_cert_path();
    let ca_key: PathBuf = dir.join("pki/ca.key");
    let hanoi = pki.agency("hanoi");
    let hanam = pki.agency("hanam");
    let index = dir.join("index.txt");
    write_index(
        &index,
        &[(&hanoi.cert_path, false), (&hanam.cert_path, false)],
    );
    let relay = Relay::start().await;
    let port = relay.port;
    let start = |signer: &Path, key: &Path| {
        let p = free_port();
        let r = Responder::start(&index, signer, key, &ca, p);
        relay.to(p);
        r
    };
    let Some(responder) = start(&ca, &ca_key) else {
        return;
    };
    let ocsp = |policy: &str| {
        format!(
            "revocation:\n  ocsp:\n    responder: http://127.0.0.1:{port}\n    timeout_ms: 1000\n    max_age_s: 10\n{policy}"
        )
    };
    let cfg = pki.config(&registry.addr).admin().extra(&ocsp("")).write();
    let gw = GatewayProcess::run(&cfg);
    let hanoi_c = pki.client(&hanoi);
    let hanam_c = pki.client(&hanam);
    assert_eq!(status_and_code(&hanoi_c, cfg.port).await.0, 200);
    assert_eq!(status_and_code(&hanam_c, cfg.port).await.0, 200);
    assert!(queries(cfg.admin_port(), "good") >= 2.0);

    // An open connection, then a revocation at the CA.
    let (mut open, _conn) = pki.h2(&hanoi, cfg.port).await;
    let get = |send: &mut hyper::client::conn::http2::SendRequest<
        http_body_util::Empty<bytes::Bytes>,
    >| {
        let req = http::Request::get(format!("https://localhost:{}{CITIZEN}", cfg.port))
            .body(http_body_util::Empty::new())
            .unwrap();
        send.send_request(req)
    };
    assert_eq!(get(&mut open).await.unwrap().status(), 200);
    drop(responder);
    write_index(
        &index,
        &[(&hanoi.cert_path, true), (&hanam.cert_path, false)],
    );
    let responder = start(&ca, &ca_key).unwrap();
    // Within the cache time (10 s), the open connection and new ones are refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(&mut open).await;
        if matches!(&r, Ok(resp) if resp.status() == 403) || r.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the open connection kept access");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        status_and_code(&hanoi_c, cfg.port).await,
        (403, "cert_revoked".to_owned())
    );
    assert_eq!(status_and_code(&hanam_c, cfg.port).await.0, 200);
    assert!(queries(cfg.admin_port(), "revoked") >= 1.0);
    let records = e2e::gateway::audit_records(&cfg.audit);
    assert!(
        records
            .iter()
            .any(|r| r["code"] == "cert_revoked" && r["agency"] == "hanoi"),
        "the refusal is audited"
    );

    // The responder goes down; `closed`: once the cached answer is past
    // its age, no status means no access.
    drop(responder);
    relay.to(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, code) = status_and_code(&hanam_c, cfg.port).await;
        if s == 503 {
            assert_eq!(code, "revocation_unavailable");
            break;
        }
        assert_eq!(s, 200, "{code}");
        assert!(Instant::now() < deadline, "still admitted without a status");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(queries(cfg.admin_port(), "unreachable") >= 1.0);
    drop(gw);

    // `grace`: the same outage admits for the grace after the last good answer.
    let cfg = pki
        .config(&registry.addr)
        .name("grace.yaml")
        .audit_dir(&dir.join("audit-grace"))
        .admin()
        .extra(&ocsp("  on_unavailable: grace\n  grace_s: 600\n"))
        .write();
    let responder = start(&ca, &ca_key).unwrap();
    let gw = GatewayProcess::run(&cfg);
    assert_eq!(status_and_code(&hanam_c, cfg.port).await.0, 200);
    drop(responder);
    relay.to(0);
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        status_and_code(&hanam_c, cfg.port).await.0,
        200,
        "grace admits"
    );
    let (_, m) = admin_get(cfg.admin_port(), "/metrics");
    assert!(
        metric(&m, "popgate_revocation_grace_admissions_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    // A revoked certificate is not admitted on grace (its last answer was not good).
    assert_ne!(status_and_code(&hanoi_c, cfg.port).await.0, 200);
    drop(gw);

    // A responder signing with another CA's key: the answer is rejected.
    let other = TestPki::new();
    let forged = start(
        &other.pki.ca_cert_path(),
        &other.dir.path().join("pki/ca.key"),
    )
    .unwrap();
    let cfg = pki
        .config(&registry.addr)
        .name("forged.yaml")
        .audit_dir(&dir.join("audit-forged"))
        .admin()
        .extra(&ocsp(""))
        .write();
    let _gw = GatewayProcess::run(&cfg);
    assert_eq!(
        status_and_code(&hanam_c, cfg.port).await,
        (503, "revocation_unavailable".to_owned())
    );
    assert!(queries(cfg.admin_port(), "rejected") >= 1.0);
    drop(forged);
}

/// `popgate pki serve-revocation` answers OCSP for the dev CA in a form
/// `openssl ocsp` (an independent client) verifies: good, then revoked
/// after `pki revoke`, with no file copied anywhere; and it serves the CRL.
#[tokio::test(flavor = "multi_thread")]
async fn the_dev_ca_answers_ocsp_that_openssl_verifies() {
    let pki = TestPki::new();
    let hanoi = pki.agency("hanoi");
    let port = free_port();
    let mut server = Command::new(e2e::bin("popgate"))
        .args(["pki", "serve-revocation", "--dir"])
        .arg(pki.dir.path().join("pki"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ocsp-validity-s",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    e2e::wait_listening(port, "pki serve-revocation");
    let ask = || {
        let mut cmd = Command::new("openssl");
        cmd.args(["ocsp", "-no_nonce", "-issuer"])
            .arg(pki.pki.ca_cert_path())
            .arg("-cert")
            .arg(&hanoi.cert_path)
            .args(["-url", &format!("http://127.0.0.1:{port}/ocsp")])
            .arg("-CAfile")
            .arg(pki.pki.ca_cert_path());
        let out = cmd.output().expect("openssl ocsp");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = ask();
    assert!(
        out.contains("Response verify OK") && out.contains(": good"),
        "{out}"
    );
    pki.pki.revoke(&hanoi.cert_path).unwrap();
    let out = ask();
    assert!(
        out.contains("Response verify OK") && out.contains(": revoked"),
        "{out}"
    );
    // The CRL, from the same place, lists it too.
    let crl = http_get(port, "/crl.der").await;
    assert_eq!(crl.0, 200);
    let _ = server.kill();
    let _ = server.wait();
}

/// A plain HTTP GET on 127.0.0.1: (status, body length).
async fn http_get(port: u16, path: &str) -> (u16, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, buf.len())
}

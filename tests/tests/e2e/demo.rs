//! `popgate demo` as a newcomer runs it: the gateway answers, the shipped
//! registry's quota example refuses a burst with 429, and a `pki revoke`
//! ends access with no file copied (the demo fetches CRL and OCSP from the
//! dev CA's publisher).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::client::Client;
use e2e::{bin, free_port, wait_listening};

const CITIZEN: &str = "/v1/citizens/001203012345";

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_serves_shows_a_quota_and_a_revocation_without_copying_files() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let (port, registry, admin, system, revocation) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let mut demo = Command::new(bin("popgate"))
        .arg("demo")
        .arg("--dir")
        .arg(&demo_dir)
        .args(["--port", &port.to_string()])
        .args(["--registry-port", &registry.to_string()])
        .args(["--admin-port", &admin.to_string()])
        .args(["--system-port", &system.to_string()])
        .args(["--revocation-port", &revocation.to_string()])
        .env("POPGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, "popgate demo");
    let pki = demo_dir.join("pki");
    let client = |agency: &str| {
        Client::new(
            &pki.join("ca.pem"),
            Some((
                &pki.join(format!("agencies/{agency}.pem")),
                &pki.join(format!("agencies/{agency}.key")),
            )),
        )
    };
    let purpose = [("X-Purpose", "kiem tra")];
    // The first request may race the first CRL fetch: allow a moment.
    let hanoi = client("hanoi");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = hanoi.get(port, CITIZEN, &purpose).await {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the demo does not admit Hà Nội");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The shipped registry's quota example: Hà Nam's burst of 5, then 429.
    let hanam = client("hanam");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(hanam.get(port, CITIZEN, &purpose).await.unwrap().status);
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");

    // Revocation at the CA, nothing copied: within the demo's 30 s.
    let st = Command::new(bin("popgate"))
        .args(["pki", "revoke", "--dir"])
        .arg(&pki)
        .arg("--cert")
        .arg(pki.join("agencies/hanoi.pem"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match hanoi.get(port, CITIZEN, &purpose).await {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                assert_eq!(r.error_code(), "cert_revoked", "{}", r.body);
                break;
            }
            Err(_) => break, // the fetched CRL refused the handshake
        }
        assert!(
            Instant::now() < deadline,
            "the revocation did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = demo.kill();
    let _ = demo.wait();
}

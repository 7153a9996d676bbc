//! Revoking an agency certificate and sending SIGHUP ends that agency's
//! access — on new connections and on the one it already has open — without
//! a restart, and without disturbing other agencies.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};

use e2e::gateway::{GatewayProcess, RegistryProcess, TestPki};

const CITIZEN: &str = "/v1/citizens/001203012345";

type Sender = hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>;

async fn h2(pki: &TestPki, cert: &certs::pki::IssuedCert, port: u16) -> Sender {
    pki.h2(cert, port).await.0
}

async fn get(send: &mut Sender, port: u16) -> (u16, String) {
    let req = http::Request::get(format!("https://localhost:{port}{CITIZEN}"))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_plus_sighup_ends_access_without_a_restart() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    let gw = GatewayProcess::start(&config, port);
    let hanoi = pki.agency("hanoi");
    let hanam = pki.agency("hanam");

    let mut open = h2(&pki, &hanoi, port).await;
    assert_eq!(get(&mut open, port).await.0, 200);
    let mut other = h2(&pki, &hanam, port).await;
    assert_eq!(get(&mut other, port).await.0, 200);

    pki.pki.revoke(&hanoi.cert_path).unwrap();
    gw.signal(libc::SIGHUP);
    // The reload is asynchronous; give it a moment, bounded.
    let mut status = 0;
    for _ in 0..50 {
        let (s, body) = get(&mut open, port).await;
        status = s;
        if s == 403 {
            assert!(body.contains("no_identity"), "{body}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 403,
        "the already-open connection of a revoked certificate must lose access"
    );
    assert!(
        pki.client(&hanoi).get(port, CITIZEN, &[]).await.is_err(),
        "a new connection with the revoked certificate must fail the handshake"
    );
    // Other agencies, on their existing connection and on new ones, are untouched.
    assert_eq!(get(&mut other, port).await.0, 200);
    assert_eq!(
        pki.client(&hanam)
            .get(port, CITIZEN, &[])
            .await
            .unwrap()
            .status,
        200
    );

    // A broken CRL on reload is rejected; service continues with the current one.
    std::fs::write(pki.dir.path().join("pki/crl.pem"), "garbage").unwrap();
    gw.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        pki.client(&hanam)
            .get(port, CITIZEN, &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert!(pki.client(&hanoi).get(port, CITIZEN, &[]).await.is_err());
}

/// The dev PKI's certificates name a CRL distribution point, and
/// `popgate pki serve-crl` publishes the CRL there, current after a revoke.
#[test]
fn the_crl_is_published_where_certificates_say() {
    use std::io::{Read, Write};
    let pki = e2e::gateway::TestPki::new();
    let issued = pki.agency("hanoi");
    let url = certs::pki::DEV_CRL_URL;
    assert!(issued.der.windows(url.len()).any(|w| w == url.as_bytes()));
    let port = e2e::free_port();
    let mut child = std::process::Command::new(e2e::bin("popgate"))
        .args(["pki", "serve-crl", "--dir"])
        .arg(pki.dir.path().join("pki"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let fetch = |path: &str| -> Vec<u8> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("serve-crl not listening: {e}"),
            }
        };
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let end = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            out.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        out[end..].to_vec()
    };
    let crl_der = |pem_text: &str| -> Vec<u8> {
        let b64: String = pem_text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    };
    let before = fetch("/crl.der");
    assert_eq!(
        before,
        crl_der(&std::fs::read_to_string(pki.pki.crl_path()).unwrap())
    );
    pki.pki.revoke(&issued.cert_path).unwrap();
    let after = fetch("/crl.der");
    assert_ne!(
        before, after,
        "the published CRL did not follow the revocation"
    );
    assert_eq!(
        after,
        crl_der(&std::fs::read_to_string(pki.pki.crl_path()).unwrap())
    );
    let serial = hex::decode(&issued.serial_hex).unwrap();
    assert!(after.windows(serial.len()).any(|w| w == serial.as_slice()));
    let _ = child.kill();
    let _ = child.wait();
}

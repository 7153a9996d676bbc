//! Agency systems for popscan to audit: real TLS servers on 127.0.0.1 —
//! `openssl s_server` with chosen (mis)configurations, a small rustls HTTPS
//! server that sends chosen headers, and hostile servers that send garbage,
//! impossible lengths or nothing at all.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// Fails (under POPGATE_REQUIRE_TOOLS=1) or skips loudly when a tool is missing.
pub fn tool_available(tool: &str, package: &str) -> bool {
    let ok = Command::new(tool)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        let msg = format!("SKIPPED: {tool} not runnable; install the {package} package");
        assert!(
            std::env::var("POPGATE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("\n*** {msg} ***\n");
    }
    ok
}

/// Key type of a test leaf certificate.
#[derive(Debug, Clone, Copy)]
pub enum LeafKey {
    EcP256,
    Rsa(u32),
}

/// A test CA (ECDSA P-256) that mints server certificates with chosen faults.
pub struct TargetPki {
    pub dir: tempfile::TempDir,
    ca_key: KeyPair,
    ca_cert_pem: String,
}

impl Default for TargetPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TargetPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, "Agency Systems Test CA");
        p.distinguished_name
            .push(DnType::OrganizationName, "popscan tests");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        p.not_after = OffsetDateTime::now_utc() + time::Duration::days(3650);
        let cert = p.self_signed(&ca_key).expect("ca cert");
        let ca_cert_pem = cert.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_cert_pem).expect("write ca");
        std::fs::write(dir.path().join("ca.key"), ca_key.serialize_pem()).expect("write ca key");
        TargetPki {
            dir,
            ca_key,
            ca_cert_pem,
        }
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A serverAuth leaf signed by the test CA. Returns (cert, key) paths.
    pub fn leaf(
        &self,
        name: &str,
        dns: &[&str],
        key: LeafKey,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (PathBuf, PathBuf) {
        let key_path = self.dir.path().join(format!("{name}.key"));
        let kp = match key {
            LeafKey::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key"),
            LeafKey::Rsa(bits) => {
                let out = Command::new("openssl")
                    .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
                    .arg(format!("rsa_keygen_bits:{bits}"))
                    .output()
                    .expect("openssl genpkey");
                assert!(out.status.success(), "openssl genpkey failed");
                let pem = String::from_utf8(out.stdout).expect("pem");
                KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("rsa key")
            }
        };
        std::fs::write(&key_path, kp.serialize_pem()).expect("write key");
        let mut p = CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name
            .push(DnType::CommonName, dns.first().copied().unwrap_or(name));
        p.distinguished_name
            .push(DnType::OrganizationName, "Test Province");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.not_before = not_before;
        p.not_after = not_after;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key).expect("issuer");
        let cert = p.signed_by(&kp, &issuer).expect("sign leaf");
        let cert_path = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        (cert_path, key_path)
    }

    /// A valid leaf for `localhost` (90 days).
    pub fn good_leaf(&self, name: &str, key: LeafKey) -> (PathBuf, PathBuf) {
        let now = OffsetDateTime::now_utc();
        self.leaf(
            name,
            &["localhost"],
            key,
            now - time::Duration::days(1),
            now + time::Duration::days(90),
        )
    }

    /// A leaf signed with a SHA-1 signature by the test CA (via openssl,
    /// which rcgen rightly refuses to do).
    pub fn sha1_leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        self.openssl_leaf(name, "rsa:2048", "-sha1")
    }

    /// An RSA-1024 leaf by the test CA (ring refuses to handle such keys).
    pub fn rsa1024_leaf(&self, name: &str) -> (PathBuf, PathBuf) {
        self.openssl_leaf(name, "rsa:1024", "-sha256")
    }

    fn openssl_leaf(&self, name: &str, newkey: &str, digest: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let key = d.join(format!("{name}.key"));
        let csr = d.join(format!("{name}.csr"));
        let cert = d.join(format!("{name}.pem"));
        let ext = d.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        run_openssl(&[
            "req",
            "-newkey",
            newkey,
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            path(&key),
            "-out",
            path(&csr),
        ]);
        run_openssl(&[
            "x509",
            "-req",
            digest,
            "-days",
            "60",
            "-in",
            path(&csr),
            "-CA",
            path(&self.ca_path()),
            "-CAkey",
            path(&d.join("ca.key")),
            "-CAcreateserial",
            "-extfile",
            path(&ext),
            "-out",
            path(&cert),
        ]);
        (cert, key)
    }

    /// A self-signed leaf for `localhost` that chains to nothing.
    pub fn self_signed(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let key = d.join(format!("{name}.key"));
        let cert = d.join(format!("{name}.pem"));
        run_openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "60",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
            path(&key),
            "-out",
            path(&cert),
        ]);
        (cert, key)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run_openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An `openssl s_server` on an ephemeral loopback port, killed on drop.
pub struct OpenSslServer {
    pub port: u16,
    child: Child,
}

impl OpenSslServer {
    /// Starts `openssl s_server -www` with `cert`/`key` and extra flags.
    pub fn start(cert: &Path, key: &Path, extra: &[&str]) -> Self {
        Self::start_at(crate::free_port(), cert, key, extra)
    }

    pub fn start_at(port: u16, cert: &Path, key: &Path, extra: &[&str]) -> Self {
        let child = Command::new("openssl")
            .arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .args(["-cert", path(cert), "-key", path(key), "-www", "-quiet"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_server");
        let mut s = OpenSslServer { port, child };
        s.wait_listening();
        s
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("openssl s_server exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "openssl s_server did not listen");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for OpenSslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a hostile server answers a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostility {
    /// Random-looking non-TLS bytes.
    Garbage,
    /// A handshake record whose length field claims 16 MB of message.
    HugeLength,
    /// A ServerHello whose inner lengths overrun the record.
    WrongLengths,
    /// Accepts and then never says anything.
    Stall,
    /// Sends a valid record header, then stops mid-record forever.
    StallMidRecord,
}

/// A TCP server that answers every connection with `how`.
pub struct HostileServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl HostileServer {
    pub fn start(how: Hostility) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let mut buf = [0u8; 4096];
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let _ = s.read(&mut buf);
                        let reply: Vec<u8> = match how {
                            Hostility::Garbage => {
                                b"\x47\x41\x52\x42\x41\x47\x45 not tls at all\r\n".to_vec()
                            }
                            Hostility::HugeLength => {
                                // Handshake record (fine) carrying a ServerHello
                                // header that claims 0xFFFFFF bytes.
                                vec![22, 3, 3, 0, 4, 2, 0xff, 0xff, 0xff]
                            }
                            Hostility::WrongLengths => {
                                // The message length matches the record; the
                                // session id length inside it does not.
                                let mut body = vec![2, 0, 0, 35, 3, 3];
                                body.extend_from_slice(&[0u8; 32]);
                                body.push(200); // session id length beyond the message
                                let mut rec = vec![22, 3, 3, 0, body.len() as u8];
                                rec.extend_from_slice(&body);
                                rec
                            }
                            Hostility::Stall => Vec::new(),
                            Hostility::StallMidRecord => vec![22, 3, 3, 0x40, 0x00, 2, 0, 0],
                        };
                        let _ = s.write_all(&reply);
                        let _ = s.flush();
                        // Keep the socket open so the client sees silence, not EOF.
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HostileServer { port, stop }
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A small HTTPS server on rustls (TLS 1.2 + 1.3, forward-secret AEAD suites
/// only) that answers every request with 200 and the given headers: a
/// well-configured agency system, or one missing a header.
pub struct HttpsTarget {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl HttpsTarget {
    pub fn start(ip: &str, cert: &Path, key: &Path, headers: &[(&str, &str)]) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("cert pem");
        let key = PrivateKeyDer::from_pem_file(key).expect("key pem");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n{}");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                while !flag.load(Ordering::Relaxed) {
                    let accepted =
                        tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
                    let Ok(Ok((tcp, _))) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let head = head.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut buf = vec![0u8; 8192];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = tls.write_all(head.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
        });
        HttpsTarget { port, stop }
    }
}

impl Drop for HttpsTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A plain TCP listener that accepts and says nothing: an open "telnet" port.
pub struct OpenPort {
    pub port: u16,
    _listener: TcpListener,
}

impl OpenPort {
    pub fn start(ip: &str) -> Self {
        let l = TcpListener::bind((ip, 0)).expect("bind");
        OpenPort {
            port: l.local_addr().expect("addr").port(),
            _listener: l,
        }
    }
}

/// The shipped scanner policies, with a site level 3 that extends the
/// shipped one and points its forbidden-port controls at ports the test
/// owns (`telnet` as the telnet port, `spare` for the rest), so services
/// that happen to run on the test machine cannot change a verdict.
pub fn site_policies(dir: &Path, telnet: u16, spare: u16) -> PathBuf {
    let p = dir.join("policies");
    std::fs::create_dir_all(&p).expect("policy dir");
    let shipped = crate::repo_root().join("policies/scan");
    for f in ["level-1.yaml", "level-2.yaml"] {
        std::fs::copy(shipped.join(f), p.join(f)).expect("copy policy");
    }
    std::fs::copy(shipped.join("level-3.yaml"), p.join("vn-pop-l3.yaml")).expect("copy policy");
    let site = format!(
        "id: test-site-l3
title: Shipped level 3 with test-owned ports
level: 3
extends: vn-pop-l3
controls:
  - id: ports.cleartext-admin
    title: No cleartext remote administration
    severity: critical
    rationale: Test stand-in for telnet/FTP.
    check: {{kind: ports_forbidden, ports: [{{port: {telnet}, service: telnet}}]}}
  - id: ports.file-and-desktop
    title: No SMB or RDP exposed
    severity: critical
    rationale: Test stand-in.
    check: {{kind: ports_forbidden, ports: [{{port: {spare}, service: rdp}}]}}
  - id: ports.databases
    title: No database ports exposed
    severity: critical
    rationale: Test stand-in.
    check: {{kind: ports_forbidden, ports: [{{port: {spare}, service: postgresql}}]}}
"
    );
    std::fs::write(p.join("level-3.yaml"), site).expect("site policy");
    p
}

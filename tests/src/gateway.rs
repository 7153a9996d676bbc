//! A popgate process under test, with its own PKI, registry and config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use certs::pki::{AgencySubject, DevPki, IssuedCert, LeafSpec, LeafUsage};

use crate::client::Client;
use crate::{bin, free_port};

/// The agency registry the gateway tests use: small, with every case.
pub const REGISTRY: &str = r#"
routes:
  - id: citizen.read
    route: GET /v1/citizens/{citizen_id}
  - id: citizen.residence
    route: GET /v1/citizens/{citizen_id}/residence
  - id: citizen.verify
    route: POST /v1/citizens/{citizen_id}/verify
agencies:
  - id: hanoi
    name: UBND Thành phố Hà Nội
    kind: province
    identity: { uri_san: "spiffe://dancu.gov.vn/agency/hanoi" }
    allow: [citizen.read, citizen.residence]
  - id: hanam
    name: UBND tỉnh Hà Nam
    kind: province
    identity: { uri_san: "spiffe://dancu.gov.vn/agency/hanam" }
    allow: [citizen.read]
  - id: vss
    name: Bảo hiểm xã hội Việt Nam
    kind: ministry
    identity: { uri_san: "spiffe://dancu.gov.vn/agency/vss" }
    purpose_required: true
    allow: [citizen.read, citizen.verify]
  - id: saomai-telecom
    name: Công ty Viễn thông Sao Mai
    kind: telco
    status: suspended
    identity: { uri_san: "spiffe://dancu.gov.vn/agency/saomai-telecom" }
    allow: [citizen.verify]
"#;

pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = DevPki::create(&dir.path().join("pki")).expect("pki");
        TestPki { dir, pki }
    }

    pub fn agency(&self, id: &str) -> IssuedCert {
        self.pki
            .issue_agency(
                &AgencySubject {
                    id: id.into(),
                    name: format!("Agency {id}"),
                },
                30,
            )
            .expect("issue")
    }

    pub fn custom(
        &self,
        stem: &str,
        id: &str,
        nb: time::OffsetDateTime,
        na: time::OffsetDateTime,
        usage: LeafUsage,
    ) -> IssuedCert {
        self.pki
            .issue(&LeafSpec {
                file_stem: stem.into(),
                agency: AgencySubject {
                    id: id.into(),
                    name: format!("Agency {id}"),
                },
                not_before: nb,
                not_after: na,
                usage,
            })
            .expect("issue")
    }

    pub fn client(&self, cert: &IssuedCert) -> Client {
        Client::new(
            &self.pki.ca_cert_path(),
            Some((&cert.cert_path, &cert.key_path)),
        )
    }

    pub fn anonymous_client(&self) -> Client {
        Client::new(&self.pki.ca_cert_path(), None)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `popgate serve`; killed on drop.
pub struct GatewayProcess {
    pub port: u16,
    pub config: PathBuf,
    child: Child,
}

/// Writes a config for `pki` forwarding to `upstream` (host:port).
pub fn write_config(pki: &TestPki, upstream: &str, read_timeout_ms: u64) -> (PathBuf, u16) {
    let port = free_port();
    let dir = pki.dir.path();
    std::fs::write(dir.join("agencies.yaml"), REGISTRY).expect("registry");
    let cfg = format!(
        "listen: 127.0.0.1:{port}\nthreads: 2\ntls:\n  cert: pki/server.pem\n  key: pki/server.key\n  client_ca: pki/ca.pem\n  crls: [pki/crl.pem]\nupstream:\n  url: http://{upstream}\n  connect_timeout_ms: 1000\n  read_timeout_ms: {read_timeout_ms}\nregistry: agencies.yaml\n"
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, cfg).expect("config");
    (path, port)
}

impl GatewayProcess {
    pub fn start(config: &Path, port: u16) -> Self {
        let child = Command::new(bin("popgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("POPGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn popgate");
        let mut g = GatewayProcess {
            port,
            config: config.to_owned(),
            child,
        };
        g.wait_listening();
        g
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("popgate exited during startup: {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("popgate did not listen on {} within 20 s", self.port);
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `popgate registry-demo`; killed on drop.
pub struct RegistryProcess {
    pub addr: String,
    child: Child,
}

impl RegistryProcess {
    pub fn start() -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(bin("popgate"))
            .args(["registry-demo", "--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn registry-demo");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "registry-demo did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        RegistryProcess { addr, child }
    }
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

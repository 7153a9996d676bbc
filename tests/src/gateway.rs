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
    query: { fields: "[a-z_,]{1,64}" }
  - id: citizen.residence
    route: GET /v1/citizens/{citizen_id}/residence
  - id: citizen.verify
    route: POST /v1/citizens/{citizen_id}/verify
  - id: citizen.lookup
    route: GET /v1/lookup
    query: { citizen_id: { shape: "[0-9]{12}", citizen: true } }
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
    allow: [citizen.read, citizen.verify, citizen.lookup]
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
        let pki_dir = dir.path().join("pki");
        let pki = DevPki::create(&pki_dir).expect("pki");
        certs::signing::generate_keypair(&pki_dir, "audit-seal").expect("seal key");
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("random");
        std::fs::write(pki_dir.join("audit-hmac.key"), hex::encode(key)).expect("hmac key");
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

    /// An HTTP/2 connection as `cert`'s holder: the request sender, and the
    /// connection task (it ends when the gateway closes the connection).
    pub async fn h2(
        &self,
        cert: &IssuedCert,
        port: u16,
    ) -> (
        hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ) {
        let client = Client::with_alpn(
            &self.pki.ca_cert_path(),
            Some((&cert.cert_path, &cert.key_path)),
            vec![b"h2".to_vec()],
        );
        let tls = client.connect(port).await.expect("h2 connect");
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        (send, tokio::spawn(conn))
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
    pub child: Child,
}

/// A gateway config under construction: `pki.config(upstream)`, then
/// settings by name, then [`ConfigBuilder::write`].
pub struct ConfigBuilder<'a> {
    pki: &'a TestPki,
    upstream: String,
    name: String,
    read_timeout_ms: u64,
    audit: PathBuf,
    admin: bool,
    extra: String,
    instance: Option<String>,
    store: Option<String>,
    store_extra: String,
    crl_file: bool,
}

/// A written config: where it is and what it listens on.
pub struct TestConfig {
    pub path: PathBuf,
    pub port: u16,
    /// The admin listener's port, when [`ConfigBuilder::admin`] was asked for.
    pub admin: Option<u16>,
    pub audit: PathBuf,
}

impl TestConfig {
    /// The admin port; panics if the config has no admin listener.
    pub fn admin_port(&self) -> u16 {
        self.admin
            .expect("this config has no admin listener: call .admin()")
    }
}

impl TestPki {
    /// A config forwarding to `upstream` (host:port) with the audit log in
    /// `<tmp>/audit` and a 5 s upstream read timeout.
    pub fn config(&self, upstream: &str) -> ConfigBuilder<'_> {
        ConfigBuilder {
            pki: self,
            upstream: upstream.to_owned(),
            name: "gateway.yaml".into(),
            read_timeout_ms: 5000,
            audit: self.dir.path().join("audit"),
            admin: false,
            extra: String::new(),
            instance: None,
            store: None,
            store_extra: String::new(),
            crl_file: true,
        }
    }
}

impl ConfigBuilder<'_> {
    /// The file name (several configs can share one PKI and registry).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }
    pub fn read_timeout_ms(mut self, ms: u64) -> Self {
        self.read_timeout_ms = ms;
        self
    }
    pub fn audit_dir(mut self, dir: &Path) -> Self {
        self.audit = dir.to_owned();
        self
    }
    /// `audit.instance`.
    pub fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.to_owned());
        self
    }
    /// `audit.store.url` (needs [`ConfigBuilder::instance`]).
    pub fn store(mut self, url: &str) -> Self {
        self.store = Some(url.to_owned());
        self
    }
    /// More `audit.store` settings, as YAML lines indented by four.
    pub fn store_setting(mut self, line: &str) -> Self {
        self.store_extra.push_str(&format!("    {line}\n"));
        self
    }
    /// No `tls.crls` file: revocation comes from fetched CRLs alone.
    pub fn without_crl_file(mut self) -> Self {
        self.crl_file = false;
        self
    }
    /// Adds an admin listener on a free port.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }
    /// Appends YAML (e.g. a `quota:` or `limits:` block).
    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    pub fn write(self) -> TestConfig {
        let port = free_port();
        let dir = self.pki.dir.path();
        if !dir.join("agencies.yaml").exists() {
            std::fs::write(dir.join("agencies.yaml"), REGISTRY).expect("registry");
        }
        let admin = self.admin.then(free_port);
        let mut audit_extra = String::new();
        if let Some(i) = &self.instance {
            audit_extra.push_str(&format!("  instance: {i}\n"));
        }
        if let Some(u) = &self.store {
            audit_extra.push_str(&format!("  store:\n    url: {u}\n{}", self.store_extra));
        }
        let mut cfg = format!(
            "listen: 127.0.0.1:{port}\nthreads: 2\ntls:\n  cert: pki/server.pem\n  key: pki/server.key\n  client_ca: pki/ca.pem\n{crls}upstream:\n  url: http://{upstream}\n  connect_timeout_ms: 1000\n  read_timeout_ms: {timeout}\nregistry: agencies.yaml\naudit:\n  dir: {audit}\n  hmac_key: pki/audit-hmac.key\n  seal_key: pki/audit-seal.key\n  segment_max_bytes: 65536\n{audit_extra}",
            upstream = self.upstream,
            timeout = self.read_timeout_ms,
            audit = self.audit.display(),
            crls = if self.crl_file {
                "  crls: [pki/crl.pem]\n"
            } else {
                ""
            }
        );
        if let Some(a) = admin {
            cfg.push_str(&format!("admin:\n  listen: 127.0.0.1:{a}\n"));
        }
        cfg.push_str(&self.extra);
        let path = dir.join(&self.name);
        std::fs::write(&path, cfg).expect("config");
        TestConfig {
            path,
            port,
            admin,
            audit: self.audit,
        }
    }
}

impl GatewayProcess {
    /// Starts `popgate serve` on a written config.
    pub fn run(config: &TestConfig) -> Self {
        Self::start(&config.path, config.port)
    }

    /// Sends a signal (SIGHUP, SIGTERM, SIGKILL, …) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

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

/// Runs a popgate command: (exit code, stdout and stderr).
fn exit_and_output(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run popgate");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

impl TestPki {
    /// Runs `popgate audit verify` on `dir`; returns (exit code, output).
    pub fn audit_verify(&self, dir: &Path) -> (i32, String) {
        exit_and_output(
            Command::new(bin("popgate"))
                .args(["audit", "verify"])
                .arg(dir)
                .arg("--key")
                .arg(self.dir.path().join("pki/audit-seal.pub")),
        )
    }

    /// Runs `popgate audit verify --store url [dir]`; returns (exit code, output).
    pub fn audit_verify_store(&self, url: &str, dir: Option<&Path>) -> (i32, String) {
        let mut cmd = Command::new(bin("popgate"));
        cmd.args(["audit", "verify", "--store", url, "--key"])
            .arg(self.dir.path().join("pki/audit-seal.pub"));
        if let Some(d) = dir {
            cmd.arg(d);
        }
        exit_and_output(&mut cmd)
    }

    /// Runs `popgate audit search --store url --format json`; returns the records.
    pub fn audit_search_store(&self, url: &str, citizen: &str) -> Vec<serde_json::Value> {
        let (code, out) = exit_and_output(
            Command::new(bin("popgate"))
                .args(["audit", "search", "--format", "json", "--citizen", citizen])
                .args(["--store", url, "--hmac-key"])
                .arg(self.dir.path().join("pki/audit-hmac.key"))
                .stderr(Stdio::inherit()),
        );
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).expect("search json")
    }

    /// Runs `popgate audit search --format json`; returns the records.
    pub fn audit_search(
        &self,
        dir: &Path,
        citizen: &str,
        extra: &[&str],
    ) -> Vec<serde_json::Value> {
        let out = Command::new(bin("popgate"))
            .args([
                "audit",
                "search",
                "--format",
                "json",
                "--citizen",
                citizen,
                "--dir",
            ])
            .arg(dir)
            .arg("--hmac-key")
            .arg(self.dir.path().join("pki/audit-hmac.key"))
            .args(extra)
            .output()
            .expect("run popgate audit search");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("search json")
    }
}

/// Every record line in the audit directory, parsed.
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("audit dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for p in names {
        for line in std::fs::read_to_string(&p).expect("segment").lines() {
            if let Ok(v) = serde_json::from_str(line) {
                out.push(v);
            }
        }
    }
    out
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
        Self::start_at(&format!("127.0.0.1:{}", free_port()))
    }

    /// Starts the registry on a given address (e.g. to bring one back).
    pub fn start_at(addr: &str) -> Self {
        let addr = addr.to_owned();
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

/// Rewrites one record of a segment as an attacker without the seal key
/// would: change the agency and purpose, then recompute every `hash` and
/// `prev` after it so the chain is consistent again.
pub fn rewrite_and_rechain(segment: &Path, line_index: usize, prev_of_first: &str) {
    use sha2::Digest;
    let text = std::fs::read_to_string(segment).expect("rewrite the segment");
    // The open segment is zero-padded past its records.
    let text = text.trim_end_matches('\0');
    let mut prev = prev_of_first.to_owned();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("rewrite the segment");
        let obj = v.as_object_mut().expect("rewrite the segment");
        obj.remove("hash");
        if i == line_index {
            obj.insert("agency".into(), "someone-else".into());
            obj.insert("purpose".into(), "routine".into());
        }
        obj.insert("prev".into(), prev.clone().into());
        let body = serde_json::to_string(&v).expect("rewrite the segment");
        let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        out.push_str(&format!(
            "{},\"hash\":\"{hash}\"}}\n",
            &body[..body.len() - 1]
        ));
        prev = hash;
    }
    std::fs::write(segment, out).expect("rewrite the segment");
}

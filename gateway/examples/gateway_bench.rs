//! Gateway throughput and latency with the audit log durable vs relaxed
//! (figures printed, never asserted). Starts the release `popgate` binaries:
//! the synthetic registry and one gateway per mode, then drives each with
//! `--connections` keep-alive mTLS HTTP/1.1 connections for `--seconds`.
//!
//! Run: cargo build --release -p popgate && cargo run --release -p gateway --example gateway_bench

// A benchmark harness: any failure aborts the run with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client_config(pki: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(pki.join("agencies/hanoi.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("agencies/hanoi.key")).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap(),
    )
}

/// One keep-alive connection sending GETs until the deadline; returns latencies.
async fn connection(cfg: Arc<rustls::ClientConfig>, port: u16, deadline: Instant) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut s = tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let req =
        b"GET /v1/citizens/001203012345 HTTP/1.1\r\nHost: localhost\r\nX-Purpose: bench\r\n\r\n";
    let mut lat = Vec::new();
    let mut buf = vec![0u8; 16384];
    while Instant::now() < deadline {
        let t = Instant::now();
        s.write_all(req).await.unwrap();
        // Read one response: headers, then Content-Length bytes.
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        lat.push(t.elapsed());
    }
    lat
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let conns = arg("--connections", 32) as usize;
    let secs = arg("--seconds", 10);
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("popgate");
    assert!(
        bin.exists(),
        "build first: cargo build --release -p popgate ({})",
        bin.display()
    );
    let root = tempfile::tempdir().unwrap();
    let pki: PathBuf = root.path().join("pki");
    let st = Command::new(&bin)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .args([
            "--agencies",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/agencies.yaml"),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let rport = port();
    let _registry = Proc(
        Command::new(&bin)
            .args(["registry-demo", "--listen", &format!("127.0.0.1:{rport}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait(rport);
    let cfg = client_config(&pki);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("gateway benchmark: {conns} keep-alive mTLS connections, {secs} s per mode, 2 gateway threads, 1 load thread");
    println!(
        "{:<14} {:>10} {:>9} {:>9} {:>9}",
        "mode", "req/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    // Same agency registry with a (never reached) quota for hanoi, to price the quota step.
    let with_quota = root.path().join("agencies-quota.yaml");
    std::fs::write(
        &with_quota,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/agencies.yaml")).unwrap().replace(
            "  - id: hanoi\n",
            "  - id: hanoi\n    quota: { rate: 1000000, burst: 1000000, daily: 1000000000000, max_concurrent: 100000 }\n",
        ),
    )
    .unwrap();
    for (mode, label, agencies) in [
        (
            "durable",
            "durable",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/agencies.yaml").to_owned(),
        ),
        (
            "relaxed",
            "relaxed",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/agencies.yaml").to_owned(),
        ),
        ("durable", "durable+quota", with_quota.display().to_string()),
    ] {
        let gport = port();
        let config = root
            .path()
            .join(format!("{}.yaml", label.replace('+', "-")));
        std::fs::write(&config, format!(
            "listen: 127.0.0.1:{gport}\nthreads: 2\ntls:\n  cert: pki/server.pem\n  key: pki/server.key\n  client_ca: pki/ca.pem\n  crls: [pki/crl.pem]\nupstream:\n  url: http://127.0.0.1:{rport}\nregistry: {agencies}\naudit:\n  dir: audit-{dir}\n  hmac_key: pki/audit-hmac.key\n  seal_key: pki/audit-seal.key\n  durability: {mode}\n  flush_interval_ms: 100\n",
            dir = label.replace('+', "-"))).unwrap();
        let _gw = Proc(
            Command::new(&bin)
                .args(["serve", "--config"])
                .arg(&config)
                .env("POPGATE_LOG", "error")
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait(gport);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let start = Instant::now();
        let mut lat: Vec<Duration> = rt.block_on(async {
            let tasks: Vec<_> = (0..conns)
                .map(|_| tokio::spawn(connection(cfg.clone(), gport, deadline)))
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        let elapsed = start.elapsed().as_secs_f64();
        lat.sort();
        println!(
            "{:<14} {:>10.0} {:>9.2} {:>9.2} {:>9.2}",
            label,
            lat.len() as f64 / elapsed,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 0.999)
        );
    }
}

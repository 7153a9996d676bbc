//! Harness for end-to-end tests: real `popgate` processes, real TLS on
//! 127.0.0.1 with ephemeral ports, certificates minted per test.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the
//! test executable (target/<profile>/); nothing is mocked.

pub mod client;
pub mod gateway;
pub mod postgres;
pub mod redis;
pub mod targets;
pub mod upstream;

use std::path::PathBuf;

/// The repository root (for shipped policies and schemas).
pub fn repo_root() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_owned())
        .unwrap_or_default()
}

/// Path of a workspace binary, rebuilt if stale.
///
/// `cargo test -p e2e` alone does not rebuild other packages' binaries, and
/// testing a stale `popgate` would be worse than useless, so the first call
/// asks cargo (which runs these tests and sets `CARGO`) to bring every
/// workspace binary up to date. Under `cargo test --workspace` that is a
/// no-op.
pub fn bin(name: &str) -> PathBuf {
    // E2E_BIN_DIR runs the tests against other builds of the binaries,
    // e.g. the previous release, to show a regression test fails there.
    if let Some(dir) = std::env::var_os("E2E_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let Ok(cargo) = std::env::var("CARGO") else {
            return;
        };
        let release = std::env::current_exe()
            .map(|p| p.components().any(|c| c.as_os_str() == "release"))
            .unwrap_or(false);
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build --bins");
        assert!(status.success(), "cargo build --workspace --bins failed");
    });
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-hash → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the workspace tests with `cargo test --workspace` \
         (it builds every binary first) or `cargo build --bins` before `cargo test -p e2e`",
        path.display()
    );
    path
}

/// A tool a test needs cannot run: under POPGATE_REQUIRE_TOOLS=1 that
/// fails the test (CI installs every tool), otherwise it is said loudly and
/// the caller skips.
pub fn tool_missing(msg: &str) {
    assert!(
        std::env::var("POPGATE_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{msg}"
    );
    eprintln!("\n*** {msg} ***\n");
}

/// Waits (10 s at most) until something accepts connections on
/// 127.0.0.1:`port`; `what` names it in the failure.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// An ephemeral loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Plain-HTTP GET against the admin listener: (status, body).
pub fn admin_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("admin connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("admin write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("admin read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `metric(text, "popgate_refusals_total{code=\"bad_path\"}")`.
pub fn metric(exposition: &str, sample: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

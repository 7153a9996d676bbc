//! Harness for end-to-end tests: real `popgate` processes, real TLS on
//! 127.0.0.1 with ephemeral ports, certificates minted per test.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the
//! test executable (target/<profile>/); nothing is mocked.

pub mod client;
pub mod gateway;
pub mod redis;
pub mod upstream;

use std::path::PathBuf;

/// Path of a workspace binary, rebuilt if stale.
///
/// `cargo test -p e2e` alone does not rebuild other packages' binaries, and
/// testing a stale `popgate` would be worse than useless, so the first call
/// asks cargo (which runs these tests and sets `CARGO`) to bring every
/// workspace binary up to date. Under `cargo test --workspace` that is a
/// no-op.
pub fn bin(name: &str) -> PathBuf {
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

/// An ephemeral loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

//! A real PostgreSQL server on an ephemeral loopback port, in a temporary
//! directory, stopped on drop: `initdb` + `pg_ctl` from Debian's
//! `postgresql` package, run as the `postgres` user when the tests run as
//! root (the server refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    root: tempfile::TempDir,
    running: bool,
    /// Server options beyond the port and socket (TLS).
    options: String,
}

/// The newest server binaries: Debian keeps them off PATH, in
/// /usr/lib/postgresql/<major>/bin.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and no memory effects.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

impl PostgresServer {
    /// Starts a fresh cluster, or returns None (loudly) when PostgreSQL is
    /// not installed — unless POPGATE_REQUIRE_TOOLS=1, where that fails.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// A server that accepts TLS connections only (plain ones are refused
    /// by pg_hba.conf), with this certificate chain and key.
    pub fn start_tls(cert: &Path, key: &Path) -> Option<Self> {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Option<Self> {
        let Some(bin) = server_bin() else {
            crate::tool_missing("SKIPPED: PostgreSQL server not installed (no /usr/lib/postgresql/*/bin/initdb); install the postgresql package");
            return None;
        };
        let root = tempfile::tempdir().expect("tempdir");
        let mut pg = PostgresServer {
            port: crate::free_port(),
            bin,
            root,
            running: false,
            options: String::new(),
        };
        if as_root() {
            // The server runs as `postgres`: it must reach and own its directory.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(pg.root.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod the PostgreSQL directory");
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.root.path())
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown postgres {}",
                pg.root.path().display()
            );
        }
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        );
        if let Some((cert, key)) = tls {
            let (c, k) = (
                pg.root.path().join("tls.crt"),
                pg.root.path().join("tls.key"),
            );
            std::fs::copy(cert, &c).expect("copy the server certificate");
            std::fs::copy(key, &k).expect("copy the server key");
            // PostgreSQL refuses a key others can read, or one it does not own.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the server key");
            if as_root() {
                let status = Command::new("chown")
                    .args(["postgres:postgres"])
                    .args([&c, &k])
                    .status()
                    .expect("run chown");
                assert!(status.success(), "chown the TLS files");
            }
            std::fs::write(
                pg.root.path().join("data/pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
            pg.options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                c.display(),
                k.display()
            );
        }
        pg.restart();
        Some(pg)
    }

    fn data(&self) -> String {
        self.root.path().join("data").display().to_string()
    }

    fn log(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    /// Runs one of the server tools, as `postgres` when we are root.
    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.root.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres` (trust auth, loopback only).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (an outage); the data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if self.running {
            self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
            self.running = false;
        }
    }

    /// Starts the server on its port and data, and waits until it accepts
    /// connections. fsync is off: PostgreSQL's own durability is not under
    /// test, and the tests run faster.
    pub fn restart(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50{}",
            self.port,
            self.root.path().display(),
            self.options
        );
        let log = self.log().display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "30",
                "-o",
                &opts,
                "start",
            ],
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not listen on {}:\n{}",
                self.port,
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL with psql; returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let url = if self.options.contains("ssl=on") {
            format!("{}?sslmode=require", self.url())
        } else {
            self.url()
        };
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(url)
            .args(["-c", sql])
            .output()
            .expect("run psql (package postgresql-client)");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = if as_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"])
                    .arg(self.bin.join("pg_ctl"));
                c
            } else {
                Command::new(self.bin.join("pg_ctl"))
            };
            let _ = cmd
                .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

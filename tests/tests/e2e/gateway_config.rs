//! `popgate check-config` catches mistakes with file:line:column and a
//! non-zero exit, before anything listens.

use std::process::Command;

use e2e::bin;
use e2e::gateway::TestPki;

fn check(config: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(bin("popgate"))
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .expect("run popgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn good_config_passes_and_mistakes_are_located() {
    let pki = TestPki::new();
    let e2e::gateway::TestConfig {
        path: config,
        port: _,
        ..
    } = pki.config("127.0.0.1:9").read_timeout_ms(1000).write();
    let (code, out, err) = check(&config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok (4 agencies, 4 routes"), "{out}");

    // Malformed gateway config: a misspelt field on line 3.
    let text = std::fs::read_to_string(&config).unwrap();
    let bad = config.with_file_name("bad.yaml");
    std::fs::write(&bad, text.replace("tls:\n  cert:", "tls:\n  certificate:")).unwrap();
    let (code, _, err) = check(&bad);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.yaml:4:3: unknown field `certificate`"),
        "{err}"
    );

    // Malformed registry: unknown route id granted, on a known line.
    let reg = pki.dir.path().join("agencies.yaml");
    let good_reg = std::fs::read_to_string(&reg).unwrap();
    std::fs::write(
        &reg,
        good_reg.replace("allow: [citizen.read]\n", "allow: [citizen.reed]\n"),
    )
    .unwrap();
    let (code, _, err) = check(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agencies.yaml:23:"), "{err}");
    assert!(err.contains("citizen.reed"), "{err}");

    // Registry YAML syntax error.
    std::fs::write(&reg, "routes: [\n  - id: x\n").unwrap();
    let (code, _, err) = check(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agencies.yaml:"), "{err}");
    std::fs::write(&reg, good_reg).unwrap();

    // A referenced file that does not parse.
    std::fs::write(pki.dir.path().join("pki/crl.pem"), "not a crl").unwrap();
    let (code, _, err) = check(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("crl.pem"), "{err}");

    // A referenced file that is missing.
    std::fs::remove_file(pki.dir.path().join("pki/ca.pem")).unwrap();
    let (code, _, err) = check(&config);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ca.pem: cannot read"), "{err}");
}

/// `popgate serve` tells a wrong file (exit 2) from a failure to start
/// (exit 1): a busy admin port is the machine's problem, not the config's.
#[test]
fn serve_exits_2_for_config_mistakes_and_1_for_runtime_failures() {
    let pki = TestPki::new();
    let c = pki.config("127.0.0.1:9").admin().write();
    let busy = std::net::TcpListener::bind(("127.0.0.1", c.admin_port())).unwrap();
    let serve = |config: &std::path::Path| {
        let out = Command::new(bin("popgate"))
            .args(["serve", "--config"])
            .arg(config)
            .output()
            .expect("run popgate");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = serve(&c.path);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("admin.listen 127.0.0.1:{}", c.admin_port())),
        "{err}"
    );
    drop(busy);

    let text = std::fs::read_to_string(&c.path).unwrap();
    std::fs::write(&c.path, text.replace("threads: 2", "threads: 0")).unwrap();
    let (code, err) = serve(&c.path);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("threads"), "{err}");
}

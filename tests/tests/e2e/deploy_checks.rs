//! The operator artefacts in deploy/ stay true to the code: Prometheus
//! rules parse and their unit tests pass (promtool), the dashboard and alert
//! expressions only use metrics popgate exports, and the systemd units
//! verify. The checks live in deploy/check.sh so ops can run them too.

use std::process::Command;

#[test]
fn deploy_artefacts_check_out() {
    if !e2e::targets::tool_available("promtool", "prometheus") {
        return;
    }
    let out = Command::new("bash")
        .arg(e2e::repo_root().join("deploy/check.sh"))
        .output()
        .expect("run deploy/check.sh");
    assert!(
        out.status.success(),
        "deploy/check.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

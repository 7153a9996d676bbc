//! `popscan scan --run-nmap`: runs the real nmap on the inventory's hosts
//! and ports (and the policies' forbidden ports) and returns its XML file.

use std::path::PathBuf;
use std::time::Duration;

use crate::inventory::Inventory;
use crate::policy::PolicySet;

/// Runs `nmap -Pn -sT -sV --script ssl-enum-ciphers,ssl-cert` and returns
/// the path of the XML it wrote (in the system temp dir).
pub async fn run(
    inv: &Inventory,
    policies: &PolicySet,
    timeout: Duration,
) -> Result<PathBuf, String> {
    let mut hosts: Vec<String> = Vec::new();
    let mut ports: Vec<u16> = Vec::new();
    for s in &inv.systems {
        for h in s.hosts() {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        ports.extend(s.endpoints.iter().map(|e| e.port));
        if let Some(p) = policies.for_level(s.level) {
            for c in &p.controls {
                if let Some(list) = c.check.forbidden_ports() {
                    ports.extend(list.iter().map(|p| p.port));
                }
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    if hosts.is_empty() {
        return Err("the inventory has no hosts to scan".into());
    }
    let out = std::env::temp_dir().join(format!("popscan-nmap-{}.xml", std::process::id()));
    let port_list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let mut cmd = tokio::process::Command::new("nmap");
    cmd.args([
        "-Pn",
        "-sT",
        "-sV",
        "--version-light",
        "-T4",
        "--script",
        "ssl-enum-ciphers,ssl-cert",
    ])
    .arg("--host-timeout")
    .arg(format!("{}s", (timeout.as_secs() * 60).max(60)))
    .arg("-p")
    .arg(port_list.join(","))
    .arg("-oX")
    .arg(&out)
    .args(&hosts)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    if hosts.iter().all(|h| h.contains(':')) {
        cmd.arg("-6");
    }
    let result = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run nmap (is it installed?): {e}"))?;
    if !result.status.success() {
        return Err(format!(
            "nmap failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        ));
    }
    Ok(out)
}

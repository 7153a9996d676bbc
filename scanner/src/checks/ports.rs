//! Open-port controls.

use super::Outcome;
use crate::evidence::{PortState, SystemEvidence};
use crate::policy::{NamedPort, PortsCheck};

pub(super) fn check(c: &PortsCheck, ev: &SystemEvidence, out: &mut Outcome) {
    match c {
        PortsCheck::Forbidden { ports } => forbidden(ports, ev, out),
    }
}

fn forbidden(list: &[NamedPort], ev: &SystemEvidence, out: &mut Outcome) {
    for host in &ev.hosts {
        let mut clean = Vec::new();
        for np in list {
            match host.state(np.port) {
                Some(seen) if seen.port.state == PortState::Open => {
                    let svc = seen
                        .port
                        .service
                        .as_ref()
                        .map(|s| format!(", identified as {}", s.name))
                        .unwrap_or_default();
                    out.fail(format!(
                        "{} ({}/tcp) open on {}{svc} [{}]",
                        np.service, np.port, host.host, seen.source
                    ));
                }
                Some(_) => clean.push(np.port.to_string()),
                None => out.error(format!(
                    "{}: port {} ({}) was not scanned",
                    host.host, np.port, np.service
                )),
            }
        }
        if !clean.is_empty() {
            out.ok(format!(
                "{}: ports {} not open",
                host.host,
                clean.join(", ")
            ));
        }
    }
}

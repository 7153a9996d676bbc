//! One scan: gather evidence for each system (live probes and/or nmap XML),
//! evaluate its level's controls, apply waivers, produce the report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use time::OffsetDateTime;

use crate::checks::{self, CheckContext, Status};
use crate::evidence::{
    EndpointFacts, Fact, HostEvidence, HostPorts, PortEvidence, SeenPort, SystemEvidence,
};
use crate::inventory::{Inventory, ServiceKind, System};
use crate::policy::{Policy, PolicySet};
use crate::probe::tls::{self, ProbeLimits, Target, TlsEvidence};
use crate::probe::{http, ports};
use crate::report::{ControlResult, Report, SystemReport, SystemResult, WaiverNote, SCHEMA};
use crate::waiver::{self, Waivers};

/// How a scan gathers evidence.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Probe endpoints live (TCP, crafted TLS handshakes, HTTP).
    pub live: bool,
    /// Systems scanned at once.
    pub concurrency: usize,
    /// Handshakes in flight per endpoint.
    pub per_endpoint: usize,
    pub connect_timeout: Duration,
    /// Bound on each exchange with an endpoint (one handshake, one request).
    pub timeout: Duration,
    pub trust_bundle: Option<PathBuf>,
    pub now: OffsetDateTime,
    pub shard: Option<(u32, u32)>,
    pub inventory_path: String,
}

/// Parsed nmap results, by host.
#[derive(Debug, Clone, Default)]
pub struct NmapEvidence {
    pub hosts: Vec<HostEvidence>,
}

impl NmapEvidence {
    fn for_host<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a HostEvidence> + 'a {
        self.hosts
            .iter()
            .filter(move |h| h.host == host || h.hostnames.iter().any(|n| n == host))
    }
}

/// Called after each system is done (for progress bars).
pub type Progress = Arc<dyn Fn(&SystemReport) + Send + Sync>;

/// Scans every system of the inventory against the policy of its level.
pub async fn run(
    inventory: &Inventory,
    policies: &PolicySet,
    waivers: &Waivers,
    nmap: &NmapEvidence,
    opts: &ScanOptions,
    progress: Option<Progress>,
) -> Report {
    let started = opts.now;
    let mut reports: Vec<(usize, SystemReport)> =
        stream::iter(inventory.systems.iter().enumerate())
            .map(|(i, sys)| {
                let progress = progress.clone();
                async move {
                    let r = scan_system(sys, policies, waivers, nmap, opts).await;
                    if let Some(p) = &progress {
                        p(&r);
                    }
                    (i, r)
                }
            })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
    reports.sort_by_key(|(i, _)| *i);
    let systems: Vec<SystemReport> = reports.into_iter().map(|(_, r)| r).collect();
    Report {
        schema: SCHEMA.to_string(),
        scanner_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: rfc3339(started),
        finished_at: rfc3339(OffsetDateTime::now_utc()),
        inventory: opts.inventory_path.clone(),
        policy_dir: policies.dir.display().to_string(),
        shard: opts.shard.map(|(i, n)| format!("{i}/{n}")),
        summary: Report::summarise(&systems),
        systems,
    }
}

/// Whole seconds: reports and verdicts are read by people.
pub use certs::dates::rfc3339;

async fn scan_system(
    sys: &System,
    policies: &PolicySet,
    waivers: &Waivers,
    nmap: &NmapEvidence,
    opts: &ScanOptions,
) -> SystemReport {
    let Some(policy) = policies.for_level(sys.level) else {
        return unscannable(
            sys,
            format!(
                "no policy for security level {} in {}",
                sys.level,
                policies.dir.display()
            ),
        );
    };
    let ev = gather(sys, policy, nmap, opts).await;
    judge(sys, policy, waivers, ev, opts)
}

fn unscannable(sys: &System, why: String) -> SystemReport {
    SystemReport {
        id: sys.id.clone(),
        agency: sys.agency.clone(),
        agency_kind: sys.agency_kind,
        name: sys.name.clone(),
        level: sys.level,
        policy_id: String::new(),
        policy_sha256: String::new(),
        validity_days: 0,
        result: SystemResult::Error,
        controls: Vec::new(),
        errors: vec![why],
        evidence: serde_json::Value::Null,
    }
}

/// Evaluates every control and applies waivers.
pub fn judge(
    sys: &System,
    policy: &Policy,
    waivers: &Waivers,
    ev: SystemEvidence,
    opts: &ScanOptions,
) -> SystemReport {
    let ctx = CheckContext {
        trust_bundle: opts.trust_bundle.clone(),
        now_unix: opts.now.unix_timestamp(),
    };
    let today = opts.now.date();
    let mut controls = Vec::new();
    for c in &policy.controls {
        let out = checks::evaluate(c, &ev, &ctx);
        let mut status = out.status();
        let mut note = None;
        if status == Status::Fail {
            if let Some(w) = waivers.find(&sys.id, &c.id) {
                let applies = w.applies_on(today);
                if applies {
                    status = Status::Waived;
                }
                note = Some(WaiverNote {
                    justification: w.justification.clone(),
                    approver: w.approver.clone(),
                    expires: waiver::format_date(w.expires),
                    expired: !applies,
                });
            }
        }
        controls.push(ControlResult {
            id: c.id.clone(),
            title: c.title.clone(),
            severity: c.severity,
            status,
            failures: out.failures,
            errors: out.errors,
            evidence: out.evidence,
            waiver: note,
        });
    }
    let result = if controls.iter().any(|c| c.status == Status::Fail) {
        SystemResult::Fail
    } else if controls.iter().any(|c| c.status == Status::Error) {
        SystemResult::Error
    } else {
        SystemResult::Pass
    };
    SystemReport {
        id: sys.id.clone(),
        agency: sys.agency.clone(),
        agency_kind: sys.agency_kind,
        name: sys.name.clone(),
        level: sys.level,
        policy_id: policy.id.clone(),
        policy_sha256: policy.sha256.clone(),
        validity_days: policy.validity_days,
        result,
        controls,
        errors: Vec::new(),
        evidence: serde_json::to_value(&ev).unwrap_or(serde_json::Value::Null),
    }
}

/// Ports the policy cares about on every host, plus the system's own.
fn ports_to_check(sys: &System, policy: &Policy, host: &str) -> Vec<u16> {
    let mut v: Vec<u16> = sys
        .endpoints
        .iter()
        .filter(|e| e.host == host)
        .map(|e| e.port)
        .collect();
    for c in &policy.controls {
        if let Some(ports) = c.check.forbidden_ports() {
            v.extend(ports.iter().map(|p| p.port));
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

async fn gather(
    sys: &System,
    policy: &Policy,
    nmap: &NmapEvidence,
    opts: &ScanOptions,
) -> SystemEvidence {
    let endpoints =
        futures::future::join_all(sys.endpoints.iter().map(|e| endpoint_facts(e, nmap, opts)))
            .await;
    let mut hosts = Vec::new();
    for host in sys.hosts() {
        let mut seen = Vec::new();
        if opts.live {
            let list = ports_to_check(sys, policy, &host);
            let states = futures::future::join_all(list.iter().map(|&p| {
                let host = host.clone();
                async move {
                    match ports::resolve(&host, p).await {
                        Ok(addr) => Some((p, ports::probe_port(addr, opts.connect_timeout).await)),
                        Err(_) => None,
                    }
                }
            }))
            .await;
            for (port, state) in states.into_iter().flatten() {
                seen.push(SeenPort {
                    port: PortEvidence {
                        port,
                        state,
                        service: None,
                    },
                    source: "probe".into(),
                });
            }
        }
        for h in nmap.for_host(&host) {
            for p in &h.ports {
                seen.push(SeenPort {
                    port: p.clone(),
                    source: h.source.clone(),
                });
            }
        }
        hosts.push(HostPorts { host, ports: seen });
    }
    SystemEvidence { endpoints, hosts }
}

async fn endpoint_facts(
    e: &crate::inventory::Endpoint,
    nmap: &NmapEvidence,
    opts: &ScanOptions,
) -> EndpointFacts {
    let from_nmap = || -> Option<TlsEvidence> {
        nmap.for_host(&e.host).find_map(|h| {
            h.endpoints
                .iter()
                .find(|x| x.port == e.port)
                .and_then(|x| x.tls.clone())
        })
    };
    let sni = e
        .hostname
        .parse::<std::net::IpAddr>()
        .is_err()
        .then(|| e.hostname.clone());
    let addr: Fact<std::net::SocketAddr> = if opts.live {
        ports::resolve(&e.host, e.port).await
    } else {
        Err("live probes are off".into())
    };
    let tls: Option<Fact<TlsEvidence>> =
        if !e.service.is_tls() {
            None
        } else if opts.live {
            Some(match &addr {
                Err(err) => Err(err.clone()),
                Ok(a) => {
                    let target = Target {
                        addr: *a,
                        sni: sni.clone(),
                        connect_timeout: opts.connect_timeout,
                        exchange_timeout: opts.timeout,
                    };
                    let limits = ProbeLimits {
                        parallel: opts.per_endpoint,
                    };
                    tls::probe(target, &limits)
                        .await
                        .map_err(|err| err.error.to_string())
                }
            })
        } else {
            Some(from_nmap().ok_or_else(|| {
                format!("no nmap ssl-enum-ciphers/ssl-cert output for {}", e.label())
            }))
        };
    let http = if e.service != ServiceKind::Https {
        None
    } else if opts.live {
        Some(match &addr {
            Err(err) => Err(err.clone()),
            Ok(a) => http::fetch_headers(*a, &e.hostname, opts.timeout).await,
        })
    } else {
        Some(Err(
            "HTTP headers need a live probe (nmap XML does not carry them)".into(),
        ))
    };
    EndpointFacts {
        label: e.label(),
        hostname: e.hostname.clone(),
        service: e.service,
        tls,
        http,
    }
}

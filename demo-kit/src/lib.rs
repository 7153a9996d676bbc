//! `popgate demo`: the whole flow on loopback in one command.
//!
//! Creates (or reuses) a demo directory with a dev PKI, the shipped agency
//! registry and a gateway config, starts the synthetic registry and the
//! gateway, and prints curl lines that work when pasted.

pub mod agency_system;
pub mod synthetic_registry;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use certs::pki::DevPki;

use gateway::error::GatewayError;
use gateway::registry::{AgencyStatus, Registry};

/// The registry shipped in `policies/agencies.yaml`, so the demo works from
/// any directory.
pub const SHIPPED_AGENCIES: &str = include_str!("../../policies/agencies.yaml");

/// A citizen ID the synthetic registry answers for (Hà Nội, male, 2003).
pub const DEMO_CITIZEN: &str = "001203012345";

pub struct DemoOptions {
    pub dir: PathBuf,
    pub port: u16,
    pub registry_port: u16,
    pub admin_port: u16,
    /// The demo agency system popscan audits.
    pub system_port: u16,
    /// The dev CA's CRL and OCSP publisher (`pki serve-revocation`).
    pub revocation_port: u16,
}

/// The shipped scan policies, so the printed popscan line works from any
/// directory.
const SCAN_POLICIES: [(&str, &str); 5] = [
    (
        "level-1.yaml",
        include_str!("../../policies/scan/level-1.yaml"),
    ),
    (
        "level-2.yaml",
        include_str!("../../policies/scan/level-2.yaml"),
    ),
    (
        "level-3.yaml",
        include_str!("../../policies/scan/level-3.yaml"),
    ),
    (
        "level-4.yaml",
        include_str!("../../policies/scan/level-4.yaml"),
    ),
    (
        "level-5.yaml",
        include_str!("../../policies/scan/level-5.yaml"),
    ),
];

/// Prepares the demo directory; returns the gateway config path and the
/// curl lines to print. Separate from [`run`] so tests can check the lines.
pub fn prepare(opts: &DemoOptions) -> Result<(PathBuf, Vec<String>), GatewayError> {
    let dir = absolute(&opts.dir)?;
    std::fs::create_dir_all(&dir).map_err(|e| {
        GatewayError::runtime(format!("creating the demo directory {}", dir.display()), e)
    })?;
    let agencies_path = dir.join("agencies.yaml");
    if !agencies_path.exists() {
        std::fs::write(&agencies_path, SHIPPED_AGENCIES).map_err(|e| {
            GatewayError::runtime(format!("writing {}", agencies_path.display()), e)
        })?;
    }
    let registry = Registry::load(&agencies_path)?;

    let pki_dir = dir.join("pki");
    let pki_err = |e: certs::pki::PkiError| GatewayError::runtime("the demo PKI", e);
    let (pki, _) = DevPki::open_or_create(&pki_dir).map_err(pki_err)?;
    for a in &registry.agencies {
        if !pki.agency_cert_path(&a.id).exists() {
            pki.issue_agency(&a.pki_subject(), 365).map_err(pki_err)?;
        }
    }

    certs::signing::ensure_service_keys(pki.dir())
        .map_err(|e| GatewayError::runtime("the demo PKI's signing keys", e))?;
    let files = write_files(opts, &dir)?;
    let lines = try_lines(opts, &dir, &pki, &registry, &files);
    Ok((files.config, lines))
}

/// What the demo writes besides the PKI.
struct DemoFiles {
    config: PathBuf,
    inventory: PathBuf,
    scan_dir: PathBuf,
    verdicts: PathBuf,
}

/// The scan policies, Gia Lai's inventory and the gateway config.
fn write_files(opts: &DemoOptions, dir: &Path) -> Result<DemoFiles, GatewayError> {
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text)
            .map_err(|e| GatewayError::runtime(format!("writing {}", path.display()), e))
    };
    let mkdir = |path: &Path| {
        std::fs::create_dir_all(path)
            .map_err(|e| GatewayError::runtime(format!("creating {}", path.display()), e))
    };
    let scan_dir = dir.join("policies").join("scan");
    mkdir(&scan_dir)?;
    for (name, text) in SCAN_POLICIES {
        write(&scan_dir.join(name), text)?;
    }
    let verdicts = dir.join("verdicts");
    mkdir(&verdicts)?;
    let inventory = dir.join("inventory.yaml");
    write(
        &inventory,
        &format!(
            concat!(
                "# Written by `popgate demo`: Gia Lai's system, served by the demo itself.\n",
                "systems:\n",
                "  - id: gialai-residence\n",
                "    agency: gialai\n",
                "    agency_kind: province\n",
                "    name: Gia Lai residence registration portal\n",
                "    level: 2\n",
                "    endpoints:\n",
                "      - {{address: '127.0.0.1:{}', service: https, hostname: localhost}}\n",
            ),
            opts.system_port
        ),
    )?;
    let config_path = dir.join("gateway.yaml");
    let config = format!(
        "# Written by `popgate demo`; edit freely, it is reused.\n\
         listen: 127.0.0.1:{port}\n\
         threads: 2\n\
         tls:\n  cert: pki/server.pem\n  key: pki/server.key\n  client_ca: pki/ca.pem\n\
         upstream:\n  url: http://127.0.0.1:{rport}\n  connect_timeout_ms: 2000\n  read_timeout_ms: 10000\n\
         registry: agencies.yaml\n\
         audit:\n  instance: demo-1\n  dir: audit\n  hmac_key: pki/audit-hmac.key\n  seal_key: pki/audit-seal.key\n\
         admin:\n  listen: 127.0.0.1:{aport}\n\
         # Revocation as the CA publishes it (the demo serves CRL and OCSP):\n\
         # a `pki revoke` takes effect within 30 s, no file copied.\n\
         revocation:\n  crl: {{urls: [\"http://127.0.0.1:{vport}/crl.der\"], distribution_points: false, refresh_s: 30}}\n  \
         ocsp: {{responder: \"http://127.0.0.1:{vport}/ocsp\", max_age_s: 30}}\n\
         # Gia Lai may connect only with a current, passing popscan verdict.\n\
         admission:\n  verdicts_dir: verdicts\n  trusted_keys: [pki/verdict-signing.pub]\n  \
         require: {{agencies: [gialai]}}\n  poll_interval_ms: 500\n",
        port = opts.port,
        rport = opts.registry_port,
        aport = opts.admin_port,
        vport = opts.revocation_port
    );
    write(&config_path, &config)?;
    Ok(DemoFiles {
        config: config_path,
        inventory,
        scan_dir,
        verdicts,
    })
}

/// The commands to paste, in the order they tell the story.
fn try_lines(
    opts: &DemoOptions,
    dir: &Path,
    pki: &DevPki,
    registry: &Registry,
    files: &DemoFiles,
) -> Vec<String> {
    let (inventory, scan_dir, verdicts) = (&files.inventory, &files.scan_dir, &files.verdicts);
    let curl = |agency: &str, extra: &str, path: &str| {
        format!(
            "curl --cert {c} --key {k} --cacert {ca} {extra}https://localhost:{port}{path}",
            c = pki.agency_cert_path(agency).display(),
            k = pki.agency_key_path(agency).display(),
            ca = pki.ca_cert_path().display(),
            port = opts.port,
        )
    };
    let suspended = registry
        .agencies
        .iter()
        .find(|a| a.status == AgencyStatus::Suspended)
        .map(|a| a.id.clone())
        .unwrap_or_else(|| "saomai-telecom".into());
    vec![
        "# 1. allowed: Hà Nội looks up a citizen, stating why (200)".to_owned(),
        curl(
            "hanoi",
            "-H 'X-Purpose: ho so dang ky thuong tru' ",
            &format!("/v1/citizens/{DEMO_CITIZEN}"),
        ),
        "# 2. forbidden route: Hà Nam may not read residence records (403 route_not_allowed)"
            .to_owned(),
        curl(
            "hanam",
            "-H 'X-Purpose: kiem tra' ",
            &format!("/v1/citizens/{DEMO_CITIZEN}/residence"),
        ),
        format!("# 3. suspended agency: {suspended} (403 agency_suspended)"),
        curl(
            &suspended,
            "-X POST -H 'content-type: application/json' -d '{\"full_name\":\"x\",\"date_of_birth\":\"2000-01-01\"}' ",
            &format!("/v1/citizens/{DEMO_CITIZEN}/verify"),
        ),
        "# 4. no client certificate: the TLS handshake itself fails".to_owned(),
        format!(
            "curl --cacert {} https://localhost:{}/v1/citizens/{DEMO_CITIZEN}",
            pki.ca_cert_path().display(),
            opts.port
        ),
        "# 5. operations: readiness and Prometheus metrics".to_owned(),
        format!("curl -s http://127.0.0.1:{}/readyz", opts.admin_port),
        format!(
            "curl -s http://127.0.0.1:{}/metrics | grep ^popgate_requests_total",
            opts.admin_port
        ),
        "# 6. admission: Gia Lai has no compliance verdict yet (403 not_compliant)".to_owned(),
        curl(
            "gialai",
            "-H 'X-Purpose: dang ky cu tru' ",
            &format!("/v1/citizens/{DEMO_CITIZEN}"),
        ),
        format!(
            "#    audit its system (https://localhost:{}) and sign the verdict, then repeat the curl (200)",
            opts.system_port
        ),
        format!(
            "cargo run -q -p scanner --bin popscan -- scan --inventory {inv} --policies {pol} \\\n    --trust-bundle {ca} --sign-key {key} --verdicts-dir {ver} --format table",
            inv = inventory.display(),
            pol = scan_dir.display(),
            ca = pki.ca_cert_path().display(),
            key = pki.dir().join("verdict-signing.key").display(),
            ver = verdicts.display(),
        ),
        "# 7. quota: Hà Nam may make 2 requests a second, in bursts of 5: the burst passes (200),\n#    then 429 quota_exceeded with Retry-After".to_owned(),
        format!(
            "for i in $(seq 8); do {} -s -o /dev/null -w '%{{http_code}} '; done; echo",
            curl(
                "hanam",
                "-H 'X-Purpose: kiem tra' ",
                &format!("/v1/citizens/{DEMO_CITIZEN}"),
            )
        ),
        format!(
            "# 8. revocation as the CA publishes it (CRL and OCSP, fetched; no file copied): revoke\n#    Hà Nội's certificate; within 30 s the curl of step 1 fails: 403 cert_revoked (OCSP)\n#    or a refused handshake (fetched CRL). Re-issue with `pki issue --agency hanoi` afterwards\n{exe} pki revoke --dir {pki} --cert {cert}",
            exe = popgate_exe(),
            pki = pki.dir().display(),
            cert = pki.agency_cert_path("hanoi").display(),
        ),
        "# 9. the audit trail: integrity, and who looked up this citizen".to_owned(),
        format!(
            "{exe} audit verify {dir}/audit --key {pki}/audit-seal.pub",
            exe = popgate_exe(),
            dir = dir.display(),
            pki = pki.dir().display()
        ),
        format!(
            "{exe} audit search --citizen {DEMO_CITIZEN} --dir {dir}/audit --hmac-key {pki}/audit-hmac.key",
            exe = popgate_exe(),
            dir = dir.display(),
            pki = pki.dir().display()
        ),
    ]
}

/// This binary's path, so printed commands work when pasted.
fn popgate_exe() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "popgate".into())
}

fn absolute(p: &Path) -> Result<PathBuf, GatewayError> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| GatewayError::runtime("finding the current directory", e))
}

fn check_free(addr: SocketAddr, flag: &str) -> Result<(), GatewayError> {
    TcpListener::bind(addr).map(drop).map_err(|e| {
        GatewayError::runtime(
            format!("cannot listen on {addr}"),
            format!("{e}; pick another port with {flag}"),
        )
    })
}

/// Runs the demo until Ctrl-C.
pub fn run(opts: &DemoOptions) -> Result<(), GatewayError> {
    let gw_addr: SocketAddr = ([127, 0, 0, 1], opts.port).into();
    let reg_addr: SocketAddr = ([127, 0, 0, 1], opts.registry_port).into();
    check_free(gw_addr, "--port")?;
    check_free(reg_addr, "--registry-port")?;
    check_free(([127, 0, 0, 1], opts.admin_port).into(), "--admin-port")?;
    check_free(([127, 0, 0, 1], opts.system_port).into(), "--system-port")?;
    let revocation_addr: SocketAddr = ([127, 0, 0, 1], opts.revocation_port).into();
    check_free(revocation_addr, "--revocation-port")?;
    let (config_path, lines) = prepare(opts)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| GatewayError::runtime("starting the demo runtime", e))?;
    let pki_dir = absolute(&opts.dir)?.join("pki");
    let system_addr: SocketAddr = ([127, 0, 0, 1], opts.system_port).into();
    crate::agency_system::start(
        &rt,
        system_addr,
        &pki_dir.join("server.pem"),
        &pki_dir.join("server.key"),
    )
    .map_err(|e| GatewayError::runtime("starting the demo agency system", e))?;
    let listener = rt
        .block_on(crate::synthetic_registry::bind(reg_addr))
        .map_err(|e| GatewayError::runtime(format!("synthetic registry on {reg_addr}"), e))?;
    let revocation = rt
        .block_on(tokio::net::TcpListener::bind(revocation_addr))
        .map_err(|e| {
            GatewayError::runtime(format!("CRL and OCSP publisher on {revocation_addr}"), e)
        })?;
    let revocation_dir = pki_dir.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            tokio::spawn(async move {
                if let Err(e) = gateway::crl_publisher::serve_revocation(
                    revocation,
                    revocation_dir,
                    std::time::Duration::from_secs(30),
                )
                .await
                {
                    tracing::error!(error = %e, "CRL and OCSP publisher stopped");
                }
            });
            if let Err(e) = crate::synthetic_registry::serve(listener).await {
                tracing::error!(error = %e, "synthetic registry stopped");
            }
        })
    });

    println!("popgate demo");
    println!("  synthetic population registry: http://{reg_addr} (synthetic data only)");
    println!(
        "  gateway (mutual TLS):          https://localhost:{}",
        opts.port
    );
    println!(
        "  Gia Lai's system (to audit):   https://localhost:{}",
        opts.system_port
    );
    println!("  dev CA's CRL and OCSP:         http://{revocation_addr}/crl.der, /ocsp");
    println!("  config:                        {}", config_path.display());
    println!("\nTry these (Ctrl-C stops both):\n");
    for l in &lines {
        println!("{l}");
    }
    println!();
    gateway::serve::run(&config_path)
}

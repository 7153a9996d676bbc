//! `popgate`: the command line. Parses arguments, sets up logging, and maps
//! every error to a message and an exit code in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use certs::pki::DevPki;
use gateway::config::GatewayConfig;
use gateway::registry::Registry;

#[derive(Parser)]
#[command(
    name = "popgate",
    version,
    about = "Mutual-TLS gateway in front of the national population registry",
    long_about = "popgate admits agencies that prove who they are with a client certificate, \
checks each request against the agency registry (route, method, purpose), and forwards \
what is allowed to the population registry.\n\n\
Quick start:  popgate demo\n\
Validate:     popgate check-config --config policies/gateway.yaml\n\
Run:          popgate serve --config policies/gateway.yaml\n\n\
Exit codes: 0 ok, 1 runtime failure, 2 configuration or usage error."
)]
struct Cli {
    /// Log format: human-readable, or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "policies/gateway.yaml")]
        config: PathBuf,
    },
    /// Validate the config, the agency registry, and every certificate, key
    /// and CRL they name; errors give file:line:column.
    CheckConfig {
        #[arg(long, default_value = "policies/gateway.yaml")]
        config: PathBuf,
    },
    /// Development PKI: CA, server and agency certificates, CRL.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// The audit log: verify its integrity, or list who accessed a citizen.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run the embedded synthetic population registry (the default upstream).
    RegistryDemo {
        #[arg(long, default_value = "127.0.0.1:8480")]
        listen: std::net::SocketAddr,
    },
    /// Everything on loopback in one command: PKI, config, synthetic
    /// registry, gateway, and curl lines to try.
    Demo {
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 8443)]
        port: u16,
        #[arg(long, default_value_t = 8480)]
        registry_port: u16,
        #[arg(long, default_value_t = 8481)]
        admin_port: u16,
        /// Port of the demo agency system that popscan audits.
        #[arg(long, default_value_t = 8482)]
        system_port: u16,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every record's hash, every link, the segment order and every
    /// seal. Exit 0 with a summary, or 1 naming the first bad file:line.
    Verify {
        /// The audit directory (audit.dir in gateway.yaml).
        dir: PathBuf,
        /// The seal public key (audit-seal.pub from `popgate pki init`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Who accessed this citizen's data, when, and for which purpose.
    Search {
        #[arg(long)]
        citizen: String,
        #[arg(long)]
        dir: PathBuf,
        /// The citizen-reference HMAC key (audit.hmac_key in gateway.yaml).
        #[arg(long)]
        hmac_key: PathBuf,
        /// From this date or time (YYYY-MM-DD or RFC 3339, UTC), inclusive.
        #[arg(long)]
        since: Option<String>,
        /// Up to this date or time, exclusive.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        agency: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA, a loopback server certificate, an empty CRL, and one
    /// client certificate per agency in the registry.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "policies/agencies.yaml")]
        agencies: PathBuf,
        /// Validity of the agency certificates, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Issue (or re-issue) one agency's client certificate.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        agency: String,
        #[arg(long, default_value = "policies/agencies.yaml")]
        agencies: PathBuf,
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke a certificate this PKI issued and re-sign the CRL. Running
    /// gateways must reload or restart to see the new CRL.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        cert: PathBuf,
    },
    /// Publish the PKI's CRL over HTTP (GET /crl.der, /crl.pem) where its
    /// certificates' CRL distribution point says it is.
    ServeCrl {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8489")]
        listen: std::net::SocketAddr,
    },
}

/// An error the CLI reports: a message and an exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<gateway::config::ConfigError> for Failure {
    fn from(e: gateway::config::ConfigError) -> Self {
        Failure {
            code: 2,
            message: e.to_string(),
        }
    }
}

impl From<gateway::error::GatewayError> for Failure {
    fn from(e: gateway::error::GatewayError) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<certs::pki::PkiError> for Failure {
    fn from(e: certs::pki::PkiError) -> Self {
        Failure {
            code: 1,
            message: e.to_string(),
        }
    }
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("POPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn subjects(agencies: &std::path::Path) -> Result<Registry, Failure> {
    Ok(Registry::load(agencies)?)
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => gateway::serve::run(&config)?,
        Command::CheckConfig { config } => {
            let c = GatewayConfig::load(&config)?;
            let (registry, _) = c.check()?;
            println!(
                "{}: ok ({} agencies, {} routes; listen {}; upstream {})",
                config.display(),
                registry.agencies.len(),
                registry.routes.len(),
                c.listen,
                c.upstream.url
            );
        }
        Command::Pki(PkiCommand::Init {
            dir,
            agencies,
            days,
        }) => {
            let registry = subjects(&agencies)?;
            let pki = DevPki::create(&dir)?;
            certs::signing::ensure_service_keys(&dir).map_err(|e| Failure {
                code: 1,
                message: e.to_string(),
            })?;
            // Issue everything before printing anything, so a closed stdout
            // can never leave a half-made PKI behind.
            let mut issued = Vec::new();
            for a in &registry.agencies {
                issued.push((a.id.clone(), pki.issue_agency(&a.pki_subject(), days)?));
            }
            println!("CA:     {}", pki.ca_cert_path().display());
            println!(
                "audit:  {} (seal), {} (citizen HMAC)",
                dir.join("audit-seal.key").display(),
                dir.join("audit-hmac.key").display()
            );
            println!(
                "verdicts: {} (popscan signs), {} (popgate admission trusts)",
                dir.join("verdict-signing.key").display(),
                dir.join("verdict-signing.pub").display()
            );
            println!("server: {}", pki.server_cert_path().display());
            println!("CRL:    {}", pki.crl_path().display());
            for (id, cert) in issued {
                println!(
                    "agency {:<16} {} (serial {})",
                    id,
                    cert.cert_path.display(),
                    cert.serial_hex
                );
            }
        }
        Command::Pki(PkiCommand::Issue {
            dir,
            agency,
            agencies,
            days,
        }) => {
            let registry = subjects(&agencies)?;
            let a = registry.agency(&agency).ok_or_else(|| Failure {
                code: 2,
                message: format!("{}: no agency with id {agency:?}", agencies.display()),
            })?;
            let pki = DevPki::open(&dir)?;
            let issued = pki.issue_agency(&a.pki_subject(), days)?;
            println!(
                "{} (serial {}, valid until {})",
                issued.cert_path.display(),
                issued.serial_hex,
                issued.not_after
            );
        }
        Command::Pki(PkiCommand::Revoke { dir, cert }) => {
            let pki = DevPki::open(&dir)?;
            let r = pki.revoke(&cert)?;
            println!(
                "revoked serial {} (agency {}); CRL re-signed: {}",
                r.serial_hex,
                r.agency,
                r.crl_path.display()
            );
        }
        Command::Audit(AuditCommand::Verify { dir, key }) => {
            let key = certs::signing::load_verifying_key(&key).map_err(|e| Failure {
                code: 2,
                message: e.to_string(),
            })?;
            match gateway::audit::verify::verify(&dir, &key) {
                Ok(s) => println!(
                    "{}: ok — {} records in {} segments ({} sealed, {} checkpoints; {} newest records not yet checkpointed), {} .. {}",
                    dir.display(),
                    s.records,
                    s.segments,
                    s.sealed,
                    s.checkpoints,
                    s.unvouched,
                    s.first_time.as_deref().unwrap_or("-"),
                    s.last_time.as_deref().unwrap_or("-")
                ),
                Err(finding) => {
                    return Err(Failure {
                        code: 1,
                        message: format!("audit log NOT intact: {finding}"),
                    })
                }
            }
        }
        Command::Audit(AuditCommand::Search {
            citizen,
            dir,
            hmac_key,
            since,
            until,
            agency,
            format,
        }) => {
            let usage = |m: String| Failure {
                code: 2,
                message: m,
            };
            let key = gateway::audit::load_hmac_key(&hmac_key).map_err(|e| usage(e.to_string()))?;
            let bound = |v: Option<String>, flag: &str| -> Result<Option<String>, Failure> {
                match v {
                    None => Ok(None),
                    Some(t) if t.len() == 10 && certs::dates::parse_date(&t).is_some() => {
                        Ok(Some(t))
                    }
                    // Records are UTC with milliseconds: compare in that form.
                    Some(t) if certs::dates::parse_rfc3339(&t).is_some() => {
                        Ok(certs::dates::parse_rfc3339(&t).map(certs::dates::rfc3339_millis))
                    }
                    Some(t) => Err(usage(format!(
                        "{flag} {t:?}: expected YYYY-MM-DD or an RFC 3339 UTC time"
                    ))),
                }
            };
            let filter = gateway::audit::search::Filter {
                since: bound(since, "--since")?,
                until: bound(until, "--until")?,
                agency,
            };
            let r = gateway::audit::record::citizen_ref(&key, &citizen);
            let hits = gateway::audit::search::search(&dir, &r, &filter).map_err(|m| Failure {
                code: 1,
                message: m,
            })?;
            print_hits(&hits, format);
        }
        Command::Pki(PkiCommand::ServeCrl { dir, listen }) => {
            let pki = DevPki::open(&dir)?;
            let rt = tokio::runtime::Runtime::new().map_err(|e| Failure {
                code: 1,
                message: format!("runtime: {e}"),
            })?;
            rt.block_on(async {
                let l = gateway::crl_publisher::bind(listen).await.map_err(|e| Failure {
                    code: 1,
                    message: format!("{listen}: cannot listen: {e}"),
                })?;
                tracing::info!(%listen, crl = %pki.crl_path().display(), "publishing the CRL at /crl.der and /crl.pem");
                tokio::select! {
                    r = gateway::crl_publisher::serve(l, pki.crl_path()) => r.map_err(|e| Failure { code: 1, message: e.to_string() }),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })?;
        }
        Command::RegistryDemo { listen } => {
            let rt = tokio::runtime::Runtime::new().map_err(|e| Failure {
                code: 1,
                message: format!("runtime: {e}"),
            })?;
            rt.block_on(async {
                let l = demo::synthetic_registry::bind(listen)
                    .await
                    .map_err(|e| Failure {
                        code: 1,
                        message: format!("{listen}: cannot listen: {e}"),
                    })?;
                tracing::info!(%listen, "synthetic population registry (synthetic data only)");
                tokio::select! {
                    r = demo::synthetic_registry::serve(l) => r.map_err(|e| Failure { code: 1, message: e.to_string() }),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })?;
        }
        Command::Demo {
            dir,
            port,
            registry_port,
            admin_port,
            system_port,
        } => demo::run(&demo::DemoOptions {
            dir,
            port,
            registry_port,
            admin_port,
            system_port,
        })?,
    }
    Ok(())
}

fn print_hits(hits: &[gateway::audit::search::Hit], format: OutputFormat) {
    use gateway::audit::record::Decision;
    let decision = |h: &gateway::audit::search::Hit| match h.access.decision {
        Decision::Allow => "allow",
        Decision::Refuse => "refuse",
    };
    // An allowed request's ending: `completed`, what cut it short, or
    // `unknown` when no outcome was recorded (in flight, or a crash).
    let ending = |h: &gateway::audit::search::Hit| -> String {
        match (&h.outcome, h.access.decision) {
            (Some(o), _) => o.outcome.clone(),
            (None, Decision::Refuse) => h.access.code.clone().unwrap_or_default(),
            (None, Decision::Allow) if h.access.status.is_some() => "completed".into(),
            (None, Decision::Allow) => "unknown".into(),
        }
    };
    let status = |h: &gateway::audit::search::Hit| h.status().map(|s| s.to_string());
    match format {
        OutputFormat::Json => {
            let rows: Vec<_> = hits
                .iter()
                .map(|h| {
                    let mut v = serde_json::to_value(&h.access).unwrap_or_default();
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("seq".into(), h.seq.into());
                        obj.insert("status".into(), h.status().into());
                        obj.insert("ending".into(), ending(h).into());
                        obj.insert(
                            "outcome".into(),
                            serde_json::to_value(&h.outcome).unwrap_or_default(),
                        );
                    }
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        }
        OutputFormat::Csv => {
            println!("time,agency,route,purpose,decision,ending,status,request_id,cert_serial");
            for h in hits {
                let a = &h.access;
                println!(
                    "{}",
                    csvcell::row(&[
                        a.time.clone(),
                        a.agency.clone().unwrap_or_default(),
                        a.route.clone().unwrap_or_default(),
                        a.purpose.clone().unwrap_or_default(),
                        decision(h).to_owned(),
                        ending(h),
                        status(h).unwrap_or_default(),
                        a.request_id.clone(),
                        a.cert
                            .as_ref()
                            .map(|c| c.serial.clone())
                            .unwrap_or_default(),
                    ])
                );
            }
        }
        OutputFormat::Table => {
            println!(
                "{:<24} {:<16} {:<18} {:<8} {:<20} {:<6} PURPOSE",
                "TIME (UTC)", "AGENCY", "ROUTE", "DECISION", "ENDING", "STATUS"
            );
            for h in hits {
                let a = &h.access;
                println!(
                    "{:<24} {:<16} {:<18} {:<8} {:<20} {:<6} {}",
                    a.time,
                    a.agency.as_deref().unwrap_or("-"),
                    a.route.as_deref().unwrap_or("-"),
                    decision(h),
                    ending(h),
                    status(h).unwrap_or_else(|| "-".into()),
                    a.purpose.as_deref().unwrap_or("-")
                );
            }
            println!("{} access(es)", hits.len());
        }
    }
}

/// Reporting commands behave like other Unix tools when their output is cut
/// short (`popgate audit search … | head`): they end quietly instead of
/// panicking on EPIPE. The servers keep SIGPIPE ignored, as Rust sets it, so
/// a client closing its socket can never kill the gateway.
fn default_sigpipe_for_reports(command: &Command) {
    if !matches!(
        command,
        Command::Serve { .. }
            | Command::Demo { .. }
            | Command::RegistryDemo { .. }
            | Command::Pki(PkiCommand::ServeCrl { .. })
    ) {
        // SAFETY: setting a signal disposition before any thread is started.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    default_sigpipe_for_reports(&cli.command);
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("popgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

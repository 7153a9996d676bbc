//! `popgate`: the command line. Parses arguments, sets up logging, and maps
//! every error to a message and an exit code in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use certs::pki::{AgencySubject, DevPki};
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
    },
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
            println!("CA:     {}", pki.ca_cert_path().display());
            println!("server: {}", pki.server_cert_path().display());
            println!("CRL:    {}", pki.crl_path().display());
            for a in &registry.agencies {
                let issued = pki.issue_agency(
                    &AgencySubject {
                        id: a.id.clone(),
                        name: a.name.clone(),
                    },
                    days,
                )?;
                println!(
                    "agency {:<16} {} (serial {})",
                    a.id,
                    issued.cert_path.display(),
                    issued.serial_hex
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
            let issued = pki.issue_agency(
                &AgencySubject {
                    id: a.id.clone(),
                    name: a.name.clone(),
                },
                days,
            )?;
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
        Command::RegistryDemo { listen } => {
            let rt = tokio::runtime::Runtime::new().map_err(|e| Failure {
                code: 1,
                message: format!("runtime: {e}"),
            })?;
            rt.block_on(async {
                let l = gateway::synthetic_registry::bind(listen)
                    .await
                    .map_err(|e| Failure {
                        code: 1,
                        message: format!("{listen}: cannot listen: {e}"),
                    })?;
                tracing::info!(%listen, "synthetic population registry (synthetic data only)");
                tokio::select! {
                    r = gateway::synthetic_registry::serve(l) => r.map_err(|e| Failure { code: 1, message: e.to_string() }),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                }
            })?;
        }
        Command::Demo {
            dir,
            port,
            registry_port,
        } => gateway::demo::run(&gateway::demo::DemoOptions {
            dir,
            port,
            registry_port,
        })?,
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("popgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

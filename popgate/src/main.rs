//! `popgate`: the command line. Parses arguments, sets up logging, and maps
//! every error to a message and an exit code in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use commandline::LogFormat;

mod audit;
mod pki;

/// Measured, not assumed: glibc malloc was ~17 % of popgate's samples on the
/// keep-alive path (its arena locks and fastbin consolidation included), and
/// mimalloc cut CPU per request by 8–13 % in alternating runs (BENCHMARKS.md).
/// Without transparent huge pages (`no_thp`): with them an idle connection
/// cost 30 KiB instead of 28, for no CPU gained.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Print the shell completion script (bash, zsh, fish, elvish,
    /// powershell) to stdout, e.g. `popgate completions bash >
    /// /usr/share/bash-completion/completions/popgate`.
    Completions { shell: commandline::Shell },
    /// Write a man page for popgate and each subcommand into a directory.
    Man {
        #[arg(long)]
        dir: PathBuf,
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
        /// Port of the dev CA's CRL and OCSP publisher (its certificates
        /// name 8489).
        #[arg(long, default_value_t = 8489)]
        revocation_port: u16,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every record's hash, every link, the segment order, every
    /// seal and checkpoint: of a local directory, of the cluster's store
    /// (--store), or both (then also compared record by record). Exit 0
    /// with a summary, or 1 naming the first bad file:line or store row.
    Verify {
        /// The audit directory (audit.dir in gateway.yaml).
        #[arg(required_unless_present = "store")]
        dir: Option<PathBuf>,
        /// The seal public key (audit-seal.pub from `popgate pki init`);
        /// repeat it when instances seal with different keys.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
        /// The audit store (audit.store.url), e.g.
        /// postgres://auditor@db.internal/popgate.
        #[arg(long)]
        store: Option<String>,
        /// Only this instance of the store.
        #[arg(long, requires = "store")]
        instance: Option<String>,
        /// The CA that signed the store's TLS certificate (audit.store.ca):
        /// connect over TLS and verify it.
        #[arg(long, requires = "store")]
        store_ca: Option<PathBuf>,
    },
    /// Ship a local audit directory into the store and exit once every
    /// vouched-for record is there: for the log of an instance that no
    /// longer runs (a running popgate ships its own).
    Ship {
        /// The audit directory.
        dir: PathBuf,
        /// The instance whose log it is (its audit.instance).
        #[arg(long)]
        instance: String,
        #[arg(long)]
        store: String,
        /// The CA that signed the store's TLS certificate (audit.store.ca).
        #[arg(long)]
        store_ca: Option<PathBuf>,
    },
    /// Who accessed this citizen's data, when, and for which purpose.
    Search {
        #[arg(long)]
        citizen: String,
        /// One instance's audit directory.
        #[arg(long, required_unless_present = "store", conflicts_with = "store")]
        dir: Option<PathBuf>,
        /// Every instance, from the cluster's audit store (audit.store.url).
        #[arg(long)]
        store: Option<String>,
        /// The CA that signed the store's TLS certificate (audit.store.ca).
        #[arg(long, requires = "store")]
        store_ca: Option<PathBuf>,
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
    /// Publish the dev CA's revocation status: the CRL (/crl.der, /crl.pem)
    /// and OCSP answers (/ocsp), where its certificates say to look.
    ServeRevocation {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8489")]
        listen: std::net::SocketAddr,
        /// How long each OCSP answer is current (its nextUpdate): the
        /// longest a revocation takes to reach a gateway that caches it.
        #[arg(long, default_value_t = 60)]
        ocsp_validity_s: u64,
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

fn subjects(agencies: &std::path::Path) -> Result<Registry, Failure> {
    Ok(Registry::load(agencies)?)
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => gateway::serve::run(&config)?,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            commandline::completions(Cli::command(), shell, &mut std::io::stdout());
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            let pages = commandline::man_pages(Cli::command(), &dir).map_err(|e| Failure {
                code: 1,
                message: format!("{}: {e}", dir.display()),
            })?;
            println!("{} man pages written to {}", pages.len(), dir.display());
        }
        Command::CheckConfig { config } => check_config(&config)?,
        Command::Pki(PkiCommand::Init {
            dir,
            agencies,
            days,
        }) => pki::init(&dir, &agencies, days)?,
        Command::Pki(PkiCommand::Issue {
            dir,
            agency,
            agencies,
            days,
        }) => pki::issue(&dir, &agency, &agencies, days)?,
        Command::Pki(PkiCommand::Revoke { dir, cert }) => pki::revoke(&dir, &cert)?,
        Command::Pki(PkiCommand::ServeRevocation {
            dir,
            listen,
            ocsp_validity_s,
        }) => {
            DevPki::open(&dir)?;
            tracing::info!(%listen, dir = %dir.display(), "publishing the CRL at /crl.der and /crl.pem, answering OCSP at /ocsp");
            let validity = std::time::Duration::from_secs(ocsp_validity_s.clamp(1, 86_400));
            serve_until_ctrl_c(listen, |l| {
                gateway::crl_publisher::serve_revocation(l, dir, validity)
            })?
        }
        Command::Pki(PkiCommand::ServeCrl { dir, listen }) => {
            let crl = DevPki::open(&dir)?.crl_path();
            tracing::info!(%listen, crl = %crl.display(), "publishing the CRL at /crl.der and /crl.pem");
            serve_until_ctrl_c(listen, |l| gateway::crl_publisher::serve(l, crl))?
        }
        Command::Audit(AuditCommand::Verify {
            dir,
            key,
            store,
            instance,
            store_ca,
        }) => audit::verify(
            dir.as_deref(),
            &key,
            store.as_deref().map(|url| audit::StoreArg {
                url,
                ca: store_ca.as_deref(),
            }),
            instance.as_deref(),
        )?,
        Command::Audit(AuditCommand::Ship {
            dir,
            instance,
            store,
            store_ca,
        }) => audit::ship(
            &dir,
            &instance,
            audit::StoreArg {
                url: &store,
                ca: store_ca.as_deref(),
            },
        )?,
        Command::Audit(AuditCommand::Search {
            citizen,
            dir,
            store,
            store_ca,
            hmac_key,
            since,
            until,
            agency,
            format,
        }) => audit::search(&audit::SearchArgs {
            citizen,
            dir,
            store,
            store_ca,
            hmac_key,
            since,
            until,
            agency,
            format,
        })?,
        Command::RegistryDemo { listen } => {
            tracing::info!(%listen, "synthetic population registry (synthetic data only)");
            serve_until_ctrl_c(listen, demo::synthetic_registry::serve)?
        }
        Command::Demo {
            dir,
            port,
            registry_port,
            admin_port,
            system_port,
            revocation_port,
        } => demo::run(&demo::DemoOptions {
            dir,
            port,
            registry_port,
            admin_port,
            system_port,
            revocation_port,
        })?,
    }
    Ok(())
}

/// `popgate check-config`: everything `serve` would load, loaded.
fn check_config(config: &std::path::Path) -> Result<(), Failure> {
    let c = GatewayConfig::load(config)?;
    let (registry, _) = c.check()?;
    println!(
        "{}: ok ({} agencies, {} routes; listen {}; upstream {})",
        config.display(),
        registry.agencies.len(),
        registry.routes.len(),
        c.listen,
        c.upstream.url
    );
    Ok(())
}

/// Runs a small HTTP server on `listen` until it fails or Ctrl-C.
fn serve_until_ctrl_c<F, Fut>(listen: std::net::SocketAddr, serve: F) -> Result<(), Failure>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let fail = |message: String| Failure { code: 1, message };
    let rt = tokio::runtime::Runtime::new().map_err(|e| fail(format!("runtime: {e}")))?;
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| fail(format!("{listen}: cannot listen: {e}")))?;
        tokio::select! {
            r = serve(l) => r.map_err(|e| fail(e.to_string())),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
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
            | Command::Pki(PkiCommand::ServeRevocation { .. })
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
    commandline::init_logging(cli.log_format, "POPGATE_LOG");
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("popgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

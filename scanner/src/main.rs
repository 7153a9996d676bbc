//! `popscan`: audit agency systems against the security policy of their
//! level, and sign the verdicts popgate admits agencies on.
//!
//! This file only parses arguments, calls the library and maps results to
//! output and exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use scanner::inventory::Inventory;
use scanner::policy::{self, PolicySet};
use scanner::probe::tls::{self, ProbeLimits, Target};
use scanner::report::{self, Report};
use scanner::scan::{self, NmapEvidence, ScanOptions};
use scanner::waiver::Waivers;

const EXIT_CODES: &str = "\
Exit codes:
  0  every system scanned is compliant (or: the command succeeded)
  1  at least one system is not compliant (or: a verdict does not verify)
  2  usage or input error: bad arguments, inventory, policy, waivers, nmap XML
  3  no system failed, but at least one could not be scanned (unreachable,
     timed out, evidence missing) — an unscanned system is never a pass";

#[derive(Parser)]
#[command(
    name = "popscan",
    version,
    about = "Audit agency systems (TLS, certificates, HTTP headers, open ports) against the \
             security policy of their level, and sign the verdicts popgate admits agencies on.",
    long_about = None,
    after_help = EXIT_CODES,
)]
struct Cli {
    /// stderr messages: `human` (default), or `json`, one object per line,
    /// for a journal (a systemd timer): each system scanned, verdicts
    /// written, and failures. The progress bar is drawn only on a terminal.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

use commandline::LogFormat;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Junit,
    Csv,
    Html,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProbeFormat {
    Table,
    Json,
}

/// `popscan scan`'s arguments.
#[derive(clap::Args)]
struct ScanArgs {
    #[arg(long, default_value = "policies/inventory.yaml")]
    inventory: PathBuf,
    /// Directory with level-1.yaml … level-5.yaml.
    #[arg(long, default_value = "policies/scan")]
    policies: PathBuf,
    /// Waivers file (per system and control, with approver and expiry).
    #[arg(long)]
    waivers: Option<PathBuf>,
    /// nmap XML output (`nmap -oX`) to use as evidence; repeatable.
    #[arg(long = "nmap", value_name = "FILE")]
    nmap: Vec<PathBuf>,
    /// Run nmap (-sT -sV --script ssl-enum-ciphers,ssl-cert) on the inventory's
    /// hosts and ports, and use its output as evidence too.
    #[arg(long)]
    run_nmap: bool,
    /// Do not probe live; judge on nmap XML only.
    #[arg(long)]
    no_probe: bool,
    /// Trust bundle (PEM) replacing every policy's `cert_chain_trusted` bundle.
    #[arg(long)]
    trust_bundle: Option<PathBuf>,
    /// Systems scanned at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds allowed for each connection attempt and each exchange.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Scan only shard I of N (e.g. 2/4), split by agency so roll-ups stay whole.
    #[arg(long, value_parser = parse_shard)]
    shard: Option<(u32, u32)>,
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Ed25519 private key (PKCS#8 PEM, from `popgate pki init`) to sign verdicts.
    #[arg(long, requires = "verdicts_dir")]
    sign_key: Option<PathBuf>,
    /// Where signed verdicts go: one per system, one roll-up per agency.
    #[arg(long, requires = "sign_key")]
    verdicts_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Scan the systems in an inventory and judge each against its level's policy.
    ///
    /// Evidence comes from live probes (TCP connect to the system's ports and the
    /// policy's forbidden ports, crafted TLS handshakes, one HTTPS GET) and/or
    /// nmap XML (`--nmap FILE`, or `--run-nmap` to run nmap now).
    ///
    /// Example:
    ///   popscan scan --inventory policies/inventory.yaml --policies policies/scan \
    ///     --waivers policies/waivers.yaml --format html --output report.html \
    ///     --sign-key pki/verdict-signing.key --verdicts-dir verdicts/
    #[command(after_help = EXIT_CODES)]
    Scan(ScanArgs),
    /// Show everything one TLS endpoint offers: protocols, cipher suites (in the
    /// server's order when it enforces one), groups, DHE size, chain, renegotiation,
    /// compression and TLS_FALLBACK_SCSV.
    Probe {
        /// host:port, e.g. 10.0.0.5:443 or [::1]:8443
        target: String,
        /// Server name to send (SNI); defaults to the host when it is a name.
        #[arg(long)]
        sni: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: ProbeFormat,
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Handshakes in flight at once against the endpoint.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// Check and display policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check and display signed verdicts.
    Verdict {
        #[command(subcommand)]
        command: VerdictCommand,
    },
    /// Parse an nmap XML file and print the evidence popscan reads from it (JSON).
    Nmap { file: PathBuf },
    /// Print the shell completion script (bash, zsh, fish, elvish,
    /// powershell) to stdout.
    Completions { shell: commandline::Shell },
    /// Write a man page for popscan and each subcommand into a directory.
    Man {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file (and what it extends), a policy directory, an
    /// inventory or a waivers file; every mistake is reported as file:line:column.
    Validate { path: PathBuf },
    /// Print the effective controls of one security level (after `extends`).
    Show {
        level: u8,
        #[arg(long, default_value = "policies/scan")]
        policies: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: ProbeFormat,
    },
}

#[derive(Subcommand)]
enum VerdictCommand {
    /// Verify a verdict's signature; exit 0 if it verifies, 1 if not.
    Verify {
        file: PathBuf,
        /// Ed25519 public key (SPKI PEM); repeatable.
        #[arg(long, required = true)]
        key: Vec<PathBuf>,
    },
    /// Print a verdict's contents (without verifying it).
    Show { file: PathBuf },
}

fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 2/4")?;
    let i: u32 = i.parse().map_err(|_| format!("{i:?} is not a number"))?;
    let n: u32 = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
    if n == 0 || i == 0 || i > n {
        return Err(format!("shard {i}/{n}: need 1 ≤ I ≤ N"));
    }
    Ok((i, n))
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.1, 600.0))
}

/// A failure with the exit code it maps to.
struct Failure(u8, String);

fn input<E: std::fmt::Display>(e: E) -> Failure {
    Failure(2, e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    commandline::init_logging(cli.log_format, "POPSCAN_LOG");
    let log_format = cli.log_format;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popscan: cannot start runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, msg)) => {
            if log_format == LogFormat::Json {
                tracing::error!(exit_code = code, error = %msg, "popscan failed");
            } else {
                eprintln!("popscan: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Scan(args) => scan_command(args).await,
        Command::Probe {
            target,
            sni,
            format,
            timeout,
            parallel,
        } => probe_command(&target, sni, format, timeout, parallel).await,
        Command::Policy { command } => match command {
            PolicyCommand::Validate { path } => validate(&path),
            PolicyCommand::Show {
                level,
                policies,
                format,
            } => policy_show(level, &policies, format),
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            commandline::completions(Cli::command(), shell, &mut std::io::stdout());
            Ok(0)
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            let pages = commandline::man_pages(Cli::command(), &dir)
                .map_err(|e| Failure(2, format!("{}: {e}", dir.display())))?;
            println!("{} man pages written to {}", pages.len(), dir.display());
            Ok(0)
        }
        Command::Verdict { command } => match command {
            VerdictCommand::Verify { file, key } => verdict_verify(&file, &key),
            VerdictCommand::Show { file } => verdict_show(&file),
        },
        Command::Nmap { file } => {
            let scan = scanner::nmap::parse_file(&file).map_err(input)?;
            let text = serde_json::to_string_pretty(&scan.hosts).map_err(input)? + "\n";
            emit(None, &text)?;
            Ok(0)
        }
    }
}

/// `popscan probe`: everything one TLS endpoint offers.
async fn probe_command(
    target: &str,
    sni: Option<String>,
    format: ProbeFormat,
    timeout: f64,
    parallel: usize,
) -> Result<u8, Failure> {
    let (host, port) = scanner::inventory::split_address(target)
        .ok_or_else(|| Failure(2, format!("{target:?}: expected host:port")))?;
    let addr = scanner::probe::ports::resolve(&host, port)
        .await
        .map_err(|e| Failure(3, e))?;
    let sni = sni.or_else(|| {
        host.parse::<std::net::IpAddr>()
            .is_err()
            .then(|| host.clone())
    });
    let t = Target {
        addr,
        sni,
        connect_timeout: seconds(timeout),
        exchange_timeout: seconds(timeout),
    };
    let started = std::time::Instant::now();
    let ev = tls::probe(t, &ProbeLimits { parallel })
        .await
        .map_err(|e| Failure(3, e.to_string()))?;
    let text = match format {
        ProbeFormat::Json => serde_json::to_string_pretty(&ev).map_err(input)? + "\n",
        ProbeFormat::Table => scanner::probe::tls::render::table(target, &ev, started.elapsed()),
    };
    emit(None, &text)?;
    Ok(0)
}

/// `popscan policy show`: the effective policy of one level.
fn policy_show(level: u8, policies: &Path, format: ProbeFormat) -> Result<u8, Failure> {
    let set = PolicySet::load_dir(policies).map_err(input)?;
    let p = set.for_level(level).ok_or_else(|| {
        Failure(
            2,
            format!("no policy for level {level} in {}", policies.display()),
        )
    })?;
    let text = match format {
        ProbeFormat::Json => serde_json::to_string_pretty(p).map_err(input)? + "\n",
        ProbeFormat::Table => policy_table(p),
    };
    emit(None, &text)?;
    Ok(0)
}

/// `popscan verdict verify`: is this verdict signed by one of these keys?
fn verdict_verify(file: &Path, key: &[PathBuf]) -> Result<u8, Failure> {
    let bytes = std::fs::read(file).map_err(|e| Failure(2, format!("{}: {e}", file.display())))?;
    let keys = key
        .iter()
        .map(|k| certs::signing::load_verifying_key(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(input)?;
    match certs::verdict::verify(&bytes, &keys) {
        Ok(v) => {
            emit(
                None,
                &format!(
                    "{}: signature ok; agency {}{}, result {:?}, valid until {}\n",
                    file.display(),
                    v.agency,
                    v.system
                        .as_deref()
                        .map(|s| format!(", system {s}"))
                        .unwrap_or_default(),
                    v.result,
                    v.valid_until
                )
                .to_lowercase(),
            )?;
            Ok(0)
        }
        Err(e) => Err(Failure(1, format!("{}: {e}", file.display()))),
    }
}

/// `popscan verdict show`: a verdict's content, signature not checked.
fn verdict_show(file: &Path) -> Result<u8, Failure> {
    let bytes = std::fs::read(file).map_err(|e| Failure(2, format!("{}: {e}", file.display())))?;
    let (env, v) = certs::verdict::open_unverified(&bytes)
        .map_err(|e| Failure(2, format!("{}: {e}", file.display())))?;
    let mut text = format!(
        "# key id {} (signature NOT checked; use `popscan verdict verify`)\n",
        env.key_id
    );
    text += &serde_json::to_string_pretty(&v).map_err(input)?;
    text.push('\n');
    emit(None, &text)?;
    Ok(0)
}

/// `popscan scan`: load, gather evidence, judge, report, sign.
async fn scan_command(args: ScanArgs) -> Result<u8, Failure> {
    let ScanArgs {
        inventory,
        policies,
        waivers,
        nmap,
        run_nmap,
        no_probe,
        trust_bundle,
        concurrency,
        timeout,
        shard,
        format,
        output,
        sign_key,
        verdicts_dir,
    } = args;
    let mut inv = Inventory::load(&inventory).map_err(input)?;
    if let Some((i, n)) = shard {
        inv = inv.shard(i, n);
    }
    let set = PolicySet::load_dir(&policies).map_err(input)?;
    let waivers = match &waivers {
        Some(w) => Waivers::load(w).map_err(input)?,
        None => Waivers::default(),
    };
    let key = match &sign_key {
        Some(k) => Some(certs::signing::load_signing_key(k).map_err(input)?),
        None => None,
    };
    if let Some(t) = &trust_bundle {
        if !t.is_file() {
            return Err(Failure(
                2,
                format!("{}: trust bundle not found", t.display()),
            ));
        }
    }
    let mut evidence = NmapEvidence::default();
    for f in &nmap {
        let scan = scanner::nmap::parse_file(f).map_err(input)?;
        evidence.hosts.extend(scan.hosts);
    }
    if run_nmap {
        let file = scanner::nmap_run::run(&inv, &set, seconds(timeout))
            .await
            .map_err(|e| Failure(3, e))?;
        let scan = scanner::nmap::parse_file(&file).map_err(input)?;
        evidence.hosts.extend(scan.hosts);
    }
    if no_probe && evidence.hosts.is_empty() {
        return Err(Failure(
            2,
            "--no-probe needs --nmap FILE or --run-nmap".into(),
        ));
    }
    let opts = ScanOptions {
        live: !no_probe,
        concurrency,
        per_endpoint: 8,
        connect_timeout: seconds(timeout),
        timeout: seconds(timeout),
        trust_bundle,
        now: time::OffsetDateTime::now_utc(),
        shard,
        inventory_path: inventory.display().to_string(),
    };
    let bar = progress_bar(inv.systems.len());
    // A bar on a terminal; elsewhere (a timer's journal) a line per system.
    let progress: scan::Progress = match bar.clone() {
        Some(b) => Arc::new(move |r: &report::SystemReport| {
            b.set_message(r.id.clone());
            b.inc(1);
        }),
        None => Arc::new(|r: &report::SystemReport| {
            tracing::info!(
                system = %r.id,
                agency = %r.agency,
                level = r.level,
                result = ?r.result,
                failed_controls = r.failed_controls().len(),
                errors = r.errors.len(),
                "system scanned"
            );
        }),
    };
    let progress = Some(progress);
    let report = scan::run(&inv, &set, &waivers, &evidence, &opts, progress).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let (Some(key), Some(dir)) = (&key, &verdicts_dir) {
        let verdicts = scanner::verdict::build(&report, opts.now);
        let written =
            scanner::verdict::write_all(dir, &verdicts, key).map_err(|e| Failure(2, e))?;
        tracing::info!(
            verdicts = written.len(),
            dir = %dir.display(),
            "signed verdicts written"
        );
    }
    let to_tty = output.is_none() && std::io::stdout().is_terminal();
    let format = format.unwrap_or(if to_tty { Format::Table } else { Format::Json });
    let text = render(&report, format, to_tty);
    emit(output.as_deref(), &text)?;
    Ok(report.exit_code() as u8)
}

fn render(r: &Report, f: Format, colour: bool) -> String {
    match f {
        Format::Table => report::render_table(r, colour),
        Format::Json => r.to_json() + "\n",
        Format::Junit => report::render_junit(r),
        Format::Csv => report::render_csv(r),
        Format::Html => report::render_html(r),
    }
}

/// Writes to a file or stdout; a closed stdout (`| head`) ends quietly.
fn emit(path: Option<&Path>, text: &str) -> Result<(), Failure> {
    use std::io::Write;
    match path {
        Some(p) => certs::durable_file::write(p, text.as_bytes(), false)
            .map_err(|e| Failure(2, format!("{}: {e}", p.display()))),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(Failure(2, format!("stdout: {e}"))),
            }
        }
    }
}

fn progress_bar(n: usize) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} systems {msg}")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.enable_steady_tick(Duration::from_millis(120));
    Some(b)
}

/// `policy validate` accepts any of popscan's YAML inputs and tells which it is.
fn validate(path: &Path) -> Result<u8, Failure> {
    if path.is_dir() {
        let set = PolicySet::load_dir(path).map_err(input)?;
        let levels: Vec<String> = set.by_level.keys().map(|l| l.to_string()).collect();
        emit(
            None,
            &format!(
                "{}: ok, policies for levels {}\n",
                path.display(),
                levels.join(", ")
            ),
        )?;
        return Ok(0);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure(2, format!("{}: cannot read: {e}", path.display())))?;
    let top_key = |k: &str| text.lines().any(|l| l.starts_with(&format!("{k}:")));
    let summary = if top_key("systems") {
        let inv = Inventory::load(path).map_err(input)?;
        format!("inventory with {} systems", inv.systems.len())
    } else if top_key("waivers") {
        let w = Waivers::load(path).map_err(input)?;
        format!("{} waivers", w.list.len())
    } else {
        let p = policy::load_policy(path).map_err(input)?;
        format!(
            "policy {} (level {}, {} controls)",
            p.id,
            p.level,
            p.controls.len()
        )
    };
    emit(None, &format!("{}: ok, {summary}\n", path.display()))?;
    Ok(0)
}

fn policy_table(p: &policy::Policy) -> String {
    let mut o = format!(
        "{} — {} (level {}, verdicts valid {} days, sha256 {})\n\n",
        p.id, p.title, p.level, p.validity_days, p.sha256
    );
    for c in &p.controls {
        let params = serde_json::to_string(&c.check).unwrap_or_default();
        o += &format!("{:<26} {:<8} {}\n", c.id, c.severity.name(), c.title);
        o += &format!("    check: {params}\n");
        o += &format!("    why:   {}\n", c.rationale.trim());
        if !c.references.is_empty() {
            o += &format!("    refs:  {}\n", c.references.join("; "));
        }
        o += &format!("    from:  {}\n", c.defined_in.display());
    }
    o
}

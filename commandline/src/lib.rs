//! What popgate and popscan share on the command line: shell completions
//! and man pages generated from the same clap definitions the binaries
//! parse with (so they cannot drift from the options a binary really
//! takes; packages install what these write), and stderr logging.

use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// How stderr messages are written: `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people; colour only on a terminal.
    Human,
    /// One JSON object per line, for a journal or a log collector.
    Json,
}

/// Sends `tracing` events to stderr in `format`, filtered by the
/// environment variable `filter_var` (default `info`).
pub fn init_logging(format: LogFormat, filter_var: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env(filter_var)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes one man page per command and subcommand into `dir`
/// (`popgate.1`, `popgate-audit.1`, `popgate-audit-verify.1`, …) and
/// returns their paths.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    write_page(cmd, "", dir, &mut written)?;
    Ok(written)
}

fn write_page(
    cmd: clap::Command,
    prefix: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let name = if prefix.is_empty() {
        cmd.get_name().to_owned()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    // The page is titled by its full name (`popgate-audit-verify`).
    let cmd = cmd.name(name.clone());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        write_page(sub.clone(), &name, dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .about("a tool")
            .subcommand(
                clap::Command::new("audit")
                    .about("audit things")
                    .subcommand(clap::Command::new("verify").about("verify them")),
            )
            .subcommand(clap::Command::new("serve").about("serve"))
    }

    #[test]
    fn a_page_per_subcommand_and_completions_for_every_shell() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(cli(), dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "tool.1",
                "tool-audit.1",
                "tool-audit-verify.1",
                "tool-serve.1"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("tool-audit-verify.1")).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("verify them"));
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(cli(), shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("serve") && text.contains("audit"), "{shell}");
        }
    }
}

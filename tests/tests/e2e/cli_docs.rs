//! Man pages and shell completions come from the binaries' own clap
//! definitions: a page for every subcommand, and completion scripts the
//! shells accept.

use std::process::Command;

use e2e::bin;

fn run(bin_name: &str, args: &[&str]) -> String {
    let out = Command::new(bin(bin_name)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{bin_name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_subcommand_has_a_man_page_and_the_completions_parse() {
    for (name, pages) in [
        (
            "popgate",
            &[
                "popgate.1",
                "popgate-serve.1",
                "popgate-audit-verify.1",
                "popgate-audit-ship.1",
                "popgate-pki-serve-revocation.1",
                "popgate-check-config.1",
            ][..],
        ),
        (
            "popscan",
            &[
                "popscan.1",
                "popscan-scan.1",
                "popscan-probe.1",
                "popscan-verdict-verify.1",
            ][..],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        run(name, &["man", "--dir", dir.path().to_str().unwrap()]);
        for page in pages {
            let text = std::fs::read_to_string(dir.path().join(page))
                .unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(text.contains(".TH"), "{page} is not a man page");
        }
        // man renders them, where man is installed.
        if Command::new("man").arg("--version").output().is_ok() {
            let st = Command::new("man")
                .arg("-l")
                .arg(dir.path().join(pages[1]))
                .env("MANPAGER", "cat")
                .output()
                .unwrap();
            assert!(
                st.status.success(),
                "{}",
                String::from_utf8_lossy(&st.stderr)
            );
        }
        for shell in ["bash", "zsh", "fish"] {
            let script = run(name, &["completions", shell]);
            assert!(
                script.contains(name) && script.len() > 500,
                "{name} {shell}"
            );
        }
        // bash itself accepts the bash script.
        let script = run(name, &["completions", "bash"]);
        let path = dir.path().join("completion.bash");
        std::fs::write(&path, script).unwrap();
        let st = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(st.success(), "bash -n rejects {name}'s completion script");
    }
}

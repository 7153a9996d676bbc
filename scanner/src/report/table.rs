//! Plain-text report for a terminal: one block per system, one line per
//! control, the quoted evidence under anything that is not a pass.

use std::fmt::Write;

use super::{Report, SystemResult};
use crate::checks::Status;

fn paint(colour: bool, code: &str, s: &str) -> String {
    if colour {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn status_code(s: Status) -> &'static str {
    match s {
        Status::Pass => "32",
        Status::Fail => "1;31",
        Status::Error => "33",
        Status::Waived => "36",
        Status::NotApplicable => "2",
    }
}

fn result_code(r: SystemResult) -> &'static str {
    match r {
        SystemResult::Pass => "1;32",
        SystemResult::Fail => "1;31",
        SystemResult::Error => "1;33",
    }
}

/// Renders the report; `colour` adds ANSI colours (for a TTY).
pub fn render_table(r: &Report, colour: bool) -> String {
    let mut o = String::new();
    for s in &r.systems {
        let _ = writeln!(
            o,
            "{}  {} — {} ({} {}, level {}, policy {})",
            paint(
                colour,
                result_code(s.result),
                &format!("{:<5}", s.result.name().to_uppercase())
            ),
            s.id,
            s.name,
            s.agency_kind.name(),
            s.agency,
            s.level,
            if s.policy_id.is_empty() {
                "-"
            } else {
                &s.policy_id
            },
        );
        for e in &s.errors {
            let _ = writeln!(o, "       {} {e}", paint(colour, "33", "error:"));
        }
        for c in &s.controls {
            let _ = writeln!(
                o,
                "       {} {:<8} {:<28} {}",
                paint(
                    colour,
                    status_code(c.status),
                    &format!("{:<6}", c.status.name())
                ),
                c.severity.name(),
                c.id,
                c.title
            );
            let lines: Vec<&String> = match c.status {
                Status::Fail | Status::Waived => c.failures.iter().collect(),
                Status::Error => c.errors.iter().collect(),
                _ => Vec::new(),
            };
            for l in lines {
                let _ = writeln!(o, "              └ {l}");
            }
            if let Some(w) = &c.waiver {
                let _ = writeln!(
                    o,
                    "              └ waiver by {} until {}{}: {}",
                    w.approver,
                    w.expires,
                    if w.expired {
                        " (EXPIRED, not applied)"
                    } else {
                        ""
                    },
                    w.justification
                );
            }
        }
        o.push('\n');
    }
    let sm = &r.summary;
    let _ = writeln!(
        o,
        "{} systems: {} pass, {} fail, {} error",
        sm.systems,
        paint(colour, "32", &sm.pass.to_string()),
        paint(colour, "31", &sm.fail.to_string()),
        paint(colour, "33", &sm.error.to_string()),
    );
    for g in &sm.groups {
        let _ = writeln!(
            o,
            "  {:<10} level {}: {}/{} pass",
            g.agency_kind.name(),
            g.level,
            g.pass,
            g.systems
        );
    }
    o
}

//! JUnit XML for CI systems: one testsuite per system, one testcase per
//! system × control. Evidence can contain bytes from hostile servers, so
//! every string is escaped and characters XML 1.0 forbids are replaced.

use std::fmt::Write;

use super::{ControlResult, Report};
use crate::checks::Status;

fn xml(s: &str) -> String {
    super::escape_markup(s)
}

/// Escapes text for an attribute value: line breaks and tabs as character
/// references, since parsers normalise raw ones in attributes to spaces.
fn attr(s: &str) -> String {
    xml(s)
        .replace('\n', "&#10;")
        .replace('\r', "&#13;")
        .replace('\t', "&#9;")
}

fn case(o: &mut String, system: &str, c: &ControlResult) {
    let _ = writeln!(
        o,
        "    <testcase classname=\"{}\" name=\"{}\">",
        attr(system),
        attr(&format!("{}: {}", c.id, c.title))
    );
    let lines = |v: &[String]| xml(&v.join("\n"));
    match c.status {
        Status::Fail => {
            let _ = writeln!(
                o,
                "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                c.severity.name(),
                attr(c.failures.first().map(String::as_str).unwrap_or("failed")),
                lines(&c.failures)
            );
        }
        Status::Error => {
            let _ = writeln!(
                o,
                "      <error message=\"{}\">{}</error>",
                attr(
                    c.errors
                        .first()
                        .map(String::as_str)
                        .unwrap_or("not established")
                ),
                lines(&c.errors)
            );
        }
        Status::NotApplicable => o.push_str("      <skipped message=\"not applicable\"/>\n"),
        Status::Waived => {
            let mut out = Vec::new();
            if let Some(w) = &c.waiver {
                out.push(format!(
                    "WAIVED by {} until {}: {}",
                    w.approver, w.expires, w.justification
                ));
            }
            out.extend(c.failures.iter().cloned());
            let _ = writeln!(o, "      <system-out>{}</system-out>", lines(&out));
        }
        Status::Pass => {
            let _ = writeln!(o, "      <system-out>{}</system-out>", lines(&c.evidence));
        }
    }
    o.push_str("    </testcase>\n");
}

pub fn render_junit(r: &Report) -> String {
    let count = |s: Status| -> usize {
        r.systems
            .iter()
            .map(|sys| sys.controls.iter().filter(|c| c.status == s).count())
            .sum()
    };
    let scan_errors: usize = r.systems.iter().filter(|s| !s.errors.is_empty()).count();
    let tests: usize = r.systems.iter().map(|s| s.controls.len()).sum::<usize>() + scan_errors;
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"popscan\" tests=\"{tests}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" timestamp=\"{}\">",
        count(Status::Fail),
        count(Status::Error) + scan_errors,
        count(Status::NotApplicable),
        attr(&r.started_at)
    );
    for s in &r.systems {
        let n = |st: Status| s.controls.iter().filter(|c| c.status == st).count();
        let _ = writeln!(
            o,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
            attr(&s.id),
            s.controls.len() + usize::from(!s.errors.is_empty()),
            n(Status::Fail),
            n(Status::Error) + usize::from(!s.errors.is_empty()),
            n(Status::NotApplicable)
        );
        o.push_str("    <properties>\n");
        for (k, v) in [
            ("agency", s.agency.as_str()),
            ("agency_kind", s.agency_kind.name()),
            ("level", &s.level.to_string()),
            ("policy_id", s.policy_id.as_str()),
            ("policy_sha256", s.policy_sha256.as_str()),
            ("result", s.result.name()),
        ] {
            let _ = writeln!(o, "      <property name=\"{k}\" value=\"{}\"/>", attr(v));
        }
        o.push_str("    </properties>\n");
        if !s.errors.is_empty() {
            let _ = write!(
                o,
                "    <testcase classname=\"{}\" name=\"scan\">\n      <error message=\"{}\">{}</error>\n    </testcase>\n",
                attr(&s.id),
                attr(&s.errors[0]),
                xml(&s.errors.join("\n"))
            );
        }
        for c in &s.controls {
            case(&mut o, &s.id, c);
        }
        o.push_str("  </testsuite>\n");
    }
    o.push_str("</testsuites>\n");
    o
}

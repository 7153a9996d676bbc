//! CSV for spreadsheets: one row per system × control (RFC 4180 quoting).
//! A cell that a spreadsheet would run as a formula gets a leading
//! apostrophe, because evidence text comes from the scanned servers.

use super::Report;
use crate::checks::Status;

fn cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

pub fn render_csv(r: &Report) -> String {
    let mut o = String::from(
        "system,agency,agency_kind,level,policy_id,control,title,severity,status,waiver_approver,waiver_expires,details\r\n",
    );
    for s in &r.systems {
        let level = s.level.to_string();
        if !s.errors.is_empty() {
            let row = [
                s.id.as_str(),
                &s.agency,
                s.agency_kind.name(),
                &level,
                &s.policy_id,
                "scan",
                "system could not be scanned",
                "",
                "error",
                "",
                "",
                &s.errors.join(" | "),
            ];
            o.push_str(&row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
            o.push_str("\r\n");
        }
        for c in &s.controls {
            let details = match c.status {
                Status::Fail | Status::Waived => c.failures.join(" | "),
                Status::Error => c.errors.join(" | "),
                _ => c.evidence.join(" | "),
            };
            let (approver, expires) = c
                .waiver
                .as_ref()
                .map(|w| (w.approver.as_str(), w.expires.as_str()))
                .unwrap_or(("", ""));
            let row = [
                s.id.as_str(),
                &s.agency,
                s.agency_kind.name(),
                &level,
                &s.policy_id,
                &c.id,
                &c.title,
                c.severity.name(),
                c.status.name(),
                approver,
                expires,
                &details,
            ];
            o.push_str(&row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
            o.push_str("\r\n");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn quoting_and_formula_guard() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"x\"\nnext"), "\"say \"\"x\"\"\nnext\"");
        assert_eq!(cell("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(cell("-1"), "'-1");
    }
}

//! CSV for spreadsheets: one row per system × control (RFC 4180 quoting).
//! A cell that a spreadsheet would run as a formula gets a leading
//! apostrophe, because evidence text comes from the scanned servers.

use super::Report;
use crate::checks::Status;

use csvcell::cell;

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
    use super::super::junit::fixture::{control, sample, HOSTILE};
    use super::*;

    const HEADER: [&str; 12] = [
        "system",
        "agency",
        "agency_kind",
        "level",
        "policy_id",
        "control",
        "title",
        "severity",
        "status",
        "waiver_approver",
        "waiver_expires",
        "details",
    ];

    fn parse(text: &str) -> (Vec<String>, Vec<::csv::StringRecord>) {
        let mut rdr = ::csv::Reader::from_reader(text.as_bytes());
        let header = rdr
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        let rows = rdr.records().map(|r| r.expect("RFC 4180 row")).collect();
        (header, rows)
    }

    fn row<'a>(
        rows: &'a [::csv::StringRecord],
        system: &str,
        control: &str,
    ) -> &'a ::csv::StringRecord {
        rows.iter()
            .find(|r| &r[0] == system && &r[5] == control)
            .expect("row")
    }

    #[test]
    fn quoting_and_formula_guard() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"x\"\nnext"), "\"say \"\"x\"\"\nnext\"");
        assert_eq!(cell("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(cell("-1"), "'-1");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\t=1"), "'\t=1");
        assert_eq!(cell("\r=1"), "\"'\r=1\"");
        assert_eq!(cell("=a,\"b\""), "\"'=a,\"\"b\"\"\"");
        assert_eq!(cell(""), "");
    }

    #[test]
    fn csv_parses_back_row_per_system_and_control() {
        let text = render_csv(&sample());
        assert!(text.ends_with("\r\n"));
        let (header, rows) = parse(&text);
        assert_eq!(header, HEADER);
        // 2 + 5 controls, plus one "scan" row for the unscannable system.
        assert_eq!(rows.len(), 8);
        assert!(rows.iter().all(|r| r.len() == HEADER.len()));
        let scan = row(&rows, "viettel_gw", "scan");
        assert_eq!(&scan[8], "error");
        assert_eq!(
            &scan[11],
            "no policy for level 3 <policies/scan> | second reason"
        );
        let pass = row(&rows, "moh.portal", "http.hsts");
        assert_eq!(
            (&pass[2], &pass[3], &pass[4], &pass[7], &pass[8], &pass[11]),
            (
                "ministry",
                "4",
                "vn-pop-l4",
                "critical",
                "pass",
                "max-age=31536000 | includeSubDomains"
            )
        );
        assert_eq!(&row(&rows, "hn-dvc", "ports.forbidden")[8], "n/a");
    }

    #[test]
    fn csv_hostile_cells_round_trip() {
        let (_, rows) = parse(&render_csv(&sample()));
        let r = row(&rows, "hn-dvc", "tls.protocols");
        assert_eq!(&r[1], "hn-dvc agency, \"Dept\" <1>");
        assert_eq!(&r[6], "tls.protocols & <title>");
        assert_eq!(
            &r[11],
            format!("{HOSTILE} | TLSv1.1 on 10.0.0.6:443"),
            "comma, quote, newline and control character"
        );
        let w = row(&rows, "hn-dvc", "http.hsts");
        assert_eq!(
            (&w[8], &w[9], &w[10]),
            ("waived", "Deputy CIO <cio@agency>", "2027-01-31")
        );
        assert_eq!(&w[11], "no Strict-Transport-Security");
        let expired = row(&rows, "hn-dvc", "http.nosniff");
        assert_eq!((&expired[8], &expired[10]), ("fail", "2026-01-31"));
    }

    #[test]
    fn csv_formula_guard_applies_to_every_column() {
        let mut r = sample();
        r.systems.truncate(1);
        r.systems[0].id = "=1+1".into();
        r.systems[0].agency = "@agency".into();
        r.systems[0].controls = vec![control("-c", Status::Pass, &["+SUM(A1)", "x"], None)];
        let text = render_csv(&r);
        let (_, rows) = parse(&text);
        assert_eq!(rows.len(), 1);
        assert_eq!(&rows[0][0], "'=1+1");
        assert_eq!(&rows[0][1], "'@agency");
        assert_eq!(&rows[0][5], "'-c");
        assert_eq!(&rows[0][11], "'+SUM(A1) | x");
        assert!(text.contains("\r\n'=1+1,'@agency,"), "{text}");
        assert!(rows[0]
            .iter()
            .all(|c| !c.starts_with(['=', '+', '-', '@', '\t', '\r'])));
    }

    #[test]
    fn empty_report_is_just_the_header() {
        let r = crate::report::Report {
            systems: vec![],
            summary: Default::default(),
            ..sample()
        };
        assert_eq!(render_csv(&r), format!("{}\r\n", HEADER.join(",")));
    }
}

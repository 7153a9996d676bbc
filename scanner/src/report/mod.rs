//! The scan report: one model, rendered as table, JSON (versioned schema in
//! `scanner/schema/report-v1.schema.json`), JUnit, CSV and HTML.

mod csv;
mod html;
mod junit;
mod table;

use serde::{Deserialize, Serialize};

use crate::checks::Status;
use crate::inventory::AgencyKind;
use crate::policy::Severity;

pub use self::csv::render_csv;
pub use html::render_html;
pub use junit::render_junit;
pub use table::render_table;

/// Escapes text for HTML and XML 1.0 alike. Evidence can hold bytes from
/// hostile servers, so characters XML forbids (and C1 controls) become
/// U+FFFD instead of breaking the document.
fn escape_markup(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

/// Identifies the JSON layout; bumped on any incompatible change.
pub const SCHEMA: &str = "popscan-report/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemResult {
    /// Every control passed, was waived or does not apply.
    Pass,
    /// At least one control could not be decided and none failed.
    Error,
    /// At least one control failed without a current waiver.
    Fail,
}

impl SystemResult {
    pub fn name(self) -> &'static str {
        match self {
            SystemResult::Pass => "pass",
            SystemResult::Error => "error",
            SystemResult::Fail => "fail",
        }
    }
}

/// A waiver as it bore on one control result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiverNote {
    pub justification: String,
    pub approver: String,
    /// YYYY-MM-DD, last day it applies.
    pub expires: String,
    /// True when the waiver had expired at scan time and so did not apply.
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    pub failures: Vec<String>,
    pub errors: Vec<String>,
    pub evidence: Vec<String>,
    pub waiver: Option<WaiverNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemReport {
    pub id: String,
    pub agency: String,
    pub agency_kind: AgencyKind,
    pub name: String,
    pub level: u8,
    pub policy_id: String,
    pub policy_sha256: String,
    /// Days a passing verdict under this policy stays valid.
    pub validity_days: u32,
    pub result: SystemResult,
    pub controls: Vec<ControlResult>,
    /// Errors that kept the system from being scanned at all.
    pub errors: Vec<String>,
    /// The raw evidence (TLS, HTTP, ports) the controls were judged on.
    pub evidence: serde_json::Value,
}

impl SystemReport {
    pub fn failed_controls(&self) -> Vec<&ControlResult> {
        self.controls
            .iter()
            .filter(|c| c.status == Status::Fail)
            .collect()
    }
}

/// Systems per (agency kind, level) and how they fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub agency_kind: AgencyKind,
    pub level: u8,
    pub systems: u32,
    pub pass: u32,
    pub fail: u32,
    pub error: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub systems: u32,
    pub pass: u32,
    pub fail: u32,
    pub error: u32,
    pub groups: Vec<GroupSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub scanner_version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub finished_at: String,
    pub inventory: String,
    pub policy_dir: String,
    /// `i/n` when the scan covered one shard of the inventory.
    pub shard: Option<String>,
    pub summary: Summary,
    pub systems: Vec<SystemReport>,
}

impl Report {
    /// Computes the summary from the systems.
    pub fn summarise(systems: &[SystemReport]) -> Summary {
        let mut s = Summary::default();
        for sys in systems {
            s.systems += 1;
            let g = match s
                .groups
                .iter_mut()
                .position(|g| g.agency_kind == sys.agency_kind && g.level == sys.level)
            {
                Some(i) => &mut s.groups[i],
                None => {
                    s.groups.push(GroupSummary {
                        agency_kind: sys.agency_kind,
                        level: sys.level,
                        systems: 0,
                        pass: 0,
                        fail: 0,
                        error: 0,
                    });
                    s.groups.last_mut().expect("just pushed")
                }
            };
            g.systems += 1;
            match sys.result {
                SystemResult::Pass => {
                    s.pass += 1;
                    g.pass += 1
                }
                SystemResult::Fail => {
                    s.fail += 1;
                    g.fail += 1
                }
                SystemResult::Error => {
                    s.error += 1;
                    g.error += 1
                }
            }
        }
        s.groups.sort_by_key(|g| (g.agency_kind, g.level));
        s
    }

    /// The process exit code this report stands for (see `popscan --help`).
    pub fn exit_code(&self) -> i32 {
        if self.summary.fail > 0 {
            1
        } else if self.summary.error > 0 {
            3
        } else {
            0
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "Server: <script>alert(1)</script> & \"x\", y\nnext =cmd \u{1}";

    fn control(id: &str, status: Status, line: &str, waiver: Option<WaiverNote>) -> ControlResult {
        let v = vec![line.to_string()];
        ControlResult {
            id: id.into(),
            title: format!("{id} title"),
            severity: Severity::High,
            status,
            failures: if matches!(status, Status::Fail | Status::Waived) {
                v.clone()
            } else {
                vec![]
            },
            errors: if status == Status::Error {
                v.clone()
            } else {
                vec![]
            },
            evidence: if status == Status::Pass { v } else { vec![] },
            waiver,
        }
    }

    fn system(
        id: &str,
        result: SystemResult,
        controls: Vec<ControlResult>,
        errors: Vec<String>,
    ) -> SystemReport {
        SystemReport {
            id: id.into(),
            agency: "hanoi".into(),
            agency_kind: AgencyKind::Province,
            name: format!("{id} <name>"),
            level: 3,
            policy_id: "vn-pop-l3".into(),
            policy_sha256: "ab".repeat(32),
            validity_days: 90,
            result,
            controls,
            errors,
            evidence: serde_json::json!({"endpoints": []}),
        }
    }

    fn sample() -> Report {
        let waiver = |expired| WaiverNote {
            justification: "legacy kiosks".into(),
            approver: "CIO".into(),
            expires: "2027-01-31".into(),
            expired,
        };
        let systems = vec![
            system(
                "good",
                SystemResult::Pass,
                vec![control("tls.protocols", Status::Pass, "TLSv1.2 only", None)],
                vec![],
            ),
            system(
                "bad",
                SystemResult::Fail,
                vec![
                    control("tls.protocols", Status::Fail, HOSTILE, None),
                    control("http.hsts", Status::Waived, "no HSTS", Some(waiver(false))),
                    control(
                        "http.nosniff",
                        Status::Fail,
                        "no nosniff",
                        Some(waiver(true)),
                    ),
                    control("ports", Status::NotApplicable, "", None),
                ],
                vec![],
            ),
            system(
                "down",
                SystemResult::Error,
                vec![control(
                    "tls.protocols",
                    Status::Error,
                    "connect failed",
                    None,
                )],
                vec!["no policy for level 3".into()],
            ),
        ];
        Report {
            schema: SCHEMA.into(),
            scanner_version: "0.1.0".into(),
            started_at: "2026-11-22T10:00:00Z".into(),
            finished_at: "2026-11-22T10:00:05Z".into(),
            inventory: "inventory.yaml".into(),
            policy_dir: "policies/scan".into(),
            shard: Some("1/2".into()),
            summary: Report::summarise(&systems),
            systems,
        }
    }

    #[test]
    fn summary_and_exit_code() {
        let r = sample();
        assert_eq!((r.summary.pass, r.summary.fail, r.summary.error), (1, 1, 1));
        assert_eq!(r.summary.groups.len(), 1);
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn junit_parses_back() {
        let x = render_junit(&sample());
        let doc = roxmltree::Document::parse(&x).expect("well-formed XML");
        let count = |t: &str| doc.descendants().filter(|n| n.has_tag_name(t)).count();
        assert_eq!(count("testsuite"), 3);
        assert_eq!(count("testcase"), 7, "6 controls + 1 scan error");
        assert_eq!(count("failure"), 2);
        assert_eq!(count("error"), 2);
        assert_eq!(count("skipped"), 1);
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("failure"))
            .unwrap();
        let expected = HOSTILE.replace('\u{1}', "\u{FFFD}");
        assert_eq!(failure.attribute("message"), Some(expected.as_str()));
        let root = doc.root_element();
        assert_eq!(root.attribute("failures"), Some("2"));
    }

    #[test]
    fn csv_parses_back() {
        let text = render_csv(&sample());
        let mut rdr = ::csv::Reader::from_reader(text.as_bytes());
        assert_eq!(rdr.headers().unwrap().len(), 12);
        let rows: Vec<::csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 7);
        let hostile = rows
            .iter()
            .find(|r| &r[5] == "tls.protocols" && &r[0] == "bad")
            .unwrap();
        assert_eq!(&hostile[11], HOSTILE, "comma, quote and newline round-trip");
        let guarded = render_csv(&Report {
            systems: vec![system(
                "=x",
                SystemResult::Pass,
                vec![control("c", Status::Pass, "ok", None)],
                vec![],
            )],
            ..sample()
        });
        assert!(guarded.contains("\r\n'=x,"), "{guarded}");
        let waived = rows.iter().find(|r| &r[5] == "http.hsts").unwrap();
        assert_eq!(
            (&waived[8], &waived[9], &waived[10]),
            ("waived", "CIO", "2027-01-31")
        );
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let h = render_html(&sample());
        assert!(h.starts_with("<!DOCTYPE html>"));
        for id in ["good", "bad", "down"] {
            assert!(h.contains(&format!("id=\"sys-{id}\"")), "{id}");
        }
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!h.contains("<script"));
        assert!(
            !h.contains("http://") && !h.contains("https://"),
            "no external resources"
        );
        assert!(h.contains("By agency kind and security level"));
        assert!(h.contains("EXPIRED"));
    }

    #[test]
    fn json_matches_the_published_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/report-v1.schema.json")).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let mut doc = serde_json::to_value(sample()).unwrap();
        let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let back: Report = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(back, sample());
        doc["systems"][0]["controls"][0]["stauts"] = serde_json::json!("pass");
        assert!(!v.is_valid(&doc), "a misspelled field is caught");
    }
}

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

/// Seconds between two RFC 3339 instants; 0 when either does not parse or
/// the clock went backwards.
fn seconds_between(start: &str, end: &str) -> f64 {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;
    match (
        OffsetDateTime::parse(start, &Rfc3339),
        OffsetDateTime::parse(end, &Rfc3339),
    ) {
        (Ok(a), Ok(b)) if b >= a => (b - a).as_seconds_f64(),
        _ => 0.0,
    }
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
        "<testsuites name=\"popscan\" tests=\"{tests}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\">",
        count(Status::Fail),
        count(Status::Error) + scan_errors,
        count(Status::NotApplicable),
        seconds_between(&r.started_at, &r.finished_at),
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

/// A hand-built report shared by the renderer tests in this directory:
/// a passing system, a failing one with a waived control and an expired
/// waiver, and one that could not be scanned; strings carry markup, quotes,
/// commas, newlines, a formula and a control character.
#[cfg(test)]
pub(super) mod fixture {
    use crate::checks::Status;
    use crate::inventory::AgencyKind;
    use crate::policy::Severity;
    use crate::report::{ControlResult, Report, SystemReport, SystemResult, WaiverNote, SCHEMA};

    pub const HOSTILE: &str = "TLSv1.0 on <a&b> \"x\", 'y'\nsecond line =cmd \u{1}";

    pub fn control(
        id: &str,
        status: Status,
        lines: &[&str],
        waiver: Option<WaiverNote>,
    ) -> ControlResult {
        let v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        ControlResult {
            id: id.into(),
            title: format!("{id} & <title>"),
            severity: Severity::Critical,
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

    pub fn system(
        id: &str,
        kind: AgencyKind,
        level: u8,
        result: SystemResult,
        controls: Vec<ControlResult>,
        errors: Vec<String>,
    ) -> SystemReport {
        SystemReport {
            id: id.into(),
            agency: format!("{id} agency, \"Dept\" <1>"),
            agency_kind: kind,
            name: format!("{id} portal"),
            level,
            policy_id: format!("vn-pop-l{level}"),
            policy_sha256: "0123456789abcdef".repeat(4),
            validity_days: 90,
            result,
            controls,
            errors,
            evidence: serde_json::json!({"endpoints": [{"label": "10.0.0.5:443"}]}),
        }
    }

    pub fn waiver(expired: bool) -> WaiverNote {
        WaiverNote {
            justification: "legacy kiosks, replacement & rollout in Q3".into(),
            approver: "Deputy CIO <cio@agency>".into(),
            expires: if expired { "2026-01-31" } else { "2027-01-31" }.into(),
            expired,
        }
    }

    pub fn sample() -> Report {
        let systems = vec![
            system(
                "moh.portal",
                AgencyKind::Ministry,
                4,
                SystemResult::Pass,
                vec![
                    control(
                        "tls.protocols",
                        Status::Pass,
                        &["10.0.0.5:443 offers TLSv1.2, TLSv1.3"],
                        None,
                    ),
                    control(
                        "http.hsts",
                        Status::Pass,
                        &["max-age=31536000", "includeSubDomains"],
                        None,
                    ),
                ],
                vec![],
            ),
            system(
                "hn-dvc",
                AgencyKind::Province,
                3,
                SystemResult::Fail,
                vec![
                    control(
                        "tls.protocols",
                        Status::Fail,
                        &[HOSTILE, "TLSv1.1 on 10.0.0.6:443"],
                        None,
                    ),
                    control(
                        "http.hsts",
                        Status::Waived,
                        &["no Strict-Transport-Security"],
                        Some(waiver(false)),
                    ),
                    control(
                        "http.nosniff",
                        Status::Fail,
                        &["=HYPERLINK(\"x\")"],
                        Some(waiver(true)),
                    ),
                    control("ports.forbidden", Status::NotApplicable, &[], None),
                    control(
                        "cert.expiry",
                        Status::Error,
                        &["10.0.0.6:443: no certificate was captured"],
                        None,
                    ),
                ],
                vec![],
            ),
            system(
                "viettel_gw",
                AgencyKind::Telco,
                3,
                SystemResult::Error,
                vec![],
                vec![
                    "no policy for level 3 <policies/scan>".into(),
                    "second reason".into(),
                ],
            ),
        ];
        Report {
            schema: SCHEMA.into(),
            scanner_version: "0.1.0".into(),
            started_at: "2026-11-22T10:00:00Z".into(),
            finished_at: "2026-11-22T10:01:02.5Z".into(),
            inventory: "inventory.yaml".into(),
            policy_dir: "policies/scan".into(),
            shard: Some("1/2".into()),
            summary: Report::summarise(&systems),
            systems,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{sample, HOSTILE};
    use super::*;

    fn doc_counts(x: &str) -> [usize; 5] {
        let doc = roxmltree::Document::parse(x).expect("well-formed XML");
        let n = |t: &str| doc.descendants().filter(|e| e.has_tag_name(t)).count();
        [
            n("testsuite"),
            n("testcase"),
            n("failure"),
            n("error"),
            n("skipped"),
        ]
    }

    #[test]
    fn junit_counts_and_totals() {
        let x = render_junit(&sample());
        // 2 + 5 controls, plus the "scan" case of the unscannable system.
        assert_eq!(doc_counts(&x), [3, 8, 2, 2, 1]);
        let doc = roxmltree::Document::parse(&x).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.attribute("name"), Some("popscan"));
        for (k, v) in [
            ("tests", "8"),
            ("failures", "2"),
            ("errors", "2"),
            ("skipped", "1"),
            ("time", "62.500"),
        ] {
            assert_eq!(root.attribute(k), Some(v), "{k}");
        }
        let suite = |id: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name("testsuite") && n.attribute("name") == Some(id))
                .expect("suite")
        };
        let prop = |id: &str, k: &str| {
            suite(id)
                .descendants()
                .find(|n| n.has_tag_name("property") && n.attribute("name") == Some(k))
                .and_then(|n| n.attribute("value"))
                .map(str::to_string)
        };
        assert_eq!(
            prop("hn-dvc", "agency").as_deref(),
            Some("hn-dvc agency, \"Dept\" <1>")
        );
        assert_eq!(prop("hn-dvc", "level").as_deref(), Some("3"));
        assert_eq!(prop("hn-dvc", "policy_id").as_deref(), Some("vn-pop-l3"));
        assert_eq!(prop("hn-dvc", "policy_sha256").map(|s| s.len()), Some(64));
        let scan = suite("viettel_gw")
            .children()
            .find(|n| n.has_tag_name("testcase"))
            .expect("scan case");
        assert_eq!(scan.attribute("name"), Some("scan"));
        let err = scan
            .children()
            .find(|n| n.has_tag_name("error"))
            .expect("error");
        assert_eq!(
            err.attribute("message"),
            Some("no policy for level 3 <policies/scan>")
        );
        assert_eq!(
            err.text(),
            Some("no policy for level 3 <policies/scan>\nsecond reason")
        );
    }

    #[test]
    fn junit_failure_text_round_trips() {
        let x = render_junit(&sample());
        let doc = roxmltree::Document::parse(&x).expect("well-formed XML");
        let case = doc
            .descendants()
            .find(|n| {
                n.has_tag_name("testcase")
                    && n.attribute("name") == Some("tls.protocols: tls.protocols & <title>")
                    && n.attribute("classname") == Some("hn-dvc")
            })
            .expect("failing case");
        let f = case
            .children()
            .find(|n| n.has_tag_name("failure"))
            .expect("failure");
        let clean = HOSTILE.replace('\u{1}', "\u{FFFD}");
        assert_eq!(f.attribute("type"), Some("critical"));
        assert_eq!(
            f.attribute("message"),
            Some(clean.as_str()),
            "newline kept in the attribute"
        );
        assert_eq!(
            f.text(),
            Some(format!("{clean}\nTLSv1.1 on 10.0.0.6:443").as_str())
        );
        assert!(!x.contains('\u{1}'));
    }

    #[test]
    fn junit_waived_and_passing_cases_carry_system_out() {
        let x = render_junit(&sample());
        let doc = roxmltree::Document::parse(&x).expect("well-formed XML");
        let out = |sys: &str, name: &str| {
            let case = doc
                .descendants()
                .find(|n| {
                    n.has_tag_name("testcase")
                        && n.attribute("classname") == Some(sys)
                        && n.attribute("name").is_some_and(|v| v.starts_with(name))
                })
                .expect("case");
            assert!(
                !case
                    .children()
                    .any(|n| n.has_tag_name("failure") || n.has_tag_name("error")),
                "{sys} {name} passes"
            );
            case.children()
                .find(|n| n.has_tag_name("system-out"))
                .and_then(|n| n.text())
                .unwrap_or_default()
                .to_string()
        };
        let waived = out("hn-dvc", "http.hsts");
        for part in [
            "Deputy CIO <cio@agency>",
            "2027-01-31",
            "legacy kiosks, replacement & rollout",
            "no Strict-Transport-Security",
        ] {
            assert!(waived.contains(part), "{waived:?} lacks {part:?}");
        }
        assert_eq!(
            out("moh.portal", "http.hsts"),
            "max-age=31536000\nincludeSubDomains"
        );
    }

    #[test]
    fn junit_forbidden_characters_never_reach_the_document() {
        let mut r = sample();
        r.systems[0].controls[0].evidence =
            vec!["a\u{0}b\u{8}c\u{1b}[31m\u{7f}\u{FFFE}\u{FFFF}\td\re".into()];
        r.systems[0].id = "id\"with'quote\u{2}".into();
        let x = render_junit(&r);
        let doc = roxmltree::Document::parse(&x).expect("well-formed XML");
        assert!(doc
            .descendants()
            .any(|n| n.attribute("classname") == Some("id\"with'quote\u{FFFD}")));
        for bad in ['\u{0}', '\u{8}', '\u{1b}', '\u{FFFE}', '\u{FFFF}'] {
            assert!(!x.contains(bad), "{bad:?}");
        }
    }

    #[test]
    fn junit_time_is_zero_when_timestamps_do_not_parse() {
        assert_eq!(seconds_between("yesterday", "2026-11-22T10:00:00Z"), 0.0);
        assert_eq!(
            seconds_between("2026-11-22T10:00:05Z", "2026-11-22T10:00:00Z"),
            0.0
        );
        assert_eq!(
            seconds_between("2026-11-22T10:00:00Z", "2026-11-22T10:00:05+00:00"),
            5.0
        );
    }

    #[test]
    fn empty_report_is_valid_junit() {
        let r = Report {
            systems: vec![],
            summary: Default::default(),
            ..sample()
        };
        assert_eq!(doc_counts(&render_junit(&r)), [0, 0, 0, 0, 0]);
    }

    // The JSON schema, checked here against a report with every shape the
    // model allows (null shard, null waiver, null evidence, empty lists).
    fn schema() -> jsonschema::Validator {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../schema/report-v1.schema.json"))
                .expect("schema is JSON");
        jsonschema::validator_for(&v).expect("schema compiles")
    }

    fn errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
        v.iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect()
    }

    #[test]
    fn schema_accepts_every_shape_of_the_model() {
        let v = schema();
        let mut r = sample();
        assert_eq!(
            errors(&v, &serde_json::to_value(&r).expect("json")),
            Vec::<String>::new()
        );
        r.shard = None;
        r.systems[2].evidence = serde_json::Value::Null;
        r.systems[2].policy_id.clear();
        r.systems[2].policy_sha256.clear();
        assert_eq!(
            errors(&v, &serde_json::to_value(&r).expect("json")),
            Vec::<String>::new()
        );
        // And the JSON the CLI writes reads back into the same model.
        let back: Report = serde_json::from_str(&r.to_json()).expect("round trip");
        assert_eq!(back, r);
    }

    #[test]
    fn schema_rejects_drift() {
        let v = schema();
        let good = serde_json::to_value(sample()).expect("json");
        type Mutate = fn(&mut serde_json::Value);
        let mutations: [(&str, Mutate); 8] = [
            ("misspelled control field", |d| {
                d["systems"][1]["controls"][0]["severty"] = "high".into()
            }),
            ("misspelled top-level field", |d| {
                let o = d.as_object_mut().expect("object");
                let x = o.remove("policy_dir").expect("field");
                o.insert("policy_directory".into(), x);
            }),
            ("extra waiver field", |d| {
                d["systems"][1]["controls"][1]["waiver"]["ticket"] = "X-1".into()
            }),
            ("display name instead of serde name", |d| {
                d["systems"][1]["controls"][3]["status"] = "n/a".into()
            }),
            ("unknown agency kind", |d| {
                d["summary"]["groups"][0]["agency_kind"] = "Ministry".into()
            }),
            ("other schema version", |d| {
                d["schema"] = "popscan-report/2".into()
            }),
            ("missing waiver key", |d| {
                if let Some(o) = d["systems"][0]["controls"][0].as_object_mut() {
                    o.remove("waiver");
                }
            }),
            ("evidence not an object", |d| {
                d["systems"][0]["evidence"] = "text".into()
            }),
        ];
        for (what, mutate) in mutations {
            let mut d = good.clone();
            mutate(&mut d);
            assert!(!v.is_valid(&d), "{what} must fail validation");
        }
    }
}

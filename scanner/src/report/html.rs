//! A self-contained HTML report (inline CSS, no script, no external
//! resources) a security officer can hand to a steering committee: the
//! summary across agencies first, then each system's controls with the
//! evidence quoted. Every string from the scan is escaped.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{ControlResult, Report, Summary, SystemReport, SystemResult};
use crate::checks::Status;

fn esc(s: &str) -> String {
    super::escape_markup(s)
}

/// A fragment id for a system. Inventory ids are `[A-Za-z0-9._-]` and pass
/// through; anything else becomes `~hex~`, so distinct ids never collide.
fn anchor(id: &str) -> String {
    let mut o = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            o.push(c);
        } else {
            let _ = write!(o, "~{:x}~", u32::from(c));
        }
    }
    o
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:2px solid #dfe3ea;padding-bottom:.3rem}
h3{font-size:1.05rem;margin:1.6rem 0 .4rem}.meta{color:#5b6475;font-size:.9rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0 1rem;font-size:.92rem}
th,td{border-bottom:1px solid #e6e9ef;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f9;font-weight:600}.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:.3rem;padding:.05rem .45rem;font-size:.78rem;font-weight:700;color:#fff;letter-spacing:.02em}
.pass-text{color:#2f8a4c}.fail-text{color:#c62f2f}.error-text{color:#c98a0b}
.pass{background:#2f8a4c}.fail{background:#c62f2f}.error{background:#c98a0b}.waived{background:#2f6fb8}.na{background:#8a92a1}
.bar{display:flex;height:1.1rem;border-radius:.3rem;overflow:hidden;margin:.5rem 0;max-width:600px}
.bar span{display:block}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #e0e4eb;border-radius:.5rem;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.6rem}.ev{margin:.2rem 0 0 0;padding-left:1.1rem;color:#3a4252;font-size:.86rem}
.ev li{word-break:break-word;white-space:pre-wrap}.scan-errors{color:#8a5a00;background:#fff8e6;border-left:3px solid #c98a0b;padding:.4rem .6rem .4rem 1.6rem;font-size:.9rem}.waiver{font-size:.86rem;color:#2f4f80}.expired{color:#c62f2f;font-weight:700}
@media print{body{margin:0;max-width:none;-webkit-print-color-adjust:exact;print-color-adjust:exact}h2{page-break-before:auto}.system{page-break-inside:avoid}a{color:inherit;text-decoration:none}}
"#;

fn badge(status: Status) -> String {
    let (class, text) = match status {
        Status::Pass => ("pass", "PASS"),
        Status::Fail => ("fail", "FAIL"),
        Status::Error => ("error", "ERROR"),
        Status::Waived => ("waived", "WAIVED"),
        Status::NotApplicable => ("na", "N/A"),
    };
    format!("<span class=\"badge {class}\">{text}</span>")
}

fn result_badge(r: SystemResult) -> String {
    let (class, text) = match r {
        SystemResult::Pass => ("pass", "COMPLIANT"),
        SystemResult::Fail => ("fail", "NOT COMPLIANT"),
        SystemResult::Error => ("error", "NOT SCANNED"),
    };
    format!("<span class=\"badge {class}\">{text}</span>")
}

fn pct(n: u32, of: u32) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

pub fn render_html(r: &Report) -> String {
    let mut o = String::with_capacity(32 * 1024);
    page_head(&mut o, r);
    summary(&mut o, &r.summary);
    common_failures(&mut o, r);
    systems_table(&mut o, r);
    o.push_str("<h2>Details per system</h2>\n");
    for s in &r.systems {
        system_details(&mut o, s);
    }
    o.push_str("</body></html>\n");
    o
}

/// Document head, title and what was scanned when.
fn page_head(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Compliance of agency systems — popscan report</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(
        o,
        "<h1>Compliance of agency systems connecting to the population database</h1>\
         <p class=\"meta\">Scanned {} – {} · popscan {} · policies {} · inventory {}{}</p>",
        esc(&r.started_at),
        esc(&r.finished_at),
        esc(&r.scanner_version),
        esc(&r.policy_dir),
        esc(&r.inventory),
        r.shard
            .as_deref()
            .map(|s| format!(" · shard {}", esc(s)))
            .unwrap_or_default()
    );
}

/// Counts, the result bar, and the table by agency kind and level.
fn summary(o: &mut String, sm: &Summary) {
    o.push_str("<h2>Summary</h2>\n<div class=\"cards\">");
    for (label, n, class) in [
        ("systems", sm.systems, ""),
        ("compliant", sm.pass, "pass"),
        ("not compliant", sm.fail, "fail"),
        ("not scanned", sm.error, "error"),
    ] {
        let _ = write!(
            o,
            "<div class=\"card\"><b class=\"{class}-text\">{n}</b>{label}</div>"
        );
    }
    o.push_str(
        "</div>\n<div class=\"bar\" role=\"img\" aria-label=\"share of systems by result\">",
    );
    for (n, class) in [(sm.pass, "pass"), (sm.fail, "fail"), (sm.error, "error")] {
        if n > 0 {
            let _ = write!(
                o,
                "<span class=\"{class}\" style=\"width:{:.2}%\"></span>",
                pct(n, sm.systems)
            );
        }
    }
    o.push_str("</div>\n");

    o.push_str("<h3>By agency kind and security level</h3>\n<table><tr><th>agency kind</th><th class=\"n\">level</th><th class=\"n\">systems</th><th class=\"n\">compliant</th><th class=\"n\">not compliant</th><th class=\"n\">not scanned</th><th class=\"n\">compliant %</th></tr>\n");
    for g in &sm.groups {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.0} %</td></tr>",
            g.agency_kind.name(),
            g.level,
            g.systems,
            g.pass,
            g.fail,
            g.error,
            pct(g.pass, g.systems)
        );
    }
    o.push_str("</table>\n");
}

/// The ten controls failed by the most systems.
fn common_failures(o: &mut String, r: &Report) {
    let mut common: BTreeMap<(String, String), u32> = BTreeMap::new();
    for s in &r.systems {
        for c in s.controls.iter().filter(|c| c.status == Status::Fail) {
            *common.entry((c.id.clone(), c.title.clone())).or_default() += 1;
        }
    }
    if !common.is_empty() {
        let mut v: Vec<_> = common.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        o.push_str("<h3>Most common failed controls</h3>\n<table><tr><th>control</th><th>title</th><th class=\"n\">systems failing</th></tr>\n");
        for ((id, title), n) in v.iter().take(10) {
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{n}</td></tr>",
                esc(id),
                esc(title)
            );
        }
        o.push_str("</table>\n");
    }
}

/// One row per system, linking to its details.
fn systems_table(o: &mut String, r: &Report) {
    o.push_str("<h3>Systems</h3>\n<table><tr><th>system</th><th>agency</th><th class=\"n\">level</th><th>result</th><th class=\"n\">failed controls</th></tr>\n");
    for s in &r.systems {
        let _ = writeln!(
            o,
            "<tr><td><a href=\"#sys-{}\">{}</a><br><span class=\"meta\">{}</span></td><td>{} ({})</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            anchor(&s.id),
            esc(&s.id),
            esc(&s.name),
            esc(&s.agency),
            s.agency_kind.name(),
            s.level,
            result_badge(s.result),
            s.failed_controls().len()
        );
    }
    o.push_str("</table>\n");
}

/// One system: its result, policy, scan errors and every control.
fn system_details(o: &mut String, s: &SystemReport) {
    let _ = writeln!(
        o,
        "<section class=\"system\" id=\"sys-{}\"><h3>{} {} — {}</h3>\
         <p class=\"meta\">agency {} ({}) · level {} · policy <code>{}</code>{}</p>",
        anchor(&s.id),
        result_badge(s.result),
        esc(&s.id),
        esc(&s.name),
        esc(&s.agency),
        s.agency_kind.name(),
        s.level,
        esc(if s.policy_id.is_empty() {
            "-"
        } else {
            &s.policy_id
        }),
        match s.policy_sha256.get(..16) {
            Some(short) if s.policy_sha256.len() > 16 => format!(
                " sha256 <code title=\"{}\">{}…</code>",
                esc(&s.policy_sha256),
                esc(short)
            ),
            _ if s.policy_sha256.is_empty() => String::new(),
            _ => format!(" sha256 <code>{}</code>", esc(&s.policy_sha256)),
        }
    );
    if !s.errors.is_empty() {
        o.push_str("<ul class=\"scan-errors\">");
        for e in &s.errors {
            let _ = write!(o, "<li>{}</li>", esc(e));
        }
        o.push_str("</ul>\n");
    }
    if !s.controls.is_empty() {
        o.push_str(
            "<table><tr><th>status</th><th>severity</th><th>control</th><th>evidence</th></tr>\n",
        );
        for c in &s.controls {
            control_row(o, c);
        }
        o.push_str("</table>\n");
    }
    o.push_str("</section>\n");
}

/// One control: status, severity, title, the evidence behind it, waiver.
fn control_row(o: &mut String, c: &ControlResult) {
    let lines: &[String] = match c.status {
        Status::Fail | Status::Waived => &c.failures,
        Status::Error => &c.errors,
        _ => &c.evidence,
    };
    let _ = write!(
        o,
        "<tr><td>{}</td><td>{}</td><td><code>{}</code><br>{}</td><td><ul class=\"ev\">",
        badge(c.status),
        c.severity.name(),
        esc(&c.id),
        esc(&c.title)
    );
    for l in lines {
        let _ = write!(o, "<li>{}</li>", esc(l));
    }
    o.push_str("</ul>");
    if let Some(w) = &c.waiver {
        let _ = write!(
            o,
            "<div class=\"waiver\">Waiver by {} until {}{}: {}</div>",
            esc(&w.approver),
            esc(&w.expires),
            if w.expired {
                " <span class=\"expired\">EXPIRED — not applied</span>"
            } else {
                ""
            },
            esc(&w.justification)
        );
    }
    o.push_str("</td></tr>\n");
}

#[cfg(test)]
mod tests {
    use super::super::junit::fixture::sample;
    use super::*;

    /// Every non-void element that opens also closes, in order. All report
    /// text is escaped, so a `<` in the output always starts markup.
    fn assert_balanced(h: &str) {
        const VOID: [&str; 3] = ["meta", "br", "!DOCTYPE"];
        let mut stack: Vec<String> = Vec::new();
        let mut rest = h;
        while let Some(i) = rest.find('<') {
            rest = &rest[i + 1..];
            let end = rest.find('>').expect("tag closes");
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else {
                let name = tag.split([' ', '/']).next().unwrap_or_default();
                if !VOID.contains(&name) && !tag.ends_with('/') {
                    stack.push(name.to_string());
                }
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    #[test]
    fn html_is_balanced_and_escaped() {
        let h = render_html(&sample());
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert_balanced(&h);
        assert!(
            h.contains("&lt;a&amp;b&gt; &quot;x&quot;, &#39;y&#39;"),
            "hostile evidence escaped"
        );
        assert!(h.contains("hn-dvc agency, &quot;Dept&quot; &lt;1&gt;"));
        assert!(!h.contains('\u{1}'));
        assert!(!h.to_ascii_lowercase().contains("<script"));
    }

    #[test]
    fn html_is_self_contained() {
        let h = render_html(&sample()).to_ascii_lowercase();
        for needle in [
            "http://", "https://", "src=", "url(", "@import", "<link", "//cdn",
        ] {
            assert!(!h.contains(needle), "{needle}");
        }
        assert!(h.contains("<style>") && h.contains("@media print"));
    }

    #[test]
    fn html_summary_comes_first_and_links_every_system() {
        let h = render_html(&sample());
        let summary = h
            .find("By agency kind and security level")
            .expect("group table");
        let details = h.find("Details per system").expect("details");
        assert!(summary < details);
        for kind in [
            "<td>ministry</td><td class=\"n\">4</td>",
            "<td>province</td><td class=\"n\">3</td>",
            "<td>telco</td><td class=\"n\">3</td>",
        ] {
            assert!(h.contains(kind), "{kind}");
        }
        for id in ["moh.portal", "hn-dvc", "viettel_gw"] {
            assert!(h.contains(&format!("href=\"#sys-{id}\"")), "{id}");
            assert!(h.contains(&format!("id=\"sys-{id}\"")), "{id}");
        }
        assert!(h.contains("no policy for level 3 &lt;policies/scan&gt;"));
        assert!(h.contains("Scanned 2026-11-22T10:00:00Z – 2026-11-22T10:01:02.5Z"));
        assert!(
            h.contains("popscan 0.1.0") && h.contains("policies/scan") && h.contains("shard 1/2")
        );
    }

    #[test]
    fn html_counts_common_failures_and_marks_expired_waivers() {
        let mut r = sample();
        let mut twin = r.systems[1].clone();
        twin.id = "hcm-dvc".into();
        twin.controls.retain(|c| c.id == "tls.protocols");
        r.systems.push(twin);
        let h = render_html(&r);
        let common = &h[h.find("Most common failed controls").expect("common")..];
        let tls = common.find("<code>tls.protocols</code>").expect("tls row");
        let nosniff = common
            .find("<code>http.nosniff</code>")
            .expect("nosniff row");
        assert!(tls < nosniff, "most frequent first");
        assert!(common[tls..].starts_with("<code>tls.protocols</code></td><td>tls.protocols &amp; &lt;title&gt;</td><td class=\"n\">2</td>"));
        assert_eq!(h.matches("EXPIRED").count(), 1, "only the expired waiver");
        assert!(h.contains("Waiver by Deputy CIO &lt;cio@agency&gt; until 2027-01-31"));
        for class in [
            "badge pass",
            "badge fail",
            "badge error",
            "badge waived",
            "badge na",
        ] {
            assert!(h.contains(class), "{class}");
        }
    }

    #[test]
    fn anchors_stay_distinct() {
        assert_eq!(anchor("a.b-c_d"), "a.b-c_d");
        assert_ne!(anchor("a b"), anchor("a_b"));
        assert_ne!(anchor("a\"b"), anchor("a'b"));
        assert!(anchor("x\"><img onerror=1>")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-~".contains(c)));
    }

    /// Writes the sample page for a look in a browser:
    /// `cargo test -p scanner --lib write_sample_html -- --ignored`.
    #[test]
    #[ignore]
    fn write_sample_html() {
        let mut r = sample();
        for (i, kind) in [
            crate::inventory::AgencyKind::Enterprise,
            crate::inventory::AgencyKind::Province,
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = r.systems[i].clone();
            s.id = format!("{}-{i}", s.id);
            s.agency_kind = kind;
            r.systems.push(s);
        }
        r.summary = crate::report::Report::summarise(&r.systems);
        let path = std::env::temp_dir().join("popscan-report.html");
        std::fs::write(&path, render_html(&r)).expect("write");
        println!("{}", path.display());
    }
}

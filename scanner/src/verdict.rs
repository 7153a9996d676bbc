//! Turning a scan report into signed verdict files: one per system and one
//! roll-up per agency (the file popgate admits on).
//!
//! A verdict is valid for the policy's `validity_days` from the scan; a
//! roll-up for the shortest of its systems. Failing and error verdicts are
//! written too: the gateway must see the latest truth, not the last good one.

use std::path::{Path, PathBuf};

use certs::verdict::{
    sign, FailedControl, SystemOutcome, Verdict, VerdictResult, WaiverUsed, FORMAT,
};
use ed25519_dalek::SigningKey;
use time::OffsetDateTime;

use crate::checks::Status;
use crate::report::{Report, SystemReport, SystemResult};
use crate::scan::rfc3339;

fn outcome(s: &SystemReport) -> SystemOutcome {
    SystemOutcome {
        system: s.id.clone(),
        level: s.level,
        policy_id: s.policy_id.clone(),
        policy_sha256: s.policy_sha256.clone(),
        result: match s.result {
            SystemResult::Pass => VerdictResult::Pass,
            SystemResult::Fail => VerdictResult::Fail,
            SystemResult::Error => VerdictResult::Error,
        },
        failed_controls: s
            .controls
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| FailedControl {
                control: c.id.clone(),
                finding: c.failures.first().cloned().unwrap_or_default(),
            })
            .collect(),
        waivers_used: s
            .controls
            .iter()
            .filter(|c| c.status == Status::Waived)
            .filter_map(|c| {
                c.waiver.as_ref().map(|w| WaiverUsed {
                    control: c.id.clone(),
                    approver: w.approver.clone(),
                    expires: w.expires.clone(),
                })
            })
            .collect(),
        errors: s
            .errors
            .iter()
            .cloned()
            .chain(
                s.controls
                    .iter()
                    .filter(|c| c.status == Status::Error)
                    .flat_map(|c| c.errors.iter().map(move |e| format!("{}: {e}", c.id))),
            )
            .collect(),
    }
}

fn combine(results: impl Iterator<Item = VerdictResult>) -> VerdictResult {
    results.fold(VerdictResult::Pass, |acc, r| match (acc, r) {
        (VerdictResult::Fail, _) | (_, VerdictResult::Fail) => VerdictResult::Fail,
        (VerdictResult::Error, _) | (_, VerdictResult::Error) => VerdictResult::Error,
        _ => VerdictResult::Pass,
    })
}

/// Builds the per-system verdicts and per-agency roll-ups of a report.
pub fn build(report: &Report, scanned_at: OffsetDateTime) -> Vec<Verdict> {
    let until = |days: u32| rfc3339(scanned_at + time::Duration::days(days.max(1) as i64));
    let version = report.scanner_version.clone();
    let mut out = Vec::new();
    let mut agencies: Vec<&str> = Vec::new();
    for s in &report.systems {
        let o = outcome(s);
        out.push(Verdict {
            format: FORMAT.into(),
            agency: s.agency.clone(),
            system: Some(s.id.clone()),
            result: o.result,
            systems: vec![o],
            scanned_at: rfc3339(scanned_at),
            valid_until: until(s.validity_days),
            scanner_version: version.clone(),
        });
        if !agencies.contains(&s.agency.as_str()) {
            agencies.push(&s.agency);
        }
    }
    for a in agencies {
        let systems: Vec<&SystemReport> = report.systems.iter().filter(|s| s.agency == a).collect();
        let outcomes: Vec<SystemOutcome> = systems.iter().map(|s| outcome(s)).collect();
        let days = systems.iter().map(|s| s.validity_days).min().unwrap_or(1);
        out.push(Verdict {
            format: FORMAT.into(),
            agency: a.to_string(),
            system: None,
            result: combine(outcomes.iter().map(|o| o.result)),
            systems: outcomes,
            scanned_at: rfc3339(scanned_at),
            valid_until: until(days),
            scanner_version: version.clone(),
        });
    }
    out
}

/// File name for a verdict: `agency-<id>.verdict.json` for roll-ups,
/// `system-<id>.verdict.json` otherwise.
pub fn file_name(v: &Verdict) -> String {
    match &v.system {
        Some(s) => format!("system-{s}.verdict.json"),
        None => format!("agency-{}.verdict.json", v.agency),
    }
}

/// Signs and writes every verdict atomically, so the gateway never reads
/// half a file.
pub fn write_all(
    dir: &Path,
    verdicts: &[Verdict],
    key: &SigningKey,
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for v in verdicts {
        let env = sign(v, key);
        let bytes = serde_json::to_vec_pretty(&env).map_err(|e| e.to_string())?;
        let path = dir.join(file_name(v));
        certs::durable_file::write(&path, &bytes, false)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

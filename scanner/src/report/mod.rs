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

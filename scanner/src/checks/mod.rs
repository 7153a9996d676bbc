//! Controls evaluated on evidence. Every outcome quotes the evidence it was
//! decided on ("TLSv1.0 offered on 10.0.0.5:443"), so a report reader never
//! has to trust a bare "fail".
//!
//! An observation that could not be made is an error, never a pass: a
//! system whose endpoint did not answer is not compliant-by-silence.

mod cert;
mod http;
mod ports;
mod tls;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::evidence::{EndpointFacts, SystemEvidence};
use crate::policy::{Check, Control};
use crate::probe::tls::TlsEvidence;

pub use cert::{CertFacts, KeyKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// The control does not concern this system (e.g. HTTP headers of a
    /// system with no HTTPS endpoint).
    NotApplicable,
    /// Failed, but a current waiver covers it.
    Waived,
    /// Could not be decided: evidence missing.
    Error,
    Fail,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::NotApplicable => "n/a",
            Status::Waived => "waived",
            Status::Error => "error",
            Status::Fail => "fail",
        }
    }
}

/// What one control concluded, with the evidence quoted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Observations that break the control.
    pub failures: Vec<String>,
    /// Observations that could not be made.
    pub errors: Vec<String>,
    /// Observations that satisfy the control.
    pub evidence: Vec<String>,
}

impl Outcome {
    pub fn status(&self) -> Status {
        if !self.failures.is_empty() {
            Status::Fail
        } else if !self.errors.is_empty() {
            Status::Error
        } else if self.evidence.is_empty() {
            Status::NotApplicable
        } else {
            Status::Pass
        }
    }

    fn fail(&mut self, s: String) {
        self.failures.push(s);
    }
    fn error(&mut self, s: String) {
        self.errors.push(s);
    }
    fn ok(&mut self, s: String) {
        self.evidence.push(s);
    }
}

/// Settings that come from the command line rather than the policy.
#[derive(Debug, Clone, Default)]
pub struct CheckContext {
    /// Replaces every `cert_chain_trusted` bundle.
    pub trust_bundle: Option<PathBuf>,
    /// "Now" for expiry checks (seconds since the epoch).
    pub now_unix: i64,
}

/// Evaluates one control on a system's evidence.
pub fn evaluate(control: &Control, ev: &SystemEvidence, ctx: &CheckContext) -> Outcome {
    let mut out = Outcome::default();
    match &control.check {
        Check::Ports(c) => ports::check(c, ev, &mut out),
        Check::Tls(c) => for_tls(ev, &mut out, |ep, tls, out| tls::check(c, ep, tls, out)),
        Check::Cert(c) => for_tls(ev, &mut out, |ep, tls, out| {
            if tls.chain.is_empty() {
                out.error(format!("{}: no certificate was captured", ep.label));
            } else {
                cert::check(control, c, ep, &tls.chain, ctx, out)
            }
        }),
        Check::Http(c) => {
            for ep in &ev.endpoints {
                match &ep.http {
                    None => {}
                    Some(Err(e)) => {
                        out.error(format!("{}: HTTP headers not fetched: {e}", ep.label))
                    }
                    Some(Ok(h)) => http::check(c, ep, h, &mut out),
                }
            }
        }
    }
    out
}

fn for_tls(
    ev: &SystemEvidence,
    out: &mut Outcome,
    mut f: impl FnMut(&EndpointFacts, &TlsEvidence, &mut Outcome),
) {
    for ep in &ev.endpoints {
        match &ep.tls {
            None => {}
            Some(Err(e)) => out.error(format!("{}: TLS not established: {e}", ep.label)),
            Some(Ok(tls)) => f(ep, tls, out),
        }
    }
}

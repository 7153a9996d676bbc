//! `popgate audit …`: verify the log, and answer "who accessed this citizen".

use std::path::{Path, PathBuf};

use crate::{Failure, OutputFormat};

/// `audit verify`: whole, in order, unaltered — or the first place it is not.
pub fn verify(dir: &Path, key: &Path) -> Result<(), Failure> {
    let key = certs::signing::load_verifying_key(key).map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })?;
    match gateway::audit::verify::verify(dir, &key) {
        Ok(s) => println!(
            "{}: ok — {} records in {} segments ({} sealed, {} checkpoints; {} newest records not yet checkpointed), {} .. {}",
            dir.display(),
            s.records,
            s.segments,
            s.sealed,
            s.checkpoints,
            s.unvouched,
            s.first_time.as_deref().unwrap_or("-"),
            s.last_time.as_deref().unwrap_or("-")
        ),
        Err(finding) => {
            return Err(Failure {
                code: 1,
                message: format!("audit log NOT intact: {finding}"),
            })
        }
    }
    Ok(())
}

pub struct SearchArgs {
    pub citizen: String,
    pub dir: PathBuf,
    pub hmac_key: PathBuf,
    pub since: Option<String>,
    pub until: Option<String>,
    pub agency: Option<String>,
    pub format: OutputFormat,
}

/// `audit search`: every access to one citizen, oldest first.
pub fn search(args: &SearchArgs) -> Result<(), Failure> {
    let SearchArgs {
        citizen,
        dir,
        hmac_key,
        since,
        until,
        agency,
        format,
    } = args;
    let usage = |m: String| Failure {
        code: 2,
        message: m,
    };
    let key = gateway::audit::load_hmac_key(hmac_key).map_err(|e| usage(e.to_string()))?;
    let bound = |v: Option<String>, flag: &str| -> Result<Option<String>, Failure> {
        match v {
            None => Ok(None),
            Some(t) if t.len() == 10 && certs::dates::parse_date(&t).is_some() => Ok(Some(t)),
            // Records are UTC with milliseconds: compare in that form.
            Some(t) if certs::dates::parse_rfc3339(&t).is_some() => {
                Ok(certs::dates::parse_rfc3339(&t).map(certs::dates::rfc3339_millis))
            }
            Some(t) => Err(usage(format!(
                "{flag} {t:?}: expected YYYY-MM-DD or an RFC 3339 UTC time"
            ))),
        }
    };
    let filter = gateway::audit::search::Filter {
        since: bound(since.clone(), "--since")?,
        until: bound(until.clone(), "--until")?,
        agency: agency.clone(),
    };
    let r = gateway::audit::record::citizen_ref(&key, citizen);
    let hits = gateway::audit::search::search(dir, &r, &filter).map_err(|m| Failure {
        code: 1,
        message: m,
    })?;
    print_hits(&hits, *format);
    Ok(())
}

fn print_hits(hits: &[gateway::audit::search::Hit], format: OutputFormat) {
    use gateway::audit::record::Decision;
    let decision = |h: &gateway::audit::search::Hit| match h.access.decision {
        Decision::Allow => "allow",
        Decision::Refuse => "refuse",
    };
    // An allowed request's ending: `completed`, what cut it short, or
    // `unknown` when no outcome was recorded (in flight, or a crash).
    let ending = |h: &gateway::audit::search::Hit| -> String {
        match (&h.outcome, h.access.decision) {
            (Some(o), _) => o.outcome.clone(),
            (None, Decision::Refuse) => h.access.code.clone().unwrap_or_default(),
            (None, Decision::Allow) if h.access.status.is_some() => "completed".into(),
            (None, Decision::Allow) => "unknown".into(),
        }
    };
    let status = |h: &gateway::audit::search::Hit| h.status().map(|s| s.to_string());
    match format {
        OutputFormat::Json => {
            let rows: Vec<_> = hits
                .iter()
                .map(|h| {
                    let mut v = serde_json::to_value(&h.access).unwrap_or_default();
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("seq".into(), h.seq.into());
                        obj.insert("status".into(), h.status().into());
                        obj.insert("ending".into(), ending(h).into());
                        obj.insert(
                            "outcome".into(),
                            serde_json::to_value(&h.outcome).unwrap_or_default(),
                        );
                    }
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        }
        OutputFormat::Csv => {
            println!("time,agency,route,purpose,decision,ending,status,request_id,cert_serial");
            for h in hits {
                let a = &h.access;
                println!(
                    "{}",
                    csvcell::row(&[
                        a.time.clone(),
                        a.agency.clone().unwrap_or_default(),
                        a.route.clone().unwrap_or_default(),
                        a.purpose.clone().unwrap_or_default(),
                        decision(h).to_owned(),
                        ending(h),
                        status(h).unwrap_or_default(),
                        a.request_id.clone(),
                        a.cert
                            .as_ref()
                            .map(|c| c.serial.clone())
                            .unwrap_or_default(),
                    ])
                );
            }
        }
        OutputFormat::Table => {
            println!(
                "{:<24} {:<16} {:<18} {:<8} {:<20} {:<6} PURPOSE",
                "TIME (UTC)", "AGENCY", "ROUTE", "DECISION", "ENDING", "STATUS"
            );
            for h in hits {
                let a = &h.access;
                println!(
                    "{:<24} {:<16} {:<18} {:<8} {:<20} {:<6} {}",
                    a.time,
                    a.agency.as_deref().unwrap_or("-"),
                    a.route.as_deref().unwrap_or("-"),
                    decision(h),
                    ending(h),
                    status(h).unwrap_or_else(|| "-".into()),
                    a.purpose.as_deref().unwrap_or("-")
                );
            }
            println!("{} access(es)", hits.len());
        }
    }
}

//! `popgate audit …`: verify the log, and answer "who accessed this citizen".

use std::path::{Path, PathBuf};

use gateway::audit::instance::InstanceId;
use gateway::audit::segment::SealKeys;
use gateway::audit::ship::Shipper;
use gateway::audit::store::{redact, Store};
use gateway::audit::store_verify;

use crate::{Failure, OutputFormat};

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| usage(format!("runtime: {e}")))
}

/// Where the audit store is, and the CA its TLS certificate is checked
/// against (plain TCP without one).
#[derive(Clone, Copy)]
pub struct StoreArg<'a> {
    pub url: &'a str,
    pub ca: Option<&'a Path>,
}

async fn connect(store: StoreArg<'_>) -> Result<Store, Failure> {
    Store::connect(store.url, store.ca)
        .await
        .map_err(|e| Failure {
            code: 1,
            message: e.to_string(),
        })
}

/// `audit verify`: whole, in order, unaltered — or the first place it is
/// not; locally, in the store, and the two compared.
pub fn verify(
    dir: Option<&Path>,
    keys: &[PathBuf],
    store: Option<StoreArg<'_>>,
    instance: Option<&str>,
) -> Result<(), Failure> {
    let mut loaded = Vec::new();
    for k in keys {
        loaded.push(certs::signing::load_verifying_key(k).map_err(|e| usage(e.to_string()))?);
    }
    let keys = SealKeys::new(loaded);
    let not_intact = |message: String| Failure {
        code: 1,
        message: format!("audit log NOT intact: {message}"),
    };
    let mut local_instance = None;
    if let Some(dir) = dir {
        let s = gateway::audit::verify::verify(dir, keys.clone())
            .map_err(|f| not_intact(f.to_string()))?;
        println!(
            "{}: ok — {} records in {} segments ({} sealed, {} deleted after shipping, {} checkpoints; {} newest records not yet checkpointed){}, {} .. {}",
            dir.display(),
            s.records,
            s.segments,
            s.sealed,
            s.pruned,
            s.checkpoints,
            s.unvouched,
            s.instance
                .as_deref()
                .map(|i| format!(", instance {i}"))
                .unwrap_or_default(),
            s.first_time.as_deref().unwrap_or("-"),
            s.last_time.as_deref().unwrap_or("-")
        );
        local_instance = s.instance;
    }
    let Some(store_arg) = store else {
        return Ok(());
    };
    let url = store_arg.url;
    if let (Some(a), Some(b)) = (instance, local_instance.as_deref()) {
        if a != b {
            return Err(usage(format!(
                "--instance {a} but the directory holds instance {b}'s log"
            )));
        }
    }
    let only = instance.map(str::to_owned).or(local_instance.clone());
    runtime()?.block_on(async {
        let store = connect(store_arg).await?;
        let summaries = store_verify::verify(&store, &keys, only.as_deref())
            .await
            .map_err(|f| not_intact(format!("store {}: {f}", redact(url))))?;
        for s in &summaries {
            println!(
                "store {}: instance {}: ok — {} records in {} segments ({} sealed, {} checkpoints), {} .. {}; newest checkpoint {}",
                redact(url),
                s.instance,
                s.records,
                s.segments,
                s.sealed,
                s.checkpoints,
                s.first_time.as_deref().unwrap_or("-"),
                s.last_time.as_deref().unwrap_or("-"),
                s.newest_checkpoint.as_deref().unwrap_or("-"),
            );
        }
        if let Some(dir) = dir {
            let Some(inst) = local_instance.as_deref().or(instance) else {
                return Err(usage(format!(
                    "{}: its records name no instance (written before audit.instance was set): say which with --instance",
                    dir.display()
                )));
            };
            let unshipped = store_verify::compare_local(&store, dir, inst)
                .await
                .map_err(|f| not_intact(f.to_string()))?;
            println!(
                "{} and the store agree on every shipped record of instance {inst} ({unshipped} local records not shipped yet)",
                dir.display()
            );
        }
        Ok(())
    })
}

/// `audit ship`: a directory into the store, until caught up.
pub fn ship(dir: &Path, instance: &str, store_arg: StoreArg<'_>) -> Result<(), Failure> {
    let url = store_arg.url;
    let id = InstanceId::parse(instance).map_err(usage)?;
    let fail = |e: gateway::audit::ship::ShipError| Failure {
        code: 1,
        message: format!("shipping {}: {} error: {e}", dir.display(), e.kind),
    };
    runtime()?.block_on(async {
        let mut store = connect(store_arg).await?;
        store.ensure_schema().await.map_err(|e| Failure {
            code: 1,
            message: e.to_string(),
        })?;
        let mut shipper = Shipper::new(dir, id, 2000);
        let started = std::time::Instant::now();
        let n = shipper.catch_up(&mut store).await.map_err(fail)?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "shipped {n} records of instance {instance} to {} in {secs:.1} s ({:.0} records/s); the store holds it up to seq {}",
            redact(url),
            n as f64 / secs.max(1e-9),
            shipper.shipped_seq().unwrap_or(0)
        );
        Ok(())
    })
}

pub struct SearchArgs {
    pub citizen: String,
    pub dir: Option<PathBuf>,
    pub store: Option<String>,
    pub store_ca: Option<PathBuf>,
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
        store,
        store_ca,
        hmac_key,
        since,
        until,
        agency,
        format,
    } = args;
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
    let failed = |m: String| Failure {
        code: 1,
        message: m,
    };
    let hits = match (dir, store) {
        (Some(dir), _) => gateway::audit::search::search(dir, &r, &filter).map_err(failed)?,
        (None, Some(url)) => runtime()?.block_on(async {
            let store = connect(StoreArg {
                url,
                ca: store_ca.as_deref(),
            })
            .await?;
            gateway::audit::search::search_store(&store, &r, &filter)
                .await
                .map_err(failed)
        })?,
        (None, None) => return Err(usage("give --dir or --store".into())),
    };
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
                        obj.insert("instance".into(), h.instance.clone().into());
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
            println!(
                "time,agency,route,purpose,decision,ending,status,request_id,cert_serial,instance"
            );
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
                        h.instance.clone().unwrap_or_default(),
                    ])
                );
            }
        }
        OutputFormat::Table => {
            // The instance column only when the records name instances.
            let width = hits
                .iter()
                .filter_map(|h| h.instance.as_ref().map(|i| i.len() + 1))
                .max()
                .map_or(0, |w| w.max(9));
            let instance = |h: &gateway::audit::search::Hit| {
                format!("{:<width$}", h.instance.as_deref().unwrap_or("-"))
            };
            println!(
                "{:<24} {:<width$}{:<16} {:<18} {:<8} {:<20} {:<6} PURPOSE",
                "TIME (UTC)",
                if width > 0 { "INSTANCE" } else { "" },
                "AGENCY",
                "ROUTE",
                "DECISION",
                "ENDING",
                "STATUS"
            );
            for h in hits {
                let a = &h.access;
                println!(
                    "{:<24} {}{:<16} {:<18} {:<8} {:<20} {:<6} {}",
                    a.time,
                    if width > 0 {
                        instance(h)
                    } else {
                        String::new()
                    },
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

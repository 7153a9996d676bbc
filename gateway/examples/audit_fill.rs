//! Writes a synthetic audit log through the real writer, for the store
//! benchmark (bench/audit_store.py): records signed, checkpointed and
//! sealed exactly as popgate writes them, with record times spread over
//! `--days` so the store's day partitions fill as a long-running cluster's
//! would.
//!
//! Citizens are drawn from a pool of `--citizens`; `--target` is accessed
//! exactly `--target-hits` times, spread evenly, so a search for it has a
//! known answer.
//!
//! Run: cargo run --release -p gateway --example audit_fill -- \
//!        --dir D --instance bench-1 --hmac-key K --seal-key S --records 3400000

// A benchmark harness: any failure aborts the run with its location.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gateway::audit::instance::InstanceId;
use gateway::audit::record::{format_time, Access, CertRef, Decision};
use gateway::audit::{AuditConfig, AuditLog, Durability};

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let dir = PathBuf::from(arg("--dir").expect("--dir"));
    let instance = arg("--instance").expect("--instance");
    let records = num("--records", 1_000_000);
    let citizens = num("--citizens", 2_000_000);
    let target = arg("--target").unwrap_or_else(|| "001203012345".into());
    let target_hits = num("--target-hits", 20);
    let days = num("--days", 30);
    let writers = num("--writers", 64);
    let cfg = AuditConfig {
        instance: Some(InstanceId::parse(&instance).unwrap()),
        store: None,
        dir,
        hmac_key: PathBuf::from(arg("--hmac-key").expect("--hmac-key")),
        seal_key: PathBuf::from(arg("--seal-key").expect("--seal-key")),
        durability: Durability::Relaxed {
            flush_interval: Duration::from_millis(100),
        },
        segment_max_bytes: 64 << 20,
        segment_max_age: Duration::from_secs(3600),
        checkpoint_interval: Duration::from_millis(1000),
    };
    cfg.prepare(std::path::Path::new("audit_fill")).unwrap();
    let log = AuditLog::open(&cfg).unwrap();
    let start_time = time::OffsetDateTime::now_utc() - time::Duration::days(days as i64);
    let step = time::Duration::seconds_f64(days as f64 * 86_400.0 / records as f64);
    let every = (records / target_hits.max(1)).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (log, next, target, instance) =
                (log.clone(), next.clone(), target.clone(), instance.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= records {
                        break;
                    }
                    let citizen = if i % every == every / 2 {
                        target.clone()
                    } else {
                        // A scrambled draw from the pool, never the target.
                        format!("0790{:08}", (i.wrapping_mul(2_654_435_761) % citizens) + 1)
                    };
                    let access = Access {
                        time: format_time(start_time + step * i as f64),
                        request_id: format!("{instance}-{i}"),
                        agency: Some(["hanoi", "vss", "moj", "gialai"][(i % 4) as usize].into()),
                        cert: Some(CertRef {
                            sha256: "ab".repeat(32),
                            serial: "0123456789abcdef".into(),
                            subject: "C=VN, O=UBND Thành phố Hà Nội, CN=hanoi".into(),
                        }),
                        client: Some("10.20.30.40:40000".into()),
                        method: "GET".into(),
                        route: Some("citizen.read".into()),
                        path: "/v1/citizens/{citizen_id}".into(),
                        purpose: Some("xác minh hồ sơ".into()),
                        query: None,
                        decision: Decision::Allow,
                        code: None,
                        status: Some(200),
                        bytes: Some(812),
                        latency_ms: Some(3),
                        upstream_status: Some(200),
                        citizen_ref: Some(log.citizen_ref(&citizen)),
                    };
                    log.append(access).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    log.seal_now(Duration::from_secs(30)).unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {records} records of instance {instance} in {secs:.1} s ({:.0} records/s)",
        records as f64 / secs
    );
    log.close();
}

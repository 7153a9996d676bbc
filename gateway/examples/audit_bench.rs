//! Audit log figures on this machine (printed, never asserted):
//! - records/s sustained with fdatasync, for 1, 16 and 64 concurrent appenders
//!   (the group-commit effect: records per fsync);
//! - records/s in relaxed mode;
//! - `audit search` time over 1,000,000 records (indexed sealed segments).
//!
//! Run: cargo run --release -p gateway --example audit_bench [-- --records 1000000]

// A benchmark harness: any failure aborts the run with its location.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use certs::signing::generate_hmac_key;
use gateway::audit::record::{now_rfc3339, Access, CertRef, Decision};
use gateway::audit::search::{search, Filter};
use gateway::audit::{load_hmac_key, AuditConfig, AuditLog, Durability};

fn access(i: u64, citizen_ref: String) -> Access {
    Access {
        time: now_rfc3339(),
        request_id: format!("bench-{i}"),
        agency: Some(["hanoi", "vss", "moj", "gialai"][(i % 4) as usize].into()),
        cert: Some(CertRef {
            sha256: "ab".repeat(32),
            serial: "0123456789abcdef".into(),
            subject: "C=VN, O=UBND Thành phố Hà Nội, CN=hanoi".into(),
        }),
        client: Some("127.0.0.1:40000".into()),
        method: "GET".into(),
        route: Some("citizen.read".into()),
        path: "/v1/citizens/{citizen_id}".into(),
        purpose: Some("xác minh hồ sơ".into()),
        query: None,
        decision: Decision::Allow,
        code: None,
        status: None,
        bytes: None,
        latency_ms: None,
        upstream_status: None,
        citizen_ref: Some(citizen_ref),
    }
}

fn config(root: &std::path::Path, name: &str, durability: Durability, seg: u64) -> AuditConfig {
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    if !keys.join("s.key").exists() {
        certs::signing::generate_keypair(&keys, "s").unwrap();
        generate_hmac_key(&keys.join("h.key")).unwrap();
    }
    let c = AuditConfig {
        instance: None,
        store: None,
        dir: root.join(name),
        hmac_key: keys.join("h.key"),
        seal_key: keys.join("s.key"),
        durability,
        segment_max_bytes: seg,
        segment_max_age: Duration::from_secs(3600),
        checkpoint_interval: Duration::from_millis(1000),
    };
    c.prepare(std::path::Path::new("bench")).unwrap();
    c
}

/// Appends for `secs` seconds from `writers` concurrent tasks.
async fn sustained(log: &AuditLog, writers: usize, secs: u64) -> (u64, f64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let r = log.citizen_ref(&format!("0012030{:05}", n % 50_000));
                log.append(access(w as u64 * 1_000_000 + n, r))
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    (total, start.elapsed().as_secs_f64())
}

fn main() {
    let records: u64 = std::env::args()
        .skip_while(|a| a != "--records")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "audit log benchmark ({} cores; log in {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        root.path().display()
    );
    println!("{:<34} {:>12} {:>14}", "mode", "records/s", "records/fsync");
    for writers in [1usize, 16, 64] {
        let cfg = config(
            root.path(),
            &format!("durable-{writers}"),
            Durability::Durable,
            64 << 20,
        );
        let log = AuditLog::open(&cfg).unwrap();
        let (n, secs) = rt.block_on(sustained(&log, writers, 3));
        let syncs = log.stats().syncs.load(Ordering::Relaxed).max(1);
        println!(
            "{:<34} {:>12.0} {:>14.1}",
            format!("durable, {writers} concurrent"),
            n as f64 / secs,
            n as f64 / syncs as f64
        );
        log.close();
    }
    let cfg = config(
        root.path(),
        "relaxed",
        Durability::Relaxed {
            flush_interval: Duration::from_millis(100),
        },
        64 << 20,
    );
    let log = AuditLog::open(&cfg).unwrap();
    let (n, secs) = rt.block_on(sustained(&log, 16, 3));
    println!(
        "{:<34} {:>12.0} {:>14}",
        "relaxed (100 ms), 16 concurrent",
        n as f64 / secs,
        "-"
    );
    log.close();

    // Search over `records` records in sealed, indexed 16 MiB segments.
    let cfg = config(
        root.path(),
        "search",
        Durability::Relaxed {
            flush_interval: Duration::from_millis(200),
        },
        16 << 20,
    );
    let log = AuditLog::open(&cfg).unwrap();
    let target = "001203099999";
    let start = Instant::now();
    rt.block_on(async {
        let mut pending = Vec::new();
        for i in 0..records {
            let id = if i % 100_000 == 7 {
                target.to_owned()
            } else {
                format!("0{:011}", i % 900_000)
            };
            let r = log.citizen_ref(&id);
            let log = log.clone();
            pending.push(tokio::spawn(async move { log.append(access(i, r)).await }));
            if pending.len() == 4096 {
                for p in pending.drain(..) {
                    p.await.unwrap().unwrap();
                }
            }
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
    });
    let wrote = start.elapsed();
    log.close();
    let key = load_hmac_key(&cfg.hmac_key).unwrap();
    let r = gateway::audit::record::citizen_ref(&key, target);
    let start = Instant::now();
    let hits = search(&cfg.dir, &r, &Filter::default()).unwrap();
    let searched = start.elapsed();
    let segments = gateway::audit::segment::list(&cfg.dir).unwrap().len();
    let bytes: u64 = std::fs::read_dir(&cfg.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    println!(
        "\nsearch: {} hits for one citizen among {records} records ({segments} segments, {:.0} MiB) in {:.1} ms (wrote them in {:.1} s)",
        hits.len(),
        bytes as f64 / (1 << 20) as f64,
        searched.as_secs_f64() * 1000.0,
        wrote.as_secs_f64()
    );
}

//! Cost of the quota step per request (printed, never asserted):
//! local checks (GCRA + daily + concurrency) single- and multi-threaded, and
//! cluster checks against a real redis-server started here on loopback.
//!
//! Run: cargo run --release -p gateway --example quota_bench

// A benchmark harness: any failure aborts the run with its location.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use gateway::quota::cluster::{Cluster, FailureMode};
use gateway::quota::{QuotaEngine, SystemClock};
use gateway::registry::Registry;

const REGISTRY: &str = r#"
routes:
  - id: citizen.read
    route: GET /v1/citizens/{citizen_id}
agencies:
  - id: hanoi
    name: Hà Nội
    kind: province
    identity: { uri_san: "spiffe://x/hanoi" }
    allow: [citizen.read]
    quota: { rate: 1000000, burst: 1000000, daily: 1000000000000, max_concurrent: 1000000 }
"#;

fn main() {
    let reg = Registry::parse(Path::new("bench.yaml"), REGISTRY).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(
        QuotaEngine::new(
            &reg.quota_limits(),
            dir.path().to_owned(),
            Arc::new(SystemClock),
        )
        .unwrap(),
    );
    // Stay under the bucket (10^6 burst, 10^6/s) so every check is admitted
    // and the figure is the cost of admitting, not of refusing.
    let n = 400_000u64;
    println!("{:<46} {:>12}", "quota step", "cost/request");
    let t = Instant::now();
    for _ in 0..n {
        drop(engine.check("hanoi", "citizen.read").unwrap());
    }
    println!(
        "{:<46} {:>9.0} ns",
        "local, 1 thread",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let e = engine.clone();
            s.spawn(move || {
                for _ in 0..n / 2 {
                    drop(e.check("hanoi", "citizen.read").unwrap());
                }
            });
        }
    });
    println!(
        "{:<46} {:>9.0} ns",
        "local, 2 threads (same agency, contended)",
        t.elapsed().as_nanos() as f64 / n as f64
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Ok(mut redis) = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        println!("redis-server not installed: cluster figures skipped");
        return;
    };
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let cluster = Cluster::new(
        &format!("redis://127.0.0.1:{port}/"),
        "bench:",
        FailureMode::Deny,
        std::time::Duration::from_millis(500),
    )
    .unwrap();
    let engine = Arc::new(
        QuotaEngine::new(
            &reg.quota_limits(),
            dir.path().join("c"),
            Arc::new(SystemClock),
        )
        .unwrap()
        .with_cluster(cluster),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let m = 20_000u64;
    rt.block_on(async {
        engine.admit("hanoi", "citizen.read").await.unwrap();
        let t = Instant::now();
        for _ in 0..m {
            drop(engine.admit("hanoi", "citizen.read").await.unwrap());
        }
        println!(
            "{:<46} {:>9.1} µs",
            "redis (Lua GCRA+daily), sequential",
            t.elapsed().as_micros() as f64 / m as f64
        );
        let t = Instant::now();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let e = engine.clone();
                tokio::spawn(async move {
                    for _ in 0..m / 32 {
                        drop(e.admit("hanoi", "citizen.read").await.unwrap());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        println!(
            "{:<46} {:>9.1} µs",
            "redis, 32 concurrent (throughput per request)",
            t.elapsed().as_micros() as f64 / m as f64
        );
    });
    let _ = redis.kill();
    let _ = redis.wait();
}

//! Every response is recorded before it is sent; the log survives a crash
//! under load; a full disk stops service instead of serving unrecorded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::gateway::{audit_records, GatewayProcess, RegistryProcess, TestPki};
use e2e::upstream::RecordingUpstream;

const ID: &str = "001203012345";

#[tokio::test(flavor = "multi_thread")]
async fn every_response_allowed_or_refused_has_a_record() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    let gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let hanam = pki.client(&pki.agency("hanam"));

    let mut ids = Vec::new();
    for (client, target, purpose, want) in [
        (
            &hanoi,
            format!("/v1/citizens/{ID}"),
            "cap the can cuoc",
            200,
        ),
        (
            &hanam,
            format!("/v1/citizens/{ID}/residence"),
            "tra cuu",
            403,
        ),
        (&hanoi, "/v1/citizens/%2f".to_owned(), "x", 400),
        (
            &hanoi,
            format!("/v1/citizens/{ID}/residence"),
            "xac minh cu tru",
            200,
        ),
    ] {
        let r = client
            .get(port, &target, &[("X-Purpose", purpose)])
            .await
            .unwrap();
        assert_eq!(r.status, want, "{target}: {}", r.body);
        ids.push(r.header("x-request-id").unwrap().to_owned());
    }
    let audit = pki.dir.path().join("audit");
    // Outcome records follow the response; wait for both allowed ones.
    let deadline = Instant::now() + Duration::from_secs(5);
    while audit_records(&audit).len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(gw);

    let all = audit_records(&audit);
    let records: Vec<&serde_json::Value> =
        all.iter().filter(|r| r.get("decision").is_some()).collect();
    let recorded: Vec<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(recorded, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(records[0]["agency"], "hanoi");
    assert_eq!(records[0]["route"], "citizen.read");
    assert_eq!(records[0]["path"], "/v1/citizens/{citizen_id}");
    assert!(!records[0]["cert"]["serial"].as_str().unwrap().is_empty());
    assert_eq!(records[1]["decision"], "refuse");
    assert_eq!(records[1]["code"], "route_not_allowed");
    assert_eq!(records[1]["status"], 403);
    assert_eq!(records[1]["agency"], "hanam");
    assert_eq!(records[2]["code"], "bad_path");
    // Each allowed request's access record precedes its outcome record.
    for allowed in [&ids[0], &ids[3]] {
        let at = |kind: &str| {
            all.iter()
                .position(|r| r["request_id"] == allowed.as_str() && r.get(kind).is_some())
                .unwrap_or_else(|| panic!("no {kind} record for {allowed}: {all:?}"))
        };
        assert!(at("decision") < at("outcome"));
        let outcome = &all[at("outcome")];
        assert_eq!(outcome["outcome"], "completed");
        assert_eq!(outcome["status"], 200);
        assert_eq!(outcome["upstream_status"], 200);
    }
    for r in &records {
        assert!(
            !r.to_string().contains(ID),
            "raw citizen ID in the log: {r}"
        );
    }

    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 records"), "{out}");

    // The citizen's view: three accesses named this citizen (one refused).
    let hits = pki.audit_search(&audit, ID, &[]);
    assert_eq!(hits.len(), 3, "{hits:?}");
    assert_eq!(hits[0]["purpose"], "cap the can cuoc");
    assert_eq!(hits[0]["status"], 200);
    assert_eq!(hits[0]["ending"], "completed");
    assert_eq!(hits[1]["ending"], "route_not_allowed");
    let hanoi_only = pki.audit_search(&audit, ID, &["--agency", "hanam"]);
    assert_eq!(hanoi_only.len(), 1);
    assert!(pki.audit_search(&audit, "035190123456", &[]).is_empty());
}

/// Mounts a small tmpfs (root only). Returns None, loudly, where that is
/// impossible, unless POPGATE_REQUIRE_TOOLS=1.
fn small_tmpfs(path: &std::path::Path) -> Option<()> {
    std::fs::create_dir_all(path).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "SKIPPED disk-full test: cannot mount a tmpfs (needs root)";
        assert!(
            std::env::var("POPGATE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("\n*** {msg} ***\n");
        return None;
    }
    Some(())
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_with_503_forwards_nothing_and_recovers() {
    let pki = TestPki::new();
    let mnt = pki.dir.path().join("small");
    if small_tmpfs(&mnt).is_none() {
        return;
    }
    let _unmount = Unmount(mnt.clone());
    let audit = mnt.join("audit");
    let upstream = RecordingUpstream::start().await;
    let e2e::gateway::TestConfig {
        path: config,
        port,
        admin: admin_port,
        ..
    } = pki
        .config(&upstream.addr.to_string())
        .audit_dir(&audit)
        .admin()
        .write();
    let admin = admin_port.expect("admin listener");
    let _gw = GatewayProcess::start(&config, port);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let target = format!("/v1/citizens/{ID}");

    let r = hanoi.get(port, &target, &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(upstream.requests().len(), 1);

    // Fill the filesystem.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    // The open segment's zero-filled reserve (made ahead of the records, at
    // most `segment_max_bytes`, 64 KiB here) still takes records; once it
    // is used up the write must fail. That request's upstream answer is
    // withheld (nothing disclosed): 503.
    let mut first_503 = None;
    for i in 0..200 {
        let r = hanoi.get(port, &target, &[]).await.unwrap();
        match r.status {
            200 => continue,
            503 => {
                assert_eq!(r.error_code(), "audit_unavailable", "{}", r.body);
                first_503 = Some(i);
                break;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(first_503.is_some(), "the full disk never caused a refusal");
    // From now on nothing is forwarded at all.
    let forwarded_before = upstream.requests().len();
    for _ in 0..3 {
        let r = hanoi.get(port, &target, &[]).await.unwrap();
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (503, "audit_unavailable"),
            "{}",
            r.body
        );
    }
    assert_eq!(
        upstream.requests().len(),
        forwarded_before,
        "nothing forwarded while the log is unwritable"
    );

    // Space returns: service resumes (the writer probes every 500 ms).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = hanoi.get(port, &target, &[]).await.unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not recover: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        e2e::admin_get(admin, "/readyz").0,
        200,
        "ready again once writes work"
    );
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "chain must stay valid across the failure: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_answered_request_and_the_chain_continues() {
    let pki = TestPki::new();
    let registry = RegistryProcess::start();
    let e2e::gateway::TestConfig {
        path: config, port, ..
    } = pki.config(&registry.addr).write();
    let mut gw = GatewayProcess::start(&config, port);
    let client = pki.client(&pki.agency("hanoi"));

    let answered: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (client, answered, stop) = (client.clone(), answered.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let target = format!("/v1/citizens/0012030{w}{i:04}");
                if let Ok(r) = client.get(port, &target, &[]).await {
                    if let Some(id) = r.header("x-request-id") {
                        answered.lock().unwrap().push(id.to_owned());
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.signal(libc::SIGKILL);
    let _ = gw.child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() > 20,
        "load too light to mean anything: {}",
        answered.len()
    );

    let audit = pki.dir.path().join("audit");
    let recorded: std::collections::HashSet<String> = audit_records(&audit)
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<_> = answered
        .iter()
        .filter(|id| !recorded.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} answered requests have no record: {missing:?}",
        missing.len()
    );
    eprintln!(
        "{} answered, {} recorded before SIGKILL",
        answered.len(),
        recorded.len()
    );

    // Restart: the chain continues from the last whole record.
    drop(gw);
    let gw = GatewayProcess::start(&config, port);
    let r = client
        .get(port, &format!("/v1/citizens/{ID}"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    drop(gw);
    let (code, out) = pki.audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
    assert!(audit_records(&audit).len() > recorded.len());
}

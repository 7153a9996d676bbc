//! The audit trail of a cluster: two popgate instances ship their logs to a
//! real PostgreSQL; one is SIGKILLed mid-load and the store goes down for a
//! while; afterwards the store holds every answered request exactly once,
//! verifies, and answers "who accessed this citizen" across both. Then the
//! store and a local log are tampered with, and each edit is located.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::gateway::{rewrite_and_rechain, GatewayProcess, RegistryProcess, TestConfig, TestPki};
use e2e::postgres::PostgresServer;
use e2e::{admin_get, metric};

const CITIZENS: [&str; 4] = [
    "001203012345",
    "079088000111",
    "001099887766",
    "036188004455",
];

/// Waits until both instances report no shipping lag and the store holds
/// `want` access records.
async fn wait_shipped(pg: &PostgresServer, admins: &[(u16, &str)], want: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lag_ok = admins.iter().all(|(port, id)| {
            let (_, m) = admin_get(*port, "/metrics");
            metric(
                &m,
                &format!("popgate_audit_ship_lag_records{{audit_instance=\"{id}\"}}"),
            ) == Some(0.0)
        });
        let n: usize = pg
            .psql("SELECT count(*) FROM popgate_audit_records WHERE kind = 'access'")
            .parse()
            .unwrap_or(0);
        if lag_ok && n >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shipping did not catch up: {n} access rows, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Cluster {
    _registry: RegistryProcess,
    a: TestConfig,
    b: TestConfig,
}

fn cluster(pki: &TestPki, url: &str) -> Cluster {
    let registry = RegistryProcess::start();
    let cfg = |name: &str| {
        pki.config(&registry.addr)
            .name(&format!("{name}.yaml"))
            .audit_dir(&pki.dir.path().join(format!("audit-{name}")))
            .instance(&format!("gw-{name}"))
            .store(url)
            .admin()
            .write()
    };
    let (a, b) = (cfg("a"), cfg("b"));
    Cluster {
        _registry: registry,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_ship_every_answered_request_once_through_a_kill_and_a_store_outage() {
    let Some(mut pg) = PostgresServer::start() else {
        return;
    };
    let pki = TestPki::new();
    let url = pg.url();
    let c = cluster(&pki, &url);
    let mut a = GatewayProcess::run(&c.a);
    let b = GatewayProcess::run(&c.b);
    let hanoi = pki.client(&pki.agency("hanoi"));

    // Load on both instances: (request id, citizen) of every answer.
    let answered: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (w, port) in [c.a.port, c.b.port, c.a.port, c.b.port]
        .into_iter()
        .enumerate()
    {
        let (client, answered, stop) = (hanoi.clone(), answered.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let citizen = CITIZENS[i % CITIZENS.len()];
                i += 1;
                let path = format!("/v1/citizens/{citizen}");
                if let Ok(r) = client.get(port, &path, &[]).await {
                    if let Some(id) = r.header("x-request-id") {
                        answered
                            .lock()
                            .unwrap()
                            .push((id.to_owned(), citizen.to_owned()));
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Instance A is killed mid-load and comes back.
    a.signal(libc::SIGKILL);
    let _ = a.child.wait();
    tokio::time::sleep(Duration::from_millis(300)).await;
    a = GatewayProcess::run(&c.a);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // The store goes away for a while; serving does not notice.
    pg.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ready, body) = admin_get(c.b.admin_port(), "/readyz");
    assert_eq!(ready, 200, "readiness must not depend on the store: {body}");
    let (_, m) = admin_get(c.b.admin_port(), "/metrics");
    assert!(
        metric(
            &m,
            "popgate_audit_ship_errors_total{audit_instance=\"gw-b\",kind=\"connect\"}"
        )
        .unwrap_or(0.0)
            + metric(
                &m,
                "popgate_audit_ship_errors_total{audit_instance=\"gw-b\",kind=\"store\"}"
            )
            .unwrap_or(0.0)
            >= 1.0,
        "the outage must show in the error counter:\n{m}"
    );
    let lag_during = metric(
        &m,
        "popgate_audit_ship_lag_records{audit_instance=\"gw-b\"}",
    );
    assert!(
        lag_during.is_some_and(|l| l > 0.0),
        "lag must grow while the store is down: {lag_during:?}"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.restart();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    for l in load {
        l.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "too little load: {}", answered.len());

    wait_shipped(
        &pg,
        &[(c.a.admin_port(), "gw-a"), (c.b.admin_port(), "gw-b")],
        answered.len(),
    )
    .await;

    // Every answered request is in the store exactly once.
    let rows = pg.psql(
        "SELECT request_id, count(*) FROM popgate_audit_records WHERE kind = 'access' GROUP BY request_id",
    );
    let counts: HashMap<&str, u32> = rows
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(id, n)| (id, n.parse().unwrap()))
        .collect();
    for (id, _) in &answered {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "request {id} in the store"
        );
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM (SELECT instance, seq FROM popgate_audit_records GROUP BY 1, 2 HAVING count(*) > 1) d"),
        "0",
        "no record is in the store twice"
    );
    for id in ["gw-a", "gw-b"] {
        assert_ne!(
            pg.psql(&format!(
                "SELECT count(*) FROM popgate_audit_records WHERE instance = '{id}'"
            )),
            "0",
            "{id} shipped"
        );
    }

    // The store verifies, and agrees with each local directory.
    let (code, out) = pki.audit_verify_store(&url, None);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("instance gw-a: ok") && out.contains("instance gw-b: ok"),
        "{out}"
    );
    for cfg in [&c.a, &c.b] {
        let (code, out) = pki.audit_verify_store(&url, Some(&cfg.audit));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("agree on every shipped record"), "{out}");
    }

    // Search finds every access to a citizen, through either instance.
    for citizen in CITIZENS {
        let want: HashSet<&str> = answered
            .iter()
            .filter(|(_, c)| c == citizen)
            .map(|(id, _)| id.as_str())
            .collect();
        let hits = pki.audit_search_store(&url, citizen);
        let got: HashSet<&str> = hits
            .iter()
            .filter_map(|h| h["request_id"].as_str())
            .collect();
        assert!(
            want.is_subset(&got),
            "search for {citizen} missed {:?}",
            want.difference(&got).collect::<Vec<_>>()
        );
        let instances: HashSet<&str> = hits.iter().filter_map(|h| h["instance"].as_str()).collect();
        assert_eq!(instances, HashSet::from(["gw-a", "gw-b"]), "{citizen}");
        let times: Vec<&str> = hits.iter().filter_map(|h| h["time"].as_str()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "merged by time");
    }
    drop((a, b));
}

/// Each kind of tampering is caught by `verify --store`, with where.
#[tokio::test(flavor = "multi_thread")]
async fn edits_to_the_store_and_to_a_shipped_local_log_are_located() {
    let Some(pg) = PostgresServer::start() else {
        return;
    };
    let pki = TestPki::new();
    let url = pg.url();
    let c = cluster(&pki, &url);
    let a = GatewayProcess::run(&c.a);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let mut n = 0;
    for round in 0..3 {
        for citizen in CITIZENS {
            let r = hanoi
                .get(c.a.port, &format!("/v1/citizens/{citizen}"), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            n += 1;
        }
        // Spread the records over several checkpoints.
        if round < 2 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    wait_shipped(&pg, &[(c.a.admin_port(), "gw-a")], n).await;
    drop(a);
    let (code, out) = pki.audit_verify_store(&url, Some(&c.a.audit));
    assert_eq!(code, 0, "{out}");

    // 1. A row's record changed in the store (the line edited).
    let saved =
        pg.psql("SELECT line FROM popgate_audit_records WHERE instance = 'gw-a' AND seq = 3");
    pg.psql("UPDATE popgate_audit_records SET line = replace(line, '\"hanoi\"', '\"hanam\"') WHERE instance = 'gw-a' AND seq = 3");
    let (code, out) = pki.audit_verify_store(&url, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("instance gw-a, record seq 3"), "{out}");
    assert!(out.contains("hash mismatch"), "{out}");
    pg.psql(&format!(
        "UPDATE popgate_audit_records SET line = '{}' WHERE instance = 'gw-a' AND seq = 3",
        saved.replace('\'', "''")
    ));
    assert_eq!(pki.audit_verify_store(&url, None).0, 0);

    // 2. A search column edited to hide an access from search.
    pg.psql(
        "UPDATE popgate_audit_records SET citizen_ref = NULL WHERE instance = 'gw-a' AND seq = 5",
    );
    let (code, out) = pki.audit_verify_store(&url, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("record seq 5") && out.contains("column citizen_ref"),
        "{out}"
    );
    pg.psql("UPDATE popgate_audit_records r SET citizen_ref = (r.line::json)->>'citizen_ref' WHERE instance = 'gw-a' AND seq = 5");
    assert_eq!(pki.audit_verify_store(&url, None).0, 0);

    // 3. A row deleted.
    pg.psql("CREATE TABLE saved_row AS SELECT * FROM popgate_audit_records WHERE instance = 'gw-a' AND seq = 4");
    pg.psql("DELETE FROM popgate_audit_records WHERE instance = 'gw-a' AND seq = 4");
    let (code, out) = pki.audit_verify_store(&url, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("records seq 4..4 are missing"), "{out}");
    pg.psql("INSERT INTO popgate_audit_records SELECT * FROM saved_row");
    assert_eq!(pki.audit_verify_store(&url, None).0, 0);

    // 4. A checkpoint removed.
    pg.psql("CREATE TABLE saved_ckpt AS SELECT * FROM popgate_audit_checkpoints WHERE instance = 'gw-a' AND n = 1 AND segment = (SELECT min(segment) FROM popgate_audit_checkpoints WHERE instance = 'gw-a')");
    pg.psql("DELETE FROM popgate_audit_checkpoints c USING saved_ckpt s WHERE c.instance = s.instance AND c.segment = s.segment AND c.n = s.n");
    let (code, out) = pki.audit_verify_store(&url, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("checkpoint 1 of segment") && out.contains("missing"),
        "{out}"
    );
    pg.psql("INSERT INTO popgate_audit_checkpoints SELECT * FROM saved_ckpt");
    assert_eq!(pki.audit_verify_store(&url, None).0, 0);

    // A second gateway configured with gw-a's id (a copy-pasted config):
    // it serves, but ships nothing into gw-a's history, and says why.
    let rows_before = pg.psql("SELECT count(*) FROM popgate_audit_records WHERE instance = 'gw-a'");
    let twin_cfg = pki
        .config(&c._registry.addr)
        .name("twin.yaml")
        .audit_dir(&pki.dir.path().join("audit-twin"))
        .instance("gw-a")
        .store(&url)
        .admin()
        .write();
    let twin = GatewayProcess::run(&twin_cfg);
    for citizen in CITIZENS {
        let r = hanoi
            .get(twin_cfg.port, &format!("/v1/citizens/{citizen}"), &[])
            .await
            .unwrap();
        assert_eq!(
            r.status, 200,
            "serving never depends on shipping: {}",
            r.body
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, m) = admin_get(twin_cfg.admin_port(), "/metrics");
        if metric(
            &m,
            "popgate_audit_ship_errors_total{audit_instance=\"gw-a\",kind=\"conflict\"}",
        )
        .is_some_and(|v| v >= 1.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no conflict reported:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(twin);
    assert_eq!(
        pg.psql("SELECT count(*) FROM popgate_audit_records WHERE instance = 'gw-a'"),
        rows_before,
        "nothing of the twin's history may enter gw-a's"
    );
    assert_eq!(pki.audit_verify_store(&url, None).0, 0);

    // 5. A local segment rewritten with every hash recomputed (the
    // rewrite re-serialises each line, so line 1 already differs), and its
    // checkpoint file removed so the local log alone looks consistent: the
    // store's copy gives it away, file, line and record named.
    let seg = c.a.audit.join("audit-000001.jsonl");
    rewrite_and_rechain(&seg, 1, "0".repeat(64).as_str());
    std::fs::remove_file(c.a.audit.join("audit-000001.ckpt")).unwrap();
    let (code, out) = pki.audit_verify_store(&url, Some(&c.a.audit));
    assert_eq!(code, 1, "{out}");
    // The local log alone still passes (its tail is recent enough to be
    // the instant before a crash); only the store's copy tells.
    assert!(out.contains("audit-a: ok"), "{out}");
    assert!(
        out.contains("audit-000001.jsonl: line 1: record seq 1 differs from the store's copy"),
        "{out}"
    );

    // 6. The newest row deleted with every checkpoint vouching for it.
    let top = pg.psql("SELECT max(seq) FROM popgate_audit_records WHERE instance = 'gw-a'");
    pg.psql(&format!(
        "DELETE FROM popgate_audit_records WHERE instance = 'gw-a' AND seq = {top}"
    ));
    pg.psql(&format!(
        "DELETE FROM popgate_audit_checkpoints WHERE instance = 'gw-a' AND seq >= {top}"
    ));
    let (code, out) = pki.audit_verify_store(&url, None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("instance gw-a")
            && (out.contains("carry no checkpoint") || out.contains("high-water mark")),
        "{out}"
    );
}

/// Retention: a sealed segment goes only once the store holds it; its seal
/// stays, and the log still verifies, alone and against the store.
#[tokio::test(flavor = "multi_thread")]
async fn shipped_segments_are_deleted_only_once_the_store_holds_them() {
    let Some(mut pg) = PostgresServer::start() else {
        return;
    };
    let pki = TestPki::new();
    let url = pg.url();
    let registry = RegistryProcess::start();
    let cfg = pki
        .config(&registry.addr)
        .audit_dir(&pki.dir.path().join("audit-r"))
        .instance("gw-r")
        .store(&url)
        .store_setting("delete_shipped_after: 2s")
        .admin()
        .write();
    let sealed_with_records = |dir: &Path| -> (usize, usize) {
        let mut seals = 0;
        let mut kept = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "seal") {
                seals += 1;
                if p.with_extension("jsonl").exists() {
                    kept += 1;
                }
            }
        }
        (seals, kept)
    };

    // The store is down: however old a segment gets, it stays.
    pg.stop();
    let gw = GatewayProcess::run(&cfg);
    let hanoi = pki.client(&pki.agency("hanoi"));
    let mut to_target = 0;
    for i in 0..200 {
        let citizen = CITIZENS[i % CITIZENS.len()];
        let r = hanoi
            .get(cfg.port, &format!("/v1/citizens/{citizen}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        to_target += usize::from(citizen == CITIZENS[0]);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (seals, kept) = sealed_with_records(&cfg.audit);
    assert!(seals >= 2, "the load should have sealed segments: {seals}");
    assert_eq!(kept, seals, "nothing may be deleted before it is shipped");

    // The store is back: shipped, read back, deleted; the seals stay.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sealed_with_records(&cfg.audit).1 > 0 {
        assert!(
            Instant::now() < deadline,
            "shipped segments were not deleted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_shipped(&pg, &[(cfg.admin_port(), "gw-r")], 200).await;
    let (code, out) = pki.audit_verify(&cfg.audit);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("{seals} deleted after shipping"))
            || out.contains("deleted after shipping"),
        "{out}"
    );
    let (code, out) = pki.audit_verify_store(&url, Some(&cfg.audit));
    assert_eq!(code, 0, "{out}");
    let hits = pki.audit_search_store(&url, CITIZENS[0]);
    assert_eq!(
        hits.len(),
        to_target,
        "every access, deleted segments included"
    );
    drop(gw);
}

/// With `audit.store.ca`, the connection to the store is TLS and the
/// database's certificate is verified: against a server that refuses
/// plain connections, shipping works with the right CA and nothing
/// connects without it or with another one.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_connection_is_tls_verified_against_the_configured_ca() {
    let pki = TestPki::new();
    let Some(pg) =
        PostgresServer::start_tls(&pki.pki.server_cert_path(), &pki.pki.server_key_path())
    else {
        return;
    };
    let url = pg.url();
    let registry = RegistryProcess::start();
    let cfg = pki
        .config(&registry.addr)
        .audit_dir(&pki.dir.path().join("audit-tls"))
        .instance("gw-tls")
        .store(&url)
        .store_setting("ca: pki/ca.pem")
        .admin()
        .write();
    let gw = GatewayProcess::run(&cfg);
    let hanoi = pki.client(&pki.agency("hanoi"));
    for citizen in CITIZENS {
        let r = hanoi
            .get(cfg.port, &format!("/v1/citizens/{citizen}"), &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_shipped(&pg, &[(cfg.admin_port(), "gw-tls")], CITIZENS.len()).await;
    drop(gw);

    let ca = pki.dir.path().join("pki/ca.pem");
    let key = pki.dir.path().join("pki/audit-seal.pub");
    let verify = |ca: Option<&Path>| {
        let mut args = vec![
            "audit".to_owned(),
            "verify".into(),
            "--store".into(),
            url.clone(),
            "--key".into(),
            key.display().to_string(),
        ];
        if let Some(ca) = ca {
            args.extend(["--store-ca".into(), ca.display().to_string()]);
        }
        let out = std::process::Command::new(e2e::bin("popgate"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = verify(Some(&ca));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("instance gw-tls: ok"), "{out}");
    // Plain TCP: the server refuses it.
    let (code, out) = verify(None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot connect") && out.contains("no encryption"),
        "{out}"
    );
    // Another CA: the certificate is not believed.
    let other = TestPki::new();
    let (code, out) = verify(Some(&other.pki.ca_cert_path()));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot connect") && out.contains("certificate"),
        "{out}"
    );
}

//! The audit log against every way it can be damaged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::record::{self, tests::sample, Stored};
use super::search::{search, Filter};
use super::segment::{self, Seal};
use super::verify::verify;
use super::*;
use certs::signing::generate_hmac_key;

struct Fixture {
    _root: tempfile::TempDir,
    cfg: AuditConfig,
    public: PathBuf,
}

fn fixture(max_bytes: u64) -> Fixture {
    // The directory gets created by `prepare`, with the log's own mode.
    let root = tempfile::tempdir().unwrap();
    let keys = root.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let kp = certs::signing::generate_keypair(&keys, "audit-seal").unwrap();
    generate_hmac_key(&keys.join("audit-hmac.key")).unwrap();
    let cfg = AuditConfig {
        instance: None,
        store: None,
        dir: root.path().join("log"),
        hmac_key: keys.join("audit-hmac.key"),
        seal_key: kp.private,
        durability: Durability::Durable,
        segment_max_bytes: max_bytes,
        segment_max_age: Duration::from_secs(3600),
        checkpoint_interval: Duration::from_millis(1000),
    };
    cfg.prepare(Path::new("test.yaml")).unwrap();
    Fixture {
        _root: root,
        cfg,
        public: kp.public,
    }
}

impl Fixture {
    fn key(&self) -> ed25519_dalek::VerifyingKey {
        certs::signing::load_verifying_key(&self.public).unwrap()
    }
    fn seg(&self, n: u64) -> PathBuf {
        segment::segment_path(&self.cfg.dir, n)
    }
    fn verify(&self) -> Result<super::verify::Summary, super::verify::Finding> {
        verify(&self.cfg.dir, self.key())
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `n` records one at a time (each durable before the next).
fn write(f: &Fixture, n: usize, citizen: impl Fn(usize) -> Option<String>) {
    let log = AuditLog::open(&f.cfg).unwrap();
    rt().block_on(async {
        for i in 0..n {
            let mut a = sample(&format!("r{i}"), None);
            a.citizen_ref = citizen(i).map(|c| log.citizen_ref(&c));
            a.agency = Some(if i % 2 == 0 { "hanoi" } else { "vss" }.into());
            log.append(a).await.unwrap();
        }
    });
    log.close();
}

/// A segment's records (the open one's zero padding left out).
fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .trim_end_matches('\0')
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap();
}

#[test]
fn open_segment_is_preallocated_with_zeros_and_sealed_ones_hold_records_only() {
    let f = fixture(1 << 20);
    write(&f, 5, |_| None);
    let bytes = std::fs::read(f.seg(1)).unwrap();
    let end = segment::data_end(&bytes);
    assert!(end > 0 && bytes[end - 1] == b'\n');
    // The rest of the step is there already, as zeros: appends do not grow
    // the file, so their fdatasync carries no size change.
    assert!(
        bytes.len() > end + 4096,
        "{} bytes, data {end}",
        bytes.len()
    );
    assert!(bytes[end..].iter().all(|b| *b == 0));
    // A restart writes right after the records, not after the padding.
    write(&f, 3, |_| None);
    assert_eq!(f.verify().unwrap().records, 8);
    let again = std::fs::read(f.seg(1)).unwrap();
    assert_eq!(
        again.len(),
        bytes.len(),
        "the padding was used, not extended"
    );

    let small = fixture(4096);
    write(&small, 40, |_| None);
    let s = small.verify().unwrap();
    assert!(s.sealed >= 2, "{s:?}");
    for n in 1..=s.sealed {
        let sealed = std::fs::read(small.seg(n)).unwrap();
        assert_eq!(
            segment::data_end(&sealed),
            sealed.len(),
            "segment {n} keeps padding"
        );
        assert_eq!(sealed.last(), Some(&b'\n'));
    }
}

#[test]
fn chain_spans_sealed_segments_and_verifies() {
    let f = fixture(4096);
    write(&f, 40, |_| None);
    let s = f.verify().unwrap();
    assert_eq!(s.records, 40);
    assert!(s.segments >= 3, "{s:?}");
    assert_eq!(s.sealed, s.segments - 1);
    // A restart continues the same chain.
    write(&f, 5, |_| None);
    assert_eq!(f.verify().unwrap().records, 45);
}

#[test]
fn a_changed_byte_is_caught_at_its_line() {
    let f = fixture(4096);
    write(&f, 30, |_| None);
    let mut l = lines(&f.seg(1));
    l[2] = l[2].replacen("\"method\":\"GET\"", "\"method\":\"PUT\"", 1);
    put_lines(&f.seg(1), &l);
    let e = f.verify().unwrap_err();
    assert_eq!((e.file.clone(), e.line), (f.seg(1), 3), "{e}");
    assert!(e.what.contains("hash mismatch"), "{e}");
}

#[test]
fn a_deleted_line_is_caught() {
    let f = fixture(4096);
    write(&f, 30, |_| None);
    let mut l = lines(&f.seg(1));
    l.remove(1);
    put_lines(&f.seg(1), &l);
    let e = f.verify().unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.what.contains("sequence"), "{e}");
}

#[test]
fn swapped_lines_are_caught() {
    let f = fixture(4096);
    write(&f, 30, |_| None);
    let mut l = lines(&f.seg(2));
    l.swap(0, 1);
    put_lines(&f.seg(2), &l);
    let e = f.verify().unwrap_err();
    assert_eq!((e.file.clone(), e.line), (f.seg(2), 1), "{e}");
}

#[test]
fn a_deleted_middle_segment_is_caught() {
    let f = fixture(4096);
    write(&f, 40, |_| None);
    std::fs::remove_file(f.seg(2)).unwrap();
    std::fs::remove_file(segment::seal_path(&f.cfg.dir, 2)).unwrap();
    let e = f.verify().unwrap_err();
    assert!(e.what.contains("segment 2 is missing"), "{e}");
}

#[test]
fn truncating_a_sealed_segment_is_caught_by_its_seal() {
    let f = fixture(4096);
    write(&f, 40, |_| None);
    // Remove the last records of segment 2 and everything after it, so the
    // hash chain alone would look intact.
    let mut l = lines(&f.seg(2));
    l.truncate(l.len() - 2);
    put_lines(&f.seg(2), &l);
    for n in 3..10 {
        let _ = std::fs::remove_file(f.seg(n));
        let _ = std::fs::remove_file(segment::seal_path(&f.cfg.dir, n));
    }
    let e = f.verify().unwrap_err();
    assert_eq!(e.file, f.seg(2), "{e}");
    assert!(e.what.contains("does not match its seal"), "{e}");
}

/// Rewrites segment 2 with a changed record, re-chains it so every hash and
/// link is consistent, and re-seals it with `key` (or keeps the old seal's
/// key id with a recomputed-but-unsigned signature).
fn forge_segment_2(f: &Fixture, key: &ed25519_dalek::SigningKey) {
    let before = lines(&f.seg(1));
    let (_, mut prev) = record::decode(before.last().unwrap().as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut last_seq = 0;
    let mut first_seq = 0;
    for (i, l) in lines(&f.seg(2)).iter().enumerate() {
        let (mut s, _): (Stored, _) = record::decode(l.as_bytes()).unwrap();
        if i == 0 {
            if let record::Event::Access(a) = &mut s.event {
                a.agency = Some("forged".into());
            }
            first_seq = s.seq;
        }
        s.prev = prev.clone();
        let (line, hash) = record::encode(&s).unwrap();
        out.push(String::from_utf8(line).unwrap().trim_end().to_owned());
        prev = hash;
        last_seq = s.seq;
    }
    put_lines(&f.seg(2), &out);
    // Segment 3 must still link: re-chain it too (the forger's best effort).
    let mut out3 = Vec::new();
    for l in lines(&f.seg(3)) {
        let (mut s, _): (Stored, _) = record::decode(l.as_bytes()).unwrap();
        s.prev = prev.clone();
        let (line, hash) = record::encode(&s).unwrap();
        out3.push(String::from_utf8(line).unwrap().trim_end().to_owned());
        prev = hash;
    }
    let last_hash = record::decode(out.last().unwrap().as_bytes()).unwrap().1;
    let seal = Seal::sign(
        key,
        segment::SealFacts {
            instance: None,
            segment: 2,
            records: out.len() as u64,
            first_seq,
            last_seq,
            last_hash: &last_hash,
            checkpoints: 0,
        },
    );
    std::fs::write(
        segment::seal_path(&f.cfg.dir, 2),
        serde_json::to_vec(&seal).unwrap(),
    )
    .unwrap();
    put_lines(&f.seg(3), &out3);
}

#[test]
fn a_forged_segment_without_the_key_is_caught() {
    let f = fixture(4096);
    write(&f, 40, |_| None);
    let mut seed = [7u8; 32];
    seed[0] = 1;
    let forger = ed25519_dalek::SigningKey::from_bytes(&seed);
    forge_segment_2(&f, &forger);
    let e = f.verify().unwrap_err();
    assert_eq!(e.file, segment::seal_path(&f.cfg.dir, 2), "{e}");
    assert!(e.what.contains("made with key"), "{e}");

    // Same key id claimed, signature not made with the real key.
    let mut seal: Seal =
        serde_json::from_slice(&std::fs::read(segment::seal_path(&f.cfg.dir, 2)).unwrap()).unwrap();
    seal.key_id = certs::signing::key_id(&f.key());
    std::fs::write(
        segment::seal_path(&f.cfg.dir, 2),
        serde_json::to_vec(&seal).unwrap(),
    )
    .unwrap();
    let e = f.verify().unwrap_err();
    assert!(e.what.contains("signature does not verify"), "{e}");
}

#[test]
fn torn_tail_is_reported_then_repaired_on_reopen() {
    let f = fixture(1 << 20);
    write(&f, 5, |_| None);
    let seg = f.seg(1);
    let mut bytes = std::fs::read(&seg).unwrap();
    // A crash mid-write leaves a partial record where the writer writes:
    // right after the last whole one, in the zero padding.
    bytes.truncate(segment::data_end(&bytes));
    bytes.extend_from_slice(b"{\"seq\":6,\"time\":\"2026-");
    std::fs::write(&seg, &bytes).unwrap();
    let e = f.verify().unwrap_err();
    assert!(e.what.contains("torn tail"), "{e}");
    assert_eq!(e.line, 6);

    write(&f, 3, |_| None);
    let s = f.verify().unwrap();
    assert_eq!(s.records, 8);
    let saved: Vec<_> = std::fs::read_dir(&f.cfg.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(saved.len(), 1, "torn bytes are kept aside");
    assert_eq!(
        std::fs::read(saved[0].path()).unwrap(),
        b"{\"seq\":6,\"time\":\"2026-"
    );
}

#[test]
fn a_damaged_log_is_not_extended() {
    let f = fixture(1 << 20);
    write(&f, 5, |_| None);
    let mut l = lines(&f.seg(1));
    l[3] = l[3].replacen("hanoi", "hanam", 1);
    put_lines(&f.seg(1), &l);
    let e = AuditLog::open(&f.cfg)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(e.contains(":4:"), "{e}");
}

#[test]
fn concurrent_appends_share_fsyncs_and_all_land_in_order() {
    let f = fixture(1 << 20);
    let log = AuditLog::open(&f.cfg).unwrap();
    let n = 400;
    let seqs = rt().block_on(async {
        let mut tasks = Vec::new();
        for i in 0..n {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(sample(&format!("c{i}"), None)).await.unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..=n as u64).collect::<Vec<_>>());
    let stats = log.stats();
    let records = stats.records.load(std::sync::atomic::Ordering::Relaxed);
    let syncs = stats.syncs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{records} records in {syncs} fsyncs");
    assert_eq!(records, n as u64);
    assert!(
        syncs < records,
        "group commit never batched: {syncs} fsyncs for {records} records"
    );
    log.close();
    assert_eq!(f.verify().unwrap().records, n as u64);
}

#[test]
fn search_finds_exactly_one_citizens_accesses_across_segments() {
    let f = fixture(4096);
    // Every third record is citizen A, others B or none.
    write(&f, 60, |i| match i % 3 {
        0 => Some("001203012345".into()),
        1 => Some("064185000001".into()),
        _ => None,
    });
    assert!(f.verify().unwrap().segments >= 4);
    let key = load_hmac_key(&f.cfg.hmac_key).unwrap();
    let a = record::citizen_ref(&key, "001203012345");
    let hits = search(&f.cfg.dir, &a, &Filter::default()).unwrap();
    let ids: Vec<String> = hits.iter().map(|h| h.access.request_id.clone()).collect();
    let expected: Vec<String> = (0..60)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("r{i}"))
        .collect();
    assert_eq!(ids, expected);

    let hanoi = search(
        &f.cfg.dir,
        &a,
        &Filter {
            agency: Some("hanoi".into()),
            ..Filter::default()
        },
    )
    .unwrap();
    assert!(hanoi
        .iter()
        .all(|h| h.access.agency.as_deref() == Some("hanoi")));
    assert_eq!(
        hanoi.len(),
        expected
            .iter()
            .filter(|r| r[1..].parse::<usize>().unwrap() % 2 == 0)
            .count()
    );

    let none = search(
        &f.cfg.dir,
        &a,
        &Filter {
            until: Some("2000-01-01".into()),
            ..Filter::default()
        },
    )
    .unwrap();
    assert!(none.is_empty());
    let all_since = search(
        &f.cfg.dir,
        &a,
        &Filter {
            since: Some("2000-01-01".into()),
            ..Filter::default()
        },
    )
    .unwrap();
    assert_eq!(all_since.len(), expected.len());
    let unknown = record::citizen_ref(&key, "096300000000");
    assert!(search(&f.cfg.dir, &unknown, &Filter::default())
        .unwrap()
        .is_empty());
    // No raw citizen ID is ever written.
    for n in segment::list(&f.cfg.dir).unwrap() {
        let text = std::fs::read_to_string(f.seg(n)).unwrap();
        assert!(!text.contains("001203012345"));
    }
}

#[test]
fn keys_inside_the_log_directory_are_refused() {
    let f = fixture(4096);
    let inside = f.cfg.dir.join("audit-hmac.key");
    generate_hmac_key(&inside).unwrap();
    let cfg = AuditConfig {
        hmac_key: inside,
        ..f.cfg.clone()
    };
    let e = cfg.prepare(Path::new("g.yaml")).unwrap_err().to_string();
    assert!(e.contains("inside audit.dir"), "{e}");
}

/// Writes `n` records to the open segment (no rotation) with a short
/// checkpoint interval, waits for the checkpoint, and stops the writer.
fn write_checkpointed(f: &mut Fixture, n: usize) {
    f.cfg.checkpoint_interval = Duration::from_millis(10);
    let log = AuditLog::open(&f.cfg).unwrap();
    rt().block_on(async {
        for i in 0..n {
            let a = sample(&format!("r{i}"), Some("001203012345"));
            log.append(a).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    assert!(
        log.stats()
            .checkpoints
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    log.close();
}

/// Rewrites the records of segment 1 as an attacker without the seal key
/// would: change one field, recompute every hash and link after it.
fn rewrite_open_segment(f: &Fixture, at: usize) {
    let mut prev = record::GENESIS.to_owned();
    let mut out = Vec::new();
    for (i, l) in lines(&f.seg(1)).iter().enumerate() {
        let (mut s, _): (Stored, _) = record::decode(l.as_bytes()).unwrap();
        if i == at {
            if let record::Event::Access(a) = &mut s.event {
                a.purpose = Some("rewritten".into());
                a.agency = Some("someone-else".into());
            }
        }
        s.prev = prev.clone();
        let (line, hash) = record::encode(&s).unwrap();
        out.push(String::from_utf8(line).unwrap().trim_end().to_owned());
        prev = hash;
    }
    put_lines(&f.seg(1), &out);
}

#[test]
fn a_rechained_rewrite_of_the_open_segment_is_caught_by_its_checkpoint() {
    let mut f = fixture(1 << 20);
    write_checkpointed(&mut f, 20);
    assert_eq!(f.verify().unwrap().sealed, 0);
    // Without checkpoints, this rewrite would verify: every hash matches.
    rewrite_open_segment(&f, 3);
    let e = f.verify().unwrap_err();
    assert_eq!(e.file, f.seg(1), "{e}");
    assert!(e.what.contains("rewritten after being checkpointed"), "{e}");
}

#[test]
fn truncating_the_open_segment_below_a_checkpoint_is_caught() {
    let mut f = fixture(1 << 20);
    write_checkpointed(&mut f, 20);
    let mut l = lines(&f.seg(1));
    l.truncate(15);
    put_lines(&f.seg(1), &l);
    let e = f.verify().unwrap_err();
    assert!(e.what.contains("records after seq 15 are missing"), "{e}");
}

#[test]
fn removing_checkpoints_of_an_old_tail_is_caught() {
    let mut f = fixture(1 << 20);
    write_checkpointed(&mut f, 5);
    // The records claim to span minutes, none of them vouched for.
    std::fs::remove_file(segment::checkpoint_path(&f.cfg.dir, 1)).unwrap();
    let mut prev = record::GENESIS.to_owned();
    let mut out = Vec::new();
    for (i, l) in lines(&f.seg(1)).iter().enumerate() {
        let (mut s, _): (Stored, _) = record::decode(l.as_bytes()).unwrap();
        if let record::Event::Access(a) = &mut s.event {
            a.time = format!("2026-11-23T10:0{i}:00.000Z");
        }
        s.prev = prev.clone();
        let (line, hash) = record::encode(&s).unwrap();
        out.push(String::from_utf8(line).unwrap().trim_end().to_owned());
        prev = hash;
    }
    put_lines(&f.seg(1), &out);
    let e = f.verify().unwrap_err();
    assert!(e.what.contains("carry no checkpoint"), "{e}");
}

#[test]
fn a_forged_checkpoint_is_caught() {
    let mut f = fixture(1 << 20);
    write_checkpointed(&mut f, 5);
    let path = segment::checkpoint_path(&f.cfg.dir, 1);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut cp: segment::Checkpoint = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    cp.seq = 2;
    std::fs::write(&path, format!("{}\n", serde_json::to_string(&cp).unwrap())).unwrap();
    let e = f.verify().unwrap_err();
    assert_eq!((e.file.clone(), e.line), (path, 1), "{e}");
    assert!(e.what.contains("signature does not verify"), "{e}");
}

#[test]
fn an_edited_index_is_caught_by_verify() {
    let f = fixture(4096);
    write(&f, 40, |i| Some(format!("0012030{:05}", i % 4)));
    let idx = segment::index_path(&f.cfg.dir, 1);
    let text = std::fs::read_to_string(&idx).unwrap();
    // Hide one access to a citizen from `audit search`.
    let edited: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&idx, edited).unwrap();
    let e = f.verify().unwrap_err();
    assert_eq!(e.file, idx, "{e}");
    assert!(e.what.contains("index does not match"), "{e}");
}

#[test]
fn outcomes_join_their_accesses_in_search() {
    let f = fixture(4096);
    let log = AuditLog::open(&f.cfg).unwrap();
    let cref = log.citizen_ref("001203012345");
    rt().block_on(async {
        for i in 0..30 {
            let mut a = sample(&format!("r{i}"), None);
            a.citizen_ref = Some(cref.clone());
            log.append(a).await.unwrap();
            if i % 3 != 2 {
                log.record_outcome(record::Outcome {
                    time: record::now_rfc3339(),
                    request_id: format!("r{i}"),
                    agency: Some("hanoi".into()),
                    route: Some("citizen.read".into()),
                    outcome: if i % 3 == 0 {
                        "completed"
                    } else {
                        "client_closed"
                    }
                    .into(),
                    status: Some(200),
                    upstream_status: Some(200),
                    bytes: 10,
                    latency_ms: 1,
                    citizen_ref: Some(cref.clone()),
                });
            }
        }
    });
    log.close();
    assert_eq!(f.verify().unwrap().records, 50);
    let hits = search(&f.cfg.dir, &cref, &Filter::default()).unwrap();
    assert_eq!(hits.len(), 30);
    for (i, h) in hits.iter().enumerate() {
        match i % 3 {
            0 => assert_eq!(h.outcome.as_ref().unwrap().outcome, "completed"),
            1 => assert_eq!(h.outcome.as_ref().unwrap().outcome, "client_closed"),
            _ => assert!(h.outcome.is_none()),
        }
    }
}

#[test]
fn records_written_before_write_ahead_auditing_still_read() {
    // A line in the format of the previous release: status in the access.
    let old = r#"{"seq":1,"time":"2026-11-20T01:02:03.000Z","request_id":"x","agency":"hanoi","cert":null,"client":null,"method":"GET","route":"citizen.read","path":"/v1/citizens/{citizen_id}","purpose":null,"decision":"allow","code":null,"status":200,"bytes":12,"latency_ms":3,"upstream_status":200,"citizen_ref":null,"prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    let body = old.as_bytes().to_vec();
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    let line = format!("{},\"hash\":\"{hash}\"}}", &old[..old.len() - 1]);
    let (s, _) = record::decode(line.as_bytes()).unwrap();
    match s.event {
        record::Event::Access(a) => assert_eq!(a.status, Some(200)),
        record::Event::Outcome(_) => panic!("read as an outcome"),
    }
}

#[cfg(unix)]
#[test]
fn audit_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mut f = fixture(4096);
    write_checkpointed(&mut f, 3);
    write(&f, 40, |i| Some(format!("{i:012}")));
    let dir_mode = std::fs::metadata(&f.cfg.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    for e in std::fs::read_dir(&f.cfg.dir).unwrap() {
        let e = e.unwrap();
        let mode = e.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", e.path().display());
    }
    // A file left 0644 by an earlier version is tightened on open.
    std::fs::set_permissions(f.seg(1), std::fs::Permissions::from_mode(0o644)).unwrap();
    AuditLog::open(&f.cfg).unwrap().close();
    let mode = std::fs::metadata(f.seg(1)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Appends one record to segment `n` chained from `prev`, as someone with
/// write access but no key would, at `seq`.
fn forge_append(f: &Fixture, n: u64, seq: u64, prev: &str) {
    let s = Stored {
        seq,
        instance: None,
        event: record::Event::Access(sample("forged", Some("cafe"))),
        prev: prev.to_owned(),
    };
    let (line, _) = record::encode(&s).unwrap();
    let mut text = std::fs::read(f.seg(n)).unwrap_or_default();
    text.truncate(segment::data_end(&text));
    text.extend_from_slice(&line);
    std::fs::write(f.seg(n), text).unwrap();
}

#[test]
fn records_added_while_popgate_is_down_after_a_clean_close_are_caught() {
    let f = fixture(1 << 20);
    write(&f, 5, |_| None);
    let log = AuditLog::open(&f.cfg).unwrap();
    log.seal_now(Duration::from_secs(5)).unwrap();
    log.close();
    assert!(f.verify().is_ok());
    // Segment 1 sealed; segment 2 open, empty, marked closed at seq 5.
    let seal: Seal =
        serde_json::from_slice(&std::fs::read(segment::seal_path(&f.cfg.dir, 1)).unwrap()).unwrap();
    forge_append(&f, 2, 6, &seal.last_hash);
    let e = f.verify().unwrap_err();
    assert_eq!((e.file.clone(), e.line), (f.seg(2), 1), "{e}");
    assert!(
        e.what.contains("after popgate closed the log cleanly"),
        "{e}"
    );
    // popgate refuses to adopt (and checkpoint) them.
    let refused = AuditLog::open(&f.cfg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("after popgate closed the log"),
        "{refused}"
    );
}

#[test]
fn a_clean_close_then_a_restart_verifies() {
    let f = fixture(1 << 20);
    for _ in 0..3 {
        write(&f, 4, |_| None);
        let log = AuditLog::open(&f.cfg).unwrap();
        log.seal_now(Duration::from_secs(5)).unwrap();
        log.close();
    }
    let s = f.verify().unwrap();
    assert_eq!(s.records, 12);
}

/// An instance with an id (`audit.instance`): every record, seal and
/// checkpoint names it, checkpoints are numbered and seals count them, so
/// a checkpoint removed from anywhere in a sealed segment is caught; and
/// another instance's config is refused on this directory.
#[test]
fn an_instance_names_itself_everywhere_and_a_removed_checkpoint_is_caught() {
    let mut f = fixture(1 << 20);
    f.cfg.instance = Some(instance::InstanceId::parse("hn-1").unwrap());
    f.cfg.checkpoint_interval = Duration::from_millis(10);
    let log = AuditLog::open(&f.cfg).unwrap();
    rt().block_on(async {
        for i in 0..8 {
            log.append(sample(&format!("r{i}"), None)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    log.seal_now(Duration::from_secs(5)).unwrap();
    log.close();
    let s = f.verify().unwrap();
    assert_eq!((s.instance.as_deref(), s.sealed), (Some("hn-1"), 1));
    assert!(lines(&f.seg(1))
        .iter()
        .all(|l| l.contains("\"instance\":\"hn-1\"")));
    let seal: Seal =
        serde_json::from_slice(&std::fs::read(segment::seal_path(&f.cfg.dir, 1)).unwrap()).unwrap();
    let ckpt = segment::checkpoint_path(&f.cfg.dir, 1);
    let cps = lines(&ckpt);
    assert!(cps.len() >= 3, "{cps:?}");
    assert_eq!(seal.checkpoints, Some(cps.len() as u64));
    assert_eq!(seal.instance.as_deref(), Some("hn-1"));
    for (i, l) in cps.iter().enumerate() {
        let cp: segment::Checkpoint = serde_json::from_str(l).unwrap();
        assert_eq!(cp.n, Some(i as u64 + 1));
    }

    let mut other = f.cfg.clone();
    other.instance = Some(instance::InstanceId::parse("hn-2").unwrap());
    match AuditLog::open(&other) {
        Err(AuditError::Config(m)) => assert!(m.contains("\"hn-1\""), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("another instance's config adopted hn-1's chain"),
    }

    // The last checkpoint removed: the seal's count gives it away.
    put_lines(&ckpt, &cps[..cps.len() - 1]);
    let e = f.verify().unwrap_err();
    assert!(e.what.contains("the seal counts"), "{e}");
    // One from the middle: the numbering does.
    let mut gap = cps.clone();
    gap.remove(1);
    put_lines(&ckpt, &gap);
    let e = f.verify().unwrap_err();
    assert!(e.what.contains("checkpoint number 3 where 2"), "{e}");
    assert_eq!(e.line, 2);
    put_lines(&ckpt, &cps);
    assert!(f.verify().is_ok());
}

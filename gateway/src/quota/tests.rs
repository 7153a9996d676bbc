use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::macros::datetime;
use time::OffsetDateTime;

use super::*;
use crate::registry::Registry;

struct FakeClock(Mutex<OffsetDateTime>);
impl Clock for FakeClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

fn registry(quotas: &str) -> Registry {
    let text = format!(
        r#"
routes:
  - id: citizen.read
    route: GET /v1/citizens/{{citizen_id}}
  - id: citizen.verify
    route: POST /v1/citizens/{{citizen_id}}/verify
agencies:
  - id: a
    name: A
    kind: province
    identity: {{ uri_san: "spiffe://x/a" }}
    allow: [citizen.read, citizen.verify]
{quotas}
  - id: b
    name: B
    kind: province
    identity: {{ uri_san: "spiffe://x/b" }}
    allow: [citizen.read]
    quota: {{ rate: 0.01, burst: 3 }}
"#
    );
    Registry::parse(Path::new("agencies.yaml"), &text).unwrap()
}

fn engine(quotas: &str, dir: &Path) -> QuotaEngine {
    QuotaEngine::new(
        &registry(quotas).quota_limits(),
        dir.to_owned(),
        Arc::new(SystemClock),
    )
    .unwrap()
}

#[test]
fn two_hundred_concurrent_requests_against_burst_n_admit_exactly_n() {
    let d = tempfile::tempdir().unwrap();
    let e = Arc::new(engine("    quota: { rate: 0.01, burst: 7 }", d.path()));
    let admitted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|_| {
                let e = e.clone();
                s.spawn(move || e.check("a", "citizen.read").is_ok() as usize)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(admitted, 7);
    let r = e.check("a", "citizen.read").unwrap_err();
    assert_eq!(r.limit, Limit::Rate);
    assert!(r.retry_after_s >= 1);
    assert!(
        r.headers
            .iter()
            .any(|(k, v)| *k == "ratelimit-policy" && v == "\"burst\";q=7;w=700"),
        "{:?}",
        r.headers
    );
}

#[test]
fn the_rate_refills_as_configured() {
    let d = tempfile::tempdir().unwrap();
    let e = engine("    quota: { rate: 20, burst: 1 }", d.path());
    assert!(e.check("a", "citizen.read").is_ok());
    assert_eq!(e.check("a", "citizen.read").unwrap_err().limit, Limit::Rate);
    // One token every 50 ms; wait well past one period.
    std::thread::sleep(Duration::from_millis(150));
    assert!(e.check("a", "citizen.read").is_ok());
}

#[test]
fn daily_quota_survives_a_restart_and_resets_at_vietnamese_midnight() {
    let d = tempfile::tempdir().unwrap();
    // 23:59 in Hà Nội (UTC+7).
    let clock = Arc::new(FakeClock(Mutex::new(datetime!(2026-11-22 16:59:00 UTC))));
    let reg = registry("    quota: { daily: 3 }");
    let e = QuotaEngine::new(&reg.quota_limits(), d.path().to_owned(), clock.clone()).unwrap();
    let remaining: Vec<String> = (0..3)
        .map(|_| {
            let p = e.check("a", "citizen.read").unwrap();
            p.headers
                .iter()
                .find(|(k, _)| *k == "ratelimit")
                .unwrap()
                .1
                .clone()
        })
        .collect();
    assert_eq!(
        remaining,
        [
            "\"daily\";r=2;t=60",
            "\"daily\";r=1;t=60",
            "\"daily\";r=0;t=60"
        ]
    );
    let r = e.check("a", "citizen.read").unwrap_err();
    assert_eq!((r.limit, r.retry_after_s), (Limit::Daily, 60));
    drop(e);

    // "Restart": a new engine over the same state directory.
    let e = QuotaEngine::new(&reg.quota_limits(), d.path().to_owned(), clock.clone()).unwrap();
    assert_eq!(
        e.check("a", "citizen.read").unwrap_err().limit,
        Limit::Daily
    );

    // 00:00:01 in Hà Nội: a new day.
    *clock.0.lock().unwrap() = datetime!(2026-11-22 17:00:01 UTC);
    assert!(e.check("a", "citizen.read").is_ok());
}

#[test]
fn a_crash_never_over_admits_the_daily_quota() {
    let d = tempfile::tempdir().unwrap();
    let reg = registry("    quota: { daily: 500 }");
    let e = QuotaEngine::new(
        &reg.quota_limits(),
        d.path().to_owned(),
        Arc::new(SystemClock),
    )
    .unwrap();
    for _ in 0..3 {
        e.check("a", "citizen.read").unwrap();
    }
    drop(e); // as if killed: the leased block (10) counts as used
    let e = QuotaEngine::new(
        &reg.quota_limits(),
        d.path().to_owned(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let mut admitted = 0;
    while e.check("a", "citizen.read").is_ok() {
        admitted += 1;
    }
    assert!(admitted <= 497, "over-admitted after restart: {admitted}");
    assert!(admitted >= 490, "lost more than one block: {admitted}");
}

#[test]
fn max_concurrent_refuses_exactly_the_excess_and_frees_slots() {
    let d = tempfile::tempdir().unwrap();
    let e = engine("    quota: { max_concurrent: 3 }", d.path());
    let held: Vec<_> = (0..3)
        .map(|_| e.check("a", "citizen.read").unwrap())
        .collect();
    let refused = (0..5)
        .filter(|_| {
            matches!(
                e.check("a", "citizen.read"),
                Err(QuotaRefusal {
                    limit: Limit::Concurrency,
                    ..
                })
            )
        })
        .count();
    assert_eq!(refused, 5);
    drop(held);
    let again: Vec<_> = (0..3)
        .map(|_| e.check("a", "citizen.read").unwrap())
        .collect();
    assert_eq!(again.len(), 3);
}

#[test]
fn one_agency_flooding_does_not_touch_another() {
    let d = tempfile::tempdir().unwrap();
    let e = engine("    quota: { rate: 0.01, burst: 2 }", d.path());
    for _ in 0..1000 {
        let _ = e.check("a", "citizen.read");
    }
    let b_ok = (0..3)
        .filter(|_| e.check("b", "citizen.read").is_ok())
        .count();
    assert_eq!(b_ok, 3, "b keeps its whole burst of 3");
}

#[test]
fn a_route_override_replaces_the_agency_limit_for_that_route() {
    let d = tempfile::tempdir().unwrap();
    let e = engine(
        "    quota: { rate: 0.01, burst: 1 }\n    route_quota:\n      citizen.verify: { rate: 0.01, burst: 4 }",
        d.path(),
    );
    assert!(e.check("a", "citizen.read").is_ok());
    assert!(e.check("a", "citizen.read").is_err());
    assert_eq!(
        (0..10)
            .filter(|_| e.check("a", "citizen.verify").is_ok())
            .count(),
        4
    );
}

#[test]
fn reload_keeps_unchanged_buckets_and_applies_new_limits() {
    let d = tempfile::tempdir().unwrap();
    let e = engine("    quota: { rate: 0.01, burst: 2 }", d.path());
    assert!(e.check("a", "citizen.read").is_ok());
    assert!(e.check("a", "citizen.read").is_ok());
    e.reload(&registry("    quota: { rate: 0.01, burst: 2 }").quota_limits());
    assert!(
        e.check("a", "citizen.read").is_err(),
        "a reload must not refill"
    );
    e.reload(&registry("    quota: { rate: 0.01, burst: 5 }").quota_limits());
    assert_eq!(
        (0..10)
            .filter(|_| e.check("a", "citizen.read").is_ok())
            .count(),
        5
    );
}

#[test]
fn bad_quota_settings_are_located() {
    for (bad, want) in [
        ("    quota: { rate: -1 }", "quota.rate"),
        ("    quota: { burst: 3 }", "needs quota.rate"),
        ("    quota: { rate: 1, burst: 0 }", "burst must be"),
        ("    quota: { rate: 1, bursts: 2 }", "unknown field"),
        (
            "    route_quota:\n      nope: { rate: 1 }",
            "unknown route id",
        ),
    ] {
        let text = format!(
            "routes:\n  - id: r\n    route: GET /x\nagencies:\n  - id: a\n    name: A\n    kind: province\n    identity: {{ uri_san: \"u\" }}\n    allow: [r]\n{bad}\n"
        );
        let e = Registry::parse(Path::new("agencies.yaml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("agencies.yaml:10:") || e.starts_with("agencies.yaml:11:"),
            "{bad}: {e}"
        );
        assert!(e.contains(want), "{bad}: {e}");
    }
}

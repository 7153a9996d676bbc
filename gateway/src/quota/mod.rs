//! Per-agency quotas: rate + burst (GCRA via `governor`), a daily quota on
//! the Asia/Ho_Chi_Minh calendar day, and a cap on requests in flight.
//!
//! One agency's flood cannot starve another: every limit is keyed by agency
//! (or by agency and route, where a route overrides the agency's limit).

pub mod cluster;
mod daily;
mod spec;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota};

pub use daily::{Clock, SystemClock};
pub use spec::QuotaSpec;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Rate,
    Daily,
    Concurrency,
    /// The cluster budget (Redis) cannot be consulted and failure_mode is deny.
    Unavailable,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Rate => "rate",
            Limit::Daily => "daily",
            Limit::Concurrency => "concurrency",
            Limit::Unavailable => "unavailable",
        }
    }
}

/// A refusal with what the agency needs to back off correctly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    pub limit: Limit,
    pub retry_after_s: u64,
    /// Response headers (Retry-After, RateLimit-Policy, RateLimit).
    pub headers: Vec<(&'static str, String)>,
}

/// Held for the life of an admitted request; releases its concurrency slot.
#[derive(Debug)]
pub struct Permit {
    slot: Option<Arc<AtomicU32>>,
    /// Headers for the successful response (remaining daily quota).
    pub headers: Vec<(&'static str, String)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.slot.take() {
            s.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Limits for one key: an agency, or an agency's route.
struct Bucket {
    spec: QuotaSpec,
    limiter: Option<DefaultDirectRateLimiter>,
}

type Key = (String, Option<String>);

struct Limits {
    buckets: HashMap<Key, Arc<Bucket>>,
}

pub struct QuotaEngine {
    limits: ArcSwap<Limits>,
    /// In-flight counters survive reloads so live requests stay counted.
    inflight: Mutex<HashMap<Key, Arc<AtomicU32>>>,
    daily: daily::DailyCounters,
    cluster: Option<cluster::Cluster>,
}

/// One agency's limits as the registry declares them: all the engine needs
/// of a registry (which owns `QuotaSpec`s but is not needed here).
#[derive(Debug, Clone, Copy)]
pub struct AgencyLimits<'a> {
    pub agency: &'a str,
    pub quota: Option<&'a QuotaSpec>,
    /// Route id → limits replacing the agency's on that route.
    pub per_route: &'a [(String, QuotaSpec)],
}

impl QuotaEngine {
    pub fn new(
        declared: &[AgencyLimits<'_>],
        state_dir: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let engine = QuotaEngine {
            limits: ArcSwap::from_pointee(Limits {
                buckets: HashMap::new(),
            }),
            inflight: Mutex::new(HashMap::new()),
            daily: daily::DailyCounters::open(state_dir, clock)?,
            cluster: None,
        };
        engine.reload(declared);
        Ok(engine)
    }

    /// Shares budgets with other instances through Redis.
    pub fn with_cluster(mut self, cluster: cluster::Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    pub fn cluster(&self) -> Option<&cluster::Cluster> {
        self.cluster.as_ref()
    }

    /// Admits or refuses a request: locally, or against the cluster budget
    /// with the local limiter as the fast path in front (a request refused
    /// locally never reaches Redis).
    pub async fn admit(&self, agency: &str, route: &str) -> Result<Permit, QuotaRefusal> {
        let Some(cluster) = &self.cluster else {
            return self.check(agency, route);
        };
        let limits = self.limits.load_full();
        let (agency_key, route_key) = keys(agency, route);
        let mut permit = self.front(&limits, &agency_key, &route_key)?;
        let rate = pick(&limits, &agency_key, &route_key, |s| s.rate.is_some());
        let daily = pick(&limits, &agency_key, &route_key, |s| s.daily.is_some());
        let reset = self.daily.seconds_to_midnight();
        let mut asks: Vec<(&Key, u64, u32, u64)> = Vec::new();
        match (rate, daily) {
            (Some((rk, rb)), Some((dk, db))) if rk == dk => asks.push((
                rk,
                interval_us(&rb.spec),
                burst(&rb.spec),
                db.spec.daily.unwrap_or(0),
            )),
            (r, d) => {
                if let Some((k, b)) = r {
                    asks.push((k, interval_us(&b.spec), burst(&b.spec), 0));
                }
                if let Some((k, b)) = d {
                    asks.push((k, 0, 0, b.spec.daily.unwrap_or(0)));
                }
            }
        }
        for (key, interval, burst, daily_limit) in asks {
            let name = match &key.1 {
                Some(r) => format!("{}:{r}", key.0),
                None => key.0.clone(),
            };
            match cluster
                .check(&name, interval, burst, daily_limit, reset)
                .await
            {
                cluster::Verdict::Admitted { daily_remaining } => {
                    if let Some(rem) = daily_remaining {
                        permit.headers.push((
                            "ratelimit-policy",
                            format!("\"daily\";q={daily_limit};w=86400"),
                        ));
                        permit
                            .headers
                            .push(("ratelimit", format!("\"daily\";r={rem};t={reset}")));
                    }
                }
                cluster::Verdict::Refused {
                    limit,
                    retry_after_s,
                } => {
                    let mut headers = vec![("retry-after", retry_after_s.to_string())];
                    if limit == Limit::Daily {
                        headers.push((
                            "ratelimit-policy",
                            format!("\"daily\";q={daily_limit};w=86400"),
                        ));
                        headers.push(("ratelimit", format!("\"daily\";r=0;t={reset}")));
                    }
                    return Err(QuotaRefusal {
                        limit,
                        retry_after_s,
                        headers,
                    });
                }
                cluster::Verdict::Unreachable => match cluster.failure_mode {
                    cluster::FailureMode::Deny => {
                        return Err(QuotaRefusal {
                            limit: Limit::Unavailable,
                            retry_after_s: 1,
                            headers: vec![("retry-after", "1".to_owned())],
                        })
                    }
                    // The local rate was already enforced in front.
                    cluster::FailureMode::Local => {
                        return self.local_daily(&limits, &agency_key, &route_key, permit)
                    }
                },
            }
        }
        Ok(permit)
    }

    /// Applies the registry's quota settings. Buckets whose spec did not
    /// change keep their state, so a reload never refills anyone.
    pub fn reload(&self, declared: &[AgencyLimits<'_>]) {
        let old = self.limits.load();
        let mut buckets = HashMap::new();
        for a in declared {
            let mut add = |key: Key, spec: &QuotaSpec| {
                let bucket = match old.buckets.get(&key) {
                    Some(b) if b.spec == *spec => b.clone(),
                    _ => Arc::new(Bucket {
                        spec: spec.clone(),
                        limiter: spec.rate.map(|rate| {
                            let burst = burst(spec);
                            let period = Duration::from_secs_f64(1.0 / rate);
                            let quota = Quota::with_period(period)
                                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                                .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
                            DefaultDirectRateLimiter::direct(quota)
                        }),
                    }),
                };
                buckets.insert(key, bucket);
            };
            if let Some(spec) = a.quota {
                add((a.agency.to_owned(), None), spec);
            }
            for (route, spec) in a.per_route {
                add((a.agency.to_owned(), Some(route.clone())), spec);
            }
        }
        self.limits.store(Arc::new(Limits { buckets }));
    }

    /// Admits or refuses one request of `agency` on `route` with this
    /// instance's limits only. Each limit is taken from the route's override
    /// when it sets one, else the agency's.
    pub fn check(&self, agency: &str, route: &str) -> Result<Permit, QuotaRefusal> {
        let limits = self.limits.load_full();
        let (agency_key, route_key) = keys(agency, route);
        let permit = self.front(&limits, &agency_key, &route_key)?;
        self.local_daily(&limits, &agency_key, &route_key, permit)
    }

    /// Concurrency, then the local GCRA limiter.
    fn front(
        &self,
        limits: &Limits,
        agency_key: &Key,
        route_key: &Key,
    ) -> Result<Permit, QuotaRefusal> {
        // Concurrency first: it is given back if a later limit refuses.
        let mut permit = Permit {
            slot: None,
            headers: Vec::new(),
        };
        if let Some((key, b)) = pick(limits, agency_key, route_key, |s| {
            s.max_concurrent.is_some()
        }) {
            let max = b.spec.max_concurrent.unwrap_or(u32::MAX);
            let slot = self
                .inflight
                .lock()
                .map(|mut m| m.entry(key.clone()).or_default().clone())
                .map_err(|_| refusal_concurrency(max))?;
            let now = slot.fetch_add(1, Ordering::AcqRel) + 1;
            permit.slot = Some(slot);
            if now > max {
                return Err(refusal_concurrency(max));
            }
        }
        if let Some((_, b)) = pick(limits, agency_key, route_key, |s| s.rate.is_some()) {
            if let Some(limiter) = &b.limiter {
                if let Err(not_until) = limiter.check() {
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ));
                    let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
                    let rate = b.spec.rate.unwrap_or(1.0);
                    let burst = burst(&b.spec);
                    let window = (f64::from(burst) / rate).ceil().max(1.0) as u64;
                    return Err(QuotaRefusal {
                        limit: Limit::Rate,
                        retry_after_s: retry,
                        headers: vec![
                            ("retry-after", retry.to_string()),
                            (
                                "ratelimit-policy",
                                format!("\"burst\";q={burst};w={window}"),
                            ),
                            ("ratelimit", format!("\"burst\";r=0;t={retry}")),
                        ],
                    });
                }
            }
        }
        Ok(permit)
    }

    fn local_daily(
        &self,
        limits: &Limits,
        agency_key: &Key,
        route_key: &Key,
        mut permit: Permit,
    ) -> Result<Permit, QuotaRefusal> {
        if let Some((key, b)) = pick(limits, agency_key, route_key, |s| s.daily.is_some()) {
            let limit = b.spec.daily.unwrap_or(u64::MAX);
            let taken = self.daily.take(key, limit);
            let reset = self.daily.seconds_to_midnight();
            let policy = ("ratelimit-policy", format!("\"daily\";q={limit};w=86400"));
            match taken {
                Ok(remaining) => {
                    permit.headers.push(policy);
                    permit
                        .headers
                        .push(("ratelimit", format!("\"daily\";r={remaining};t={reset}")));
                }
                Err(()) => {
                    return Err(QuotaRefusal {
                        limit: Limit::Daily,
                        retry_after_s: reset,
                        headers: vec![
                            ("retry-after", reset.to_string()),
                            policy,
                            ("ratelimit", format!("\"daily\";r=0;t={reset}")),
                        ],
                    })
                }
            }
        }
        Ok(permit)
    }
}

fn keys(agency: &str, route: &str) -> (Key, Key) {
    (
        (agency.to_owned(), None),
        (agency.to_owned(), Some(route.to_owned())),
    )
}

/// The bucket that sets a limit: the route's override if it sets it, else the agency's.
fn pick<'a>(
    limits: &'a Limits,
    agency_key: &Key,
    route_key: &Key,
    has: fn(&QuotaSpec) -> bool,
) -> Option<(&'a Key, &'a Arc<Bucket>)> {
    limits
        .buckets
        .get_key_value(route_key)
        .filter(|(_, b)| has(&b.spec))
        .or_else(|| {
            limits
                .buckets
                .get_key_value(agency_key)
                .filter(|(_, b)| has(&b.spec))
        })
}

fn burst(spec: &QuotaSpec) -> u32 {
    spec.burst
        .unwrap_or_else(|| (spec.rate.unwrap_or(1.0).ceil() as u32).max(1))
}

fn interval_us(spec: &QuotaSpec) -> u64 {
    spec.rate
        .map_or(0, |r| (1_000_000.0 / r).round().max(1.0) as u64)
}

fn refusal_concurrency(max: u32) -> QuotaRefusal {
    QuotaRefusal {
        limit: Limit::Concurrency,
        retry_after_s: 1,
        headers: vec![
            ("retry-after", "1".to_owned()),
            ("x-ratelimit-concurrency", max.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests;

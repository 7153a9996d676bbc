//! Per-agency quotas: rate + burst (GCRA via `governor`), a daily quota on
//! the Asia/Ho_Chi_Minh calendar day, and a cap on requests in flight.
//!
//! One agency's flood cannot starve another: every limit is keyed by agency
//! (or by agency and route, where a route overrides the agency's limit).

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

use crate::registry::Registry;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Rate,
    Daily,
    Concurrency,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Rate => "rate",
            Limit::Daily => "daily",
            Limit::Concurrency => "concurrency",
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
}

impl QuotaEngine {
    pub fn new(
        registry: &Registry,
        state_dir: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Self> {
        let engine = QuotaEngine {
            limits: ArcSwap::from_pointee(Limits {
                buckets: HashMap::new(),
            }),
            inflight: Mutex::new(HashMap::new()),
            daily: daily::DailyCounters::open(state_dir, clock)?,
        };
        engine.reload(registry);
        Ok(engine)
    }

    /// Applies the registry's quota settings. Buckets whose spec did not
    /// change keep their state, so a reload never refills anyone.
    pub fn reload(&self, registry: &Registry) {
        let old = self.limits.load();
        let mut buckets = HashMap::new();
        for a in &registry.agencies {
            let mut add = |key: Key, spec: &QuotaSpec| {
                let bucket = match old.buckets.get(&key) {
                    Some(b) if b.spec == *spec => b.clone(),
                    _ => Arc::new(Bucket {
                        spec: spec.clone(),
                        limiter: spec.rate.map(|rate| {
                            let burst = spec.burst.unwrap_or_else(|| (rate.ceil() as u32).max(1));
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
            if let Some(spec) = &a.quota {
                add((a.id.clone(), None), spec);
            }
            for (route, spec) in &a.route_quotas {
                add((a.id.clone(), Some(route.clone())), spec);
            }
        }
        self.limits.store(Arc::new(Limits { buckets }));
    }

    /// Admits or refuses one request of `agency` on `route`. Each limit is
    /// taken from the route's override when it sets one, else the agency's.
    pub fn check(&self, agency: &str, route: &str) -> Result<Permit, QuotaRefusal> {
        let limits = self.limits.load();
        let agency_key: Key = (agency.to_owned(), None);
        let route_key: Key = (agency.to_owned(), Some(route.to_owned()));
        let pick = |has: fn(&QuotaSpec) -> bool| -> Option<(&Key, &Arc<Bucket>)> {
            limits
                .buckets
                .get_key_value(&route_key)
                .filter(|(_, b)| has(&b.spec))
                .or_else(|| {
                    limits
                        .buckets
                        .get_key_value(&agency_key)
                        .filter(|(_, b)| has(&b.spec))
                })
        };

        // Concurrency first: it is given back if a later limit refuses.
        let mut permit = Permit {
            slot: None,
            headers: Vec::new(),
        };
        if let Some((key, b)) = pick(|s| s.max_concurrent.is_some()) {
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
        if let Some((_, b)) = pick(|s| s.rate.is_some()) {
            if let Some(limiter) = &b.limiter {
                if let Err(not_until) = limiter.check() {
                    let wait = not_until.wait_time_from(governor::clock::Clock::now(
                        &governor::clock::DefaultClock::default(),
                    ));
                    let retry = wait.as_secs_f64().ceil().max(1.0) as u64;
                    let rate = b.spec.rate.unwrap_or(1.0);
                    let burst = b.spec.burst.unwrap_or_else(|| (rate.ceil() as u32).max(1));
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
        if let Some((key, b)) = pick(|s| s.daily.is_some()) {
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

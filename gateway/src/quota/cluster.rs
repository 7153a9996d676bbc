//! Cluster-wide quotas in Redis, so several popgate instances behind a load
//! balancer share each agency's budget.
//!
//! One Lua script does GCRA (rate + burst) and the daily count atomically in
//! one round trip, using Redis' own clock, so instances never race each other
//! with read-then-write and clock skew between gateways does not matter.
//! The Redis client runs on its own small runtime: request handlers on any of
//! pingora's runtimes only await its answers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// GCRA + daily counter. KEYS: gcra, daily. ARGV: interval_us (0 = no rate),
/// burst, daily_limit (0 = none), daily_ttl_s.
/// Returns {admitted (1|0), limit ("rate"|"daily"|""), value}: retry-after
/// in µs for rate refusals, remaining daily quota when admitted.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local dlimit = tonumber(ARGV[3])
local new_tat = 0
if interval > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  new_tat = tat + interval
  local allowed_at = new_tat - interval * burst
  if allowed_at > now then
    return {0, 'rate', allowed_at - now}
  end
end
local used = 0
if dlimit > 0 then
  used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used >= dlimit then
    return {0, 'daily', 0}
  end
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
end
if interval > 0 then
  redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
return {1, '', dlimit - used - 1}
"#;

/// What to do when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Refuse with 503 `quota_unavailable`: no budget can be proven.
    Deny,
    /// Fall back to this instance's own limits.
    Local,
}

pub enum Verdict {
    Admitted {
        daily_remaining: Option<u64>,
    },
    Refused {
        limit: super::Limit,
        retry_after_s: u64,
    },
    Unreachable,
}

pub struct Cluster {
    client: redis::Client,
    prefix: String,
    pub failure_mode: FailureMode,
    timeout: Duration,
    rt: tokio::runtime::Runtime,
    conn: Arc<Mutex<Option<redis::aio::MultiplexedConnection>>>,
    last_attempt: Arc<std::sync::Mutex<Option<Instant>>>,
    up: Arc<AtomicBool>,
    /// Up/down transitions, for metrics.
    pub transitions: Arc<AtomicU64>,
    script: redis::Script,
}

impl Cluster {
    pub fn new(
        url: &str,
        prefix: &str,
        failure_mode: FailureMode,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("quota.redis.url {url:?}: {e}"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("popgate-redis")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Cluster {
            client,
            prefix: prefix.to_owned(),
            failure_mode,
            timeout,
            rt,
            conn: Arc::new(Mutex::new(None)),
            last_attempt: Arc::new(std::sync::Mutex::new(None)),
            up: Arc::new(AtomicBool::new(true)),
            transitions: Arc::new(AtomicU64::new(0)),
            script: redis::Script::new(SCRIPT),
        })
    }

    fn mark(&self, up: bool, why: &str) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            if up {
                tracing::warn!("quota backend redis is reachable again; cluster-wide limits apply");
            } else {
                tracing::error!(reason = why, failure_mode = ?self.failure_mode, "quota backend redis unreachable");
            }
        }
    }

    /// One atomic check against the cluster budget.
    pub async fn check(
        &self,
        key: &str,
        interval_us: u64,
        burst: u32,
        daily: u64,
        daily_ttl_s: u64,
    ) -> Verdict {
        let (conn, client, last) = (
            self.conn.clone(),
            self.client.clone(),
            self.last_attempt.clone(),
        );
        let script = self.script.clone();
        let (gcra, day) = (
            format!("{}{key}:gcra", self.prefix),
            format!("{}{key}:daily", self.prefix),
        );
        let timeout = self.timeout;
        let job = self.rt.spawn(async move {
            let mut guard = conn.lock().await;
            if guard.is_none() {
                // Reconnect at most once a second so a dead Redis costs little.
                {
                    let mut l = last.lock().map_err(|_| "lock".to_owned())?;
                    if l.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                        return Err("reconnect back-off".to_owned());
                    }
                    *l = Some(Instant::now());
                }
                let c = tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| "connect timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                *guard = Some(c);
            }
            let Some(c) = guard.as_mut() else {
                return Err("no connection".to_owned());
            };
            let mut c = c.clone();
            drop(guard);
            let mut invocation = script.key(gcra);
            invocation
                .key(day)
                .arg(interval_us)
                .arg(burst)
                .arg(daily)
                .arg(daily_ttl_s);
            let fut = invocation.invoke_async::<(i64, String, i64)>(&mut c);
            match tokio::time::timeout(timeout, fut).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    *conn.lock().await = None;
                    Err(e.to_string())
                }
                Err(_) => {
                    *conn.lock().await = None;
                    Err("timed out".to_owned())
                }
            }
        });
        match job.await {
            Ok(Ok((1, _, remaining))) => {
                self.mark(true, "");
                Verdict::Admitted {
                    daily_remaining: (daily > 0).then_some(remaining.max(0) as u64),
                }
            }
            Ok(Ok((_, limit, value))) => {
                self.mark(true, "");
                let (limit, retry) = if limit == "daily" {
                    (super::Limit::Daily, daily_ttl_s)
                } else {
                    (
                        super::Limit::Rate,
                        (value as u64).div_ceil(1_000_000).max(1),
                    )
                };
                Verdict::Refused {
                    limit,
                    retry_after_s: retry,
                }
            }
            Ok(Err(why)) => {
                self.mark(false, &why);
                Verdict::Unreachable
            }
            Err(e) => {
                self.mark(false, &e.to_string());
                Verdict::Unreachable
            }
        }
    }
}

//! Daily counters on the Asia/Ho_Chi_Minh calendar day, persisted so that a
//! restart never hands an agency a fresh day.
//!
//! Persistence leases blocks: before admitting beyond what is on disk, the
//! reservation grows by a block (1/50 of the limit, at least 1) and is
//! fsync'd. After a crash the whole reservation counts as used — the
//! count can only err towards refusing, never towards over-admitting — and
//! disk writes happen about 50 times per agency per day, not per request.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, UtcOffset};

/// Asia/Ho_Chi_Minh has been UTC+7 without daylight saving since 1975.
const VN: UtcOffset = match UtcOffset::from_hms(7, 0, 0) {
    Ok(o) => o,
    Err(_) => UtcOffset::UTC,
};

/// Wall-clock source, injectable so tests can cross midnight instantly.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    day: String,
    /// "agency" or "agency route" → requests reserved today.
    reserved: HashMap<String, u64>,
}

struct State {
    day: Date,
    used: HashMap<super::Key, u64>,
    reserved: HashMap<super::Key, u64>,
}

pub struct DailyCounters {
    path: PathBuf,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

fn key_str(k: &super::Key) -> String {
    match &k.1 {
        Some(r) => format!("{} {r}", k.0),
        None => k.0.clone(),
    }
}

fn parse_key(s: &str) -> super::Key {
    match s.split_once(' ') {
        Some((a, r)) => (a.to_owned(), Some(r.to_owned())),
        None => (s.to_owned(), None),
    }
}

impl DailyCounters {
    pub fn open(dir: PathBuf, clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("quota-daily.json");
        let today = clock.now().to_offset(VN).date();
        let mut state = State {
            day: today,
            used: HashMap::new(),
            reserved: HashMap::new(),
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            let disk: OnDisk = serde_json::from_str(&text)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            if disk.day == today.to_string() {
                for (k, v) in disk.reserved {
                    let key = parse_key(&k);
                    // Conservative: everything reserved counts as used.
                    state.used.insert(key.clone(), v);
                    state.reserved.insert(key, v);
                }
            }
        }
        Ok(DailyCounters {
            path,
            clock,
            state: Mutex::new(state),
        })
    }

    pub fn seconds_to_midnight(&self) -> u64 {
        let now = self.clock.now().to_offset(VN);
        let secs =
            u64::from(now.hour()) * 3600 + u64::from(now.minute()) * 60 + u64::from(now.second());
        86_400 - secs
    }

    /// Counts one request; Ok(remaining after it) or Err when exhausted.
    pub fn take(&self, key: &super::Key, limit: u64) -> Result<u64, ()> {
        let today = self.clock.now().to_offset(VN).date();
        let mut st = self.state.lock().map_err(|_| ())?;
        if st.day != today {
            st.day = today;
            st.used.clear();
            st.reserved.clear();
        }
        let used = st.used.get(key).copied().unwrap_or(0);
        if used >= limit {
            return Err(());
        }
        let reserved = st.reserved.get(key).copied().unwrap_or(0);
        if used + 1 > reserved {
            let block = (limit / 50).max(1);
            st.reserved
                .insert(key.clone(), (reserved + block).min(limit));
            if let Err(e) = self.persist(&st) {
                // Fail closed: an unpersisted reservation could be re-granted after a restart.
                st.reserved.insert(key.clone(), reserved);
                tracing::error!(error = %e, "cannot persist daily quota; refusing");
                return Err(());
            }
        }
        st.used.insert(key.clone(), used + 1);
        Ok(limit - used - 1)
    }

    fn persist(&self, st: &State) -> std::io::Result<()> {
        let disk = OnDisk {
            day: st.day.to_string(),
            reserved: st.reserved.iter().map(|(k, v)| (key_str(k), *v)).collect(),
        };
        let bytes = serde_json::to_vec(&disk).map_err(std::io::Error::other)?;
        certs::durable_file::write(&self.path, &bytes, true)
    }
}

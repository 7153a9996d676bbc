//! Shipping an instance's local audit log into the cluster's store.
//!
//! Runs inside popgate, on its own thread and runtime, reading the same
//! segment files the writer appends to: the request path neither waits
//! for nor knows about the store, and a store outage only grows the lag.
//! Inside rather than a separate daemon so that one unit is deployed per
//! host, the lag is measured against the writer's own head, and deleting
//! shipped segments is decided next to the log. `popgate audit ship` runs
//! the same code once over a directory, for the log of an instance that
//! no longer runs.
//!
//! Guarantees:
//! - **Only vouched records leave the host**: a record is shipped once a
//!   signed checkpoint or seal covers it. Those were fdatasync'd before
//!   being vouched for, so the store never holds a record a crash could
//!   take back, and the bytes read are whole (never a write in progress).
//! - **In order, at least once, never twice**: each batch moves the
//!   instance's high-water mark (seq and hash) by compare-and-set in the
//!   transaction that inserts its rows. A crash of either side before the
//!   commit ships the batch again; after it, the mark says where to go on.
//! - **One history per instance**: resuming checks that the local record
//!   after the mark links to the mark's hash; a store holding another
//!   history under this id (two gateways sharing an id, a rewritten local
//!   log) stops shipping with a `conflict` error instead of mixing them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::instance::InstanceId;
use super::record;
use super::segment::{self, Checkpoint, Seal};
use super::store::{self, Batch, Row, Shipped, Signed, Store, StoreConfig, StoreError};

/// Why a shipping step failed; `kind` is the metric label.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ShipError {
    pub kind: &'static str,
    pub message: String,
}

impl From<StoreError> for ShipError {
    fn from(e: StoreError) -> Self {
        ShipError {
            kind: match e {
                StoreError::Connect { .. } => "connect",
                StoreError::Query(_) => "store",
                StoreError::Conflict(_) => "conflict",
            },
            message: e.to_string(),
        }
    }
}

fn local(message: String) -> ShipError {
    ShipError {
        kind: "local",
        message,
    }
}

fn conflict(message: String) -> ShipError {
    ShipError {
        kind: "conflict",
        message,
    }
}

/// Where shipping stands in the local log.
#[derive(Debug, Clone)]
struct Cursor {
    segment: u64,
    /// Byte offset of the next record to ship in `segment`.
    offset: u64,
    /// The last shipped record, and its hash.
    seq: u64,
    hash: String,
    /// Checkpoint lines of `segment` already shipped.
    checkpoints: usize,
    /// `segment`'s seal is in the store.
    seal_shipped: bool,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Shipped(usize),
    /// Moved on to the next segment.
    Moved,
    /// Nothing vouched for is left to ship.
    Idle,
}

/// The local log directory of one instance, read for shipping.
pub struct Shipper {
    dir: PathBuf,
    instance: InstanceId,
    batch: usize,
    cursor: Option<Cursor>,
}

fn read_seal(dir: &Path, n: u64) -> Result<Option<(Seal, String)>, ShipError> {
    let path = segment::seal_path(dir, n);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(local(format!("{}: {e}", path.display()))),
    };
    let seal: Seal = serde_json::from_str(&text)
        .map_err(|e| local(format!("{}: not a seal: {e}", path.display())))?;
    // Stored compact: one statement per row.
    let body =
        serde_json::to_string(&seal).map_err(|e| local(format!("{}: {e}", path.display())))?;
    Ok(Some((seal, body)))
}

/// A record read back from a segment, with where the next one starts.
struct Read {
    seq: u64,
    hash: String,
    prev: String,
    row: Row,
    next_offset: u64,
}

/// Reads whole records of segment `n` from `offset` while `keep(seq)`.
fn read_records(
    dir: &Path,
    instance: &InstanceId,
    n: u64,
    mut offset: u64,
    limit: usize,
    mut keep: impl FnMut(u64) -> bool,
) -> Result<Vec<Read>, ShipError> {
    use std::os::unix::fs::FileExt;
    let path = segment::segment_path(dir, n);
    let file = std::fs::File::open(&path).map_err(|e| local(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    'chunks: while out.len() < limit {
        let got = file
            .read_at(&mut buf, offset)
            .map_err(|e| local(format!("{}: {e}", path.display())))?;
        let data = &buf[..got];
        let mut pos = 0usize;
        let mut whole_line = false;
        while let Some(nl) = memchr::memchr(b'\n', &data[pos..]) {
            let line = &data[pos..pos + nl];
            if line.first().is_none_or(|b| *b == 0) {
                break 'chunks; // the zero padding after the open segment's records
            }
            whole_line = true;
            let at = |what: String| {
                local(format!(
                    "{} at byte {}: {what} (run `popgate audit verify`)",
                    path.display(),
                    offset + pos as u64
                ))
            };
            let (p, hash) = record::peek(line).map_err(|e| at(e.to_string()))?;
            if !keep(p.seq) {
                break 'chunks;
            }
            if p.instance
                .as_deref()
                .is_some_and(|i| i != instance.as_str())
            {
                return Err(conflict(format!(
                    "{} at byte {}: record seq {} belongs to instance {:?}, not {instance}: this directory holds another instance's log",
                    path.display(),
                    offset + pos as u64,
                    p.seq,
                    p.instance.as_deref().unwrap_or("")
                )));
            }
            let text = std::str::from_utf8(line).map_err(|e| at(e.to_string()))?;
            pos += nl + 1;
            let kind = p.kind();
            out.push(Read {
                seq: p.seq,
                hash,
                prev: p.prev.into_owned(),
                next_offset: offset + pos as u64,
                row: Row {
                    seq: p.seq,
                    segment: n,
                    kind,
                    time: p.time.into_owned(),
                    request_id: p.request_id.into_owned(),
                    agency: p.agency.map(|a| a.into_owned()),
                    citizen_ref: p.citizen_ref.map(|c| c.into_owned()),
                    line: text.to_owned(),
                },
            });
            if out.len() >= limit {
                break 'chunks;
            }
        }
        if got < buf.len() {
            break; // end of file
        }
        if !whole_line {
            return Err(local(format!(
                "{} at byte {offset}: a line longer than {} bytes is not a record",
                path.display(),
                buf.len()
            )));
        }
        offset += pos as u64;
    }
    Ok(out)
}

impl Shipper {
    pub fn new(dir: &Path, instance: InstanceId, batch: usize) -> Self {
        Shipper {
            dir: dir.to_owned(),
            instance,
            batch,
            cursor: None,
        }
    }

    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The last record known to be in the store (after a successful step).
    pub fn shipped_seq(&self) -> Option<u64> {
        self.cursor.as_ref().map(|c| c.seq)
    }

    /// Finds where the store's high-water mark lies in the local log, and
    /// checks the two histories agree there.
    fn locate(&self, mark: &Shipped) -> Result<Cursor, ShipError> {
        let segments =
            segment::list(&self.dir).map_err(|e| local(format!("{}: {e}", self.dir.display())))?;
        let me = &self.instance;
        let Some(&first) = segments.first() else {
            if mark.seq == 0 {
                return Ok(Cursor {
                    segment: 1,
                    offset: 0,
                    seq: 0,
                    hash: mark.hash.clone(),
                    checkpoints: 0,
                    seal_shipped: false,
                });
            }
            return Err(conflict(format!(
                "instance {me}: the store holds records up to seq {} but {} has none",
                mark.seq,
                self.dir.display()
            )));
        };
        // The segment holding the mark: the first not sealed below it.
        let last = segments.last().copied().unwrap_or(first);
        let mut n = first;
        for &s in &segments {
            n = s;
            match read_seal(&self.dir, s)? {
                Some((seal, _)) if seal.last_seq < mark.seq && s != last => continue,
                _ => break,
            }
        }
        // Where segment `n` starts: after the previous segment's seal (kept
        // even when that segment was deleted after shipping).
        let (start, hash_before) = match n {
            1 => (1, record::GENESIS.to_owned()),
            _ => match read_seal(&self.dir, n - 1)? {
                Some((seal, _)) => (seal.last_seq + 1, seal.last_hash),
                None => {
                    return Err(local(format!(
                        "{}: the seal of segment {} is missing (run `popgate audit verify`)",
                        self.dir.display(),
                        n - 1
                    )))
                }
            },
        };
        // Read up to the mark and no further: the record after it may be
        // being written right now.
        let (matched, offset, last_seen) = if mark.seq + 1 < start {
            (false, 0, None)
        } else if mark.seq + 1 == start {
            (hash_before == mark.hash, 0, None)
        } else {
            let want = (mark.seq + 1 - start) as usize;
            let reads = read_records(&self.dir, &self.instance, n, 0, want, |seq| seq <= mark.seq)?;
            match reads.last() {
                Some(r) if r.seq == mark.seq => (r.hash == mark.hash, r.next_offset, Some(r.seq)),
                Some(r) => (false, 0, Some(r.seq)),
                None => (false, 0, Some(start - 1)),
            }
        };
        if !matched {
            let found = match last_seen {
                Some(s) if s < mark.seq => format!("the local log ends at seq {s}"),
                _ => "the local records there differ".into(),
            };
            return Err(conflict(format!(
                "instance {me}: the store's history ends at seq {} (hash {}…) but {found} in {}: the store holds another history under this id (audit.instance shared by two gateways?) or the local log was rewritten; shipping stopped — run `popgate audit verify --store`",
                mark.seq,
                mark.hash.get(..12).unwrap_or(&mark.hash),
                segment::segment_path(&self.dir, n).display()
            )));
        }
        Ok(Cursor {
            segment: n,
            offset,
            seq: mark.seq,
            hash: mark.hash.clone(),
            checkpoints: 0,
            seal_shipped: false,
        })
    }

    /// Ships one batch (or moves on a segment); `Idle` when caught up.
    async fn step(&mut self, store: &mut Store) -> Result<Step, ShipError> {
        let cursor = match &self.cursor {
            Some(c) => c.clone(),
            None => {
                let mark = store::shipped(&store.client, &self.instance).await?;
                let c = self.locate(&mark)?;
                self.cursor = Some(c.clone());
                c
            }
        };
        let n = cursor.segment;
        let seal = read_seal(&self.dir, n)?;
        let ckpt_path = segment::checkpoint_path(&self.dir, n);
        let mut checkpoints = Vec::new();
        for (i, c) in segment::read_checkpoints(&ckpt_path)
            .map_err(|e| local(format!("{}: {e}", ckpt_path.display())))?
            .into_iter()
            .enumerate()
        {
            let c: Checkpoint =
                c.map_err(|e| local(format!("{}:{}: {e}", ckpt_path.display(), i + 1)))?;
            checkpoints.push(c);
        }
        // Batches end where a checkpoint or the seal vouches, so every row
        // in the store is covered by a signed statement beside it (verify
        // --store relies on that): the largest such point within the batch
        // size, or the nearest beyond it.
        let mut points: Vec<u64> = checkpoints.iter().map(|c| c.seq).collect();
        points.extend(seal.as_ref().map(|(s, _)| s.last_seq));
        points.retain(|p| *p > cursor.seq);
        points.sort_unstable();
        let limit = cursor.seq + self.batch as u64;
        let target = points
            .iter()
            .rev()
            .find(|p| **p <= limit)
            .or(points.first())
            .copied()
            .unwrap_or(cursor.seq);
        let reads = if target > cursor.seq {
            read_records(
                &self.dir,
                &self.instance,
                n,
                cursor.offset,
                (target - cursor.seq) as usize,
                |seq| seq <= target,
            )?
        } else {
            Vec::new()
        };
        let mut seq = cursor.seq;
        let mut hash = cursor.hash.clone();
        for r in &reads {
            if r.seq != seq + 1 || r.prev != hash {
                return Err(local(format!(
                    "{}: record seq {} does not follow seq {seq} in the chain (run `popgate audit verify`)",
                    segment::segment_path(&self.dir, n).display(),
                    r.seq
                )));
            }
            seq = r.seq;
            hash = r.hash.clone();
        }
        let next_offset = reads.last().map_or(cursor.offset, |r| r.next_offset);
        let mut new_checkpoints = Vec::new();
        for (i, c) in checkpoints.iter().enumerate().skip(cursor.checkpoints) {
            if c.seq > seq {
                break;
            }
            new_checkpoints.push(Signed {
                segment: n,
                // Version 1 checkpoints carry no number: their line is it.
                n: c.n.unwrap_or(i as u64 + 1),
                seq: c.seq,
                body: serde_json::to_string(c)
                    .map_err(|e| local(format!("{}: {e}", ckpt_path.display())))?,
            });
        }
        let all_checkpoints = cursor.checkpoints + new_checkpoints.len() == checkpoints.len();
        let seal_due = match &seal {
            Some((s, body)) if !cursor.seal_shipped && s.last_seq == seq && all_checkpoints => {
                Some((n, body.clone()))
            }
            _ => None,
        };
        if reads.is_empty() && new_checkpoints.is_empty() && seal_due.is_none() {
            let done = seal.is_some() && cursor.seal_shipped && all_checkpoints;
            if done && segment::segment_path(&self.dir, n + 1).exists() {
                self.cursor = Some(Cursor {
                    segment: n + 1,
                    offset: 0,
                    seq,
                    hash,
                    checkpoints: 0,
                    seal_shipped: false,
                });
                return Ok(Step::Moved);
            }
            return Ok(Step::Idle);
        }
        let shipped = reads.len();
        let mark = Shipped {
            seq: cursor.seq,
            hash: cursor.hash.clone(),
        };
        let checkpoints_now = new_checkpoints.len();
        let seal_now = seal_due.is_some();
        store::apply(
            store,
            Batch {
                instance: &self.instance,
                from: &mark,
                rows: reads.into_iter().map(|r| r.row).collect(),
                last_hash: hash.clone(),
                checkpoints: new_checkpoints,
                seals: seal_due.into_iter().collect(),
            },
        )
        .await?;
        self.cursor = Some(Cursor {
            segment: n,
            offset: next_offset,
            seq,
            hash,
            checkpoints: cursor.checkpoints + checkpoints_now,
            seal_shipped: cursor.seal_shipped || seal_now,
        });
        Ok(Step::Shipped(shipped))
    }

    /// Ships until nothing vouched for is left; returns the records shipped.
    pub async fn catch_up(&mut self, store: &mut Store) -> Result<u64, ShipError> {
        let mut total = 0;
        loop {
            match self.step(store).await {
                Ok(Step::Shipped(k)) => total += k as u64,
                Ok(Step::Moved) => {}
                Ok(Step::Idle) => return Ok(total),
                Err(e) => {
                    // Re-read the mark before trying again: the batch may
                    // have committed even if its answer was lost.
                    self.cursor = None;
                    return Err(e);
                }
            }
        }
    }

    /// The time of the oldest local record not yet shipped, if any is
    /// there to read (vouched for or not).
    pub fn oldest_unshipped(&self) -> Option<String> {
        let c = self.cursor.as_ref()?;
        let next = |n: u64, off: u64| {
            read_records(&self.dir, &self.instance, n, off, 1, |_| true)
                .ok()
                .and_then(|v| v.into_iter().next())
        };
        next(c.segment, c.offset)
            .or_else(|| next(c.segment + 1, 0))
            .map(|r| r.row.time)
    }
}

/// Metrics of the in-process shipper, labelled by instance.
#[derive(Clone)]
pub struct ShipMetrics {
    pub lag_records: prometheus::IntGaugeVec,
    pub lag_seconds: prometheus::GaugeVec,
    pub shipped: prometheus::IntCounterVec,
    pub errors: prometheus::IntCounterVec,
    pub up: prometheus::IntGaugeVec,
    pub last_success: prometheus::GaugeVec,
}

impl ShipMetrics {
    pub fn new() -> Self {
        use prometheus::Opts;
        let l = &["audit_instance"];
        ShipMetrics {
            lag_records: prometheus::IntGaugeVec::new(
                Opts::new(
                    "popgate_audit_ship_lag_records",
                    "Audit records written on this instance and not yet in the audit store",
                ),
                l,
            )
            .expect("static metric definition"),
            lag_seconds: prometheus::GaugeVec::new(
                Opts::new(
                    "popgate_audit_ship_lag_seconds",
                    "Age of the oldest audit record not yet in the audit store (0 when caught up)",
                ),
                l,
            )
            .expect("static metric definition"),
            shipped: prometheus::IntCounterVec::new(
                Opts::new(
                    "popgate_audit_shipped_records_total",
                    "Audit records shipped to the audit store",
                ),
                l,
            )
            .expect("static metric definition"),
            errors: prometheus::IntCounterVec::new(
                Opts::new(
                    "popgate_audit_ship_errors_total",
                    "Failed shipping attempts, by kind (connect, store, local, conflict)",
                ),
                &["audit_instance", "kind"],
            )
            .expect("static metric definition"),
            up: prometheus::IntGaugeVec::new(
                Opts::new(
                    "popgate_audit_ship_up",
                    "1 when the last shipping attempt reached the audit store and succeeded",
                ),
                l,
            )
            .expect("static metric definition"),
            last_success: prometheus::GaugeVec::new(
                Opts::new(
                    "popgate_audit_ship_last_success_timestamp_seconds",
                    "Unix time of the last successful shipping attempt",
                ),
                l,
            )
            .expect("static metric definition"),
        }
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.lag_records.clone()),
            Box::new(self.lag_seconds.clone()),
            Box::new(self.shipped.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.up.clone()),
            Box::new(self.last_success.clone()),
        ]
    }
}

impl Default for ShipMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How often the shipper looks for newly vouched records when caught up.
const POLL: Duration = Duration::from_millis(200);
/// Longest wait between attempts while the store is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The running in-process shipper.
pub struct ShipperHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ShipperHandle {
    /// Asks for a last attempt (the seal and `closed` mark written at
    /// shutdown) and waits for it at most `timeout`.
    pub fn finish(mut self, timeout: Duration) {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!(
                "audit shipping did not finish before shutdown; the next start resumes it"
            );
        }
    }
}

/// Starts shipping `dir` in the background. `head` is the writer's newest
/// sequence number (for the lag).
pub fn spawn(
    dir: &Path,
    instance: InstanceId,
    cfg: &StoreConfig,
    head: Arc<AtomicU64>,
    metrics: ShipMetrics,
) -> std::io::Result<ShipperHandle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut shipper = Shipper::new(dir, instance, cfg.batch_records);
    let retention = cfg.delete_shipped_after;
    let url = cfg.url.clone();
    let ca = cfg.ca.clone();
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("popgate-audit-ship".into())
        .spawn(move || {
            rt.block_on(run(
                &mut shipper,
                &url,
                ca.as_deref(),
                retention,
                &head,
                &metrics,
                &thread_stop,
            ))
        })?;
    Ok(ShipperHandle {
        stop,
        thread: Some(thread),
    })
}

async fn run(
    shipper: &mut Shipper,
    url: &str,
    ca: Option<&Path>,
    retention: Option<Duration>,
    head: &AtomicU64,
    metrics: &ShipMetrics,
    stop: &AtomicBool,
) {
    let id = shipper.instance().to_string();
    let label = [id.as_str()];
    let mut store: Option<Store> = None;
    let mut backoff = Duration::from_millis(500);
    let mut last_prune: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let result = async {
            if store.is_none() {
                let mut s = Store::connect(url, ca).await?;
                s.ensure_schema().await?;
                store = Some(s);
            }
            match store.as_mut() {
                Some(s) => shipper.catch_up(s).await,
                None => Ok(0),
            }
        }
        .await;
        match result {
            Ok(k) => {
                metrics.shipped.with_label_values(&label).inc_by(k);
                metrics.up.with_label_values(&label).set(1);
                metrics
                    .last_success
                    .with_label_values(&label)
                    .set(unix_now());
                backoff = Duration::from_millis(500);
                if let (Some(after), Some(s)) = (retention, store.as_mut()) {
                    // Often enough to keep up, rarely enough to cost nothing.
                    let every = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
                    if last_prune.is_none_or(|t| t.elapsed() >= every) {
                        last_prune = Some(Instant::now());
                        if let Err(e) = super::retention::prune(shipper, s, after).await {
                            metrics
                                .errors
                                .with_label_values(&[id.as_str(), e.kind])
                                .inc();
                            tracing::error!(error = %e, "deleting shipped audit segments failed");
                        }
                    }
                }
            }
            Err(e) => {
                metrics
                    .errors
                    .with_label_values(&[id.as_str(), e.kind])
                    .inc();
                metrics.up.with_label_values(&label).set(0);
                if e.kind != "local" && e.kind != "conflict" {
                    store = None; // reconnect: the connection may be gone
                }
                tracing::error!(kind = e.kind, error = %e, "audit shipping failed; will retry");
            }
        }
        let shipped = shipper.shipped_seq();
        let head_now = head.load(Ordering::Acquire);
        if let Some(s) = shipped {
            metrics
                .lag_records
                .with_label_values(&label)
                .set(head_now.saturating_sub(s) as i64);
        }
        let lag = match shipper.oldest_unshipped() {
            Some(t) if shipped.is_none_or(|s| s < head_now) => record::parse_time(&t)
                .map(|t| {
                    (time::OffsetDateTime::now_utc() - t)
                        .as_seconds_f64()
                        .max(0.0)
                })
                .unwrap_or(0.0),
            _ => 0.0,
        };
        metrics.lag_seconds.with_label_values(&label).set(lag);
        if stopping {
            return;
        }
        let wait = if metrics.up.with_label_values(&label).get() == 1 {
            POLL
        } else {
            let w = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            w
        };
        let until = Instant::now() + wait;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Shipper {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The segment shipping is in (segments before it are fully shipped).
    pub fn current_segment(&self) -> Option<u64> {
        self.cursor.as_ref().map(|c| c.segment)
    }
}

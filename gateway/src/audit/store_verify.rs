//! `popgate audit verify --store`: proves each instance's history in the
//! store is whole, unaltered and vouched for by its own signatures, or
//! names the first row, seal or checkpoint that is not.
//!
//! Per instance, in sequence order:
//! - every row's line passes its own hash and links to the row before
//!   (a changed, inserted or deleted row breaks this);
//! - the columns search uses (time, kind, request id, agency, citizen
//!   reference) say what the hashed line says, so an edited column cannot
//!   hide an access from `audit search --store` or plant one;
//! - every seal and checkpoint verifies against the seal keys and matches
//!   the rows it vouches for; checkpoints of an instance with an id are
//!   numbered, and seals count them, so a deleted checkpoint is caught;
//! - every row is vouched for: the shipper only ships records up to a
//!   checkpoint or seal, so rows past the newest one mean its checkpoint
//!   was deleted;
//! - the instance's high-water mark names the last row, so rows deleted
//!   from the end (with their checkpoints) are caught too.
//!
//! With a local directory, the store is also compared with it record by
//! record: what the host still holds must be exactly what the store holds.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use futures_util::TryStreamExt;

use super::record::{self, Event, GENESIS};
use super::segment::{self, Checkpoint, CheckpointKind, Seal, SealKeys};
use super::store::Store;

/// The first problem found, located in the store (or the local directory
/// compared with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFinding {
    pub instance: String,
    /// e.g. `record seq 42 (segment 3)`, `checkpoint 7 of segment 3`.
    pub at: String,
    pub what: String,
}

impl fmt::Display for StoreFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "instance {}, {}: {}", self.instance, self.at, self.what)
    }
}

impl std::error::Error for StoreFinding {}

/// What was proved about one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSummary {
    pub instance: String,
    pub records: u64,
    pub segments: u64,
    pub sealed: u64,
    pub checkpoints: u64,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    /// The time of the newest checkpoint: how recent the store's proof is.
    pub newest_checkpoint: Option<String>,
}

struct Ctx<'a> {
    instance: &'a str,
    keys: &'a SealKeys,
}

impl Ctx<'_> {
    fn at(&self, at: impl Into<String>, what: impl Into<String>) -> StoreFinding {
        StoreFinding {
            instance: self.instance.to_owned(),
            at: at.into(),
            what: what.into(),
        }
    }
}

fn db(instance: &str, e: tokio_postgres::Error) -> StoreFinding {
    StoreFinding {
        instance: instance.to_owned(),
        at: "store".into(),
        what: super::store::StoreError::from(e).to_string(),
    }
}

/// Verifies every instance in the store (or only `only`).
pub async fn verify(
    store: &Store,
    keys: &SealKeys,
    only: Option<&str>,
) -> Result<Vec<InstanceSummary>, StoreFinding> {
    let c = &store.client;
    let orphans = c
        .query(
            "SELECT DISTINCT instance FROM popgate_audit_records r
              WHERE NOT EXISTS (SELECT 1 FROM popgate_audit_instances i WHERE i.instance = r.instance)",
            &[],
        )
        .await
        .map_err(|e| db("*", e))?;
    if let Some(r) = orphans.first() {
        let name: String = r.get(0);
        return Err(StoreFinding {
            instance: name,
            at: "popgate_audit_instances".into(),
            what: "rows of this instance exist but its high-water mark does not: it was deleted"
                .into(),
        });
    }
    let marks = c
        .query(
            "SELECT instance, shipped_seq, shipped_hash FROM popgate_audit_instances
              WHERE $1::text IS NULL OR instance = $1 ORDER BY instance",
            &[&only],
        )
        .await
        .map_err(|e| db("*", e))?;
    if marks.is_empty() {
        return Err(StoreFinding {
            instance: only.unwrap_or("*").to_owned(),
            at: "popgate_audit_instances".into(),
            what: "no instance has shipped anything to this store".into(),
        });
    }
    let mut out = Vec::new();
    for m in marks {
        let instance: String = m.get(0);
        let shipped_seq = m.get::<_, i64>(1) as u64;
        let shipped_hash: String = m.get(2);
        let ctx = Ctx {
            instance: &instance,
            keys,
        };
        out.push(verify_instance(store, &ctx, shipped_seq, &shipped_hash).await?);
    }
    Ok(out)
}

/// One segment's rows as verification needs them.
struct Segment {
    n: u64,
    first_seq: u64,
    /// The hash of the record before the segment's first.
    before: String,
    hashes: Vec<String>,
    times: Vec<String>,
}

impl Segment {
    fn last_seq(&self) -> u64 {
        self.first_seq + self.hashes.len() as u64 - 1
    }
}

/// The chain across the segments checked so far.
struct Chain {
    seq: u64,
    hash: String,
    /// The newest `closed` mark not followed by an `opened` one.
    closed: Option<Checkpoint>,
    /// Highest seq a seal or checkpoint vouches for.
    vouched: u64,
}

async fn verify_instance(
    store: &Store,
    ctx: &Ctx<'_>,
    shipped_seq: u64,
    shipped_hash: &str,
) -> Result<InstanceSummary, StoreFinding> {
    let c = &store.client;
    let inst = ctx.instance;
    let mut seals: BTreeMap<u64, Seal> = BTreeMap::new();
    for r in c
        .query(
            "SELECT segment, body FROM popgate_audit_seals WHERE instance = $1 ORDER BY segment",
            &[&inst],
        )
        .await
        .map_err(|e| db(inst, e))?
    {
        let n = r.get::<_, i64>(0) as u64;
        let seal: Seal = serde_json::from_str(r.get(1))
            .map_err(|e| ctx.at(format!("seal of segment {n}"), format!("not a seal: {e}")))?;
        seals.insert(n, seal);
    }
    let mut checkpoints: BTreeMap<u64, Vec<(u64, Checkpoint)>> = BTreeMap::new();
    for r in c
        .query(
            "SELECT segment, n, seq, body FROM popgate_audit_checkpoints WHERE instance = $1 ORDER BY segment, n",
            &[&inst],
        )
        .await
        .map_err(|e| db(inst, e))?
    {
        let (n, k) = (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64);
        let at = format!("checkpoint {k} of segment {n}");
        let cp: Checkpoint = serde_json::from_str(r.get(3))
            .map_err(|e| ctx.at(&at, format!("not a checkpoint: {e}")))?;
        if cp.seq != r.get::<_, i64>(2) as u64 || cp.n.is_some_and(|x| x != k) {
            return Err(ctx.at(
                &at,
                "the row's columns differ from the signed checkpoint it holds",
            ));
        }
        checkpoints.entry(n).or_default().push((k, cp));
    }
    let mut summary = InstanceSummary {
        instance: inst.to_owned(),
        ..InstanceSummary::default()
    };
    let mut chain = Chain {
        seq: 0,
        hash: GENESIS.to_owned(),
        closed: None,
        vouched: 0,
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&inst];
    let rows = c
        .query_raw(
            "SELECT seq, segment, (extract(epoch FROM time) * 1000)::int8, kind, request_id, agency, citizen_ref, line
               FROM popgate_audit_records WHERE instance = $1 ORDER BY seq",
            params,
        )
        .await
        .map_err(|e| db(inst, e))?;
    futures_util::pin_mut!(rows);
    let mut current: Option<Segment> = None;
    let mut last_segment = 0u64;
    while let Some(r) = rows.try_next().await.map_err(|e| db(inst, e))? {
        let seq = r.get::<_, i64>(0) as u64;
        let n = r.get::<_, i64>(1) as u64;
        let at = format!("record seq {seq} (segment {n})");
        if seq != chain.seq + 1 {
            let what = if seq > chain.seq + 1 {
                format!(
                    "records seq {}..{} are missing: rows were deleted",
                    chain.seq + 1,
                    seq - 1
                )
            } else {
                "a second row with this sequence number: rows were inserted".into()
            };
            return Err(ctx.at(at, what));
        }
        let line: &str = r.get(7);
        let (stored, hash) = record::decode(line.as_bytes())
            .map_err(|e| ctx.at(&at, format!("{e} (the row's line was edited in the store)")))?;
        if stored.seq != seq {
            return Err(ctx.at(&at, format!("the row holds record seq {}", stored.seq)));
        }
        if stored.instance.as_deref().is_some_and(|i| i != inst) {
            return Err(ctx.at(
                &at,
                format!(
                    "the record names instance {:?}: it was moved from another instance's history",
                    stored.instance.as_deref().unwrap_or("")
                ),
            ));
        }
        if stored.prev != chain.hash {
            return Err(ctx.at(
                &at,
                "prev does not match the hash of the record before it: the chain is broken",
            ));
        }
        check_columns(ctx, &at, &r, &stored.event)?;
        if n < last_segment {
            return Err(ctx.at(&at, "segment number goes backwards"));
        }
        if current.as_ref().is_none_or(|s| s.n != n) {
            if let Some(done) = current.take() {
                finish_segment(ctx, done, &mut chain, &seals, &checkpoints, &mut summary)?;
            }
            // Segments without rows between (a `closed` mark's empty one).
            for (&empty, _) in checkpoints.range(last_segment + 1..n) {
                finish_empty(ctx, empty, &mut chain, &checkpoints, &mut summary)?;
            }
            current = Some(Segment {
                n,
                first_seq: seq,
                before: chain.hash.clone(),
                hashes: Vec::new(),
                times: Vec::new(),
            });
            last_segment = n;
        }
        let time = stored.event.time().to_owned();
        summary.first_time.get_or_insert_with(|| time.clone());
        summary.last_time = Some(time.clone());
        if let Some(s) = current.as_mut() {
            s.hashes.push(hash.clone());
            s.times.push(time);
        }
        chain.seq = seq;
        chain.hash = hash;
        summary.records += 1;
    }
    if let Some(done) = current.take() {
        finish_segment(ctx, done, &mut chain, &seals, &checkpoints, &mut summary)?;
    }
    for (&empty, _) in checkpoints.range(last_segment + 1..) {
        finish_empty(ctx, empty, &mut chain, &checkpoints, &mut summary)?;
        last_segment = empty;
    }
    if let Some((&n, _)) = seals.range(last_segment + 1..).next() {
        return Err(ctx.at(
            format!("seal of segment {n}"),
            "a seal for a segment with no rows: its records were deleted",
        ));
    }
    if chain.seq > chain.vouched {
        return Err(ctx.at(
            format!("record seq {} (segment {last_segment})", chain.vouched + 1),
            format!(
                "records seq {}..{} carry no checkpoint or seal, but only vouched records are shipped: their checkpoint was deleted",
                chain.vouched + 1,
                chain.seq
            ),
        ));
    }
    if chain.seq != shipped_seq || chain.hash != shipped_hash {
        return Err(ctx.at(
            "popgate_audit_instances",
            format!(
                "the high-water mark says seq {shipped_seq} was shipped but the rows end at seq {}: {}",
                chain.seq,
                if chain.seq < shipped_seq {
                    "rows were deleted from the end"
                } else {
                    "the mark was moved back or rows were added"
                }
            ),
        ));
    }
    Ok(summary)
}

/// The search columns must say what the hashed line says.
fn check_columns(
    ctx: &Ctx<'_>,
    at: &str,
    r: &tokio_postgres::Row,
    event: &Event,
) -> Result<(), StoreFinding> {
    let millis: i64 = r.get(2);
    let line_millis = record::parse_time(event.time())
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .ok_or_else(|| {
            ctx.at(
                at,
                format!("record time {:?} is not RFC 3339", event.time()),
            )
        })?;
    let kind = match event {
        Event::Access(_) => "access",
        Event::Outcome(_) => "outcome",
    };
    let mismatch = if millis != line_millis {
        Some("time")
    } else if r.get::<_, &str>(3) != kind {
        Some("kind")
    } else if r.get::<_, &str>(4) != event.request_id() {
        Some("request_id")
    } else if r.get::<_, Option<&str>>(5) != event.agency() {
        Some("agency")
    } else if r.get::<_, Option<&str>>(6) != event.citizen_ref() {
        Some("citizen_ref")
    } else {
        None
    };
    match mismatch {
        Some(col) => Err(ctx.at(
            at,
            format!("column {col} differs from the hashed record: it was edited, so search would give wrong answers"),
        )),
        None => Ok(()),
    }
}

/// Checks one segment's checkpoints and seal against its rows.
fn finish_segment(
    ctx: &Ctx<'_>,
    seg: Segment,
    chain: &mut Chain,
    seals: &BTreeMap<u64, Seal>,
    checkpoints: &BTreeMap<u64, Vec<(u64, Checkpoint)>>,
    summary: &mut InstanceSummary,
) -> Result<(), StoreFinding> {
    let n = seg.n;
    let before = (seg.first_seq - 1, seg.before.clone());
    let count = check_checkpoints(ctx, n, Some(&seg), before, chain, checkpoints, summary)?;
    summary.segments += 1;
    if let Some(seal) = seals.get(&n) {
        let at = format!("seal of segment {n}");
        seal.verify(ctx.keys).map_err(|w| ctx.at(&at, w))?;
        if seal.instance.as_deref().is_some_and(|i| i != ctx.instance) {
            return Err(ctx.at(&at, "the seal names another instance"));
        }
        let last_hash = seg.hashes.last().map(String::as_str).unwrap_or("");
        if seal.segment != n
            || seal.records != seg.hashes.len() as u64
            || seal.first_seq != seg.first_seq
            || seal.last_seq != seg.last_seq()
            || seal.last_hash != last_hash
        {
            return Err(ctx.at(
                &at,
                format!(
                    "the rows do not match the seal (sealed {} records, seq {}..{}; the store holds {}, seq {}..{}): rows were deleted, added or changed",
                    seal.records,
                    seal.first_seq,
                    seal.last_seq,
                    seg.hashes.len(),
                    seg.first_seq,
                    seg.last_seq()
                ),
            ));
        }
        if let Some(sealed) = seal.checkpoints {
            if sealed != count {
                return Err(ctx.at(
                    &at,
                    format!("the seal counts {sealed} checkpoints but the store holds {count}: checkpoints were deleted"),
                ));
            }
        }
        chain.vouched = chain.vouched.max(seal.last_seq);
        summary.sealed += 1;
    } else if seals.range(n + 1..).next().is_some() {
        return Err(ctx.at(
            format!("seal of segment {n}"),
            "missing, but later segments are sealed: it was deleted",
        ));
    }
    Ok(())
}

/// A segment with checkpoints but no rows: the empty segment a clean
/// shutdown leaves, whose marks vouch for the chain head before it.
fn finish_empty(
    ctx: &Ctx<'_>,
    n: u64,
    chain: &mut Chain,
    checkpoints: &BTreeMap<u64, Vec<(u64, Checkpoint)>>,
    summary: &mut InstanceSummary,
) -> Result<(), StoreFinding> {
    let before = (chain.seq, chain.hash.clone());
    check_checkpoints(ctx, n, None, before, chain, checkpoints, summary)?;
    summary.segments += 1;
    Ok(())
}

fn check_checkpoints(
    ctx: &Ctx<'_>,
    n: u64,
    seg: Option<&Segment>,
    before: (u64, String),
    chain: &mut Chain,
    checkpoints: &BTreeMap<u64, Vec<(u64, Checkpoint)>>,
    summary: &mut InstanceSummary,
) -> Result<u64, StoreFinding> {
    let empty = Vec::new();
    let list = checkpoints.get(&n).unwrap_or(&empty);
    for (expected, (k, cp)) in (1u64..).zip(list) {
        let at = format!("checkpoint {k} of segment {n}");
        if *k != expected {
            return Err(ctx.at(
                format!("checkpoint {expected} of segment {n}"),
                "missing: checkpoints were deleted (they are numbered 1, 2, 3, … in each segment)",
            ));
        }
        cp.verify(ctx.keys).map_err(|w| ctx.at(&at, w))?;
        if cp.segment != n || cp.instance.as_deref().is_some_and(|i| i != ctx.instance) {
            return Err(ctx.at(&at, "the checkpoint names another segment or instance"));
        }
        let hash_at = |seq: u64| -> Option<&str> {
            if seq == before.0 {
                return Some(before.1.as_str());
            }
            let s = seg?;
            let i = seq.checked_sub(s.first_seq)? as usize;
            s.hashes.get(i).map(String::as_str)
        };
        match hash_at(cp.seq) {
            Some(h) if h == cp.hash => {}
            Some(_) => {
                return Err(ctx.at(
                    format!("record seq {} (segment {n})", cp.seq),
                    format!(
                        "not the record the checkpoint of {} vouches for: it (or one before it) was rewritten",
                        cp.time
                    ),
                ))
            }
            None => {
                return Err(ctx.at(
                    &at,
                    format!(
                        "vouches for seq {} which the store does not hold: rows were deleted",
                        cp.seq
                    ),
                ))
            }
        }
        match cp.kind {
            CheckpointKind::Closed => chain.closed = Some(cp.clone()),
            CheckpointKind::Opened => {
                if let Some(c) = chain.closed.take() {
                    if c.seq != cp.seq {
                        return Err(ctx.at(
                            &at,
                            format!(
                                "popgate reopened the log at seq {} but had closed it at seq {}",
                                cp.seq, c.seq
                            ),
                        ));
                    }
                }
            }
            CheckpointKind::Head => {}
        }
        chain.vouched = chain.vouched.max(cp.seq);
        summary.checkpoints += 1;
        if summary
            .newest_checkpoint
            .as_deref()
            .is_none_or(|t| t < cp.time.as_str())
        {
            summary.newest_checkpoint = Some(cp.time.clone());
        }
    }
    if let (Some(c), Some(s)) = (&chain.closed, seg) {
        if s.last_seq() > c.seq && c.segment == n {
            return Err(ctx.at(
                format!("record seq {} (segment {n})", c.seq + 1),
                format!(
                    "records after seq {} follow popgate's clean close at {}: written by something other than popgate",
                    c.seq, c.time
                ),
            ));
        }
    }
    Ok(list.len() as u64)
}

/// Compares a local directory of one instance with the store: every local
/// record the store has shipped must be the same bytes. Returns how many
/// local records are not shipped yet.
pub async fn compare_local(store: &Store, dir: &Path, instance: &str) -> Result<u64, StoreFinding> {
    let at_file = |p: &Path, what: String| StoreFinding {
        instance: instance.to_owned(),
        at: p.display().to_string(),
        what,
    };
    let mut unshipped = 0;
    for n in segment::list(dir).map_err(|e| at_file(dir, e.to_string()))? {
        let path = segment::segment_path(dir, n);
        let mut bytes = std::fs::read(&path).map_err(|e| at_file(&path, e.to_string()))?;
        bytes.truncate(segment::data_end(&bytes));
        let mut local: Vec<(u64, &[u8])> = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok((s, _)) = record::decode(line) {
                local.push((s.seq, line));
            }
        }
        let (Some(first), Some(last)) = (local.first(), local.last()) else {
            continue;
        };
        let rows = store
            .client
            .query(
                "SELECT seq, line FROM popgate_audit_records WHERE instance = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
                &[&instance, &(first.0 as i64), &(last.0 as i64)],
            )
            .await
            .map_err(|e| db(instance, e))?;
        let stored: BTreeMap<u64, &str> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, &str>(1)))
            .collect();
        let shipped_to = stored.keys().next_back().copied().unwrap_or(0);
        for (i, (seq, line)) in local.iter().enumerate() {
            match stored.get(seq) {
                Some(s) if s.as_bytes() == *line => {}
                Some(_) => {
                    return Err(at_file(
                        &path,
                        format!(
                            "line {}: record seq {seq} differs from the store's copy: one of them was rewritten (the store's passed verification, so the local one was)",
                            i + 1
                        ),
                    ))
                }
                None if *seq > shipped_to => unshipped += 1,
                None => {
                    return Err(at_file(
                        &path,
                        format!("line {}: record seq {seq} is not in the store", i + 1),
                    ))
                }
            }
        }
    }
    Ok(unshipped)
}

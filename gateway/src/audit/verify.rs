//! `popgate audit verify`: proves the log is whole, in order and unaltered,
//! or names the first place it is not.
//!
//! Three kinds of evidence are checked against the records:
//! - the hash chain (every record names the hash of the one before);
//! - seals of closed segments (signed count, range and last hash), and the
//!   search index beside each, rebuilt from the sealed records and compared
//!   byte for byte (an index missing a citizen's line would hide accesses);
//! - signed checkpoints of the open segment's chain head, so a record that
//!   a checkpoint vouches for cannot be rewritten or cut off unnoticed, and
//!   a tail that no checkpoint covers for longer than checkpoints take to
//!   follow writes means checkpoints were removed.

use std::path::{Path, PathBuf};

use super::record::{self, GENESIS};
use super::segment::{self, Checkpoint, CheckpointKind, Seal, SealKeys};
use super::MAX_UNCHECKPOINTED_SPAN;

/// The first problem found, as `file:line: what`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {what}", file.display())]
pub struct Finding {
    pub file: PathBuf,
    /// 0 when the problem is the file as a whole.
    pub line: u64,
    pub what: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub segments: u64,
    pub sealed: u64,
    pub records: u64,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    /// Checkpoints checked, over all segments.
    pub checkpoints: u64,
    /// Records of the open segment that no checkpoint or seal vouches for
    /// yet (written within the last checkpoint interval, or before a crash).
    pub unvouched: u64,
    /// Leading segments deleted after shipping (their seals remain): only
    /// `verify --store` can check their records.
    pub pruned: u64,
    /// The instance the records name (`audit.instance`), if they do.
    pub instance: Option<String>,
}

/// What one segment's records say, as far as the other evidence needs it.
struct Records {
    path: PathBuf,
    first_seq: u64,
    /// Hash of each record, in order.
    hashes: Vec<String>,
    /// Time of each record, in order.
    times: Vec<String>,
    /// (citizen_ref, byte offset) of records naming a citizen.
    index: Vec<(String, u64)>,
    /// The instance each record names.
    instances: Vec<Option<String>>,
}

impl Records {
    /// The sequence number of the last record (the one before the segment
    /// when it is empty).
    fn last_seq(&self) -> u64 {
        self.first_seq + self.hashes.len() as u64 - 1
    }
    fn at(&self, line: u64, what: String) -> Finding {
        Finding {
            file: self.path.clone(),
            line,
            what,
        }
    }
}

/// The chain as it runs across segments.
struct Chain {
    prev: String,
    seq: u64,
}

/// Verifies every segment in `dir` against the seal keys.
pub fn verify(dir: &Path, keys: impl Into<SealKeys>) -> Result<Summary, Finding> {
    let keys = keys.into();
    let key = &keys;
    let whole = |what: String| Finding {
        file: dir.to_owned(),
        line: 0,
        what,
    };
    let segments = segment::list_with_seals(dir).map_err(|e| whole(format!("cannot list: {e}")))?;
    let Some(&last_segment) = segments.last() else {
        return Err(whole("no audit segments (audit-NNNNNN.jsonl) here".into()));
    };
    let mut summary = Summary::default();
    let mut chain = Chain {
        prev: GENESIS.to_owned(),
        seq: 0,
    };
    for (i, &n) in segments.iter().enumerate() {
        let path = segment::segment_path(dir, n);
        let expected_n = i as u64 + 1;
        if n != expected_n {
            return Err(Finding {
                file: path,
                line: 0,
                what: format!(
                    "segment {expected_n} is missing (segments must run 1, 2, 3, … without gaps)"
                ),
            });
        }
        if !path.exists() {
            // Deleted after shipping: allowed only for leading segments,
            // whose seal carries the chain across.
            if summary.segments > summary.pruned {
                return Err(Finding {
                    file: path,
                    line: 0,
                    what: "segment is missing but later segments are not: only the oldest segments may be deleted (after shipping)".into(),
                });
            }
            let seal_path = segment::seal_path(dir, n);
            let seal = read_seal_file(&seal_path)?;
            seal.verify(key).map_err(|what| Finding {
                file: seal_path.clone(),
                line: 0,
                what,
            })?;
            if seal.segment != n || seal.first_seq != chain.seq + 1 {
                return Err(Finding {
                    file: seal_path,
                    line: 0,
                    what: format!(
                        "seal of a deleted segment does not continue the chain (seq {} expected first)",
                        chain.seq + 1
                    ),
                });
            }
            note_instance(&mut summary, seal.instance.as_deref(), &seal_path)?;
            chain.seq = seal.last_seq;
            chain.prev = seal.last_hash.clone();
            summary.pruned += 1;
            summary.segments += 1;
            continue;
        }
        let is_open = n == last_segment && !segment::seal_path(dir, n).exists();
        let records = read_segment(&path, &mut chain, is_open)?;
        for (i, inst) in records.instances.iter().enumerate() {
            note_instance(&mut summary, inst.as_deref(), &path).map_err(|mut f| {
                f.line = i as u64 + 1;
                f
            })?;
        }
        let checkpoints = check_checkpoints(dir, n, &records, key, is_open, &mut summary)?;
        summary.checkpoints += checkpoints;
        if is_open {
            // The open (last, unsealed) segment is vouched for by checkpoints
            // only, and has no index: one beside it is stale or planted.
            let idx = segment::index_path(dir, n);
            if idx.exists() {
                return Err(Finding {
                    file: idx,
                    line: 0,
                    what: "an index beside the open (unsealed) segment: indexes are written only at sealing; remove it (search ignores it)".into(),
                });
            }
        } else if segment::seal_path(dir, n).exists() {
            check_seal(dir, n, &records, key, checkpoints)?;
            check_index(dir, n, &records)?;
            summary.sealed += 1;
        } else {
            return Err(records.at(0, "segment is not sealed but is not the last one".into()));
        }
        if let Some(t) = records.times.first() {
            summary.first_time.get_or_insert(t.clone());
        }
        if let Some(t) = records.times.last() {
            summary.last_time = Some(t.clone());
        }
        summary.segments += 1;
        summary.records += records.hashes.len() as u64;
    }
    Ok(summary)
}

/// Reads a segment, checking each line's own hash and its place in the chain.
fn read_segment(path: &Path, chain: &mut Chain, is_open: bool) -> Result<Records, Finding> {
    let mut bytes = std::fs::read(path).map_err(|e| Finding {
        file: path.to_owned(),
        line: 0,
        what: format!("cannot read: {e}"),
    })?;
    if is_open {
        // The open segment is zero-padded ahead of its records; a sealed
        // one was cut to its records, so anything after them is reported.
        bytes.truncate(segment::data_end(&bytes));
    }
    let whole_len = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let mut records = Records {
        path: path.to_owned(),
        first_seq: chain.seq + 1,
        hashes: Vec::new(),
        times: Vec::new(),
        index: Vec::new(),
        instances: Vec::new(),
    };
    let mut offset = 0u64;
    let mut line_no = 0u64;
    // A whole file ends with '\n', so splitting yields one empty tail.
    let mut lines: Vec<&[u8]> = bytes[..whole_len].split(|b| *b == b'\n').collect();
    lines.pop();
    for line in lines {
        line_no += 1;
        if line.is_empty() {
            return Err(records.at(
                line_no,
                "empty line: a record was removed or the file spliced".into(),
            ));
        }
        let (stored, hash) =
            record::decode(line).map_err(|e| records.at(line_no, e.to_string()))?;
        if stored.seq != chain.seq + 1 {
            return Err(records.at(
                line_no,
                format!(
                    "sequence {} where {} was expected: records were deleted, reordered or inserted",
                    stored.seq,
                    chain.seq + 1
                ),
            ));
        }
        if stored.prev != chain.prev {
            return Err(records.at(
                line_no,
                "prev does not match the hash of the record before it: the chain is broken".into(),
            ));
        }
        if let Some(r) = stored.event.citizen_ref() {
            records.index.push((r.to_owned(), offset));
        }
        offset += line.len() as u64 + 1;
        chain.seq = stored.seq;
        chain.prev = hash.clone();
        records.hashes.push(hash);
        records.times.push(stored.event.time().to_owned());
        records.instances.push(stored.instance);
    }
    if whole_len < bytes.len() {
        let what = if is_open {
            format!(
                "torn tail: {} bytes after the last whole record (a crash mid-write; popgate saves and truncates it on restart)",
                bytes.len() - whole_len
            )
        } else {
            format!(
                "{} bytes of partial record in a closed segment",
                bytes.len() - whole_len
            )
        };
        return Err(records.at(line_no + 1, what));
    }
    Ok(records)
}

fn read_seal_file(seal_path: &Path) -> Result<Seal, Finding> {
    let seal_err = |what: String| Finding {
        file: seal_path.to_owned(),
        line: 0,
        what,
    };
    serde_json::from_slice(
        &std::fs::read(seal_path).map_err(|e| seal_err(format!("cannot read: {e}")))?,
    )
    .map_err(|e| seal_err(format!("not a seal: {e}")))
}

/// Records, seals and checkpoints of one directory are one instance's:
/// none may name another (records from before `audit.instance` was set
/// name none).
fn note_instance(summary: &mut Summary, found: Option<&str>, at: &Path) -> Result<(), Finding> {
    let Some(found) = found else { return Ok(()) };
    match &summary.instance {
        Some(known) if known != found => Err(Finding {
            file: at.to_owned(),
            line: 0,
            what: format!(
                "names instance {found:?} but the log before it is instance {known:?}'s: records were moved between instances' logs"
            ),
        }),
        Some(_) => Ok(()),
        None => {
            summary.instance = Some(found.to_owned());
            Ok(())
        }
    }
}

fn check_seal(
    dir: &Path,
    n: u64,
    records: &Records,
    key: &SealKeys,
    checkpoints: u64,
) -> Result<(), Finding> {
    let seal_path = segment::seal_path(dir, n);
    let seal_err = |what: String| Finding {
        file: seal_path.clone(),
        line: 0,
        what,
    };
    let seal = read_seal_file(&seal_path)?;
    seal.verify(key).map_err(seal_err)?;
    let found = records.hashes.len() as u64;
    let (first, last) = (records.first_seq, records.first_seq + found - 1);
    let last_hash = records.hashes.last().map(String::as_str).unwrap_or("");
    if seal.segment != n
        || seal.records != found
        || seal.first_seq != first
        || seal.last_seq != last
        || seal.last_hash != last_hash
    {
        return Err(records.at(
            found,
            format!(
                "segment does not match its seal (sealed {} records, seq {}..{}; found {found}, seq {first}..{last}): records were removed or added after sealing",
                seal.records, seal.first_seq, seal.last_seq
            ),
        ));
    }
    if let Some(sealed) = seal.checkpoints {
        if sealed != checkpoints {
            return Err(Finding {
                file: segment::checkpoint_path(dir, n),
                line: 0,
                what: format!(
                    "the seal counts {sealed} checkpoints but the file holds {checkpoints}: checkpoints were removed or added after sealing"
                ),
            });
        }
    }
    Ok(())
}

/// The index on disk must be exactly the one the sealed records imply: a
/// line removed from it would make `audit search` miss those accesses.
fn check_index(dir: &Path, n: u64, records: &Records) -> Result<(), Finding> {
    let idx_path = segment::index_path(dir, n);
    let at = |line: u64, what: String| Finding {
        file: idx_path.clone(),
        line,
        what,
    };
    let on_disk = std::fs::read(&idx_path).map_err(|e| {
        at(
            0,
            format!("cannot read the index of a sealed segment: {e} (search relies on it)"),
        )
    })?;
    let expected = segment::render_index(records.index.clone());
    if on_disk == expected.as_bytes() {
        return Ok(());
    }
    let mut disk_lines = on_disk.split(|b| *b == b'\n');
    for (i, want) in expected.lines().enumerate() {
        match disk_lines.next() {
            Some(got) if got == want.as_bytes() => {}
            Some(_) | None => {
                return Err(at(
                    i as u64 + 1,
                    format!(
                        "index does not match the sealed records (expected \"{want}\"): entries were removed, added or changed, so search would give wrong answers"
                    ),
                ))
            }
        }
    }
    Err(at(
        expected.lines().count() as u64 + 1,
        "index has entries the sealed records do not imply: it was altered".into(),
    ))
}

/// Checks each signed checkpoint of segment `n` against its records and,
/// for the open segment, that the records after the newest one are recent
/// relative to it. Returns how many checkpoints were checked.
fn check_checkpoints(
    dir: &Path,
    n: u64,
    records: &Records,
    key: &SealKeys,
    is_open: bool,
    summary: &mut Summary,
) -> Result<u64, Finding> {
    let ckpt_path = segment::checkpoint_path(dir, n);
    let bytes = match std::fs::read(&ckpt_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(Finding {
                file: ckpt_path,
                line: 0,
                what: format!("cannot read: {e}"),
            })
        }
    };
    // A crash while appending can tear the last checkpoint: it never
    // vouched for anything, so it is ignored (whole lines are not).
    let whole_len = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let mut newest: u64 = records.first_seq - 1;
    let mut count = 0;
    // The newest `closed` mark not followed by an `opened` one.
    let mut closed: Option<Checkpoint> = None;
    for (i, line) in bytes[..whole_len]
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
    {
        let at = |what: String| Finding {
            file: ckpt_path.clone(),
            line: i as u64 + 1,
            what,
        };
        let cp: Checkpoint =
            serde_json::from_slice(line).map_err(|e| at(format!("not a checkpoint: {e}")))?;
        cp.verify(key).map_err(at)?;
        if let Some(k) = cp.n {
            if k != count + 1 {
                return Err(at(format!(
                    "checkpoint number {k} where {} was expected: checkpoints were removed or reordered",
                    count + 1
                )));
            }
        }
        note_instance(summary, cp.instance.as_deref(), &ckpt_path).map_err(|mut f| {
            f.line = i as u64 + 1;
            f
        })?;
        vouches(&cp, n, records).map_err(|e| match e {
            Located::Checkpoint(what) => at(what),
            Located::Records(f) => f,
        })?;
        match cp.kind {
            CheckpointKind::Closed => closed = Some(cp.clone()),
            CheckpointKind::Opened => match closed.take() {
                Some(c) if c.seq != cp.seq => {
                    return Err(at(format!(
                        "popgate reopened the log at seq {} but had closed it at seq {}",
                        cp.seq, c.seq
                    )))
                }
                _ => {}
            },
            CheckpointKind::Head => {}
        }
        newest = newest.max(cp.seq);
        count += 1;
    }
    if let Some(c) = &closed {
        if records.last_seq() > c.seq {
            return Err(records.at(
                c.seq + 2 - records.first_seq,
                format!(
                    "records after seq {} were added after popgate closed the log cleanly at {}: written by something other than popgate",
                    c.seq, c.time
                ),
            ));
        }
    }
    if is_open {
        summary.unvouched = unvouched_tail(records, newest)?;
    }
    Ok(count)
}

/// Where a checkpoint's problem is: in the checkpoint file, or in the
/// records it vouches for.
enum Located {
    Checkpoint(String),
    Records(Finding),
}

/// A checkpoint of segment `n` must vouch for a record of it that is there
/// and unchanged.
fn vouches(cp: &Checkpoint, n: u64, records: &Records) -> Result<(), Located> {
    if cp.segment != n {
        return Err(Located::Checkpoint(format!(
            "checkpoint names segment {} but lies beside segment {n}: moved or forged",
            cp.segment
        )));
    }
    if cp.seq < records.first_seq.saturating_sub(1) {
        return Err(Located::Checkpoint(format!(
            "checkpoint vouches for seq {} which is before this segment (starts at {})",
            cp.seq, records.first_seq
        )));
    }
    if cp.seq > records.last_seq() {
        return Err(Located::Records(records.at(
            records.hashes.len() as u64,
            format!(
                "records after seq {} are missing: the checkpoint of {} vouches for seq {}, so the segment was truncated after it was checkpointed",
                records.last_seq(),
                cp.time,
                cp.seq
            ),
        )));
    }
    if cp.seq >= records.first_seq {
        let line_no = cp.seq - records.first_seq + 1;
        if records.hashes[(line_no - 1) as usize] != cp.hash {
            return Err(Located::Records(records.at(
                line_no,
                format!(
                    "record seq {} is not the one the checkpoint of {} vouches for: it (or a record before it) was rewritten after being checkpointed",
                    cp.seq, cp.time
                ),
            )));
        }
    }
    Ok(())
}

/// Records after the newest checkpoint are the last instant before a crash
/// if they span less than checkpoints take to follow writes; a longer
/// unvouched tail means checkpoints were removed. Returns how many there are.
fn unvouched_tail(records: &Records, newest: u64) -> Result<u64, Finding> {
    if records.hashes.is_empty() || newest >= records.last_seq() {
        return Ok(0);
    }
    let first_unvouched = (newest + 1 - records.first_seq) as usize;
    let from = &records.times[first_unvouched];
    let to = records.times.last().unwrap_or(from);
    let span = match (record::parse_time(from), record::parse_time(to)) {
        (Some(a), Some(b)) => b - a,
        _ => {
            return Err(records.at(
                first_unvouched as u64 + 1,
                format!("record time {from:?} is not an RFC 3339 time"),
            ))
        }
    };
    if span > MAX_UNCHECKPOINTED_SPAN {
        return Err(records.at(
            first_unvouched as u64 + 1,
            format!(
                "records from {from} to {to} ({:.0} s) carry no checkpoint, but popgate checkpoints within a second of writing: checkpoints were removed or these records rewritten",
                span.as_seconds_f64()
            ),
        ));
    }
    Ok(records.last_seq() - newest)
}

//! "Who accessed this citizen's data, when, and why?"
//!
//! Sealed segments carry an index (citizen reference → byte offsets, sorted),
//! so a search reads a few lines per sealed segment instead of the segment;
//! only the unsealed tail is scanned, with a substring pre-filter before any
//! JSON is parsed. Every hit is hash-checked before it is reported.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use super::record::{self, Access, Event, Outcome, Stored};
use super::segment;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Inclusive lower bound, compared with the record's RFC 3339 time.
    pub since: Option<String>,
    /// Exclusive upper bound.
    pub until: Option<String>,
    pub agency: Option<String>,
}

impl Filter {
    fn keeps(&self, a: &Access) -> bool {
        self.since
            .as_ref()
            .is_none_or(|t| a.time.as_str() >= t.as_str())
            && self
                .until
                .as_ref()
                .is_none_or(|t| a.time.as_str() < t.as_str())
            && self
                .agency
                .as_ref()
                .is_none_or(|x| a.agency.as_deref() == Some(x.as_str()))
    }
}

/// One access to a citizen's data: the decision, and for an allowed
/// request how it ended (`None`: still in flight, or the gateway stopped
/// before recording it — the access itself was recorded before forwarding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The instance whose log holds it (when the log names one).
    pub instance: Option<String>,
    pub seq: u64,
    pub access: Access,
    pub outcome: Option<Outcome>,
}

impl Hit {
    /// The status the agency was sent, wherever the record keeps it.
    pub fn status(&self) -> Option<u16> {
        self.outcome
            .as_ref()
            .and_then(|o| o.status)
            .or(self.access.status)
    }
}

/// All accesses to the citizen with reference `citizen_ref`, oldest first,
/// each joined with its outcome record.
pub fn search(dir: &Path, citizen_ref: &str, filter: &Filter) -> Result<Vec<Hit>, String> {
    let mut events: Vec<Stored> = Vec::new();
    for n in segment::list(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let seg = segment::segment_path(dir, n);
        let idx = segment::index_path(dir, n);
        // Only a sealed segment's index is trusted (verify checks it against
        // the sealed records); an index beside the open segment is stale or
        // planted, so the open segment is always scanned.
        let sealed = segment::seal_path(dir, n).exists();
        let lines: Vec<Vec<u8>> = if sealed && idx.exists() {
            indexed_lines(&seg, &idx, citizen_ref)?
        } else {
            scanned_lines(&seg, citizen_ref)?
        };
        for line in lines {
            let (stored, _) = record::decode(&line)
                .map_err(|e| format!("{}: {e} (run `popgate audit verify`)", seg.display()))?;
            if stored.event.citizen_ref() == Some(citizen_ref) {
                events.push(stored);
            }
        }
    }
    Ok(join(events, filter))
}

/// Pairs each access with its outcome record (same instance, same request
/// id) and keeps the accesses the filter keeps, in the order given.
fn join(events: Vec<Stored>, filter: &Filter) -> Vec<Hit> {
    let mut outcomes: std::collections::HashMap<(Option<String>, String), Outcome> = events
        .iter()
        .filter_map(|s| match &s.event {
            Event::Outcome(o) => Some(((s.instance.clone(), o.request_id.clone()), o.clone())),
            Event::Access(_) => None,
        })
        .collect();
    events
        .into_iter()
        .filter_map(|s| match s.event {
            Event::Access(a) if filter.keeps(&a) => Some(Hit {
                outcome: outcomes.remove(&(s.instance.clone(), a.request_id.clone())),
                instance: s.instance,
                seq: s.seq,
                access: a,
            }),
            _ => None,
        })
        .collect()
}

/// All accesses to the citizen with reference `citizen_ref` through every
/// instance that ships to `store`, oldest first (merged by time).
///
/// Each row's line is hash-checked and must name the citizen asked about,
/// so an edited column can neither hide nor plant a hit without `verify
/// --store` reporting the row; run that for the proof that none is missing.
pub async fn search_store(
    store: &super::store::Store,
    citizen_ref: &str,
    filter: &Filter,
) -> Result<Vec<Hit>, String> {
    let since = filter.since.as_deref().unwrap_or("-infinity");
    let until = filter.until.as_deref().unwrap_or("infinity");
    // Outcomes are kept past `until`: they complete an access inside it.
    let rows = store
        .client
        .query(
            "SELECT instance, seq, line FROM popgate_audit_records
              WHERE citizen_ref = $1
                AND time >= $2::text::timestamptz
                AND (kind = 'outcome' OR time < $3::text::timestamptz)
                AND ($4::text IS NULL OR agency = $4)
              ORDER BY time, instance, seq",
            &[&citizen_ref, &since, &until, &filter.agency],
        )
        .await
        .map_err(|e| super::store::StoreError::from(e).to_string())?;
    let mut events = Vec::with_capacity(rows.len());
    for r in &rows {
        let instance: &str = r.get(0);
        let seq: i64 = r.get(1);
        let line: &str = r.get(2);
        let bad = |what: String| {
            format!(
                "audit store: instance {instance}, record seq {seq}: {what} (run `popgate audit verify --store`)"
            )
        };
        let (stored, _) = record::decode(line.as_bytes()).map_err(|e| bad(e.to_string()))?;
        if stored.event.citizen_ref() != Some(citizen_ref)
            || stored.seq != seq as u64
            || stored.instance.as_deref().is_some_and(|i| i != instance)
        {
            return Err(bad(
                "the row's columns do not match its record: the store was edited".into(),
            ));
        }
        events.push(Stored {
            instance: Some(instance.to_owned()),
            ..stored
        });
    }
    Ok(join(events, filter))
}

fn indexed_lines(seg: &Path, idx: &Path, citizen_ref: &str) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(idx).map_err(|e| format!("{}: {e}", idx.display()))?;
    let entries: Vec<&str> = text.lines().collect();
    let start = entries.partition_point(|l| l.split(' ').next().unwrap_or("") < citizen_ref);
    let mut offsets = Vec::new();
    for l in &entries[start..] {
        let Some((r, off)) = l.split_once(' ') else {
            return Err(format!("{}: malformed index line {l:?}", idx.display()));
        };
        if r != citizen_ref {
            break;
        }
        offsets.push(
            off.parse::<u64>()
                .map_err(|_| format!("{}: bad offset in {l:?}", idx.display()))?,
        );
    }
    if offsets.is_empty() {
        return Ok(Vec::new());
    }
    let f = std::fs::File::open(seg).map_err(|e| format!("{}: {e}", seg.display()))?;
    let mut r = BufReader::new(f);
    let mut out = Vec::new();
    for off in offsets {
        r.seek(SeekFrom::Start(off))
            .map_err(|e| format!("{}: {e}", seg.display()))?;
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)
            .map_err(|e| format!("{}: {e}", seg.display()))?;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        out.push(line);
    }
    Ok(out)
}

fn scanned_lines(seg: &Path, citizen_ref: &str) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(seg).map_err(|e| format!("{}: {e}", seg.display()))?;
    let needle = format!("\"citizen_ref\":\"{citizen_ref}\"");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut out = Vec::new();
    for pos in finder.find_iter(&bytes) {
        let start = bytes[..pos]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let Some(end) = bytes[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| pos + i)
        else {
            continue; // torn tail: not a record
        };
        out.push(bytes[start..end].to_vec());
    }
    Ok(out)
}

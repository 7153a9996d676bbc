//! `popgate audit verify`: proves the log is whole, in order and unaltered,
//! or names the first place it is not.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;

use super::record::{self, GENESIS};
use super::segment::{self, Seal};

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
}

/// Verifies every segment in `dir` against the seal key.
pub fn verify(dir: &Path, key: &VerifyingKey) -> Result<Summary, Finding> {
    let whole = |what: String| Finding {
        file: dir.to_owned(),
        line: 0,
        what,
    };
    let segments = segment::list(dir).map_err(|e| whole(format!("cannot list: {e}")))?;
    if segments.is_empty() {
        return Err(whole("no audit segments (audit-NNNNNN.jsonl) here".into()));
    }
    let mut summary = Summary::default();
    let (mut prev, mut seq) = (GENESIS.to_owned(), 0u64);
    let last_segment = *segments.last().unwrap_or(&1);
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
        let bytes = std::fs::read(&path).map_err(|e| Finding {
            file: path.clone(),
            line: 0,
            what: format!("cannot read: {e}"),
        })?;
        let whole_len = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let first_seq = seq + 1;
        let mut records = 0u64;
        let mut line_no = 0u64;
        // A whole file ends with '\n', so splitting yields one empty tail.
        let mut lines: Vec<&[u8]> = bytes[..whole_len].split(|b| *b == b'\n').collect();
        lines.pop();
        for line in lines {
            line_no += 1;
            if line.is_empty() {
                return Err(Finding {
                    file: path.clone(),
                    line: line_no,
                    what: "empty line: a record was removed or the file spliced".into(),
                });
            }
            let at = |what: String| Finding {
                file: path.clone(),
                line: line_no,
                what,
            };
            let (stored, hash) = record::decode(line).map_err(|e| at(e.to_string()))?;
            if stored.seq != seq + 1 {
                return Err(at(format!(
                    "sequence {} where {} was expected: records were deleted, reordered or inserted",
                    stored.seq,
                    seq + 1
                )));
            }
            if stored.prev != prev {
                return Err(at(
                    "prev does not match the hash of the record before it: the chain is broken"
                        .into(),
                ));
            }
            seq = stored.seq;
            prev = hash;
            records += 1;
            summary.first_time.get_or_insert(stored.access.time.clone());
            summary.last_time = Some(stored.access.time);
        }
        let seal_path = segment::seal_path(dir, n);
        if whole_len < bytes.len() {
            let what = if n == last_segment && !seal_path.exists() {
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
            return Err(Finding {
                file: path,
                line: line_no + 1,
                what,
            });
        }
        if seal_path.exists() {
            let seal_err = |what: String| Finding {
                file: seal_path.clone(),
                line: 0,
                what,
            };
            let seal: Seal = serde_json::from_slice(
                &std::fs::read(&seal_path).map_err(|e| seal_err(format!("cannot read: {e}")))?,
            )
            .map_err(|e| seal_err(format!("not a seal: {e}")))?;
            seal.verify(key).map_err(seal_err)?;
            if seal.segment != n
                || seal.records != records
                || seal.first_seq != first_seq
                || seal.last_seq != seq
                || seal.last_hash != prev
            {
                return Err(Finding {
                    file: path,
                    line: line_no,
                    what: format!(
                        "segment does not match its seal (sealed {} records, seq {}..{}; found {records}, seq {first_seq}..{seq}): records were removed or added after sealing",
                        seal.records, seal.first_seq, seal.last_seq
                    ),
                });
            }
            summary.sealed += 1;
        } else if n != last_segment {
            return Err(Finding {
                file: path,
                line: 0,
                what: "segment is not sealed but is not the last one".into(),
            });
        }
        summary.segments += 1;
        summary.records += records;
    }
    Ok(summary)
}

//! Segment files, their seals and their search indexes.
//!
//! `audit-000001.jsonl` holds records. While it is open, `audit-000001.ckpt`
//! collects signed checkpoints of its chain head (at most a second apart
//! under traffic). When it is closed (size or age), `audit-000001.seal`
//! signs its last hash, record count and sequence range with the Ed25519
//! audit-seal key, and `audit-000001.idx` lists the byte offset of every
//! record that names a citizen, sorted by citizen reference (`verify`
//! rebuilds it from the sealed records and compares).

use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:06}.jsonl"))
}

pub fn seal_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:06}.seal"))
}

pub fn index_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:06}.idx"))
}

/// Where the signed chain-head checkpoints of segment `n` are appended.
pub fn checkpoint_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:06}.ckpt"))
}

/// Audit files are readable by their owner only: they name agencies,
/// certificates and (keyed) citizen references.
pub const FILE_MODE: u32 = 0o600;
/// The audit directory's mode when popgate creates it.
pub const DIR_MODE: u32 = 0o700;

/// Opens a file for appending, creating it with [`FILE_MODE`].
pub fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    open_with(path, true)
}

/// Opens a segment for positioned writes, creating it with [`FILE_MODE`]:
/// the open segment is preallocated with zeros (see [`data_end`]), so the
/// writer writes at its own offset rather than at the end of the file.
pub fn open_segment(path: &Path) -> std::io::Result<std::fs::File> {
    open_with(path, false)
}

/// Where a segment's data ends: before the run of zero bytes that pads the
/// open segment. popgate grows that segment in zero-filled steps so that an
/// fdatasync flushes the records alone, not the file's size and extents
/// too (what database write-ahead logs do); records are JSON lines and
/// never contain a zero byte. Sealed segments are cut to their data first.
pub fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

fn open_with(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    if append {
        opts.create(true).append(true);
    } else {
        opts.create(true).read(true).write(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    opts.open(path)
}

/// Segment numbers present in `dir`, ascending.
pub fn list(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// The search index of a segment: one `citizen_ref offset` line per record
/// that names a citizen, sorted. Built the same way by the writer (at
/// sealing) and by `verify` (to prove the index on disk is the one the
/// sealed records imply).
pub fn render_index(mut entries: Vec<(String, u64)>) -> String {
    entries.sort();
    let mut text = String::with_capacity(entries.len() * 80);
    for (r, off) in &entries {
        text.push_str(r);
        text.push(' ');
        text.push_str(&off.to_string());
        text.push('\n');
    }
    text
}

/// An Ed25519 signature over a domain-separated message, with the id of
/// the key that made it. Seals and checkpoints both carry one.
fn sign_message(key: &SigningKey, message: &str) -> (String, String) {
    let sig = key.sign(message.as_bytes());
    (
        certs::signing::key_id(&key.verifying_key()),
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    )
}

fn verify_message(
    key: &VerifyingKey,
    key_id: &str,
    signature: &str,
    message: &str,
    what: &str,
) -> Result<(), String> {
    let expected_id = certs::signing::key_id(key);
    if key_id != expected_id {
        return Err(format!(
            "{what} made with key {key_id} but the verification key is {expected_id}"
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| format!("{what} signature is not base64"))?;
    let sig = Signature::from_slice(&bytes)
        .map_err(|_| format!("{what} signature has the wrong length"))?;
    key.verify(message.as_bytes(), &sig)
        .map_err(|_| format!("{what} signature does not verify: it was forged or altered"))
}

/// What a seal asserts about a closed segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    pub segment: u64,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub key_id: String,
    /// Base64 Ed25519 signature over [`Seal::message`].
    pub signature: String,
}

impl Seal {
    fn message(segment: u64, records: u64, first: u64, last: u64, hash: &str) -> String {
        format!("popgate-audit-seal/v1\n{segment}\n{records}\n{first}\n{last}\n{hash}\n")
    }

    pub fn sign(
        key: &SigningKey,
        segment: u64,
        records: u64,
        first_seq: u64,
        last_seq: u64,
        last_hash: &str,
    ) -> Seal {
        let (key_id, signature) = sign_message(
            key,
            &Self::message(segment, records, first_seq, last_seq, last_hash),
        );
        Seal {
            segment,
            records,
            first_seq,
            last_seq,
            last_hash: last_hash.to_owned(),
            key_id,
            signature,
        }
    }

    /// Checks the signature; the caller checks the facts against the segment.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), String> {
        let msg = Self::message(
            self.segment,
            self.records,
            self.first_seq,
            self.last_seq,
            &self.last_hash,
        );
        verify_message(key, &self.key_id, &self.signature, &msg, "seal")
    }
}

/// A signed statement "at `time`, record `seq` of segment `segment` had
/// hash `hash`", appended at most a checkpoint interval after records are
/// written. It makes the open segment tamper-evident before it is sealed:
/// rewriting or truncating records a checkpoint vouches for breaks the
/// match, and only the seal key (kept off the log) can make a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub segment: u64,
    pub seq: u64,
    pub hash: String,
    /// UTC, as records spell it.
    pub time: String,
    #[serde(default, skip_serializing_if = "CheckpointKind::is_head")]
    pub kind: CheckpointKind,
    pub key_id: String,
    pub signature: String,
}

/// What a checkpoint marks besides the chain head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// The chain head while popgate runs.
    #[default]
    Head,
    /// popgate closed the log cleanly (shutdown): nothing may follow `seq`
    /// until an `opened` mark, so records appended while popgate is down
    /// are caught.
    Closed,
    /// popgate opened the log again at `seq`, before writing anything.
    Opened,
}

impl CheckpointKind {
    fn is_head(&self) -> bool {
        *self == CheckpointKind::Head
    }
    fn domain(self) -> &'static str {
        match self {
            CheckpointKind::Head => "popgate-audit-checkpoint/v1",
            CheckpointKind::Closed => "popgate-audit-closed/v1",
            CheckpointKind::Opened => "popgate-audit-opened/v1",
        }
    }
}

impl Checkpoint {
    fn message(kind: CheckpointKind, segment: u64, seq: u64, hash: &str, time: &str) -> String {
        format!("{}\n{segment}\n{seq}\n{hash}\n{time}\n", kind.domain())
    }

    pub fn sign(
        key: &SigningKey,
        kind: CheckpointKind,
        segment: u64,
        seq: u64,
        hash: &str,
        time: &str,
    ) -> Checkpoint {
        let (key_id, signature) = sign_message(key, &Self::message(kind, segment, seq, hash, time));
        Checkpoint {
            segment,
            seq,
            hash: hash.to_owned(),
            time: time.to_owned(),
            kind,
            key_id,
            signature,
        }
    }

    pub fn verify(&self, key: &VerifyingKey) -> Result<(), String> {
        let msg = Self::message(self.kind, self.segment, self.seq, &self.hash, &self.time);
        verify_message(key, &self.key_id, &self.signature, &msg, "checkpoint")
    }
}

/// The whole checkpoint lines of a checkpoint file (a torn last line is
/// not one), parsed; a line that is not a checkpoint is an error.
pub fn read_checkpoints(path: &Path) -> std::io::Result<Vec<Result<Checkpoint, String>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    Ok(bytes[..whole]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(|e| format!("not a checkpoint: {e}")))
        .collect())
}

/// Writes a file atomically and durably, owner-only.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    certs::durable_file::write(path, bytes, true)
}

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
    numbered(dir, &[".jsonl"])
}

/// Segment numbers with a segment file or a seal in `dir`, ascending: a
/// segment deleted after shipping keeps its seal.
pub fn list_with_seals(dir: &Path) -> std::io::Result<Vec<u64>> {
    numbered(dir, &[".jsonl", ".seal"])
}

/// The numbers `n` of the files `audit-<n><suffix>` in `dir`, ascending.
fn numbered(dir: &Path, suffixes: &[&str]) -> std::io::Result<Vec<u64>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("audit-")) else {
            continue;
        };
        if let Some(n) = suffixes
            .iter()
            .find_map(|s| rest.strip_suffix(s))
            .and_then(|n| n.parse::<u64>().ok())
        {
            v.push(n);
        }
    }
    v.sort_unstable();
    v.dedup();
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

/// The seal public keys a verifier trusts, by key id. A cluster may give
/// each instance its own seal key; the signature names the one it used.
#[derive(Debug, Clone)]
pub struct SealKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl SealKeys {
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        SealKeys {
            keys: keys
                .into_iter()
                .map(|k| (certs::signing::key_id(&k), k))
                .collect(),
        }
    }

    fn find(&self, key_id: &str, what: &str) -> Result<&VerifyingKey, String> {
        self.keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, k)| k)
            .ok_or_else(|| {
                let known: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
                format!(
                    "{what} made with key {key_id}, which is not among the verification keys ({})",
                    known.join(", ")
                )
            })
    }
}

impl From<VerifyingKey> for SealKeys {
    fn from(k: VerifyingKey) -> Self {
        SealKeys::new([k])
    }
}

fn verify_message(
    keys: &SealKeys,
    key_id: &str,
    signature: &str,
    message: &str,
    what: &str,
) -> Result<(), String> {
    let key = keys.find(key_id, what)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|_| format!("{what} signature is not base64"))?;
    let sig = Signature::from_slice(&bytes)
        .map_err(|_| format!("{what} signature has the wrong length"))?;
    key.verify(message.as_bytes(), &sig)
        .map_err(|_| format!("{what} signature does not verify: it was forged or altered"))
}

/// What a seal asserts about a closed segment.
///
/// Seals of an instance with an id (`audit.instance`) are version 2: they
/// also sign the instance and how many checkpoints the segment collected,
/// so a checkpoint removed from a sealed segment (locally or in the store)
/// is caught.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub segment: u64,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    /// Checkpoints in the segment's checkpoint file (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<u64>,
    pub key_id: String,
    /// Base64 Ed25519 signature over [`Seal::message`].
    pub signature: String,
}

/// The facts a seal signs.
#[derive(Debug, Clone, Copy)]
pub struct SealFacts<'a> {
    pub instance: Option<&'a str>,
    pub segment: u64,
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: &'a str,
    pub checkpoints: u64,
}

impl Seal {
    fn message(&self) -> String {
        let (segment, records, first, last, hash) = (
            self.segment,
            self.records,
            self.first_seq,
            self.last_seq,
            &self.last_hash,
        );
        match &self.instance {
            None => {
                format!("popgate-audit-seal/v1\n{segment}\n{records}\n{first}\n{last}\n{hash}\n")
            }
            Some(instance) => format!(
                "popgate-audit-seal/v2\n{instance}\n{segment}\n{records}\n{first}\n{last}\n{hash}\n{}\n",
                self.checkpoints.unwrap_or(0)
            ),
        }
    }

    pub fn sign(key: &SigningKey, f: SealFacts<'_>) -> Seal {
        let mut seal = Seal {
            instance: f.instance.map(str::to_owned),
            segment: f.segment,
            records: f.records,
            first_seq: f.first_seq,
            last_seq: f.last_seq,
            last_hash: f.last_hash.to_owned(),
            checkpoints: f.instance.map(|_| f.checkpoints),
            key_id: String::new(),
            signature: String::new(),
        };
        (seal.key_id, seal.signature) = sign_message(key, &seal.message());
        seal
    }

    /// Checks the signature; the caller checks the facts against the segment.
    pub fn verify(&self, keys: &SealKeys) -> Result<(), String> {
        if self.instance.is_some() && self.checkpoints.is_none() {
            return Err("seal names an instance but not its checkpoint count".into());
        }
        verify_message(keys, &self.key_id, &self.signature, &self.message(), "seal")
    }
}

/// A signed statement "at `time`, record `seq` of segment `segment` had
/// hash `hash`", appended at most a checkpoint interval after records are
/// written. It makes the open segment tamper-evident before it is sealed:
/// rewriting or truncating records a checkpoint vouches for breaks the
/// match, and only the seal key (kept off the log) can make a new one.
///
/// Version 2 (an instance with an id) also signs the instance and the
/// checkpoint's number in its segment (1, 2, 3, …), so one removed from
/// the middle leaves a gap and one removed from the end of a sealed
/// segment contradicts the seal's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub segment: u64,
    /// Number in its segment, from 1 (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
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
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Head => "head",
            CheckpointKind::Closed => "closed",
            CheckpointKind::Opened => "opened",
        }
    }
    fn domain(self, v2: bool) -> &'static str {
        match (self, v2) {
            (CheckpointKind::Head, false) => "popgate-audit-checkpoint/v1",
            (CheckpointKind::Closed, false) => "popgate-audit-closed/v1",
            (CheckpointKind::Opened, false) => "popgate-audit-opened/v1",
            (CheckpointKind::Head, true) => "popgate-audit-checkpoint/v2",
            (CheckpointKind::Closed, true) => "popgate-audit-closed/v2",
            (CheckpointKind::Opened, true) => "popgate-audit-opened/v2",
        }
    }
}

/// Where a checkpoint is made: whose chain, which segment, its number.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointAt<'a> {
    pub instance: Option<&'a str>,
    pub segment: u64,
    pub n: u64,
}

impl Checkpoint {
    fn message(&self) -> String {
        let (segment, seq, hash, time) = (self.segment, self.seq, &self.hash, &self.time);
        match &self.instance {
            None => format!(
                "{}\n{segment}\n{seq}\n{hash}\n{time}\n",
                self.kind.domain(false)
            ),
            Some(instance) => format!(
                "{}\n{instance}\n{segment}\n{}\n{seq}\n{hash}\n{time}\n",
                self.kind.domain(true),
                self.n.unwrap_or(0)
            ),
        }
    }

    pub fn sign(
        key: &SigningKey,
        kind: CheckpointKind,
        at: CheckpointAt<'_>,
        seq: u64,
        hash: &str,
        time: &str,
    ) -> Checkpoint {
        let mut cp = Checkpoint {
            instance: at.instance.map(str::to_owned),
            segment: at.segment,
            n: at.instance.map(|_| at.n),
            seq,
            hash: hash.to_owned(),
            time: time.to_owned(),
            kind,
            key_id: String::new(),
            signature: String::new(),
        };
        (cp.key_id, cp.signature) = sign_message(key, &cp.message());
        cp
    }

    pub fn verify(&self, keys: &SealKeys) -> Result<(), String> {
        if self.instance.is_some() && self.n.is_none() {
            return Err("checkpoint names an instance but not its number".into());
        }
        verify_message(
            keys,
            &self.key_id,
            &self.signature,
            &self.message(),
            "checkpoint",
        )
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

//! Segment files, their seals and their search indexes.
//!
//! `audit-000001.jsonl` holds records; when it is closed (size or age),
//! `audit-000001.seal` signs its last hash, record count and sequence range
//! with the Ed25519 audit-seal key, and `audit-000001.idx` lists the byte
//! offset of every record that names a citizen, sorted by citizen reference.

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
        let sig =
            key.sign(Self::message(segment, records, first_seq, last_seq, last_hash).as_bytes());
        Seal {
            segment,
            records,
            first_seq,
            last_seq,
            last_hash: last_hash.to_owned(),
            key_id: certs::signing::key_id(&key.verifying_key()),
            signature: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        }
    }

    /// Checks the signature; the caller checks the facts against the segment.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), String> {
        let expected_id = certs::signing::key_id(key);
        if self.key_id != expected_id {
            return Err(format!(
                "sealed with key {} but the verification key is {expected_id}",
                self.key_id
            ));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.signature)
            .map_err(|_| "signature is not base64".to_owned())?;
        let sig = Signature::from_slice(&bytes)
            .map_err(|_| "signature has the wrong length".to_owned())?;
        let msg = Self::message(
            self.segment,
            self.records,
            self.first_seq,
            self.last_seq,
            &self.last_hash,
        );
        key.verify(msg.as_bytes(), &sig)
            .map_err(|_| "signature does not verify: the seal or its segment was forged".to_owned())
    }
}

/// Writes a file atomically and durably (tmp, fsync, rename, fsync dir).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp~");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

//! Ed25519 keys that seal audit segments (and, later, sign scan verdicts).
//!
//! Keys are files so that operators can keep the private half away from the
//! machines that only verify: PKCS#8 PEM for the private key (mode 0600),
//! SPKI PEM for the public key. A key id (first 16 hex digits of the
//! SHA-256 of the public key) is written next to every signature so a
//! verifier can tell "wrong key" from "bad signature".

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no randomness for a key: {0}")]
    Random(String),
}

pub struct KeyPairPaths {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// Writes `<name>.key` (PKCS#8 PEM, 0600) and `<name>.pub` (SPKI PEM) in `dir`.
pub fn generate_keypair(dir: &Path, name: &str) -> Result<KeyPairPaths, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let invalid = |path: &Path, e: &dyn std::fmt::Display| KeyError::Invalid {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let pem = key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| invalid(&private, &e))?;
    write(&private, pem.as_bytes(), true)?;
    let pub_pem = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| invalid(&public, &e))?;
    write(&public, pub_pem.as_bytes(), false)?;
    Ok(KeyPairPaths { private, public })
}

/// Writes a fresh random 32-byte HMAC key as 64 hex digits (mode 0600):
/// the key under which audit records name citizens.
pub fn generate_hmac_key(path: &Path) -> Result<(), KeyError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
    write(path, format!("{}\n", hex::encode(key)).as_bytes(), true)
}

/// The keys a popgate deployment signs and keys with, kept beside the PKI:
/// `audit-seal` (audit seals and checkpoints), `verdict-signing` (popscan
/// verdicts) and `audit-hmac.key`. Only missing ones are created, so PKI
/// directories from before a key existed gain it.
pub fn ensure_service_keys(dir: &Path) -> Result<(), KeyError> {
    for name in ["audit-seal", "verdict-signing"] {
        if !dir.join(format!("{name}.key")).exists() {
            generate_keypair(dir, name)?;
        }
    }
    let hmac = dir.join("audit-hmac.key");
    if !hmac.exists() {
        generate_hmac_key(&hmac)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<(), KeyError> {
    crate::durable_file::write(path, bytes, secret).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Invalid {
        path: path.to_owned(),
        message: format!("not an Ed25519 PKCS#8 PEM private key: {e}"),
    })
}

pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&text).map_err(|e| KeyError::Invalid {
        path: path.to_owned(),
        message: format!("not an Ed25519 SPKI PEM public key: {e}"),
    })
}

/// Short, stable name of a public key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};

    #[test]
    fn generated_keys_load_sign_and_verify() {
        let dir = std::env::temp_dir().join(format!("certs-signing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = generate_keypair(&dir, "seal").unwrap();
        let sk = load_signing_key(&p.private).unwrap();
        let vk = load_verifying_key(&p.public).unwrap();
        let sig = sk.sign(b"hello");
        assert!(vk.verify(b"hello", &sig).is_ok());
        assert!(vk.verify(b"hellO", &sig).is_err());
        assert_eq!(key_id(&vk).len(), 16);
        // The wrong kind of file is a located error, not a panic.
        let e = load_verifying_key(&p.private).unwrap_err().to_string();
        assert!(e.contains("seal.key"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

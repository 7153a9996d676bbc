//! Loading popscan's YAML (inventory, policies, waivers) with every mistake
//! reported as `file:line:column: what`.

use std::path::{Path, PathBuf};

/// A problem in one of popscan's input files.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{}{}: {message}", file.display(), pos.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct InputError {
    pub file: PathBuf,
    pub pos: Option<(u64, u64)>,
    pub message: String,
}

impl InputError {
    pub fn whole(file: &Path, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_owned(),
            pos: None,
            message: message.into(),
        }
    }

    pub fn at(file: &Path, loc: &serde_saphyr::Location, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_owned(),
            pos: Some((loc.line(), loc.column())),
            message: message.into(),
        }
    }
}

/// Reads and deserializes one YAML file.
pub fn load<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, InputError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| InputError::whole(file, format!("cannot read: {e}")))?;
    parse(file, &text)
}

/// Deserializes YAML text that came from `file`.
pub fn parse<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, InputError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        // serde-saphyr prints "error: line L column C: msg" plus a snippet;
        // the position is already ours to print, so keep just the message.
        let full = e.to_string();
        let head = full.lines().next().unwrap_or_default().trim();
        let head = head.strip_prefix("error: ").unwrap_or(head);
        let message = head
            .strip_prefix("line ")
            .and_then(|rest| rest.split_once(": "))
            .filter(|(pos, _)| pos.contains(" column "))
            .map(|(_, m)| m.to_owned())
            .unwrap_or_else(|| head.to_owned());
        match e.location() {
            Some(loc) => InputError::at(file, &loc, message),
            None => InputError::whole(file, message),
        }
    })
}

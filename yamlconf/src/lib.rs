//! The configuration files of popgate and popscan (gateway.yaml, agencies,
//! inventories, policies, waivers) are YAML read through one path, so that
//! every mistake reads the same way everywhere: `file:line:column: what`.
//! `check-config` and `policy validate` print exactly this.

use std::path::{Path, PathBuf};

/// A problem in a configuration file, naming the file and, where known,
/// the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), pos.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    /// (line, column), 1-based.
    pub pos: Option<(u64, u64)>,
    pub message: String,
}

impl ConfigError {
    /// A problem with the file as a whole.
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            pos: None,
            message: message.into(),
        }
    }

    /// A problem at a position serde-saphyr reported.
    pub fn at(file: &Path, loc: &serde_saphyr::Location, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            pos: Some((loc.line(), loc.column())),
            message: message.into(),
        }
    }
}

/// Reads a file as text.
pub fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError::new(file, format!("cannot read: {e}")))
}

/// Reads and deserializes one YAML file.
pub fn load<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    parse(file, &read(file)?)
}

/// Deserializes YAML text that came from `file`.
pub fn parse<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let message = first_line(&e.to_string());
        match e.location() {
            Some(loc) => ConfigError::at(file, &loc, message),
            None => ConfigError::new(file, message),
        }
    })
}

/// serde-saphyr renders "error: line L column C: message" and then a
/// source snippet; the position is printed as file:line:column already, so
/// only the message is kept.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line.strip_prefix("line ") {
        Some(rest) => match rest.split_once(": ") {
            Some((loc, msg)) if loc.contains(" column ") => msg.to_owned(),
            _ => line.to_owned(),
        },
        None => line.to_owned(),
    }
}

/// A path named in `file`, resolved against `file`'s directory (absolute
/// paths stay as they are), so a config directory can be moved as a whole.
pub fn resolve(file: &Path, named: &str) -> PathBuf {
    let named = Path::new(named);
    if named.is_absolute() {
        named.to_owned()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        port: u16,
    }

    #[test]
    fn mistakes_are_located_and_messages_kept_short() {
        let f = Path::new("conf/x.yaml");
        let e = parse::<Sample>(f, "name: a\nprot: 1\n").unwrap_err();
        assert_eq!(e.pos, Some((2, 1)));
        assert!(
            e.to_string()
                .starts_with("conf/x.yaml:2:1: unknown field `prot`"),
            "{e}"
        );
        assert!(!e.message.contains('\n'), "{e:?}");
        let e = parse::<Sample>(f, "name: a\nport: soon\n").unwrap_err();
        assert_eq!(e.pos.map(|p| p.0), Some(2), "{e}");
        let e = load::<Sample>(Path::new("/nonexistent/x.yaml")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn paths_resolve_against_the_naming_file() {
        assert_eq!(
            resolve(Path::new("etc/p/g.yaml"), "k.pem"),
            PathBuf::from("etc/p/k.pem")
        );
        assert_eq!(
            resolve(Path::new("g.yaml"), "k.pem"),
            PathBuf::from("k.pem")
        );
        assert_eq!(
            resolve(Path::new("etc/g.yaml"), "/abs/k.pem"),
            PathBuf::from("/abs/k.pem")
        );
    }
}

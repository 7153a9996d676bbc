//! The id of one popgate instance in a cluster.
//!
//! Each instance keeps its own hash chain; the id is written into every
//! record, seal and checkpoint it signs (so a signed statement cannot be
//! moved from one instance's history to another's) and keys its rows in
//! the audit store. Two instances sharing an id would interleave two
//! chains under one name, which the store refuses: the id must be stable
//! (configured, not derived from a host name that changes) and unique.

use std::fmt;

/// A validated instance id: 1–63 of `a-z 0-9 . _ -`, starting with a
/// letter or digit (safe in file names, metric labels and SQL values).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_first = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_rest = s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if s.len() > 63 || !ok_first || !ok_rest {
            return Err(format!(
                "instance id {s:?}: expected 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
            ));
        }
        Ok(InstanceId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::InstanceId;

    #[test]
    fn ids_are_short_lowercase_and_safe_everywhere_they_go() {
        for good in ["a", "hcm-1", "gw01.hn", "x_y", "0"] {
            assert!(InstanceId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a b", "a/b", "é", &"a".repeat(64)] {
            assert!(InstanceId::parse(bad).is_err(), "{bad:?}");
        }
    }
}

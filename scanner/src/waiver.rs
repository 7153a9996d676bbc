//! Waivers: a named exception for one control on one system, justified,
//! approved and dated. An expired waiver stops applying on its expiry date
//! (the day after `expires`), and the report says so.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use time::Date;

use yamlconf::ConfigError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiver {
    pub system: String,
    pub control: String,
    pub justification: String,
    pub approver: String,
    /// Last day (UTC) the waiver applies.
    #[serde(with = "iso_date")]
    pub expires: Date,
}

mod iso_date {
    use serde::Serializer;
    use time::Date;

    pub fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::format_date(*d))
    }
}

pub use certs::dates::{date as format_date, parse_date};

impl Waiver {
    pub fn applies_on(&self, today: Date) -> bool {
        today <= self.expires
    }
}

#[derive(Debug, Clone, Default)]
pub struct Waivers {
    pub list: Vec<Waiver>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaivers {
    waivers: Vec<Spanned<RawWaiver>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWaiver {
    system: String,
    control: String,
    justification: Spanned<String>,
    approver: Spanned<String>,
    expires: Spanned<String>,
}

impl Waivers {
    pub fn load(file: &Path) -> Result<Waivers, ConfigError> {
        let raw: RawWaivers = yamlconf::load(file)?;
        let mut list = Vec::new();
        for w in raw.waivers {
            let w = w.value;
            if w.justification.value.trim().len() < 10 {
                return Err(ConfigError::at(
                    file,
                    &w.justification.referenced,
                    "justification must say why (at least 10 characters)",
                ));
            }
            if w.approver.value.trim().is_empty() {
                return Err(ConfigError::at(
                    file,
                    &w.approver.referenced,
                    "approver is empty",
                ));
            }
            let Some(expires) = parse_date(&w.expires.value) else {
                return Err(ConfigError::at(
                    file,
                    &w.expires.referenced,
                    format!("expires {:?}: expected a date YYYY-MM-DD", w.expires.value),
                ));
            };
            list.push(Waiver {
                system: w.system,
                control: w.control,
                justification: w.justification.value,
                approver: w.approver.value,
                expires,
            });
        }
        Ok(Waivers { list })
    }

    /// The waiver for this system and control, if any (current or expired).
    pub fn find(&self, system: &str, control: &str) -> Option<&Waiver> {
        self.list
            .iter()
            .filter(|w| w.system == system && w.control == control)
            .max_by_key(|w| w.expires)
    }
}

//! The `quota:` block of an agency (or a route override) in agencies.yaml.

use serde::Deserialize;

/// Limits for one agency or route. Every field is optional: an absent limit
/// is not enforced.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// Sustained requests per second (may be fractional: 0.5 = one every 2 s).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Requests that may arrive at once above the rate; defaults to ⌈rate⌉.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Requests per calendar day in Asia/Ho_Chi_Minh (UTC+7).
    #[serde(default)]
    pub daily: Option<u64>,
    /// Requests in flight at once, per gateway instance.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
}

impl QuotaSpec {
    /// Checks values serde cannot: returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0 && r <= 1_000_000.0) {
                return Err(format!(
                    "quota.rate {r} must be > 0 and ≤ 1000000 requests/s"
                ));
            }
        }
        if self.burst == Some(0) {
            return Err("quota.burst must be ≥ 1".into());
        }
        if self.burst.is_some() && self.rate.is_none() {
            return Err("quota.burst needs quota.rate".into());
        }
        if self.daily == Some(0) {
            return Err("quota.daily must be ≥ 1 (suspend the agency to stop it)".into());
        }
        if self.max_concurrent == Some(0) {
            return Err("quota.max_concurrent must be ≥ 1".into());
        }
        Ok(())
    }
}

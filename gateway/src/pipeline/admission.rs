use crate::refusal::Refusal;
use crate::registry::Agency;

/// The admission stage: when `admission:` is configured, the agency must
/// hold a current, passing compliance verdict signed by a trusted key.
pub fn admission(
    verdicts: Option<&crate::admission::Admission>,
    agency: &Agency,
    now: time::OffsetDateTime,
) -> Result<(), Refusal> {
    match verdicts {
        Some(v) => v.check(agency, now).map_err(Refusal::NotCompliant),
        None => Ok(()),
    }
}

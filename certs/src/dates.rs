//! How the project writes times and dates, in one place: certificate and
//! verdict validity, audit records, reports and waivers all read alike.
//! Every time is UTC.

use time::{Date, OffsetDateTime, UtcOffset};

/// RFC 3339 to the second, `Z`: what people read (reports, verdicts,
/// certificate index).
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// RFC 3339 with milliseconds, `Z`: what audit records carry (ordered,
/// comparable as strings).
pub fn rfc3339_millis(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A calendar date, `YYYY-MM-DD`.
pub fn date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Reads `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<Date> {
    Date::parse(
        s,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()
}

/// Reads an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_spelling_for_each_kind_of_time() {
        let t = time::macros::datetime!(2026-11-23 19:09:10.123456 +07:00);
        assert_eq!(rfc3339(t), "2026-11-23T12:09:10Z");
        assert_eq!(rfc3339_millis(t), "2026-11-23T12:09:10.123Z");
        assert_eq!(date(t.date()), "2026-11-23");
        assert_eq!(parse_date("2026-11-23"), Some(t.date()));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(
            parse_rfc3339("2026-11-23T12:09:10.123Z").map(|p| p.unix_timestamp()),
            Some(t.unix_timestamp())
        );
    }
}

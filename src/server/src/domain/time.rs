//! A moment as the database keeps it: milliseconds since the Unix epoch.

use std::fmt;

use ::time::OffsetDateTime;

use crate::clock::{fmt_ms, from_ms, to_ms};

/// A moment in UTC, as whole milliseconds since the Unix epoch (1970-01-01T00:00:00Z).
///
/// The form request times have in the database; a type of its own so a time is not
/// mistaken for a duration or a count. The store turns it into `i64` only to bind or
/// read a column ([`UnixMs::millis`], [`UnixMs::from_millis`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(i64);

impl UnixMs {
    /// The moment `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch: for SQL binds and arithmetic at the store edge.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// The moment `ms` milliseconds later (earlier if negative), saturating.
    #[must_use]
    pub const fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// The moment `secs` seconds later (earlier if negative), saturating.
    #[must_use]
    pub const fn plus_secs(self, secs: i64) -> Self {
        self.plus_millis(secs.saturating_mul(1000))
    }

    /// As a date-time in UTC (the epoch if out of its range).
    pub fn to_datetime(self) -> OffsetDateTime {
        from_ms(self.0)
    }

    /// From a date-time, truncated to the millisecond.
    pub fn from_datetime(t: OffsetDateTime) -> Self {
        Self(to_ms(t))
    }
}

impl From<OffsetDateTime> for UnixMs {
    fn from(t: OffsetDateTime) -> Self {
        Self::from_datetime(t)
    }
}

impl From<UnixMs> for OffsetDateTime {
    fn from(t: UnixMs) -> Self {
        t.to_datetime()
    }
}

/// RFC 3339 in UTC, as [`fmt_ms`] writes it (empty if it has no such form).
impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fmt_ms(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip() {
        assert_eq!(
            UnixMs::from_millis(1_700_000_000_123).millis(),
            1_700_000_000_123
        );
        assert_eq!(UnixMs::from_millis(-5).millis(), -5);
    }

    #[test]
    fn arithmetic_adds_seconds_and_milliseconds() {
        let t = UnixMs::from_millis(1_000);
        assert_eq!(t.plus_secs(3).millis(), 4_000);
        assert_eq!(t.plus_secs(-1).millis(), 0);
        assert_eq!(t.plus_millis(250).millis(), 1_250);
        assert_eq!(
            UnixMs::from_millis(i64::MAX).plus_secs(1).millis(),
            i64::MAX
        );
    }

    #[test]
    fn orders_by_time() {
        assert!(UnixMs::from_millis(1) < UnixMs::from_millis(2));
        assert_eq!(
            UnixMs::from_millis(7).max(UnixMs::from_millis(3)).millis(),
            7
        );
    }

    #[test]
    fn converts_to_and_from_date_times() {
        let t = UnixMs::from_millis(1_700_000_000_123);
        let dt = t.to_datetime();
        assert_eq!(dt.unix_timestamp(), 1_700_000_000);
        assert_eq!(dt.millisecond(), 123);
        assert_eq!(UnixMs::from_datetime(dt), t);
        assert_eq!(UnixMs::from(OffsetDateTime::from(t)), t);
        assert_eq!(
            UnixMs::from_millis(0).to_datetime(),
            OffsetDateTime::UNIX_EPOCH
        );
    }

    #[test]
    fn from_date_time_drops_sub_milliseconds() {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(1_500_999_999).unwrap();
        assert_eq!(UnixMs::from_datetime(dt).millis(), 1_500);
    }

    #[test]
    fn displays_as_fmt_ms_does() {
        for ms in [0, 1_700_000_000_000, 1_700_000_000_123, -1_000] {
            assert_eq!(UnixMs::from_millis(ms).to_string(), fmt_ms(ms));
        }
        assert_eq!(UnixMs::from_millis(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            UnixMs::from_millis(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
    }
}

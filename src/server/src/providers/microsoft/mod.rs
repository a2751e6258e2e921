//! What the Microsoft providers share: the app-only token from the Microsoft
//! identity platform (client secret or certificate), the REST client with its
//! retries, write pacing and typed errors ([`RestClient`], [`ApiError`]), and the
//! time and duration formats PIM takes. Graph ([`super::graph`]) and Azure
//! Resource Manager ([`super::azure`]) each wrap one client.

use std::fmt::Write as _;

use time::OffsetDateTime;

mod client;
pub(crate) mod drift;
pub(crate) mod flow;
mod limiter;
mod token;

pub use client::{ApiError, RestClient, Service, Tuning};
pub(crate) use client::{encode, odata_literal};

use super::ProviderError;

impl From<ApiError> for ProviderError {
    /// The service's code and message reach the requester (`graph: Code: message`,
    /// `arm: Code: message`); throttling, outages and PIM's five-minute rule are
    /// worth a retry.
    fn from(e: ApiError) -> Self {
        if e.is_transient() {
            Self::Transient(e.to_string())
        } else {
            Self::Permanent(e.to_string())
        }
    }
}

/// `2024-05-01T10:00:00Z`: UTC, whole seconds (what PIM's examples send).
pub(crate) fn pim_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// ISO 8601 duration of whole seconds: `PT1H30M`, `PT45S`, `PT26H`.
pub(crate) fn iso_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    let mut out = String::from("PT");
    if h > 0 {
        let _ = write!(out, "{h}H");
    }
    if m > 0 {
        let _ = write!(out, "{m}M");
    }
    if s > 0 || (h == 0 && m == 0) {
        let _ = write!(out, "{s}S");
    }
    out
}

/// Whole seconds from `now` (its fraction dropped) to `end`, rounded up so that
/// PIM covers the whole window; `None` when the window is over.
pub(crate) fn seconds_until(
    now: OffsetDateTime,
    end: OffsetDateTime,
) -> Option<(OffsetDateTime, i64)> {
    let start = now.replace_nanosecond(0).unwrap_or(now);
    let span = end - start;
    let mut seconds = span.whole_seconds();
    if span.subsec_nanoseconds() > 0 {
        seconds += 1;
    }
    (seconds > 0).then_some((start, seconds))
}

/// How long a principal's assignment lasts, over its active instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// No instance.
    Not,
    /// One never expires.
    Forever,
    /// The latest end.
    Until(OffsetDateTime),
}

impl Held {
    /// Folds the instances' ends (`None` = no expiry).
    pub(crate) fn of(ends: impl IntoIterator<Item = Option<OffsetDateTime>>) -> Self {
        ends.into_iter()
            .fold(Self::Not, |held, end| match (held, end) {
                (Self::Forever, _) | (_, None) => Self::Forever,
                (Self::Until(a), Some(b)) => Self::Until(a.max(b)),
                (Self::Not, Some(b)) => Self::Until(b),
            })
    }

    /// What already covers a grant ending at `end`, in words (`None`: it must be extended).
    pub(crate) fn covers(self, end: OffsetDateTime) -> Option<String> {
        match self {
            Self::Forever => Some("no expiry".to_owned()),
            Self::Until(until) if until >= end => Some(pim_time(until)),
            Self::Not | Self::Until(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_durations_and_times() {
        assert_eq!(iso_duration(5400), "PT1H30M");
        assert_eq!(iso_duration(3600), "PT1H");
        assert_eq!(iso_duration(45), "PT45S");
        assert_eq!(iso_duration(26 * 3600 + 1), "PT26H1S");
        assert_eq!(iso_duration(0), "PT0S");
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        assert_eq!(pim_time(t), "2023-11-14T22:13:20Z");
        let later = t + time::Duration::milliseconds(1500);
        assert_eq!(seconds_until(t, later), Some((t, 2)));
        assert_eq!(seconds_until(later, t), None);
    }

    #[test]
    fn held_is_the_latest_end() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let later = t + time::Duration::hours(1);
        assert_eq!(Held::of([]), Held::Not);
        assert_eq!(Held::of([Some(t), Some(later)]), Held::Until(later));
        assert_eq!(Held::of([Some(t), None]), Held::Forever);
        assert_eq!(Held::of([Some(t)]).covers(later), None);
        assert_eq!(Held::of([Some(later)]).covers(t), Some(pim_time(later)));
        assert_eq!(Held::Not.covers(t), None);
    }
}

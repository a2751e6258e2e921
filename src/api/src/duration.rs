//! Human durations: `45s`, `30m`, `1h30m`, `2d`, or plain seconds.

use thiserror::Error;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("duration is empty")]
    Empty,
    /// Not of the form `1h30m`.
    #[error("invalid duration `{0}`: use forms like `45s`, `30m`, `1h30m` or `2d`")]
    Invalid(String),
    /// Larger than any sane grant.
    #[error("duration `{0}` is too long")]
    TooLong(String),
    /// Zero length.
    #[error("duration must be longer than zero")]
    Zero,
}

/// Longest duration accepted anywhere: one year.
pub const MAX_SECONDS: u64 = 366 * 24 * 3600;

/// Parses `45s`, `30m`, `1h30m`, `2d`, `1h 30m`, or plain seconds (`900`).
pub fn parse_duration(input: &str) -> Result<u64, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text
            .parse()
            .map_err(|_| DurationError::TooLong(text.to_owned()))?;
        return check(secs, text);
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    let mut last_unit = u64::MAX;
    for c in text.chars() {
        if c == ' ' {
            continue;
        }
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(|| DurationError::TooLong(text.to_owned()))?,
            );
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(DurationError::Invalid(text.to_owned())),
        };
        // Units must come in decreasing order, each once: `1h30m`, not `30m1h`.
        if unit >= last_unit {
            return Err(DurationError::Invalid(text.to_owned()));
        }
        last_unit = unit;
        let n = number
            .take()
            .ok_or_else(|| DurationError::Invalid(text.to_owned()))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::TooLong(text.to_owned()))?;
    }
    if number.is_some() {
        return Err(DurationError::Invalid(text.to_owned()));
    }
    check(total, text)
}

fn check(secs: u64, text: &str) -> Result<u64, DurationError> {
    if secs == 0 {
        Err(DurationError::Zero)
    } else if secs > MAX_SECONDS {
        Err(DurationError::TooLong(text.to_owned()))
    } else {
        Ok(secs)
    }
}

/// Formats seconds the way `parse_duration` reads them: `1h30m`, `45s`, `2d`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        let n = rest / unit;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push(name);
            rest %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("1h 30m"), Ok(5400));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("900"), Ok(900));
        assert_eq!(parse_duration(" 4h "), Ok(14_400));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "", "h", "1x", "1h1h", "30m1h", "1.5h", "-1h", "1h30", "abc", "1hm",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_duration("0s"), Err(DurationError::Zero));
        assert_eq!(parse_duration("0"), Err(DurationError::Zero));
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration("400d"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn format_round_trips() {
        for secs in [1, 59, 60, 61, 3600, 5400, 86_400, 90_061, 31_000_000] {
            assert_eq!(parse_duration(&format_duration(secs)), Ok(secs));
        }
        assert_eq!(format_duration(5400), "1h30m");
    }
}

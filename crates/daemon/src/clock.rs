//! Wall-clock helpers: Unix time, and RFC 3339 text in UTC without a date-time crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far ahead of this device's clock a record from another device may be dated: clocks
/// of real devices drift by seconds, not minutes. A record dated further ahead is refused,
/// so that a device whose clock is wrong (or lies) cannot write records that win for ever,
/// nor drag every device's hybrid clock into its future.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// `2026-11-25T07:30:53Z` for a time in seconds since the epoch: the wire's own format,
/// so the daemon and its clients write times alike.
pub use loopsy_wire::control::rfc3339;

/// `2026-11-25T07:30:53.123Z` for a time in milliseconds since the epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let whole = rfc3339(ms / 1000);
    let seconds = whole.trim_end_matches('Z');
    format!("{seconds}.{:03}Z", ms % 1000)
}

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration like 90s, 10m or 2h")]
pub struct NotADuration(pub String);

/// Parses durations as users write them: `90`, `90s`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, NotADuration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| NotADuration(text.to_owned()))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(NotADuration(text.to_owned())),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day) 12:34:56 UTC, computed with `date -u -d @951827696`.
        assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
        // `date -u -d 2026-11-25T07:30:53Z +%s` is 1795591853.
        assert_eq!(rfc3339_ms(1_795_591_853_123), "2026-11-25T07:30:53.123Z");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }
}

//! Times, durations and sizes as images and people write them: RFC 3339 timestamps for
//! image configs (without a date library), Go durations, Docker's human sizes, transfer lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats a time as `2026-11-27T20:58:49.889042404Z` (nanoseconds omitted when zero).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    let nanos = d.subsec_nanos();
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}")
    };
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `SOURCE_DATE_EPOCH` (seconds), when set to a number: the time recorded for a reproducible
/// build. Layers made while it is set have no file newer than it.
pub fn source_date_epoch() -> Option<u64> {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// What rbuild mixes into the cache keys of layer-making steps
/// (`rbuild_solver::cachekey::salted`): `SOURCE_DATE_EPOCH`, which clamps the file times of
/// the layers they make.
pub fn cache_salt() -> Option<String> {
    source_date_epoch().map(|e| format!("SOURCE_DATE_EPOCH={e}"))
}

/// The build time to record: `SOURCE_DATE_EPOCH` if set (reproducible builds), else now.
pub fn build_time() -> SystemTime {
    source_date_epoch()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .unwrap_or_else(SystemTime::now)
}

/// Seconds since the epoch of a `YYYY-MM-DDTHH:MM:SS…` time (fractions and zone ignored: the
/// times rbuild reads are UTC); 0 if unreadable.
pub fn epoch_of(time: &str) -> u64 {
    let parse = |range: std::ops::Range<usize>| time.get(range).and_then(|s| s.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
        parse(0..4),
        parse(5..7),
        parse(8..10),
        parse(11..13),
        parse(14..16),
        parse(17..19),
    ) else {
        return 0;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + h * 3_600 + mi * 60 + s).max(0) as u64
}

/// How long ago `time` (RFC 3339) was, the way Docker says it: `About a minute ago`,
/// `5 minutes ago`, `2 hours ago`, `3 days ago`, `2 weeks ago`, `4 months ago`, `2 years ago`.
pub fn ago(time: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(epoch_of(time));
    let text = match secs {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_string(),
        s if s < 3_600 => format!("{} minutes", s / 60),
        s if s < 7_200 => "About an hour".to_string(),
        s if s < 48 * 3_600 => format!("{} hours", s / 3_600),
        s if s < 14 * 86_400 => format!("{} days", s / 86_400),
        s if s < 90 * 86_400 => format!("{} weeks", s / (7 * 86_400)),
        s if s < 730 * 86_400 => format!("{} months", s / (30 * 86_400)),
        s => format!("{} years", s / (365 * 86_400)),
    };
    format!("{text} ago")
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A size the way Docker prints it: `1.5MB`, `104MB` (decimal units, three significant
/// digits).
pub fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    // Three significant digits, as Docker's sizes (go-units' HumanSize).
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let number = format!("{value:.decimals$}");
    let number = if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        &number
    };
    format!("{number}{}", units[unit])
}

/// Parses a Go duration such as `24h`, `1h30m`, `90s` into seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..split].parse().ok()?;
        rest = &rest[split..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += number * factor;
        rest = &rest[unit_end..];
    }
    Some(total as u64)
}

/// `sha256:… 1.05MB / 2.10MB 5.2MB/s 0.2s`: a transfer's bytes (of the total, if known), its
/// average rate and its duration.
pub fn transfer_line(id: &str, current: u64, total: Option<u64>, elapsed: Duration) -> String {
    let bytes = match total {
        Some(total) => format!(
            "{} / {}",
            crate::units::human(current),
            crate::units::human(total)
        ),
        None => crate::units::human(current),
    };
    format!(
        "{id} {bytes} {} {:.1}s",
        rate(current, elapsed),
        elapsed.as_secs_f64()
    )
}

/// `5.2MB/s`: bytes per second over `elapsed` (a blank rate for an instant transfer).
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 0.001 {
        return "-/s".into();
    }
    format!("{}/s", crate::units::human((bytes as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_docker_says_them() {
        let at = |secs_ago: u64| rfc3339(SystemTime::now() - Duration::from_secs(secs_ago));
        assert_eq!(ago(&at(90)), "About a minute ago");
        assert_eq!(ago(&at(5 * 60 + 3)), "5 minutes ago");
        assert_eq!(ago(&at(3 * 3_600)), "3 hours ago");
        assert_eq!(ago(&at(3 * 86_400)), "3 days ago");
        assert_eq!(ago(&at(800 * 86_400)), "2 years ago");
        assert_eq!(
            epoch_of(&rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_813_129))),
            1_795_813_129
        );
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::new(1_795_813_129, 889_042_404)),
            "2026-11-27T20:58:49.889042404Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn units_and_times() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
        assert_eq!(human(2_000_000_000), "2GB");
        assert_eq!(human(1_982_000), "1.98MB");
        assert_eq!(human(104_362_000), "104MB");
        assert_eq!(human(10_250_000), "10.2MB");
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("1h30m"), Some(5_400));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("3d"), None);
        assert_eq!(epoch_of("1970-01-02T00:00:01Z"), 86_401);
        assert_eq!(epoch_of("2026-11-28T00:00:00Z"), 1_795_824_000);
    }
}

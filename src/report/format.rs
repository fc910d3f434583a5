//! How times, durations, dates and shares are written in reports and the summary window.

use std::time::SystemTime;

/// A time on the session's axis: `m:ss.s` under an hour (`0:07.5`, `59:59.9`), `h:mm:ss` beyond.
pub fn clock(ms: f64) -> String {
    let ms = ms.max(0.0);
    let tenths = (ms / 100.0).round() as u64;
    let secs = tenths / 10;
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}.{}", secs / 60, secs % 60, tenths % 10)
    }
}

/// A tick label on a time axis whose ticks are `step_ms` apart: [`clock`] without the tenths
/// when the ticks fall on whole seconds (`1:30`, not `1:30.0`).
pub fn tick(ms: f64, step_ms: f64) -> String {
    let label = clock(ms);
    if step_ms >= 1000.0 && ms < 3_600_000.0 {
        label
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches('.')
            .to_string()
    } else {
        label
    }
}

/// A length of time: `0.4 s`, `12.3 s`, `4 min 05 s`, `1 h 02 min`.
pub fn duration(ms: f64) -> String {
    let s = ms.max(0.0) / 1000.0;
    if s < 59.95 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        let whole = s.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        let mins = (s / 60.0).round() as u64;
        format!("{} h {:02} min", mins / 60, mins % 60)
    }
}

/// A share as a percentage with one decimal: `40.0%`.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", 100.0 * share)
}

/// A count with thousands separators: `108,000`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Date and time in UTC: `2026-11-25 14:30:00 UTC`.
pub fn utc(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replace('T', " "))
}

/// Time of day in UTC: `14:30:00`.
pub fn utc_time(t: SystemTime) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    s.get(11..19).unwrap_or(&s).to_string()
}

/// A step for time-axis ticks over `span_ms` that gives at most `max_ticks` ticks, from a list
/// of round steps (0.1 s ... 12 h).
pub fn tick_step_ms(span_ms: f64, max_ticks: usize) -> f64 {
    const STEPS_S: [f64; 22] = [
        0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
        3600.0, 7200.0, 10800.0, 21600.0, 43200.0, 86400.0, 172800.0,
    ];
    let span_s = span_ms.max(1.0) / 1000.0;
    STEPS_S
        .iter()
        .copied()
        .find(|step| span_s / step <= max_ticks as f64)
        .unwrap_or(STEPS_S[STEPS_S.len() - 1])
        * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_read_like_a_player() {
        assert_eq!(clock(7_460.0), "0:07.5");
        assert_eq!(clock(3_599_940.0), "59:59.9");
        assert_eq!(clock(3_723_000.0), "1:02:03");
        assert_eq!(tick(90_000.0, 30_000.0), "1:30");
        assert_eq!(tick(3_723_000.0, 600_000.0), "1:02:03");
        assert_eq!(tick(1_500.0, 500.0), "0:01.5");
        assert_eq!(duration(400.0), "0.4 s");
        assert_eq!(duration(245_000.0), "4 min 05 s");
        assert_eq!(duration(3_720_000.0), "1 h 02 min");
        assert_eq!(count(108_000), "108,000");
        assert_eq!(count(12), "12");
        assert_eq!(percent(0.4), "40.0%");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(utc(t), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_time(t), "22:13:20");
        assert_eq!(tick_step_ms(3_600_000.0, 8), 600_000.0);
        assert_eq!(tick_step_ms(1_000.0, 8), 200.0);
    }
}

//! Live-request cursors: the one place their epoch and arithmetic live.
//!
//! A live (long-poll or SSE) response names a cursor the client echoes on its next request, so
//! a CDN keys consecutive live URLs apart and collapses only requests of one interval. Durable
//! Streams and Electric count from the same epoch (2024-10-09T00:00:00Z) but write the cursor
//! differently; a client that echoes a cursor at or ahead of the current one gets a strictly
//! larger one, plus a random step that spreads such clients out instead of having them all
//! collapse onto the next interval.

use std::time::Duration;

/// 2024-10-09T00:00:00Z in Unix seconds.
pub const CURSOR_EPOCH_UNIX: u64 = 1_728_432_000;

/// How a cursor writes the current interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorScale {
    /// Completed intervals since the epoch (the Durable Streams protocol).
    Intervals,
    /// The end of the current interval, in seconds since the epoch (Electric's shape API).
    Seconds,
}

/// The cursor to answer a live request with at `now_unix`, given the one the client echoed.
pub fn next_cursor(now_unix: u64, interval: Duration, scale: CursorScale, echoed: Option<&str>) -> String {
    let t = interval.as_secs().max(1);
    let elapsed = now_unix.saturating_sub(CURSOR_EPOCH_UNIX);
    let jitter_secs: u64 = rand::random_range(1..=3600);
    let (current, jitter) = match scale {
        CursorScale::Intervals => (elapsed / t, jitter_secs.div_ceil(t).max(1)),
        CursorScale::Seconds => (elapsed.div_ceil(t) * t, jitter_secs),
    };
    match echoed.and_then(|c| c.parse::<u64>().ok()) {
        Some(echoed) if echoed >= current => echoed.saturating_add(jitter).to_string(),
        _ => current.to_string(),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWENTY: Duration = Duration::from_secs(20);

    #[test]
    fn interval_cursors_count_intervals_and_move_past_an_echo() {
        let now = CURSOR_EPOCH_UNIX + 10_000;
        let current: u64 = next_cursor(now, TWENTY, CursorScale::Intervals, None).parse().unwrap();
        assert_eq!(current, 500);
        let next: u64 = next_cursor(now, TWENTY, CursorScale::Intervals, Some(&current.to_string())).parse().unwrap();
        assert!(next > current && next <= current + 180);
        assert_eq!(next_cursor(now, TWENTY, CursorScale::Intervals, Some("1")), current.to_string());
    }

    #[test]
    fn second_cursors_end_the_interval_and_move_past_an_echo() {
        let now = CURSOR_EPOCH_UNIX + 10_001;
        let current: u64 = next_cursor(now, TWENTY, CursorScale::Seconds, None).parse().unwrap();
        assert_eq!(current, 10_020);
        let next: u64 = next_cursor(now, TWENTY, CursorScale::Seconds, Some("10020")).parse().unwrap();
        assert!(next > current && next <= current + 3600);
        assert_eq!(next_cursor(now, TWENTY, CursorScale::Seconds, Some("garbage")), "10020");
    }
}

//! Stream offsets and long-poll cursors: the one place their wire format is defined.
//!
//! An offset is `<epoch>_<seq>`, two zero-padded 16-digit decimals, so plain string order equals
//! numeric order. `seq` is the JetStream sequence of the last message the reader has seen (0 =
//! before any data). Every edge stream shares one JetStream stream, whose sequence is global and
//! never reused, so an offset stays meaningful across edges, restarts, deletes and re-creates.
//! `epoch` is always 0 today; it exists because the protocol's de facto format has two fields.

use std::fmt;

/// A position in a stream: after the message with JetStream sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    epoch: u64,
    seq: u64,
}

/// What a reader asked for in `?offset=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// `-1` or no parameter: from the beginning.
    Start,
    /// `now`: from the current tail.
    Now,
    At(Offset),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed offset: expected `-1`, `now` or `<digits>_<digits>`")]
pub struct OffsetParseError;

impl Offset {
    pub const ZERO: Offset = Offset { epoch: 0, seq: 0 };

    pub fn at_seq(seq: u64) -> Self {
        Offset { epoch: 0, seq }
    }

    /// The JetStream sequence readers continue after; `None` when the offset lies beyond
    /// anything this server can have minted (a foreign epoch).
    pub fn seq(self) -> Option<u64> {
        (self.epoch == 0).then_some(self.seq)
    }

    pub fn parse(s: &str) -> Result<Self, OffsetParseError> {
        let (a, b) = s.split_once('_').ok_or(OffsetParseError)?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 19 && p.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(OffsetParseError);
        }
        Ok(Offset { epoch: a.parse().map_err(|_| OffsetParseError)?, seq: b.parse().map_err(|_| OffsetParseError)? })
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}_{:016}", self.epoch, self.seq)
    }
}

impl OffsetQuery {
    pub fn parse(s: &str) -> Result<Self, OffsetParseError> {
        match s {
            "-1" => Ok(OffsetQuery::Start),
            "now" => Ok(OffsetQuery::Now),
            other => Offset::parse(other).map(OffsetQuery::At),
        }
    }
}

/// Seconds in one cursor interval (the protocol's 20 s buckets since 2024-10-09T00:00:00Z).
const CURSOR_INTERVAL_SECS: u64 = 20;
const CURSOR_EPOCH_UNIX: u64 = 1_728_432_000;

/// The `Stream-Cursor` to return. CDNs key long-poll responses on the cursor, so a client that
/// echoes a cursor at or ahead of the current interval must get a strictly larger one; the jitter
/// spreads those clients out instead of having them all collapse onto the next interval.
pub fn next_cursor(now_unix: u64, client_cursor: Option<&str>) -> String {
    let current = now_unix.saturating_sub(CURSOR_EPOCH_UNIX) / CURSOR_INTERVAL_SECS;
    match client_cursor.and_then(|c| c.parse::<u64>().ok()) {
        Some(echoed) if echoed >= current => {
            let jitter_secs: u64 = rand::random_range(1..=3600);
            (echoed + jitter_secs.div_ceil(CURSOR_INTERVAL_SECS).max(1)).to_string()
        }
        _ => current.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_so_string_order_is_numeric_order() {
        assert_eq!(Offset::ZERO.to_string(), "0000000000000000_0000000000000000");
        assert!(Offset::at_seq(9).to_string() < Offset::at_seq(10).to_string());
        assert_eq!(Offset::parse(&Offset::at_seq(42).to_string()), Ok(Offset::at_seq(42)));
    }

    #[test]
    fn rejects_malformed_offsets() {
        for bad in ["", "abc", "1", "_1", "1_", "1_2_3", "../1_2", "1_2 ", "-1_2", "1,2", "1_99999999999999999999"] {
            assert!(OffsetQuery::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(OffsetQuery::parse("-1"), Ok(OffsetQuery::Start));
        assert_eq!(OffsetQuery::parse("now"), Ok(OffsetQuery::Now));
        assert!(Offset::parse("9999999999999999_9999999999999999").unwrap().seq().is_none());
    }

    #[test]
    fn echoed_cursor_always_moves_forward() {
        let now = CURSOR_EPOCH_UNIX + 10_000;
        let current: u64 = next_cursor(now, None).parse().unwrap();
        let next: u64 = next_cursor(now, Some(&current.to_string())).parse().unwrap();
        assert!(next > current);
        assert_eq!(next_cursor(now, Some("1")), current.to_string());
    }
}

//! Stream offsets and long-poll cursors: the one place their wire format is defined.
//!
//! An offset is `<epoch>_<seq>`, two zero-padded 16-digit decimals, so plain string order equals
//! numeric order. `seq` is the JetStream sequence of the last message the reader has seen (0 =
//! before any data). Every edge stream shares one JetStream stream, whose sequence is global and
//! never reused, so an offset stays meaningful across edges, restarts, deletes and re-creates.
//! `epoch` is always 0 today; it exists because the protocol's de facto format has two fields.

use std::{fmt, time::Duration};

use folio_bus::StreamSeq;
use folio_live::CursorScale;

/// A position in a stream: after the message with JetStream sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset {
    epoch: u64,
    seq: StreamSeq,
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
    pub const ZERO: Offset = Offset { epoch: 0, seq: StreamSeq::ZERO };

    pub fn at_seq(seq: StreamSeq) -> Self {
        Offset { epoch: 0, seq }
    }

    /// The JetStream sequence readers continue after; `None` when the offset lies beyond
    /// anything this server can have minted (a foreign epoch).
    pub fn seq(self) -> Option<StreamSeq> {
        (self.epoch == 0).then_some(self.seq)
    }

    pub fn parse(s: &str) -> Result<Self, OffsetParseError> {
        let (a, b) = s.split_once('_').ok_or(OffsetParseError)?;
        let digits = |p: &str| !p.is_empty() && p.len() <= 19 && p.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(OffsetParseError);
        }
        let seq = StreamSeq::new(b.parse().map_err(|_| OffsetParseError)?);
        Ok(Offset { epoch: a.parse().map_err(|_| OffsetParseError)?, seq })
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}_{:016}", self.epoch, self.seq.get())
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

impl From<StreamSeq> for Offset {
    fn from(seq: StreamSeq) -> Self {
        Offset::at_seq(seq)
    }
}

/// The protocol's cursor interval: 20 s buckets since 2024-10-09T00:00:00Z.
const CURSOR_INTERVAL: Duration = Duration::from_secs(20);

/// The `Stream-Cursor` to return. CDNs key long-poll responses on the cursor, so a client that
/// echoes a cursor at or ahead of the current interval must get a strictly larger one (with
/// jitter; see [`folio_live::next_cursor`], shared with the shape API).
pub fn next_cursor(client_cursor: Option<&str>) -> String {
    folio_live::next_cursor(folio_live::cursor::unix_now(), CURSOR_INTERVAL, CursorScale::Intervals, client_cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_fixed_width_so_string_order_is_numeric_order() {
        assert_eq!(Offset::ZERO.to_string(), "0000000000000000_0000000000000000");
        let at = |n| Offset::at_seq(StreamSeq::new(n));
        assert!(at(9).to_string() < at(10).to_string());
        assert_eq!(Offset::parse(&at(42).to_string()), Ok(at(42)));
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
}

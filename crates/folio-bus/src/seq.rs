//! [`StreamSeq`]: a JetStream stream sequence, the one position every offset format encodes.
//!
//! A stream's sequence starts at 1 and is never reused, so a position "after sequence `n`"
//! stays meaningful across consumers, restarts and edges. `ZERO` is the position before the
//! first message. The Durable Streams offset (`<epoch>_<seq>`) and the Electric shape offset
//! (`<seq>_<n>`) both convert from and to it; nothing else should pass raw `u64` sequences
//! between modules.

use std::fmt;

/// The sequence of a message in one JetStream stream (or the position right after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamSeq(u64);

impl StreamSeq {
    /// Before the first message.
    pub const ZERO: StreamSeq = StreamSeq(0);
    pub const MAX: StreamSeq = StreamSeq(u64::MAX);

    pub const fn new(seq: u64) -> Self {
        StreamSeq(seq)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The sequence right after this one: where a reader continues (saturates at `MAX`).
    pub const fn next(self) -> Self {
        StreamSeq(self.0.saturating_add(1))
    }
}

impl From<u64> for StreamSeq {
    fn from(seq: u64) -> Self {
        StreamSeq(seq)
    }
}

impl From<StreamSeq> for u64 {
    fn from(seq: StreamSeq) -> Self {
        seq.0
    }
}

impl fmt::Display for StreamSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_numerically_and_moves_forward() {
        assert!(StreamSeq::ZERO < StreamSeq::new(1));
        assert_eq!(StreamSeq::ZERO.next(), StreamSeq::new(1));
        assert_eq!(StreamSeq::MAX.next(), StreamSeq::MAX);
        assert_eq!(StreamSeq::new(42).to_string(), "42");
        assert_eq!(u64::from(StreamSeq::from(7)), 7);
    }
}

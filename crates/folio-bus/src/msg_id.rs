//! The message id every published event carries as `Nats-Msg-Id`: one place for the scheme.
//!
//! A key is `(commit LSN, position, part)`. `position` is the index of the pgoutput change
//! message (insert, update, delete, truncate, logical message) inside its transaction, so it is
//! fixed by the WAL and identical on every replay. `part` numbers the events one change fans
//! out to:
//! - `Control(i)`: events not caused by a transaction (re-snapshot required after the slot was
//!   recreated), keyed at the new slot's start LSN, ordered before anything else there;
//! - `Schema(i)`: schema-change events announced just before the change (they exist only when a
//!   table's columns changed), so a consumer refetches before it sees a row of the new shape;
//! - `Change(j)`: the change's own events (one per table of a multi-table TRUNCATE, two for an
//!   update that moves a row to another tenant);
//! - `End(i)`: the transaction-end markers of a transaction that touched several tables, keyed
//!   at the transaction's first unused position, so after every change of it.
//!
//! Keys order exactly like the events are published, which is what the startup fence compares.
//!
//! Text form: `<commit_lsn as 16 hex digits>:<position>` for `Change(0)` (nearly every event),
//! `…:<position>.<j>` for `Change(j)`, `…:<position>.s<i>`, `…:<position>.c<i>` and
//! `…:<position>.e<i>` for the others. Fixed-width hex keeps ids sortable as strings.

use std::fmt;

use folio_domain::Lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Control(u32),
    Schema(u32),
    Change(u32),
    End(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgKey {
    pub commit_lsn: Lsn,
    pub position: u32,
    pub part: Part,
}

impl MsgKey {
    pub fn new(commit_lsn: Lsn, position: u32, part: Part) -> Self {
        Self { commit_lsn, position, part }
    }

    /// Parses the text form; `None` for ids this service did not write.
    pub fn parse(s: &str) -> Option<Self> {
        let (lsn, rest) = s.split_once(':')?;
        if lsn.len() != 16 {
            return None;
        }
        let commit_lsn = Lsn(u64::from_str_radix(lsn, 16).ok()?);
        let (position, part) = match rest.split_once('.') {
            None => (rest, Part::Change(0)),
            Some((p, part)) => {
                let part = if let Some(i) = part.strip_prefix('s') {
                    Part::Schema(i.parse().ok()?)
                } else if let Some(i) = part.strip_prefix('c') {
                    Part::Control(i.parse().ok()?)
                } else if let Some(i) = part.strip_prefix('e') {
                    Part::End(i.parse().ok()?)
                } else {
                    Part::Change(part.parse().ok()?)
                };
                (p, part)
            }
        };
        Some(Self { commit_lsn, position: position.parse().ok()?, part })
    }
}

impl fmt::Display for MsgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}:{}", self.commit_lsn.0, self.position)?;
        match self.part {
            Part::Change(0) => Ok(()),
            Part::Change(j) => write!(f, ".{j}"),
            Part::Schema(i) => write!(f, ".s{i}"),
            Part::Control(i) => write!(f, ".c{i}"),
            Part::End(i) => write!(f, ".e{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_like_publication_order() {
        let l1 = Lsn(0x1_5000_0000);
        let keys = [
            MsgKey::new(l1, 0, Part::Control(0)),
            MsgKey::new(l1, 0, Part::Control(1)),
            MsgKey::new(l1, 0, Part::Change(0)),
            MsgKey::new(l1, 1, Part::Schema(0)),
            MsgKey::new(l1, 1, Part::Schema(1)),
            MsgKey::new(l1, 1, Part::Change(0)),
            MsgKey::new(l1, 1, Part::Change(1)),
            MsgKey::new(l1, 10, Part::Change(0)),
            MsgKey::new(l1, 11, Part::End(0)),
            MsgKey::new(l1, 11, Part::End(1)),
            MsgKey::new(Lsn(0x2_0000_0001), 0, Part::Change(0)),
        ];
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
        }
        for k in keys {
            assert_eq!(MsgKey::parse(&k.to_string()), Some(k), "{k}");
        }
        assert_eq!(MsgKey::new(Lsn(0x152FB08), 3, Part::Change(0)).to_string(), "000000000152FB08:3");
        assert_eq!(MsgKey::new(Lsn(0x152FB08), 3, Part::Change(2)).to_string(), "000000000152FB08:3.2");
        assert_eq!(MsgKey::new(Lsn(0x152FB08), 3, Part::Schema(0)).to_string(), "000000000152FB08:3.s0");
        assert_eq!(MsgKey::new(Lsn(0x152FB08), 4, Part::End(1)).to_string(), "000000000152FB08:4.e1");
    }

    #[test]
    fn rejects_foreign_ids() {
        for s in [
            "",
            "abc",
            "152FB08:1",
            "000000000152FB08",
            "000000000152FB08:x",
            "000000000152FB08:1.y",
            "000000000152FB08:1.s",
            "000000000152FB08:1.e",
        ] {
            assert_eq!(MsgKey::parse(s), None, "{s}");
        }
    }
}

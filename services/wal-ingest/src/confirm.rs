//! Which LSN the slot may confirm: a transaction's end LSN once JetStream acknowledged every
//! event published before its Commit, and never anything further.
//!
//! Acks complete in publish order (they are awaited in a `FuturesOrdered`), so "everything up
//! to event n is stored" is a single counter. The position confirmed is the Commit's *end* LSN:
//! confirming the commit LSN itself makes Postgres send the whole transaction again.

use std::collections::VecDeque;

use folio_domain::Lsn;

#[derive(Debug, Default)]
pub struct Confirmations {
    published: u64,
    acked: u64,
    /// `(events published before the Commit, commit end LSN)`, oldest first.
    commits: VecDeque<(u64, Lsn)>,
    flushed: Lsn,
}

impl Confirmations {
    /// Starts from what the slot already confirmed, so nothing lower is ever reported.
    pub fn new(confirmed: Lsn) -> Self {
        Self { flushed: confirmed, ..Default::default() }
    }

    /// Counts one more published event; returns its sequence number (1-based).
    pub fn published(&mut self) -> u64 {
        self.published += 1;
        self.published
    }

    /// Records a Commit after every event of its transaction was published (or skipped).
    pub fn committed(&mut self, end_lsn: Lsn) -> Option<Lsn> {
        self.commits.push_back((self.published, end_lsn));
        self.advance()
    }

    /// Event `seq` and all before it are stored in JetStream.
    pub fn acked(&mut self, seq: u64) -> Option<Lsn> {
        debug_assert!(seq > self.acked, "acks arrive in order");
        self.acked = seq;
        self.advance()
    }

    /// A keepalive's WAL end may be confirmed when no transaction is open and nothing awaits an
    /// ack: the server sent everything below it already (Postgres >= 15 skips empty
    /// transactions, so without this an idle publication never lets the slot move).
    pub fn idle(&mut self, wal_end: Lsn, in_transaction: bool) -> Option<Lsn> {
        if in_transaction || !self.commits.is_empty() || self.acked != self.published || wal_end <= self.flushed {
            return None;
        }
        self.flushed = wal_end;
        Some(wal_end)
    }

    pub fn flushed(&self) -> Lsn {
        self.flushed
    }

    fn advance(&mut self) -> Option<Lsn> {
        let mut moved = None;
        while let Some(&(needed, end_lsn)) = self.commits.front() {
            if needed > self.acked {
                break;
            }
            self.commits.pop_front();
            if end_lsn > self.flushed {
                self.flushed = end_lsn;
                moved = Some(end_lsn);
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_a_commit_only_after_all_its_events_are_acked() {
        let mut c = Confirmations::new(Lsn(10));
        let a = c.published();
        let b = c.published();
        assert_eq!(c.committed(Lsn(100)), None);
        let d = c.published();
        assert_eq!(c.committed(Lsn(200)), None);
        assert_eq!(c.acked(a), None);
        assert_eq!(c.acked(b), Some(Lsn(100)));
        assert_eq!(c.idle(Lsn(500), false), None, "transaction 200 is still unacked");
        assert_eq!(c.acked(d), Some(Lsn(200)));
        assert_eq!(c.idle(Lsn(500), true), None, "a transaction is open");
        assert_eq!(c.idle(Lsn(500), false), Some(Lsn(500)));
        assert_eq!(c.idle(Lsn(400), false), None, "never backwards");
    }

    #[test]
    fn a_transaction_with_nothing_to_publish_confirms_at_once() {
        let mut c = Confirmations::new(Lsn(10));
        assert_eq!(c.committed(Lsn(50)), Some(Lsn(50)));
        assert_eq!(c.committed(Lsn(5)), None);
        assert_eq!(c.flushed(), Lsn(50));
    }
}

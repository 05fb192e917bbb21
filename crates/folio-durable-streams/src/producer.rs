//! Idempotent producers: the fencing and sequencing rules, as a pure function of the stored
//! state and the request's `(id, epoch, seq)`.

use axum::http::HeaderMap;

use super::{
    error::{Result, StreamError},
    headers as h,
    meta::{ProducerState, ProducerTuple},
};

/// JavaScript's `Number.MAX_SAFE_INTEGER`: clients send epochs and seqs as JS numbers.
const MAX_SAFE: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New data: apply it, then store this state.
    Accept(ProducerState),
    /// Already applied: answer 204 reporting the highest accepted seq, write nothing.
    Duplicate { last_seq: u64 },
}

/// Producer headers: all three or none.
pub fn parse(headers: &HeaderMap) -> Result<Option<ProducerTuple>> {
    let id = h::get(headers, h::PRODUCER_ID);
    let epoch = h::get(headers, h::PRODUCER_EPOCH);
    let seq = h::get(headers, h::PRODUCER_SEQ);
    let number = |name: &str, v: &str| -> Result<u64> {
        let v = v.trim();
        if v.is_empty() || v.len() > 16 || !v.bytes().all(|c| c.is_ascii_digit()) {
            return Err(StreamError::bad(format!("{name} must be a non-negative integer")));
        }
        v.parse().ok().filter(|n| *n <= MAX_SAFE).ok_or_else(|| StreamError::bad(format!("{name} is too large")))
    };
    match (id, epoch, seq) {
        (None, None, None) => Ok(None),
        (Some(id), Some(epoch), Some(seq)) => {
            if id.trim().is_empty() {
                return Err(StreamError::bad("Producer-Id must not be empty"));
            }
            Ok(Some(ProducerTuple {
                id: id.to_owned(),
                epoch: number("Producer-Epoch", epoch)?,
                seq: number("Producer-Seq", seq)?,
            }))
        }
        _ => Err(StreamError::bad("Producer-Id, Producer-Epoch and Producer-Seq go together")),
    }
}

pub fn decide(state: Option<ProducerState>, req: &ProducerTuple, now_ms: i64) -> Result<Decision> {
    let accept = |epoch, seq| Decision::Accept(ProducerState { epoch, last_seq: seq, updated_ms: now_ms });
    let Some(state) = state else {
        return if req.seq == 0 {
            Ok(accept(req.epoch, 0))
        } else {
            Err(StreamError::SequenceGap { expected: 0, received: req.seq })
        };
    };
    if req.epoch < state.epoch {
        return Err(StreamError::StaleEpoch { current: state.epoch, received: req.epoch });
    }
    if req.epoch > state.epoch {
        return if req.seq == 0 {
            Ok(accept(req.epoch, 0))
        } else {
            Err(StreamError::bad("a new producer epoch must start at Producer-Seq 0"))
        };
    }
    if req.seq <= state.last_seq {
        return Ok(Decision::Duplicate { last_seq: state.last_seq });
    }
    if req.seq == state.last_seq + 1 {
        return Ok(accept(req.epoch, req.seq));
    }
    Err(StreamError::SequenceGap { expected: state.last_seq + 1, received: req.seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple { id: "p".into(), epoch, seq }
    }
    fn st(epoch: u64, last_seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, last_seq, updated_ms: 0 })
    }

    #[test]
    fn sequencing_and_fencing() {
        assert!(matches!(decide(None, &t(0, 0), 1), Ok(Decision::Accept(_))));
        assert!(matches!(decide(None, &t(0, 1), 1), Err(StreamError::SequenceGap { expected: 0, received: 1 })));
        assert!(matches!(decide(st(1, 0), &t(0, 1), 1), Err(StreamError::StaleEpoch { current: 1, .. })));
        assert!(matches!(decide(st(1, 3), &t(2, 1), 1), Err(StreamError::BadRequest(_))));
        assert!(matches!(
            decide(st(1, 3), &t(2, 0), 1),
            Ok(Decision::Accept(ProducerState { epoch: 2, last_seq: 0, .. }))
        ));
        assert_eq!(decide(st(1, 3), &t(1, 2), 1).unwrap(), Decision::Duplicate { last_seq: 3 });
        assert!(matches!(decide(st(1, 3), &t(1, 4), 1), Ok(Decision::Accept(ProducerState { last_seq: 4, .. }))));
        assert!(matches!(decide(st(1, 3), &t(1, 6), 1), Err(StreamError::SequenceGap { expected: 4, received: 6 })));
    }
}

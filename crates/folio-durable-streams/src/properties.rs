//! Property tests (issue 18) of the wire formats and rules a client depends on: offsets
//! (round trip, string order = numeric order, no panic on any input), long-poll cursors (always
//! ahead of an echoed current one), producer headers (no panic, exact round trip) and the
//! idempotent-producer rules (against a model: per epoch, the accepted sequence numbers are
//! 0, 1, 2, … without a gap or a repeat; a retry is a duplicate; an old epoch is fenced).
//!
//! `FOLIO_PROPTEST_CASES` sets the cases per property (2,000 in the test command; e.g. 1,000,000
//! for a soak: `FOLIO_PROPTEST_CASES=1000000 cargo test --release -p folio-durable-streams
//! properties`). A failure is saved under `proptest-regressions/` and replayed first from then on.

use axum::http::{HeaderMap, HeaderValue};
use folio_bus::StreamSeq;
use proptest::prelude::*;

use crate::{
    error::StreamError,
    headers as h,
    meta::{ProducerState, ProducerTuple},
    offset::{Offset, OffsetQuery},
    producer::{self, Decision},
};

fn config() -> ProptestConfig {
    let cases = std::env::var("FOLIO_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    ProptestConfig::with_cases(cases)
}

/// Offsets this server mints: epoch 0, and sequences within the fixed 16-digit width.
fn minted() -> impl Strategy<Value = Offset> {
    (0u64..10_000_000_000_000_000).prop_map(|seq| Offset::at_seq(StreamSeq::new(seq)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn offsets_round_trip_and_sort_as_strings(a in minted(), b in minted()) {
        prop_assert_eq!(Offset::parse(&a.to_string()), Ok(a));
        prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        prop_assert_eq!(OffsetQuery::parse(&a.to_string()), Ok(OffsetQuery::At(a)));
    }

    #[test]
    fn any_offset_text_is_parsed_or_refused_never_a_panic(s in ".{0,48}", digits in "[0-9]{1,20}_[0-9]{1,20}") {
        for text in [s.as_str(), digits.as_str()] {
            if let Ok(OffsetQuery::At(o)) = OffsetQuery::parse(text) {
                // Whatever was accepted means the same thing when written back.
                prop_assert_eq!(Offset::parse(&o.to_string()), Ok(o));
            }
        }
    }

    #[test]
    fn a_cursor_is_ahead_of_any_echoed_current_one(echoed in proptest::option::of("[0-9]{0,21}|.{0,12}")) {
        let now = crate::offset::next_cursor(None).parse::<u64>().unwrap();
        let next = crate::offset::next_cursor(echoed.as_deref());
        let next: u64 = next.parse().expect("a cursor is a number");
        match echoed.as_deref().and_then(|e| e.parse::<u64>().ok()) {
            Some(e) if e >= now && e < u64::MAX => prop_assert!(next > e, "{next} not ahead of {e}"),
            _ => prop_assert!(next >= now),
        }
    }

    #[test]
    fn producer_headers_are_parsed_exactly_or_refused(
        id in proptest::option::of("[ -~]{0,20}"),
        epoch in proptest::option::of("[0-9]{0,18}|[ -~]{0,6}"),
        seq in proptest::option::of("[0-9]{0,18}|[ -~]{0,6}"),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in [(h::PRODUCER_ID, &id), (h::PRODUCER_EPOCH, &epoch), (h::PRODUCER_SEQ, &seq)] {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, v);
            }
        }
        if let Ok(Some(t)) = producer::parse(&headers) {
            prop_assert_eq!(Some(t.epoch), epoch.as_deref().and_then(|e| e.trim().parse().ok()));
            prop_assert_eq!(Some(t.seq), seq.as_deref().and_then(|s| s.trim().parse().ok()));
            prop_assert!(t.epoch < 1 << 53 && t.seq < 1 << 53);
        }
    }

    #[test]
    fn producers_append_each_sequence_number_once_in_order(requests in proptest::collection::vec((0u64..4, 0u64..6), 1..60)) {
        let mut state: Option<ProducerState> = None;
        // The model: what has been accepted, as (epoch, seq), in order.
        let mut accepted: Vec<(u64, u64)> = Vec::new();
        for (now, (epoch, seq)) in requests.into_iter().enumerate() {
            let req = ProducerTuple { id: "p".into(), epoch, seq };
            let decided = producer::decide(state, &req, now as i64);
            prop_assert_eq!(&format!("{decided:?}"), &format!("{:?}", producer::decide(state, &req, now as i64)), "decide is pure");
            match decided {
                Ok(Decision::Accept(next)) => {
                    let expected = match accepted.last() {
                        None => (epoch, 0),
                        Some(&(e, s)) if epoch == e => (e, s + 1),
                        Some(&(e, _)) => {
                            prop_assert!(epoch > e, "accepted an older epoch {epoch} after {e}");
                            (epoch, 0)
                        }
                    };
                    prop_assert_eq!((epoch, seq), expected, "accepted out of sequence");
                    prop_assert_eq!((next.epoch, next.last_seq), (epoch, seq));
                    accepted.push((epoch, seq));
                    state = Some(next);
                }
                Ok(Decision::Duplicate { last_seq }) => {
                    // Only a retry of something this epoch already accepted.
                    prop_assert!(accepted.contains(&(epoch, seq)), "({epoch}, {seq}) called a duplicate, never accepted");
                    prop_assert_eq!(Some(last_seq), state.map(|s| s.last_seq));
                }
                Err(StreamError::StaleEpoch { current, received }) => {
                    prop_assert!(received < current);
                    prop_assert_eq!(Some(current), state.map(|s| s.epoch));
                }
                Err(_) => {
                    // A gap or a new epoch not at 0: refused, and nothing changes.
                    let fresh = match accepted.last() {
                        None => seq == 0,
                        Some(&(e, s)) => (epoch == e && seq == s + 1) || (epoch > e && seq == 0),
                    };
                    prop_assert!(!fresh, "({epoch}, {seq}) refused although it was next");
                }
            }
        }
    }
}

#[test]
fn the_soak_knob_is_read() {
    // The property count must be what FOLIO_PROPTEST_CASES says (or the default), not proptest's 256.
    let expected = std::env::var("FOLIO_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000u32);
    assert_eq!(config().cases, expected);
}

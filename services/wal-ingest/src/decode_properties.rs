//! Property tests (issue 18) of the pgoutput decoder: any message this side of the protocol can
//! hold decodes to exactly what was encoded; any byte string, and any valid message cut short,
//! is decoded or refused with an error, never a panic. The encoder below is the protocol's
//! message layout (PostgreSQL's `logicalrep_write_*`), written independently of the decoder.
//!
//! `FOLIO_PROPTEST_CASES` sets the cases per property (2,000 by default).

use bytes::Bytes;
use proptest::prelude::*;

use super::{Cell, PgOutput, Relation, RelationColumn, decode};

fn config() -> ProptestConfig {
    let cases = std::env::var("FOLIO_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    ProptestConfig::with_cases(cases)
}

/// A C string pgoutput can carry: UTF-8 without NUL (non-empty: an empty schema means pg_catalog).
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{1,24}"
}

fn cell() -> impl Strategy<Value = Cell> {
    prop_oneof![
        Just(Cell::Null),
        Just(Cell::UnchangedToast),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Cell::Text(Bytes::from(v))),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Cell::Binary(Bytes::from(v))),
    ]
}

fn tuple() -> impl Strategy<Value = Vec<Cell>> {
    proptest::collection::vec(cell(), 0..12)
}

fn message() -> impl Strategy<Value = PgOutput> {
    let column =
        (name(), any::<u32>(), any::<i32>(), any::<bool>()).prop_map(|(name, type_oid, type_modifier, part_of_key)| {
            RelationColumn { name, type_oid, type_modifier, part_of_key }
        });
    prop_oneof![
        (
            any::<u32>(),
            name(),
            name(),
            prop_oneof![Just(b'd'), Just(b'n'), Just(b'f'), Just(b'i')],
            proptest::collection::vec(column, 0..10)
        )
            .prop_map(|(oid, schema, name, replica_identity, columns)| PgOutput::Relation(Relation {
                oid,
                schema,
                name,
                replica_identity,
                columns
            })),
        (any::<u32>(), name(), name()).prop_map(|(oid, schema, name)| PgOutput::Type { oid, schema, name }),
        (any::<u32>(), tuple()).prop_map(|(relation, new)| PgOutput::Insert { relation, new }),
        (any::<u32>(), proptest::option::of(tuple()), any::<bool>(), tuple()).prop_map(|(relation, old, key, new)| {
            PgOutput::Update { relation, old_is_key: old.is_some() && key, old, new }
        }),
        (any::<u32>(), tuple(), any::<bool>()).prop_map(|(relation, old, old_is_key)| PgOutput::Delete {
            relation,
            old,
            old_is_key
        }),
        (any::<bool>(), any::<bool>(), proptest::collection::vec(any::<u32>(), 0..20)).prop_map(
            |(cascade, restart_identity, relations)| PgOutput::Truncate { cascade, restart_identity, relations }
        ),
        name().prop_map(|name| PgOutput::Origin { name }),
    ]
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn write_tuple(out: &mut Vec<u8>, t: &[Cell]) {
    out.extend_from_slice(&(t.len() as u16).to_be_bytes());
    for c in t {
        match c {
            Cell::Null => out.push(b'n'),
            Cell::UnchangedToast => out.push(b'u'),
            Cell::Text(v) | Cell::Binary(v) => {
                out.push(if matches!(c, Cell::Text(_)) { b't' } else { b'b' });
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
}

fn encode(m: &PgOutput) -> Vec<u8> {
    let mut out = Vec::new();
    match m {
        PgOutput::Relation(r) => {
            out.push(b'R');
            out.extend_from_slice(&r.oid.to_be_bytes());
            cstr(&mut out, &r.schema);
            cstr(&mut out, &r.name);
            out.push(r.replica_identity);
            out.extend_from_slice(&(r.columns.len() as u16).to_be_bytes());
            for c in &r.columns {
                out.push(u8::from(c.part_of_key));
                cstr(&mut out, &c.name);
                out.extend_from_slice(&c.type_oid.to_be_bytes());
                out.extend_from_slice(&c.type_modifier.to_be_bytes());
            }
        }
        PgOutput::Type { oid, schema, name } => {
            out.push(b'Y');
            out.extend_from_slice(&oid.to_be_bytes());
            cstr(&mut out, schema);
            cstr(&mut out, name);
        }
        PgOutput::Insert { relation, new } => {
            out.push(b'I');
            out.extend_from_slice(&relation.to_be_bytes());
            out.push(b'N');
            write_tuple(&mut out, new);
        }
        PgOutput::Update { relation, old, old_is_key, new } => {
            out.push(b'U');
            out.extend_from_slice(&relation.to_be_bytes());
            if let Some(old) = old {
                out.push(if *old_is_key { b'K' } else { b'O' });
                write_tuple(&mut out, old);
            }
            out.push(b'N');
            write_tuple(&mut out, new);
        }
        PgOutput::Delete { relation, old, old_is_key } => {
            out.push(b'D');
            out.extend_from_slice(&relation.to_be_bytes());
            out.push(if *old_is_key { b'K' } else { b'O' });
            write_tuple(&mut out, old);
        }
        PgOutput::Truncate { cascade, restart_identity, relations } => {
            out.push(b'T');
            out.extend_from_slice(&(relations.len() as u32).to_be_bytes());
            out.push(u8::from(*cascade) | (u8::from(*restart_identity) << 1));
            for r in relations {
                out.extend_from_slice(&r.to_be_bytes());
            }
        }
        PgOutput::Origin { name } => {
            out.push(b'O');
            out.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_be_bytes());
            cstr(&mut out, name);
        }
        PgOutput::Other(tag) => out.push(*tag),
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_message_decodes_to_what_was_encoded(m in message()) {
        prop_assert_eq!(decode(Bytes::from(encode(&m))).expect("a valid message"), m);
    }

    #[test]
    fn a_message_cut_short_is_refused_never_a_panic(m in message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&m);
        let at = cut.index(bytes.len());
        // Every prefix is missing something the message announced (its strings end in NUL and
        // its counts say how much follows), so none may decode as a whole message.
        prop_assert!(decode(Bytes::copy_from_slice(&bytes[..at])).is_err(), "{} of {} bytes decoded", at, bytes.len());
    }

    #[test]
    fn any_bytes_are_decoded_or_refused_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(Bytes::from(bytes));
    }
}

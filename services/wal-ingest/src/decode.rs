//! pgoutput (protocol version 1) messages carried in XLogData, decoded from bytes.
//!
//! Begin, Commit and logical Message are parsed by the replication transport; this module
//! reads everything else: Relation, Type, Insert, Update, Delete, Truncate and Origin. Values
//! stay in Postgres text format (the replication session pins DateStyle, TimeZone, ...), which
//! is exact for every type; turning them into typed values is left to consumers.

use bytes::{Buf, Bytes};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message {tag:?} is truncated")]
    Truncated { tag: char },
    #[error("pgoutput message {tag:?} has an unexpected byte {found:?} where {expected} belongs")]
    Unexpected { tag: char, found: char, expected: &'static str },
    #[error("pgoutput message {tag:?} holds a string that is not UTF-8")]
    NotUtf8 { tag: char },
    #[error("empty pgoutput message")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    pub part_of_key: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column of a tuple as pgoutput sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    /// A TOASTed value that did not change and was not sent.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

pub type Tuple = Vec<Cell>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutput {
    Relation(Relation),
    Type {
        oid: u32,
        schema: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is the full old row under REPLICA IDENTITY FULL (`O`) or only the key columns when
    /// the key changed (`K`, `old_is_key`).
    Update {
        relation: u32,
        old: Option<Tuple>,
        old_is_key: bool,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: Tuple,
        old_is_key: bool,
    },
    Truncate {
        cascade: bool,
        restart_identity: bool,
        relations: Vec<u32>,
    },
    Origin {
        name: String,
    },
    /// A message this decoder does not need (e.g. a protocol-2 streaming marker).
    Other(u8),
}

pub fn decode(mut data: Bytes) -> Result<PgOutput, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::Empty);
    }
    let tag = data.get_u8();
    let mut r = Reader { buf: data, tag: char::from(tag) };
    let msg = match tag {
        b'R' => {
            let oid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.u16()?;
            let mut columns = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstr()?;
                let type_oid = r.u32()?;
                let type_modifier = r.i32()?;
                columns.push(RelationColumn { name, type_oid, type_modifier, part_of_key: flags & 1 == 1 });
            }
            // pgoutput sends an empty namespace for pg_catalog.
            let schema = if schema.is_empty() { "pg_catalog".to_owned() } else { schema };
            PgOutput::Relation(Relation { oid, schema, name, replica_identity, columns })
        }
        b'Y' => {
            let oid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            PgOutput::Type { oid, schema, name }
        }
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N', "'N' (new tuple)")?;
            PgOutput::Insert { relation, new: r.tuple()? }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, old_is_key) = match r.u8()? {
                b'N' => (None, false),
                k @ (b'K' | b'O') => {
                    let old = r.tuple()?;
                    r.expect(b'N', "'N' (new tuple)")?;
                    (Some(old), k == b'K')
                }
                other => {
                    return Err(DecodeError::Unexpected {
                        tag: 'U',
                        found: char::from(other),
                        expected: "'K', 'O' or 'N'",
                    });
                }
            };
            PgOutput::Update { relation, old, old_is_key, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            let old_is_key = match r.u8()? {
                b'K' => true,
                b'O' => false,
                other => {
                    return Err(DecodeError::Unexpected { tag: 'D', found: char::from(other), expected: "'K' or 'O'" });
                }
            };
            PgOutput::Delete { relation, old: r.tuple()?, old_is_key }
        }
        b'T' => {
            let n = r.u32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n.min(1024) as usize);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            PgOutput::Truncate { cascade: options & 1 != 0, restart_identity: options & 2 != 0, relations }
        }
        b'O' => {
            let _origin_lsn = r.u64()?;
            PgOutput::Origin { name: r.cstr()? }
        }
        other => PgOutput::Other(other),
    };
    Ok(msg)
}

struct Reader {
    buf: Bytes,
    tag: char,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.remaining() < n { Err(DecodeError::Truncated { tag: self.tag }) } else { Ok(()) }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn expect(&mut self, want: u8, expected: &'static str) -> Result<(), DecodeError> {
        let found = self.u8()?;
        if found == want {
            Ok(())
        } else {
            Err(DecodeError::Unexpected { tag: self.tag, found: char::from(found), expected })
        }
    }
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let end = self.buf.iter().position(|&b| b == 0).ok_or(DecodeError::Truncated { tag: self.tag })?;
        let s = self.buf.split_to(end);
        self.buf.advance(1);
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::NotUtf8 { tag: self.tag })
    }
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.u16()?;
        let mut cells = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let cell = match self.u8()? {
                b'n' => Cell::Null,
                b'u' => Cell::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = self.u32()? as usize;
                    self.need(len)?;
                    let value = self.buf.split_to(len);
                    if kind == b't' { Cell::Text(value) } else { Cell::Binary(value) }
                }
                other => {
                    return Err(DecodeError::Unexpected {
                        tag: self.tag,
                        found: char::from(other),
                        expected: "'n', 'u', 't' or 'b'",
                    });
                }
            };
            cells.push(cell);
        }
        Ok(cells)
    }
}

#[cfg(test)]
#[path = "decode_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    fn text(out: &mut Vec<u8>, v: &str) {
        out.push(b't');
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }

    #[test]
    fn decodes_a_relation() {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        cstr(&mut m, "public");
        cstr(&mut m, "proposals");
        m.push(b'f');
        m.extend_from_slice(&2u16.to_be_bytes());
        m.push(1);
        cstr(&mut m, "id");
        m.extend_from_slice(&2950u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        m.push(0);
        cstr(&mut m, "title");
        m.extend_from_slice(&25u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        let PgOutput::Relation(rel) = decode(Bytes::from(m)).unwrap() else { panic!() };
        assert_eq!(rel.oid, 16384);
        assert_eq!((rel.schema.as_str(), rel.name.as_str(), rel.replica_identity), ("public", "proposals", b'f'));
        assert_eq!(rel.columns.len(), 2);
        assert!(rel.columns[0].part_of_key && !rel.columns[1].part_of_key);
        assert_eq!(rel.columns[1].type_oid, 25);
    }

    #[test]
    fn decodes_an_update_with_old_row_and_unchanged_toast() {
        let mut m = vec![b'U'];
        m.extend_from_slice(&7u32.to_be_bytes());
        m.push(b'O');
        m.extend_from_slice(&3u16.to_be_bytes());
        text(&mut m, "1");
        m.push(b'n');
        text(&mut m, "big");
        m.push(b'N');
        m.extend_from_slice(&3u16.to_be_bytes());
        text(&mut m, "1");
        text(&mut m, "x");
        m.push(b'u');
        let out = decode(Bytes::from(m)).unwrap();
        assert_eq!(
            out,
            PgOutput::Update {
                relation: 7,
                old: Some(vec![Cell::Text("1".into()), Cell::Null, Cell::Text("big".into())]),
                old_is_key: false,
                new: vec![Cell::Text("1".into()), Cell::Text("x".into()), Cell::UnchangedToast],
            }
        );
    }

    #[test]
    fn decodes_truncate_options() {
        let mut m = vec![b'T'];
        m.extend_from_slice(&2u32.to_be_bytes());
        m.push(3);
        m.extend_from_slice(&10u32.to_be_bytes());
        m.extend_from_slice(&11u32.to_be_bytes());
        assert_eq!(
            decode(Bytes::from(m)).unwrap(),
            PgOutput::Truncate { cascade: true, restart_identity: true, relations: vec![10, 11] }
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut m = vec![b'I'];
        m.extend_from_slice(&7u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&1u16.to_be_bytes());
        m.push(b't');
        m.extend_from_slice(&100u32.to_be_bytes());
        m.extend_from_slice(b"short");
        for cut in 0..m.len() {
            assert!(decode(Bytes::copy_from_slice(&m[..cut])).is_err(), "cut at {cut}");
        }
        assert!(matches!(decode(Bytes::from(vec![b'I', 0, 0, 0, 7, b'X'])), Err(DecodeError::Unexpected { .. })));
    }
}

//! The one reversible encoding of table names into NATS subject tokens, shared by wal-ingest
//! (which publishes `<root>.changes.<table token>.<tenant>`) and the edge (which subscribes to
//! one table's subjects). A token is the table name for the `public` schema and
//! `<schema>~~<table>` otherwise; each name keeps `[A-Za-z0-9_-]` and writes every other byte as
//! `~XX` (upper-case hex).

pub fn table_token(schema: &str, table: &str) -> String {
    if schema == "public" { encode_name(table) } else { format!("{}~~{}", encode_name(schema), encode_name(table)) }
}

/// Inverse of [`table_token`]: `(schema, table)`.
pub fn parse_table_token(token: &str) -> Option<(String, String)> {
    match token.split_once("~~") {
        Some((schema, table)) => Some((decode_name(schema)?, decode_name(table)?)),
        None => Some(("public".to_owned(), decode_name(token)?)),
    }
}

pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push('~');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

pub fn decode_name(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = token.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            let b = bytes[i];
            if !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                return None;
            }
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

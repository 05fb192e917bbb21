//! A read's query string: `?offset=…&live=…&cursor=…`, and where the read starts.

use folio_bus::StreamSeq;

use super::{
    error::{Result, StreamError},
    offset::OffsetQuery,
};

/// Live mode asked for with `?live=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    No,
    LongPoll,
    Sse,
}

#[derive(Debug, Clone)]
pub struct ReadQuery {
    pub offset: Option<OffsetQuery>,
    pub live: Live,
    pub cursor: Option<String>,
}

/// Where a read starts, and whether it asked for the tail (`offset=now`).
pub fn start_position(offset: Option<OffsetQuery>, tail: StreamSeq) -> (StreamSeq, bool) {
    match offset {
        None | Some(OffsetQuery::Start) => (StreamSeq::ZERO, false),
        Some(OffsetQuery::Now) => (tail, true),
        // A position this server cannot have minted (foreign epoch) reads as the tail.
        Some(OffsetQuery::At(o)) => (o.seq().unwrap_or(tail), false),
    }
}

/// Where a read starts when that does not depend on the tail (`None` for `offset=now` and for
/// a position of a foreign epoch, which read as the tail).
pub fn start_without_tail(offset: Option<OffsetQuery>) -> Option<StreamSeq> {
    match offset {
        None | Some(OffsetQuery::Start) => Some(StreamSeq::ZERO),
        Some(OffsetQuery::Now) => None,
        Some(OffsetQuery::At(o)) => o.seq(),
    }
}

/// `?offset=…&live=…&cursor=…`; unknown parameters are ignored, a repeated or empty offset is not.
pub fn parse_read_query(query: Option<&str>) -> Result<ReadQuery> {
    let mut offset = None;
    let mut offsets = 0;
    let mut live = Live::No;
    let mut cursor = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or_else(|| StreamError::bad("malformed query string"))?;
        match percent_decode(k).as_deref() {
            Some("offset") => {
                offsets += 1;
                offset = Some(OffsetQuery::parse(&v)?);
            }
            Some("live") => {
                live = match v.as_str() {
                    "long-poll" | "true" => Live::LongPoll,
                    "sse" => Live::Sse,
                    _ => Live::No,
                }
            }
            Some("cursor") => cursor = Some(v),
            _ => {}
        }
    }
    if offsets > 1 {
        return Err(StreamError::bad("offset given more than once"));
    }
    if live != Live::No && offset.is_none() {
        return Err(StreamError::bad("live reads need an offset"));
    }
    Ok(ReadQuery { offset, live, cursor })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_query_rules() {
        assert!(parse_read_query(Some("offset=")).is_err());
        assert!(parse_read_query(Some("offset=-1&offset=-1")).is_err());
        assert!(parse_read_query(Some("live=long-poll")).is_err());
        assert!(parse_read_query(Some("offset=a%2Fb")).is_err());
        let q = parse_read_query(Some("x=1&offset=now&live=sse&cursor=7")).unwrap();
        assert_eq!(q.offset, Some(OffsetQuery::Now));
        assert_eq!(q.live, Live::Sse);
        assert_eq!(q.cursor.as_deref(), Some("7"));
    }
}

//! `/v1/shape` query parameters, parsed and validated as Electric does (params.ex, serve plug):
//! unknown parameters are ignored, `params[n]` uses bracket syntax, `live` is true unless it is
//! literally `false`, identifiers follow Postgres' quoting rules.

use std::collections::BTreeMap;

use folio_bus::StreamSeq;

use super::{
    error::{Result, ShapeError},
    subset::SubsetParams,
};

/// A relation as the request names it, after identifier rules (unquoted → lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", quote(&self.schema), quote(&self.name))
    }
}

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replica {
    Default,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    Full,
    ChangesOnly,
}

/// Where a request starts reading. Log positions are JetStream stream sequences: `<seq>_<op>`
/// means "after everything at `seq`" (a sequence's ops are never split across responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOffset {
    /// `-1`: from the start (first snapshot chunk).
    BeforeAll,
    /// `now`: the current end, no snapshot rows.
    Now,
    /// `0_k`: after snapshot chunk k.
    SnapshotChunk(u64),
    /// `0_inf`: after the whole snapshot.
    SnapshotEnd,
    /// `<seq>_<op>` with seq > 0.
    After(StreamSeq),
}

impl RequestOffset {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "-1" | "-1_0" => return Some(RequestOffset::BeforeAll),
            "now" => return Some(RequestOffset::Now),
            _ => {}
        }
        let (tx, op) = s.split_once('_')?;
        if tx.is_empty() || !tx.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let tx: u64 = tx.parse().ok()?;
        let op: Option<u64> = match op {
            "inf" => None,
            o if !o.is_empty() && o.bytes().all(|b| b.is_ascii_digit()) => Some(o.parse().ok()?),
            _ => return None,
        };
        Some(match (tx, op) {
            (0, Some(k)) => RequestOffset::SnapshotChunk(k),
            (0, None) => RequestOffset::SnapshotEnd,
            (seq, _) => RequestOffset::After(StreamSeq::new(seq)),
        })
    }
}

/// The response offset for "after log position `seq`". `0_inf` stands for the end of the
/// snapshot when the stream has no sequence yet, so it never reads as a snapshot chunk.
pub fn log_offset(seq: StreamSeq) -> String {
    if seq == StreamSeq::ZERO { "0_inf".to_owned() } else { format!("{seq}_0") }
}

#[derive(Debug, Clone)]
pub struct ShapeRequest {
    pub table: QualifiedName,
    pub where_clause: Option<String>,
    pub params: Vec<String>,
    /// Requested columns, sorted and deduplicated; None = every column.
    pub columns: Option<Vec<String>>,
    pub replica: Replica,
    pub log: LogMode,
    pub offset: RequestOffset,
    pub offset_text: String,
    pub handle: Option<String>,
    pub live: bool,
    pub sse: bool,
    pub cursor: Option<String>,
    /// A subset snapshot of the shape instead of its log (`subset__*`, or a POST body).
    pub subset: Option<SubsetParams>,
}

impl ShapeRequest {
    pub fn from_query(query: &str) -> Result<Self> {
        let mut single: BTreeMap<String, String> = BTreeMap::new();
        let mut params: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if let Some(n) = k.strip_prefix("params[").and_then(|r| r.strip_suffix(']')) {
                params.insert(n.to_owned(), v.into_owned());
            } else {
                single.insert(k.into_owned(), v.into_owned());
            }
        }
        let subset = SubsetParams::from_query(&single)?;
        let get = |k: &str| single.get(k).map(String::as_str);
        let table = match get("table") {
            None | Some("") => return Err(ShapeError::invalid("table", "can't be blank")),
            Some(t) => parse_relation(t).map_err(|m| ShapeError::invalid("table", m))?,
        };
        let offset_text = match get("offset") {
            None | Some("") => return Err(ShapeError::invalid("offset", "can't be blank")),
            Some(o) => o.to_owned(),
        };
        let offset =
            RequestOffset::parse(&offset_text).ok_or_else(|| ShapeError::invalid("offset", "has invalid format"))?;
        let truthy = |k: &str| get(k).is_some_and(|v| v != "false");
        let live = truthy("live");
        let sse = if single.contains_key("live_sse") { truthy("live_sse") } else { truthy("experimental_live_sse") };
        let handle = match offset {
            // Electric drops the handle here: a client restarting after a 409 sends the new one.
            RequestOffset::BeforeAll | RequestOffset::Now => None,
            _ => match get("handle") {
                None | Some("") => return Err(ShapeError::invalid("handle", "can't be blank when offset != -1")),
                Some(h) => Some(h.to_owned()),
            },
        };
        if live && offset == RequestOffset::BeforeAll {
            return Err(ShapeError::invalid("live", "can't be true when offset == -1"));
        }
        if live && offset == RequestOffset::Now {
            return Err(ShapeError::invalid("live", "can't be true when offset is 'now'"));
        }
        if sse && !live {
            return Err(ShapeError::invalid("live_sse", "can't be true unless live is also true"));
        }
        let replica = match get("replica") {
            None | Some("default") => Replica::Default,
            Some("full") => Replica::Full,
            Some(_) => return Err(ShapeError::invalid("replica", "is invalid")),
        };
        let log = match get("log") {
            None | Some("full") => LogMode::Full,
            Some("changes_only") => LogMode::ChangesOnly,
            Some(_) => return Err(ShapeError::invalid("log", "is invalid")),
        };
        let columns = match get("columns") {
            None => None,
            Some(c) => Some(parse_columns(c).map_err(|m| ShapeError::invalid("columns", m))?),
        };
        let mut numbered = Vec::with_capacity(params.len());
        for (k, v) in params {
            let n: usize =
                k.parse().map_err(|_| ShapeError::invalid("params", "Parameters can only use numbers as keys"))?;
            numbered.push((n, v));
        }
        numbered.sort_by_key(|(n, _)| *n);
        if numbered.iter().enumerate().any(|(i, (n, _))| *n != i + 1) {
            return Err(ShapeError::invalid("params", "Parameters must be numbered sequentially, starting from 1"));
        }
        Ok(ShapeRequest {
            table,
            where_clause: get("where").filter(|w| !w.trim().is_empty()).map(str::to_owned),
            params: numbered.into_iter().map(|(_, v)| v).collect(),
            columns,
            replica,
            log,
            offset,
            offset_text,
            handle,
            live,
            sse,
            cursor: get("cursor").map(str::to_owned),
            subset,
        })
    }
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// One identifier: `"Quoted"` keeps its case (`""` is a quote), unquoted must look like an
/// identifier and is lower-cased, as Postgres does.
pub fn parse_identifier(s: &str) -> Result<String, String> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or_else(|| format!("Invalid identifier: unterminated quote in {s}"))?;
        if inner.is_empty() {
            return Err("Invalid zero-length delimited identifier".to_owned());
        }
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.next() != Some('"') {
                    return Err(format!("Invalid identifier: stray quote in {s}"));
                }
                out.push('"');
            } else {
                out.push(c);
            }
        }
        if out.len() > 63 {
            return Err(format!("Identifier is longer than 63 bytes: {s}"));
        }
        return Ok(out);
    }
    let mut chars = s.chars();
    let valid = match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$'),
        _ => false,
    };
    if !valid {
        return Err(format!("Invalid unquoted identifier contains special characters: {s}"));
    }
    if s.len() > 63 {
        return Err(format!("Identifier is longer than 63 bytes: {s}"));
    }
    Ok(s.to_ascii_lowercase())
}

pub fn parse_relation(s: &str) -> Result<QualifiedName, String> {
    let parts = split_unquoted(s, '.');
    match parts.as_slice() {
        [name] => Ok(QualifiedName { schema: "public".to_owned(), name: parse_identifier(name)? }),
        [schema, name] => Ok(QualifiedName { schema: parse_identifier(schema)?, name: parse_identifier(name)? }),
        _ => Err(format!("Invalid relation identifier, too many delimiters: {s}")),
    }
}

fn parse_columns(s: &str) -> Result<Vec<String>, String> {
    let mut cols = split_unquoted(s, ',').into_iter().map(parse_identifier).collect::<Result<Vec<_>, _>>()?;
    cols.sort();
    cols.dedup();
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_postgres_quoting() {
        assert_eq!(parse_relation("Items").unwrap(), QualifiedName { schema: "public".into(), name: "items".into() });
        assert_eq!(
            parse_relation(r#""Sales EU"."Odd.Table""#).unwrap(),
            QualifiedName { schema: "Sales EU".into(), name: "Odd.Table".into() }
        );
        assert_eq!(parse_identifier(r#""say ""hi""""#).unwrap(), r#"say "hi""#);
        assert_eq!(parse_relation("a.b.c").unwrap_err(), "Invalid relation identifier, too many delimiters: a.b.c");
        assert_eq!(parse_identifier(r#""""#).unwrap_err(), "Invalid zero-length delimited identifier");
        assert!(parse_identifier("drop table;").is_err());
        assert_eq!(parse_columns(r#""id","has,comma","b""q""#).unwrap(), vec!["b\"q", "has,comma", "id"]);
    }

    #[test]
    fn offsets() {
        assert_eq!(RequestOffset::parse("-1"), Some(RequestOffset::BeforeAll));
        assert_eq!(RequestOffset::parse("now"), Some(RequestOffset::Now));
        assert_eq!(RequestOffset::parse("0_3"), Some(RequestOffset::SnapshotChunk(3)));
        assert_eq!(RequestOffset::parse("0_inf"), Some(RequestOffset::SnapshotEnd));
        assert_eq!(RequestOffset::parse("0042_7"), Some(RequestOffset::After(StreamSeq::new(42))));
        assert_eq!(RequestOffset::parse("42_inf"), Some(RequestOffset::After(StreamSeq::new(42))));
        for bad in ["", "x", "1", "1_", "_1", "-2", "1_-1", "1.5_0"] {
            assert_eq!(RequestOffset::parse(bad), None, "{bad}");
        }
        assert_eq!(log_offset(StreamSeq::new(0)), "0_inf");
        assert_eq!(log_offset(StreamSeq::new(9)), "9_0");
    }

    // Property tests (issue 18): offsets round-trip, and no request line can make the parser
    // panic. `FOLIO_PROPTEST_CASES` sets the cases (2,000 by default).
    fn proptest_config() -> proptest::prelude::ProptestConfig {
        let cases = std::env::var("FOLIO_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
        proptest::prelude::ProptestConfig::with_cases(cases)
    }

    const QUERY_KEYS: &[&str] = &[
        "table",
        "where",
        "params",
        "params[1]",
        "params[2]",
        "columns",
        "replica",
        "log",
        "offset",
        "handle",
        "live",
        "cursor",
        "live_sse",
        "experimental_live_sse",
        "subset__where",
        "subset__params",
        "subset__limit",
        "subset__offset",
        "subset__order_by",
        "subset__where_expr",
    ];

    use proptest::prelude::{Strategy as _, any};

    proptest::proptest! {
        #![proptest_config(proptest_config())]

        #[test]
        fn every_offset_the_edge_sends_parses_back_to_its_position(seq in any::<u64>()) {
            let expected = if seq == 0 { RequestOffset::SnapshotEnd } else { RequestOffset::After(StreamSeq::new(seq)) };
            proptest::prop_assert_eq!(RequestOffset::parse(&log_offset(StreamSeq::new(seq))), Some(expected));
        }

        #[test]
        fn any_offset_text_is_parsed_or_refused_and_what_parses_is_a_position(text in "[-0-9_a-z]{0,24}|.{0,40}") {
            let parsed = RequestOffset::parse(&text);
            proptest::prop_assert_eq!(parsed, RequestOffset::parse(&text));
            if let Some(RequestOffset::After(seq)) = parsed {
                // Leading zeros aside, the position is the text's.
                let position = seq.to_string();
                proptest::prop_assert_eq!(text.split('_').next().map(|t| t.trim_start_matches('0')), Some(position.as_str()));
            }
        }

        #[test]
        fn any_query_string_is_parsed_or_refused_never_a_panic(
            pairs in proptest::collection::vec(
                (proptest::prop_oneof![proptest::sample::select(QUERY_KEYS).prop_map(str::to_owned), ".{0,8}"],
                 "[^&]{0,30}|%[0-9A-Fa-f]{0,2}|-1|now|[0-9]{1,20}_[0-9]{1,20}|true|false|full|changes_only"),
                0..10,
            )
        ) {
            let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let query = query.join("&");
            let first = ShapeRequest::from_query(&query).map(|r| format!("{r:?}")).map_err(|e| e.to_string());
            let again = ShapeRequest::from_query(&query).map(|r| format!("{r:?}")).map_err(|e| e.to_string());
            proptest::prop_assert_eq!(first, again);
        }
    }

    #[test]
    fn query_validation_names_the_parameter() {
        let err = |q: &str| match ShapeRequest::from_query(q) {
            Err(ShapeError::Invalid { field, message, .. }) => (field, message),
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(err("offset=-1").0, "table");
        assert_eq!(err("table=t").0, "offset");
        assert_eq!(err("table=t&offset=5_0"), ("handle", "can't be blank when offset != -1".into()));
        assert_eq!(err("table=t&offset=-1&live=true").0, "live");
        assert_eq!(err("table=t&offset=1_0&handle=h&live_sse=true").0, "live_sse");
        assert_eq!(err("table=t&offset=-1&replica=x").0, "replica");
        assert_eq!(err("table=t&offset=-1&params[1]=a&params[3]=b").0, "params");
        let ok = ShapeRequest::from_query(
            "table=t&offset=7_0&handle=h&live&cursor=&params[2]=b&params[1]=a&cache-buster=x&columns=%22id%22,b",
        )
        .unwrap();
        assert!(ok.live && !ok.sse);
        assert_eq!(ok.params, vec!["a", "b"]);
        assert_eq!(ok.columns.unwrap(), vec!["b", "id"]);
        assert_eq!(ok.offset, RequestOffset::After(StreamSeq::new(7)));
    }
}

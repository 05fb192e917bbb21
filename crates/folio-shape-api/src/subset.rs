//! Subset snapshots (Electric's `subset__*` on `GET /v1/shape`, or the same as a JSON body on
//! `POST /v1/shape`): the rows of one shape that also match the subset's where clause, in its
//! order, within its limit and offset, read from one Postgres snapshot and answered as
//! `{"metadata":{xmin,xmax,xip_list,snapshot_mark,database_lsn},"data":[inserts…]}`. Clients in
//! `log=changes_only` (TanStack DB's on-demand collections) load what a view needs this way and
//! follow the shape's log for changes.
//!
//! # Which changes of the log a subset already contains
//!
//! A client continues the shape's log from the `electric-offset` the subset answered with:
//! the offset it asked from (a real log position), or, for `offset=now`, the shape's head read
//! before the snapshot. The log after that offset can hold changes the snapshot already shows:
//! wal-ingest publishes a transaction after it commits, so a transaction committed before the
//! snapshot began may reach the change stream after any position the edge could name, and
//! Postgres makes transactions visible in an order that is not exactly their commit (WAL)
//! order. No JetStream sequence therefore separates "in the snapshot" from "not in it".
//!
//! The transaction does: every change message carries its transaction's 32-bit xid
//! (`txids`), and the snapshot's `xmin`, `xmax` and `xip_list` (64-bit, from
//! `pg_current_snapshot()`) say exactly which transactions it sees — the rule
//! [`Stitch::saw`](super::messages::Stitch::saw) applies to a shape's initial snapshot, and
//! the one Electric's client applies to subsets: a change to a key the subset returned, from a
//! transaction the snapshot saw, is already in the snapshot and is dropped; every other change
//! is applied. The client widens the xid around `xmax` as `Stitch::saw` does.
//!
//! The client also stops checking a subset once the log passes its `database_lsn` (compared
//! with the `lsn` of changes and the `global_last_seen_lsn` of up-to-date messages, both
//! JetStream sequences here). That is only safe once no change the snapshot saw can follow,
//! which no sequence known when answering guarantees (see above). So `database_lsn` is
//! [`NO_POSITION_BOUND`]: the client keeps checking by xid until the first change of a
//! transaction that began after the snapshot (xid ≥ `xmax`), which it takes as the end — such
//! a transaction commits after every transaction the snapshot saw, so the log holds nothing
//! of theirs after it.
//!
//! The snapshot itself sees every transaction of the log up to the offset handed out: it is
//! taken, like a shape's, only once it shows every transaction the table's feed has applied
//! (otherwise a change the client already holds, or skips, could be missing from it).

use std::collections::BTreeMap;

use bytes::Bytes;
use folio_bus::StreamSeq;
use folio_shapes::{OrderBy, WhereClause};
use sqlx::{PgPool, Row};

use super::{
    error::{Result, ShapeError},
    messages::{Stitch, snapshot_row},
    request::quote,
    shape::{ShapeDef, begin_snapshot, where_error},
};

/// The `database_lsn` of every subset: no log position bounds what the snapshot contains (see
/// the module documentation), so the client retires the subset by xid alone.
pub const NO_POSITION_BOUND: u64 = u64::MAX;

/// Largest POST body read: a where clause, its parameters and the rest are bounded far below.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Largest subset answered: the response is built in memory. A bigger one is refused with a
/// 400 that says to page it with `limit`.
pub const MAX_SUBSET_BYTES: usize = 64 * 1024 * 1024;

/// A subset as the request states it, before it is checked against its shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsetParams {
    pub where_text: Option<String>,
    /// `$1…$n` of the subset's where (its own numbering, apart from the shape's `params`).
    pub params: Vec<String>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub order_by: Option<String>,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ShapeError {
    ShapeError::InvalidSubset { field, message: message.into(), source: None }
}

impl SubsetParams {
    /// The `subset__*` keys of a query (None when it has none: not a subset request).
    /// `subset__params` is one JSON object (`{"1":"a"}`); `subset__params[1]=a` is read too.
    pub fn from_query(single: &BTreeMap<String, String>) -> Result<Option<Self>> {
        if !single.keys().any(|k| k.starts_with("subset__")) {
            return Ok(None);
        }
        let get = |k: &str| single.get(&format!("subset__{k}")).map(String::as_str);
        let mut subset = SubsetParams {
            where_text: get("where").filter(|w| !w.trim().is_empty()).map(str::to_owned),
            limit: get("limit").map(|v| parse_count("limit", v.trim(), 1)).transpose()?,
            offset: get("offset").map(|v| parse_count("offset", v.trim(), 0)).transpose()?,
            order_by: get("order_by").filter(|o| !o.trim().is_empty()).map(str::to_owned),
            params: Vec::new(),
        };
        let bracketed: BTreeMap<String, serde_json::Value> = single
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix("subset__params[")?.strip_suffix(']')?;
                Some((n.to_owned(), serde_json::Value::String(v.clone())))
            })
            .collect();
        if let Some(json) = get("params") {
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|_| invalid("params", "params must be valid JSON"))?;
            subset.params = numbered_params(&value)?;
        } else if !bracketed.is_empty() {
            subset.params = numbered_params(&serde_json::Value::Object(bracketed.into_iter().collect()))?;
        }
        subset.check()?;
        Ok(Some(subset))
    }

    /// A POST body `{where, params, limit, offset, order_by}` (or the same under `"subset"`),
    /// over the query's subset: a key in the body wins. None when neither has a subset.
    /// Only these keys are read from a body: what the shape is (table, where, columns) is the
    /// URL's, which a proxy authorising by URL relies on.
    pub fn from_body(body: &[u8], query: Option<Self>) -> Result<Option<Self>> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(query);
        }
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| invalid("body", format!("Invalid JSON in request body: {e}")))?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(invalid("body", "Request body must be a JSON object"));
        };
        if let Some(serde_json::Value::Object(nested)) = map.remove("subset") {
            map.extend(nested);
        }
        const KEYS: [&str; 7] = ["where", "params", "limit", "offset", "order_by", "where_expr", "order_by_expr"];
        if !map.keys().any(|k| KEYS.contains(&k.as_str())) {
            return Ok(query);
        }
        let mut subset = query.unwrap_or_default();
        let text = |field: &'static str, v: &serde_json::Value| match v {
            serde_json::Value::String(s) if s.trim().is_empty() => Ok(None),
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            serde_json::Value::Null => Ok(None),
            _ => Err(invalid(field, "must be a string")),
        };
        let count = |field: &'static str, v: &serde_json::Value, min: u64| match v {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::Number(n) => match n.as_u64() {
                Some(k) if k >= min => Ok(Some(k)),
                Some(_) | None if n.as_i64().is_some_and(|k| k < min as i64) => Err(invalid(field, too_small(min))),
                _ => Err(invalid(field, "is invalid")),
            },
            serde_json::Value::String(s) => parse_count(field, s.trim(), min).map(Some),
            _ => Err(invalid(field, "is invalid")),
        };
        if let Some(v) = map.get("where") {
            subset.where_text = text("where", v)?;
        }
        if let Some(v) = map.get("order_by") {
            subset.order_by = text("order_by", v)?;
        }
        if let Some(v) = map.get("limit") {
            subset.limit = count("limit", v, 1)?;
        }
        if let Some(v) = map.get("offset") {
            subset.offset = count("offset", v, 0)?;
        }
        match map.get("params") {
            None | Some(serde_json::Value::Null) => {}
            // A JSON-encoded object is accepted too, as Electric does.
            Some(serde_json::Value::String(json)) => {
                let value: serde_json::Value =
                    serde_json::from_str(json).map_err(|_| invalid("params", "params must be valid JSON"))?;
                subset.params = numbered_params(&value)?;
            }
            Some(v) => subset.params = numbered_params(v)?,
        }
        // where_expr / order_by_expr: the client's structured copies of where and order_by,
        // which the text already states; Electric ignores them too.
        subset.check()?;
        Ok(Some(subset))
    }

    fn check(&self) -> Result<()> {
        if (self.limit.is_some() || self.offset.is_some()) && self.order_by.is_none() {
            return Err(invalid("order_by", "order_by is required when limit or offset is present"));
        }
        Ok(())
    }
}

fn too_small(min: u64) -> String {
    if min == 0 { "must be greater than or equal to 0".to_owned() } else { format!("must be greater than {}", min - 1) }
}

fn parse_count(field: &'static str, v: &str, min: u64) -> Result<u64> {
    match v.parse::<i64>() {
        Ok(k) if k >= min as i64 => Ok(k as u64),
        Ok(_) => Err(invalid(field, too_small(min))),
        Err(_) => Err(invalid(field, "is invalid")),
    }
}

/// `{"1": v1, "2": v2, …}` → `[v1, v2, …]`: keys numbered from 1 without gaps, values strings,
/// numbers or booleans (as Postgres text; null as no value is not something a parameter can
/// be compared with, so it is refused).
fn numbered_params(value: &serde_json::Value) -> Result<Vec<String>> {
    let serde_json::Value::Object(map) = value else {
        return Err(invalid("params", "params must be a JSON object"));
    };
    let mut numbered = Vec::with_capacity(map.len());
    for (k, v) in map {
        let n: usize = k.parse().map_err(|_| invalid("params", "Parameters can only use numbers as keys"))?;
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(invalid("params", format!("parameter ${n} must be a string, a number or a boolean"))),
        };
        numbered.push((n, text));
    }
    numbered.sort_by_key(|(n, _)| *n);
    if numbered.iter().enumerate().any(|(i, (n, _))| *n != i + 1) {
        return Err(invalid("params", "Parameters must be numbered sequentially, starting from 1"));
    }
    Ok(numbered.into_iter().map(|(_, v)| v).collect())
}

/// A subset checked against its shape: the shape's clause (tenant pin included) AND the
/// subset's, an order over the shape's columns, a limit and an offset.
pub struct Subset {
    clause: WhereClause,
    order: Option<OrderBy>,
    limit: Option<u64>,
    offset: Option<u64>,
}

impl Subset {
    /// Parses the subset's where with the same parser and type checker as shapes' (its columns
    /// are the table's, as in the shape's where), and its order over the columns the shape
    /// selects (a client orders by what it holds).
    pub fn resolve(params: &SubsetParams, def: &ShapeDef, limits: &folio_shapes::Limits) -> Result<Self> {
        let schema = &def.table.where_schema;
        let clause = match &params.where_text {
            None => def.clause.clone(),
            Some(text) => {
                let own = WhereClause::parse_within(text, schema, &params.params, limits).map_err(|e| {
                    ShapeError::InvalidSubset { field: "where", message: e.to_string(), source: Some(e.into()) }
                })?;
                def.clause.clone().and_also(&own).map_err(|e| ShapeError::internal("combine the subset's clause", e))?
            }
        };
        let order = match &params.order_by {
            None => None,
            Some(text) => Some(
                OrderBy::parse(text, schema, |i| def.selected.contains(&i))
                    .map_err(|e| ShapeError::InvalidSubset {
                        field: "order_by",
                        message: e.to_string(),
                        source: Some(e.into()),
                    })?
                    .then_by(schema, &def.table.key),
            ),
        };
        Ok(Subset { clause, order, limit: params.limit, offset: params.offset })
    }

    /// The query: quoted catalog names, keywords, and `$n` placeholders for every value.
    fn sql(&self, def: &ShapeDef, needed: &[usize]) -> (String, Vec<Option<String>>) {
        let table = &def.table;
        let list: Vec<String> = needed
            .iter()
            .map(|&i| format!("{}({})::text", table.columns[i].output_fn, quote(&table.columns[i].name)))
            .collect();
        let mut sink = folio_shapes::ParamSink::new();
        let cond = self.clause.to_sql(&mut sink);
        let mut values = sink.into_values();
        let relation = table.name.to_string();
        let mut sql = format!("SELECT {} FROM {relation} WHERE {cond}", list.join(", "));
        if let Some(order) = &self.order {
            sql.push_str(&format!(" ORDER BY {}", order.to_sql(Some(&relation))));
        }
        for (keyword, n) in [("LIMIT", self.limit), ("OFFSET", self.offset)] {
            if let Some(n) = n {
                values.push(Some(n.to_string()));
                sql.push_str(&format!(" {keyword} ${}::int8", values.len()));
            }
        }
        (sql, values)
    }
}

/// Runs `subset` of `def` in a snapshot that sees every transaction of the change stream up to
/// `seq0` (see [`begin_snapshot`]) and renders the response body. `snapshot_mark` tags the
/// rows, as the client matches them to the metadata by it.
pub async fn query(
    pool: &PgPool,
    def: &ShapeDef,
    subset: &Subset,
    seq0: StreamSeq,
    snapshot_mark: u32,
    sees_committed: impl Fn(&Stitch) -> bool,
) -> Result<(Stitch, usize, Bytes)> {
    use futures::TryStreamExt;
    let (mut tx, stitch) = begin_snapshot(pool, seq0, sees_committed).await?;
    let table = &def.table;
    let mut needed: Vec<usize> = def.selected.iter().chain(&table.key).copied().collect();
    needed.sort_unstable();
    needed.dedup();
    let (sql, values) = subset.sql(def, &needed);
    // Identifiers are quoted catalog names and every value is a bind parameter.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for v in values {
        query = query.bind(v);
    }
    let mut body = String::with_capacity(4096);
    body.push_str("{\"metadata\":");
    body.push_str(&metadata_json(&stitch, snapshot_mark));
    body.push_str(",\"data\":[");
    let mut count = 0;
    {
        let mut rows = query.fetch(&mut *tx);
        while let Some(row) = rows.try_next().await.map_err(|e| subset_where_error(e, table))? {
            let mut refs: Vec<Option<&str>> = vec![None; table.columns.len()];
            for (k, &i) in needed.iter().enumerate() {
                refs[i] = row.try_get::<Option<&str>, _>(k)?;
            }
            if count > 0 {
                body.push(',');
            }
            snapshot_row(&mut body, table, &def.selected, &refs, Some(snapshot_mark));
            count += 1;
            if body.len() > MAX_SUBSET_BYTES {
                return Err(invalid(
                    "limit",
                    format!("the subset is larger than {MAX_SUBSET_BYTES} bytes: page it with limit and order_by"),
                ));
            }
        }
    }
    tx.commit().await?;
    body.push_str("]}");
    Ok((stitch, count, Bytes::from(body)))
}

/// A refusal of the subset's clause by the database (a cast of a stored value) is the
/// subset's where's, not the shape's.
fn subset_where_error(e: sqlx::Error, table: &super::catalog::TableInfo) -> ShapeError {
    match where_error(e, &table.name) {
        ShapeError::Invalid { field: "where", message, source } => {
            ShapeError::InvalidSubset { field: "where", message, source }
        }
        other => other,
    }
}

/// `{"xmin":"…","xmax":"…","xip_list":[…],"snapshot_mark":N,"database_lsn":"…"}`: the xids as
/// Postgres reports them (64-bit, decimal strings), as Electric sends them.
fn metadata_json(stitch: &Stitch, snapshot_mark: u32) -> String {
    let mut xip: Vec<u64> = stitch.xip.iter().copied().collect();
    xip.sort_unstable();
    serde_json::json!({
        "xmin": stitch.xmin.to_string(),
        "xmax": stitch.xmax.to_string(),
        "xip_list": xip.iter().map(u64::to_string).collect::<Vec<_>>(),
        "snapshot_mark": snapshot_mark,
        "database_lsn": NO_POSITION_BOUND.to_string(),
    })
    .to_string()
}

/// A mark for one subset response: random enough that two subsets of one client differ.
pub fn new_snapshot_mark() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    (h.finish() as u32) & 0x7fff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<Option<SubsetParams>> {
        SubsetParams::from_query(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn refusal(r: Result<Option<SubsetParams>>) -> (&'static str, String) {
        match r {
            Err(ShapeError::InvalidSubset { field, message, .. }) => (field, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn query_keys_make_a_subset_and_params_are_one_json_object() {
        assert_eq!(query(&[("table", "t")]).unwrap(), None);
        let s = query(&[
            ("subset__where", "\"active\" = $1 AND n > $2"),
            ("subset__params", r#"{"2":5,"1":"true"}"#),
            ("subset__limit", "5"),
            ("subset__order_by", "\"age\" NULLS FIRST"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.params, vec!["true", "5"]);
        assert_eq!((s.limit, s.offset), (Some(5), None));
        let bracketed = query(&[("subset__where", "a = $1"), ("subset__params[1]", "x")]).unwrap().unwrap();
        assert_eq!(bracketed.params, vec!["x"]);
        // Any subset__ key makes it a subset, even an empty where.
        assert_eq!(query(&[("subset__where", "")]).unwrap(), Some(SubsetParams::default()));
    }

    #[test]
    fn bad_subset_parameters_are_named() {
        assert_eq!(refusal(query(&[("subset__limit", "0"), ("subset__order_by", "id")])).1, "must be greater than 0");
        assert_eq!(refusal(query(&[("subset__limit", "x"), ("subset__order_by", "id")])).1, "is invalid");
        assert_eq!(
            refusal(query(&[("subset__offset", "-1"), ("subset__order_by", "id")])).1,
            "must be greater than or equal to 0"
        );
        assert_eq!(refusal(query(&[("subset__limit", "3")])).0, "order_by");
        assert_eq!(refusal(query(&[("subset__params", "{")])).1, "params must be valid JSON");
        assert_eq!(refusal(query(&[("subset__params", "[1]")])).1, "params must be a JSON object");
        assert_eq!(
            refusal(query(&[("subset__params", r#"{"1":"a","3":"b"}"#)])).1,
            "Parameters must be numbered sequentially, starting from 1"
        );
        assert_eq!(refusal(query(&[("subset__params", r#"{"x":"a"}"#)])).1, "Parameters can only use numbers as keys");
        assert!(refusal(query(&[("subset__params", r#"{"1":null}"#)])).1.contains("$1"));
    }

    #[test]
    fn a_body_overrides_the_query_and_only_its_subset_keys_are_read() {
        let from_query =
            query(&[("subset__where", "a = 1"), ("subset__limit", "2"), ("subset__order_by", "a")]).unwrap();
        let s = SubsetParams::from_body(br#"{"where":"b = $1","params":{"1":"x"},"table":"other"}"#, from_query)
            .unwrap()
            .unwrap();
        assert_eq!(s.where_text.as_deref(), Some("b = $1"));
        assert_eq!((s.limit, s.order_by.as_deref()), (Some(2), Some("a")));
        let nested = SubsetParams::from_body(br#"{"subset":{"where":"TRUE","limit":3,"order_by":"id"}}"#, None)
            .unwrap()
            .unwrap();
        assert_eq!((nested.where_text.as_deref(), nested.limit), (Some("TRUE"), Some(3)));
        assert_eq!(SubsetParams::from_body(b"{}", None).unwrap(), None, "no subset key: not a subset");
        assert_eq!(SubsetParams::from_body(b"  ", None).unwrap(), None);
        let bad = |b: &[u8]| match SubsetParams::from_body(b, None) {
            Err(ShapeError::InvalidSubset { field, message, .. }) => format!("{field}: {message}"),
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(b"[1]"), "body: Request body must be a JSON object");
        assert!(bad(b"{").starts_with("body: Invalid JSON"));
        assert_eq!(bad(br#"{"where":"x","limit":0,"order_by":"x"}"#), "limit: must be greater than 0");
        assert_eq!(bad(br#"{"where":"x","offset":-2,"order_by":"x"}"#), "offset: must be greater than or equal to 0");
        assert_eq!(bad(br#"{"where":"x","limit":1.5,"order_by":"x"}"#), "limit: is invalid");
        assert_eq!(bad(br#"{"where":5}"#), "where: must be a string");
        assert_eq!(
            bad(br#"{"params":"{\"1\":\"a\"}","limit":1}"#),
            "order_by: order_by is required when limit or offset is present"
        );
    }

    #[test]
    fn metadata_carries_the_snapshot_and_no_position_bound() {
        let stitch = Stitch::from_snapshot_text(StreamSeq::new(7), "4294967396:4294967400:4294967397").unwrap();
        let m: serde_json::Value = serde_json::from_str(&metadata_json(&stitch, 42)).unwrap();
        assert_eq!(
            m,
            serde_json::json!({"xmin":"4294967396","xmax":"4294967400","xip_list":["4294967397"],
                "snapshot_mark":42,"database_lsn":"18446744073709551615"})
        );
        assert!(new_snapshot_mark() <= i32::MAX as u32);
    }
}

//! Change messages as Electric writes them: `{"key":…,"value":{…},"headers":{…}}` with every
//! value in Postgres text format. Snapshot rows and replicated changes are written by the same
//! functions, so a row's key is identical on both paths.

use std::{collections::HashSet, fmt::Write};

use folio_bus::StreamSeq;
use folio_proto::events::v1::{ChangeEvent, ColumnValue, Operation, column_value};

use super::{catalog::TableInfo, request::Replica};

pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    // Most values need no escape: one pass the compiler vectorises (no early exit) tells.
    let plain = s.bytes().fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.push_str(s);
        out.push('"');
        return;
    }
    // Runs of bytes that need no escape are copied whole (every escaped byte is ASCII, so each
    // cut is at a character boundary): the initial sync writes every value through here.
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escaped);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// `"schema"."table"/"v1"/"v2"`: `/` inside a value is doubled, a NULL part is `_`.
pub fn row_key(out: &mut String, table: &TableInfo, row: &[Option<&str>]) {
    let mut key = String::with_capacity(table.key_prefix.len() + 40);
    key.push_str(&table.key_prefix);
    for &i in &table.key {
        match row[i] {
            Some(v) => {
                key.push_str("/\"");
                key.push_str(&v.replace('/', "//"));
                key.push('"');
            }
            None => key.push_str("/_"),
        }
    }
    push_json_str(out, &key);
}

/// `{"col":"text",…}` over the selected columns for which `include` holds.
fn push_values(
    out: &mut String,
    table: &TableInfo,
    selected: &[usize],
    row: &[Option<&str>],
    include: impl Fn(usize) -> bool,
) {
    out.push('{');
    let mut first = true;
    for &i in selected {
        if !include(i) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(out, &table.columns[i].name);
        out.push(':');
        match row[i] {
            Some(v) => push_json_str(out, v),
            None => out.push_str("null"),
        }
    }
    out.push('}');
}

/// One snapshot row: an insert without replication headers. A subset snapshot's rows carry
/// its `snapshot_mark`.
pub fn snapshot_row(
    out: &mut String,
    table: &TableInfo,
    selected: &[usize],
    row: &[Option<&str>],
    snapshot_mark: Option<u32>,
) {
    out.push_str("{\"key\":");
    row_key(out, table, row);
    out.push_str(",\"value\":");
    push_values(out, table, selected, row, |_| true);
    out.push_str(",\"headers\":{\"operation\":\"insert\",\"relation\":");
    out.push_str(&table.relation_json);
    if let Some(mark) = snapshot_mark {
        let _ = write!(out, ",\"snapshot_mark\":{mark}");
    }
    out.push_str("}}");
}

/// What a shape needs to turn change events into messages.
pub struct ShapeView<'a> {
    pub table: &'a TableInfo,
    pub selected: &'a [usize],
    pub replica: Replica,
    pub clause: &'a folio_shapes::WhereClause,
    /// Set when the clause exceeds its evaluation budget.
    pub over_budget: &'a std::sync::atomic::AtomicBool,
    /// The table each subquery of the clause reads (`deps[k]` for subquery `k`).
    pub deps: &'a [std::sync::Arc<TableInfo>],
    /// What each subquery yields at the point of the change being decided (a change that
    /// alters it moves rows: the shape re-reads them, see `shape::Moves`).
    pub sets: &'a [folio_shapes::ValueSet],
}

/// The snapshot a shape's log is stitched to: change events at or before `seq0` are in the
/// snapshot, and so is any later event whose transaction the snapshot already saw.
#[derive(Debug, Clone)]
pub struct Stitch {
    pub seq0: StreamSeq,
    pub xmin: u64,
    pub xmax: u64,
    pub xip: HashSet<u64>,
}

impl Stitch {
    /// Parses `pg_current_snapshot()`'s text form, `xmin:xmax:xip1,xip2`.
    pub fn from_snapshot_text(seq0: StreamSeq, s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => HashSet::new(),
            list => list.split(',').map(str::parse).collect::<Result<_, _>>().ok()?,
        };
        Some(Stitch { seq0, xmin, xmax, xip })
    }

    /// Whether the snapshot already contains the effects of the transaction with this 32-bit
    /// xid. The xid is widened to 64 bits as the one nearest `xmax` (xids in flight are never
    /// 2^31 apart), so a transaction newer than the snapshot stays above `xmax` in any epoch.
    pub fn saw(&self, xid: u32) -> bool {
        let distance = i64::from(xid.wrapping_sub(self.xmax as u32) as i32);
        let Some(full) = self.xmax.checked_add_signed(distance) else { return true };
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }

    pub fn snapshot_end_json(&self) -> String {
        let mut xip: Vec<u64> = self.xip.iter().copied().collect();
        xip.sort_unstable();
        let xip: Vec<String> = xip.iter().map(u64::to_string).collect();
        serde_json::json!({"headers": {"control": "snapshot-end", "xmin": self.xmin.to_string(),
            "xmax": self.xmax.to_string(), "xip_list": xip}})
        .to_string()
    }
}

/// What one change event means for one shape.
pub enum Effect {
    /// Messages for the shape, each without its final `,"last":…}}`; possibly none.
    Ops(Vec<String>),
    /// The shape's log cannot continue (truncate, schema change, re-snapshot): 409 for followers.
    Invalidate(&'static str),
}

/// What a change does to what a shape's subqueries yield.
pub enum DependencyChange {
    Nothing,
    /// Per subquery `k` whose yield the change altered: the tuple the row yielded before and
    /// the one it yields now.
    Yields(Vec<(usize, Option<folio_shapes::Tuple>, Option<folio_shapes::Tuple>)>),
    Invalidate(&'static str),
}

/// A change event's rows read against one table description, once for every shape of it.
pub struct Prepared<'a> {
    /// Address of the table description it was read against (identity only).
    pub table: usize,
    op: Operation,
    event: &'a ChangeEvent,
    new: Option<Vec<Option<&'a str>>>,
    old: Option<Vec<Option<&'a str>>>,
    tenant_moved: bool,
    /// Why the event cannot be applied to a shape of this table, if it cannot.
    unusable: Option<&'static str>,
}

impl<'a> Prepared<'a> {
    /// Identifies the event's transaction.
    pub fn commit_lsn(&self) -> u64 {
        self.event.commit_lsn
    }

    /// The values of column `col` in the old and new row (None where there is no such row).
    /// None when the event cannot be applied as rows (every shape must see it then).
    pub fn column(&self, col: usize) -> Option<(Option<&'a str>, Option<&'a str>)> {
        if self.unusable.is_some() || !matches!(self.op, Operation::Insert | Operation::Update | Operation::Delete) {
            return None;
        }
        let at = |r: &Option<Vec<Option<&'a str>>>| r.as_ref().and_then(|r| r.get(col).copied().flatten());
        Some((at(&self.old), at(&self.new)))
    }

    pub fn new(table: &TableInfo, ev: &'a ChangeEvent) -> Self {
        let op = Operation::try_from(ev.operation).unwrap_or(Operation::Unspecified);
        let mut p = Prepared {
            table: table as *const TableInfo as usize,
            op,
            event: ev,
            new: None,
            old: None,
            tenant_moved: false,
            unusable: None,
        };
        if matches!(op, Operation::Insert | Operation::Update) {
            p.new = row_values(table, &ev.new_row, &ev.old_row);
            if p.new.is_none() {
                p.unusable = Some("change event does not match the table's columns");
            }
        }
        if matches!(op, Operation::Update | Operation::Delete) {
            let fill: &[ColumnValue] = if op == Operation::Update { &ev.new_row } else { &[] };
            p.old = row_values(table, &ev.old_row, fill);
            if p.old.is_none() {
                // REPLICA IDENTITY was not FULL when this was written: without the old row a
                // shape cannot know what left it.
                p.unusable = Some("change event without the complete old row");
            }
        }
        if let (Some(t), Some(o), Some(n)) = (table.tenant, &p.old, &p.new) {
            p.tenant_moved = o[t] != n[t];
        }
        p
    }
}

/// Values of `cols` in table order, or None if the event's columns are not the table's as the
/// edge knows it (a schema change the edge has not seen yet).
fn row_values<'a>(table: &TableInfo, cols: &'a [ColumnValue], fill: &'a [ColumnValue]) -> Option<Vec<Option<&'a str>>> {
    if cols.len() != table.columns.len() {
        return None;
    }
    let mut out = Vec::with_capacity(cols.len());
    for (i, c) in cols.iter().enumerate() {
        if c.name != table.columns[i].name {
            return None;
        }
        out.push(match &c.value {
            Some(column_value::Value::Text(t)) => Some(t.as_str()),
            Some(column_value::Value::UnchangedToast(_)) => match fill.get(i).and_then(|f| f.value.as_ref()) {
                Some(column_value::Value::Text(t)) => Some(t.as_str()),
                _ => return None,
            },
            _ => None,
        });
    }
    Some(out)
}

impl ShapeView<'_> {
    /// Whether the row is in the shape; Err when the clause is over its evaluation budget (its
    /// answer is unknown, so the shape cannot continue).
    fn matches(&self, row: &[Option<&str>]) -> Result<bool, &'static str> {
        match self.clause.matches_with(row, self.sets) {
            Ok(m) => Ok(m),
            Err(e @ folio_shapes::EvalError::BudgetExceeded { .. }) => {
                tracing::warn!(table = %self.table.name, "shape invalidated: {e}");
                self.over_budget.store(true, std::sync::atomic::Ordering::Relaxed);
                Err("where clause exceeded its evaluation budget")
            }
            Err(e) => {
                // Postgres would have failed the snapshot query on such a row too.
                tracing::warn!(table = %self.table.name, "row not evaluable by the shape's where clause: {e}");
                Ok(false)
            }
        }
    }

    /// What an event read back from the change stream means for the shape (events of other
    /// tables, which only the whole-stream feed of subquery shapes carries: nothing).
    pub fn effect(&self, stitch: &Stitch, seq: StreamSeq, ev: &ChangeEvent) -> Effect {
        if !self.deps.is_empty() && !self.is_of(self.table, ev) {
            return Effect::Ops(Vec::new());
        }
        self.effect_of(stitch, seq, &Prepared::new(self.table, ev))
    }

    pub fn is_of(&self, table: &TableInfo, ev: &ChangeEvent) -> bool {
        ev.schema == table.name.schema && ev.table == table.name.name
    }

    /// What a change of a table the shape's subqueries read does to what they yield (events
    /// of other tables, which the whole-stream feed of subquery shapes also carries: nothing).
    ///
    /// Where we refuse to guess: a truncate or schema change of such a table (Electric 1535,
    /// 4328), a change without its complete rows, or a subquery clause that cannot be evaluated
    /// on it invalidates the shape (409 must-refetch). Otherwise the caller gets, per subquery,
    /// the tuple the row yielded before and yields now, when they differ; changes yielding the
    /// same tuple before and after (another column, another tenant's row, a row outside the
    /// subquery both times) are nothing.
    pub fn dependency_change(&self, stitch: &Stitch, seq: StreamSeq, ev: &ChangeEvent) -> DependencyChange {
        let op = Operation::try_from(ev.operation).unwrap_or(Operation::Unspecified);
        let mut moved = Vec::new();
        for (k, dep) in self.deps.iter().enumerate() {
            if !self.is_of(dep, ev) {
                continue;
            }
            match op {
                Operation::Truncate => {
                    return DependencyChange::Invalidate("a table the shape's subquery reads was truncated");
                }
                Operation::SchemaChange => {
                    return DependencyChange::Invalidate("the schema of a table the shape's subquery reads changed");
                }
                Operation::ResnapshotRequired => {
                    return DependencyChange::Invalidate("change stream asked for a re-snapshot");
                }
                Operation::Insert | Operation::Update | Operation::Delete => {}
                _ => return DependencyChange::Nothing,
            }
            if seq <= stitch.seq0 || stitch.saw(ev.xid) {
                return DependencyChange::Nothing;
            }
            let p = Prepared::new(dep, ev);
            if let Some(reason) = p.unusable {
                return DependencyChange::Invalidate(reason);
            }
            let sub = &self.clause.subqueries()[k];
            let yields = |row: &Option<Vec<Option<&str>>>| match row {
                None => Ok(None),
                Some(r) => sub.yields(r),
            };
            match (yields(&p.old), yields(&p.new)) {
                (Ok(before), Ok(after)) if before == after => {}
                (Ok(before), Ok(after)) => moved.push((k, before, after)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(table = %dep.name, "subquery row not evaluable: {e}");
                    return DependencyChange::Invalidate("a subquery's clause could not be evaluated on a change");
                }
            }
        }
        if moved.is_empty() { DependencyChange::Nothing } else { DependencyChange::Yields(moved) }
    }

    /// Messages for one change event at stream sequence `seq`.
    pub fn effect_of(&self, stitch: &Stitch, seq: StreamSeq, p: &Prepared<'_>) -> Effect {
        self.effect_tracked(stitch, seq, p, None)
    }

    /// [`effect_of`](Self::effect_of), also saying in `rows`, when given, what it does to the
    /// shape's rows (what a subquery shape keeps to compute its moves; other shapes pass None and
    /// build no row keys on the feed's path).
    pub fn effect_tracked(
        &self,
        stitch: &Stitch,
        seq: StreamSeq,
        p: &Prepared<'_>,
        mut rows: Option<&mut Vec<RowChange>>,
    ) -> Effect {
        let (op, ev) = (p.op, p.event);
        match op {
            Operation::Truncate => return Effect::Invalidate("table truncated"),
            Operation::SchemaChange => return Effect::Invalidate("table schema changed"),
            Operation::ResnapshotRequired => return Effect::Invalidate("change stream asked for a re-snapshot"),
            Operation::Unspecified | Operation::TransactionEnd => return Effect::Ops(Vec::new()),
            _ => {}
        }
        if seq <= stitch.seq0 || stitch.saw(ev.xid) {
            return Effect::Ops(Vec::new());
        }
        if let Some(reason) = p.unusable {
            return Effect::Invalidate(reason);
        }
        let table = self.table;
        let (old, new) = (&p.old, &p.new);
        let decide = |row: &Option<Vec<Option<&str>>>| row.as_ref().map_or(Ok(false), |r| self.matches(r));
        let new_in = match decide(new) {
            Ok(m) => m,
            Err(reason) => return Effect::Invalidate(reason),
        };
        // A row moving to another agency: wal-ingest publishes a delete on the old agency's
        // subject before this update, and that delete already removed it.
        let old_in = match if p.tenant_moved { Ok(false) } else { decide(old) } {
            Ok(m) => m,
            Err(reason) => return Effect::Invalidate(reason),
        };
        let mut ops = Vec::new();
        let mut track = |change: &dyn Fn() -> RowChange| {
            if let Some(rows) = rows.as_deref_mut() {
                rows.push(change());
            }
        };
        let head = |out: &mut String, operation: &str| {
            out.push_str(",\"headers\":{\"operation\":\"");
            out.push_str(operation);
            out.push_str("\",\"relation\":");
            out.push_str(&table.relation_json);
            let _ = write!(out, ",\"txids\":[{}],\"lsn\":\"{seq}\"", ev.xid);
        };
        match (old_in, new_in) {
            (false, true) => {
                let n = new.as_deref().unwrap_or_default();
                let mut m = String::with_capacity(256);
                m.push_str("{\"key\":");
                row_key(&mut m, table, n);
                m.push_str(",\"value\":");
                push_values(&mut m, table, self.selected, n, |_| true);
                head(&mut m, "insert");
                m.push_str(",\"op_position\":0");
                ops.push(m);
                track(&|| RowChange::upsert(table, self.selected, n));
            }
            (true, false) => {
                let o = old.as_deref().unwrap_or_default();
                ops.push(self.delete(o, &head, 0, None));
                track(&|| RowChange::remove(table, o));
            }
            (true, true) => {
                let (o, n) = (old.as_deref().unwrap_or_default(), new.as_deref().unwrap_or_default());
                let key_changed = table.key.iter().any(|&i| o[i] != n[i]);
                if key_changed {
                    let mut new_key = String::new();
                    row_key(&mut new_key, table, n);
                    let mut old_key = String::new();
                    row_key(&mut old_key, table, o);
                    ops.push(self.delete(o, &head, 0, Some(&new_key)));
                    let mut m = String::with_capacity(256);
                    m.push_str("{\"key\":");
                    m.push_str(&new_key);
                    m.push_str(",\"value\":");
                    push_values(&mut m, table, self.selected, n, |_| true);
                    head(&mut m, "insert");
                    let _ = write!(m, ",\"key_change_from\":{old_key},\"op_position\":1");
                    ops.push(m);
                    track(&|| RowChange::remove(table, o));
                    track(&|| RowChange::upsert(table, self.selected, n));
                } else {
                    let changed = |i: usize| o[i] != n[i];
                    let mut m = String::with_capacity(256);
                    m.push_str("{\"key\":");
                    row_key(&mut m, table, n);
                    m.push_str(",\"value\":");
                    match self.replica {
                        Replica::Full => {
                            push_values(&mut m, table, self.selected, n, |_| true);
                            m.push_str(",\"old_value\":");
                            push_values(&mut m, table, self.selected, o, changed);
                        }
                        Replica::Default => {
                            let key = &table.key;
                            push_values(&mut m, table, self.selected, n, |i| key.contains(&i) || changed(i));
                        }
                    }
                    head(&mut m, "update");
                    m.push_str(",\"op_position\":0");
                    ops.push(m);
                    track(&|| RowChange::upsert(table, self.selected, n));
                }
            }
            (false, false) => {}
        }
        Effect::Ops(ops)
    }

    fn delete(
        &self,
        o: &[Option<&str>],
        head: &dyn Fn(&mut String, &str),
        position: usize,
        key_change_to: Option<&str>,
    ) -> String {
        let table = self.table;
        let mut m = String::with_capacity(128);
        m.push_str("{\"key\":");
        row_key(&mut m, table, o);
        m.push_str(",\"value\":");
        match self.replica {
            Replica::Full => push_values(&mut m, table, self.selected, o, |_| true),
            Replica::Default => {
                let key = &table.key;
                push_values(&mut m, table, self.selected, o, |i| key.contains(&i))
            }
        }
        head(&mut m, "delete");
        if let Some(k) = key_change_to {
            m.push_str(",\"key_change_to\":");
            m.push_str(k);
        }
        let _ = write!(m, ",\"op_position\":{position}");
        m
    }
}

/// What one change did to a shape's rows: `key` and `value` as their messages write them.
pub enum RowChange {
    Upsert(Box<str>, Box<str>),
    Remove(Box<str>),
}

impl RowChange {
    fn upsert(table: &TableInfo, selected: &[usize], row: &[Option<&str>]) -> Self {
        let (key, value) = key_and_value(table, selected, row);
        RowChange::Upsert(key.into(), value.into())
    }

    fn remove(table: &TableInfo, row: &[Option<&str>]) -> Self {
        let mut key = String::new();
        row_key(&mut key, table, row);
        RowChange::Remove(key.into())
    }
}

/// A row's key (a JSON string) and its selected values (a JSON object).
pub fn key_and_value(table: &TableInfo, selected: &[usize], row: &[Option<&str>]) -> (String, String) {
    let mut key = String::with_capacity(48);
    row_key(&mut key, table, row);
    let mut value = String::with_capacity(128);
    push_values(&mut value, table, selected, row, |_| true);
    (key, value)
}

/// The rows a subquery shape holds: key → values, both as JSON.
pub type RowMap = std::collections::HashMap<Box<str>, Box<str>>;

/// The messages that take a client holding `before` to `after`, the shape's rows at the
/// snapshot `stitch` taken after what its subqueries yield changed (in transactions `txids`):
/// Electric's `move-out` event and a delete for each row that left, its `move-in` event and an
/// insert (`is_move_in`) for each row that entered, an update (all values) for each row that a
/// change the snapshot covered altered, then the snapshot's `snapshot-end`, so a client
/// awaiting any of those transactions sees it (Electric sends it after move-in rows). Each
/// message lacks its final `,"last":…}}`, as [`close_op`] expects.
pub fn move_ops(relation_json: &str, before: &RowMap, after: &RowMap, txids: &[u32], stitch: &Stitch) -> Vec<String> {
    let txids: Vec<String> = txids.iter().map(u32::to_string).collect();
    let event =
        |kind: &str| format!("{{\"headers\":{{\"event\":\"{kind}\",\"patterns\":[],\"txids\":[{}]", txids.join(","));
    let row = |key: &str, value: &str, operation: &str, extra: &str| {
        format!(
            "{{\"key\":{key},\"value\":{value},\"headers\":{{\"operation\":\"{operation}\",\"relation\":{relation_json}{extra}"
        )
    };
    let mut gone: Vec<(&Box<str>, &Box<str>)> = before.iter().filter(|(k, _)| !after.contains_key(*k)).collect();
    gone.sort_unstable();
    let mut came: Vec<(&Box<str>, &Box<str>, bool)> = after
        .iter()
        .filter_map(|(k, v)| match before.get(k) {
            None => Some((k, v, true)),
            Some(old) if old != v => Some((k, v, false)),
            Some(_) => None,
        })
        .collect();
    came.sort_unstable();
    let mut ops = Vec::with_capacity(gone.len() + came.len() + 3);
    if !gone.is_empty() {
        ops.push(event("move-out"));
        ops.extend(gone.into_iter().map(|(k, v)| row(k, v, "delete", "")));
    }
    ops.push(event("move-in"));
    if !came.is_empty() {
        for (k, v, new) in came {
            ops.push(if new { row(k, v, "insert", ",\"is_move_in\":true") } else { row(k, v, "update", "") });
        }
        let end = stitch.snapshot_end_json();
        ops.push(end[..end.len() - 2].to_owned());
    }
    ops
}

/// Closes a message written by [`ShapeView::effect`].
pub fn close_op(out: &mut Vec<u8>, op: &str, last: bool) {
    out.extend_from_slice(op.as_bytes());
    out.extend_from_slice(if last { b",\"last\":true}}" } else { b",\"last\":false}}" });
}

pub fn up_to_date_json(seq: StreamSeq) -> String {
    format!("{{\"headers\":{{\"control\":\"up-to-date\",\"global_last_seen_lsn\":\"{seq}\"}}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_visibility_across_the_xid_epoch() {
        let s = Stitch::from_snapshot_text(StreamSeq::new(10), "100:105:101,103").unwrap();
        assert!(s.saw(99));
        assert!(s.saw(102) && s.saw(104));
        assert!(!s.saw(101) && !s.saw(103) && !s.saw(105) && !s.saw(200));
        // xmax in epoch 1 (2^32 + 104): xid 4294967290 is epoch 0's and long finished; xid 105
        // and later are newer than the snapshot.
        let e = Stitch::from_snapshot_text(StreamSeq::new(10), "4294967396:4294967400:").unwrap();
        assert!(e.saw(4_294_967_290));
        assert!(e.saw(100) && e.saw(103));
        assert!(!e.saw(104) && !e.saw(105) && !e.saw(5_000));
        // Right after the 32-bit counter wrapped: the snapshot's xids are near 2^32, new ones small.
        let w = Stitch::from_snapshot_text(StreamSeq::new(10), "4294967290:4294967294:4294967291").unwrap();
        assert!(w.saw(4_294_967_289) && !w.saw(4_294_967_291) && !w.saw(3) && !w.saw(4_294_967_295));
        assert!(Stitch::from_snapshot_text(StreamSeq::new(0), "1:x:").is_none());
    }

    #[test]
    fn json_strings_escape_control_characters() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(serde_json::from_str::<String>(&s).unwrap(), "a\"b\\c\nd\u{1}é");
    }

    proptest::proptest! {
        #[test]
        fn any_string_survives_json(text in "(?s).{0,64}") {
            let mut s = String::new();
            push_json_str(&mut s, &text);
            proptest::prop_assert_eq!(serde_json::from_str::<String>(&s).unwrap(), text);
        }
    }
}

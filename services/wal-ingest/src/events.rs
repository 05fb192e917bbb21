//! One committed transaction, as pgoutput streams it, turned into the events wal-ingest
//! publishes: `ChangeEvent`s for rows and table-wide happenings, raw payloads for jobs.
//!
//! Nothing here holds a transaction: each change becomes its events as it arrives, so a
//! million-row transaction flows through with bounded memory. The commit LSN is known from
//! Begin, so every event's message id is fixed before the Commit arrives.

use std::collections::HashMap;

use bytes::Bytes;
use folio_domain::Lsn;
use folio_proto::events::v1::{ChangeEvent, ColumnType, ColumnValue, Operation, column_value};

use crate::{
    decode::{Cell, PgOutput, Tuple},
    schema::Table,
};
use folio_bus::{MsgKey, Part, Subjects};

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Changes,
    Jobs,
}

#[derive(Debug, Clone)]
pub enum Body {
    Change(Box<ChangeEvent>),
    /// A job's payload, published as emitted.
    Job(Bytes),
}

/// One message on its way to JetStream.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub key: MsgKey,
    pub target: Target,
    pub subject: String,
    pub body: Body,
    pub xid: u32,
    pub last_in_transaction: bool,
    /// Set on the transaction's last event only: earlier events are published before the
    /// Commit (and its end LSN) arrives.
    pub commit_end_lsn: Option<Lsn>,
    /// Pre-encoded fields appended to the encoded `ChangeEvent` (the table's column types).
    pub encoded_suffix: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("a change arrived for relation {0}, which no Relation message described")]
    UnknownRelation(u32),
    #[error("a change arrived outside a transaction")]
    NoTransaction,
    #[error("a tuple of {table} has {got} columns, its Relation message {want}")]
    ColumnCount { table: String, got: usize, want: usize },
}

#[derive(Debug)]
struct Transaction {
    commit_lsn: Lsn,
    xid: u32,
    commit_time: prost_types::Timestamp,
    next_position: u32,
    /// Schema changes announced since the last change, published just before it.
    pending_schema: Vec<ChangeEvent>,
    /// The tables this transaction wrote on the changes stream, in first-write order: who gets
    /// a transaction-end marker. A handful of names, however many rows.
    touched: Vec<Touched>,
}

#[derive(Debug)]
struct Touched {
    schema: String,
    name: String,
    /// The relation last written under this name, whose column types the marker carries.
    oid: u32,
}

impl Transaction {
    /// By name, not OID: the name is the subject, and the marker must go where the events went.
    fn touch(&mut self, table: &Table) {
        let oid = table.relation.oid;
        match self.touched.iter_mut().find(|t| t.name == table.name() && t.schema == table.schema()) {
            Some(t) => t.oid = oid,
            None => {
                self.touched.push(Touched { schema: table.schema().to_owned(), name: table.name().to_owned(), oid })
            }
        }
    }
}

#[derive(Debug)]
pub struct Assembler {
    subjects: Subjects,
    tables: HashMap<u32, Table>,
    /// `<root>.changes.<table>.` per relation, so the table token is encoded once.
    row_prefixes: HashMap<u32, String>,
    txn: Option<Transaction>,
}

impl Assembler {
    pub fn new(subjects: Subjects) -> Self {
        Self { subjects, tables: HashMap::new(), row_prefixes: HashMap::new(), txn: None }
    }

    /// Whether this session already saw a Relation message for `oid`.
    pub fn knows(&self, oid: u32) -> bool {
        self.tables.contains_key(&oid)
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    pub fn begin(&mut self, final_lsn: Lsn, xid: u32, commit_time_micros: i64) {
        let unix_micros = commit_time_micros + PG_EPOCH_OFFSET_MICROS;
        let commit_time = prost_types::Timestamp {
            seconds: unix_micros.div_euclid(1_000_000),
            nanos: (unix_micros.rem_euclid(1_000_000) * 1000) as i32,
        };
        self.txn = Some(Transaction {
            commit_lsn: final_lsn,
            xid,
            commit_time,
            next_position: 0,
            pending_schema: Vec::new(),
            touched: Vec::new(),
        });
    }

    /// Ends the transaction. One that wrote several tables gets a `TRANSACTION_END` marker per
    /// table on its `_all` subject, after all its changes: a consumer of one table cannot see
    /// the flagged last event when that is on another table. A one-table transaction needs none
    /// (its last event is flagged), which keeps the common case at one message per change.
    pub fn commit(&mut self, out: &mut Vec<Outgoing>) {
        let Some(txn) = self.txn.take() else { return };
        if txn.touched.len() < 2 {
            return;
        }
        for (i, t) in txn.touched.iter().enumerate() {
            let event = ChangeEvent {
                commit_lsn: txn.commit_lsn.0,
                xid: txn.xid,
                commit_time: Some(txn.commit_time),
                schema: t.schema.clone(),
                table: t.name.clone(),
                operation: Operation::TransactionEnd as i32,
                ..Default::default()
            };
            let key = MsgKey::new(txn.commit_lsn, txn.next_position, Part::End(i as u32));
            let mut marker =
                outgoing(key, Target::Changes, self.subjects.transaction_ends(&t.schema, &t.name), event, txn.xid);
            // The table's latest event must tell a restarted ingester the shape consumers saw.
            if let Some(table) = self.tables.get(&t.oid) {
                marker.encoded_suffix = table.column_types_encoded.clone();
            }
            out.push(marker);
        }
    }

    /// Records a table's (new) shape. `previous` is what consumers last saw of it; when the
    /// columns differ, a schema-change event goes out before the table's next change.
    pub fn relation(&mut self, table: Table, previous: Option<&[ColumnType]>) {
        let previous = self.tables.get(&table.relation.oid).map(|t| t.column_types.as_slice()).or(previous);
        let changed = previous.is_some_and(|p| !same_shape(p, &table.column_types));
        if changed && let Some(txn) = &mut self.txn {
            let mut event = table_event(txn, &table, Operation::SchemaChange);
            event.column_types = table.column_types.clone();
            txn.pending_schema.push(event);
            txn.touch(&table);
        }
        self.row_prefixes.insert(table.relation.oid, self.subjects.row_prefix(table.schema(), table.name()));
        self.tables.insert(table.relation.oid, table);
    }

    /// The events of one insert, update, delete or truncate.
    pub fn change(&mut self, msg: PgOutput, out: &mut Vec<Outgoing>) -> Result<(), EventError> {
        if !matches!(
            msg,
            PgOutput::Insert { .. } | PgOutput::Update { .. } | PgOutput::Delete { .. } | PgOutput::Truncate { .. }
        ) {
            return Ok(());
        }
        let txn = self.txn.as_mut().ok_or(EventError::NoTransaction)?;
        let position = txn.next_position;
        txn.next_position += 1;
        let xid = txn.xid;
        let relations = match &msg {
            PgOutput::Insert { relation, .. }
            | PgOutput::Update { relation, .. }
            | PgOutput::Delete { relation, .. } => std::slice::from_ref(relation),
            PgOutput::Truncate { relations, .. } => relations.as_slice(),
            _ => &[],
        };
        for table in relations.iter().filter_map(|oid| self.tables.get(oid)) {
            txn.touch(table);
        }
        for (i, event) in txn.pending_schema.drain(..).enumerate() {
            let subject = self.subjects.table_wide(&event.schema, &event.table);
            out.push(outgoing(
                MsgKey::new(txn.commit_lsn, position, Part::Schema(i as u32)),
                Target::Changes,
                subject,
                event,
                xid,
            ));
        }
        let txn = self.txn.as_ref().ok_or(EventError::NoTransaction)?;
        let key = |j| MsgKey::new(txn.commit_lsn, position, Part::Change(j));
        match msg {
            PgOutput::Insert { relation, new } => {
                let table = self.tables.get(&relation).ok_or(EventError::UnknownRelation(relation))?;
                let new = row(table, new, None)?;
                let mut event = row_event(txn, table, Operation::Insert, &new);
                event.new_row = new;
                out.push(row_outgoing(key(0), self.row_subject(table, &event.tenant), event, xid, table));
            }
            PgOutput::Update { relation, old, old_is_key: _, new } => {
                let table = self.tables.get(&relation).ok_or(EventError::UnknownRelation(relation))?;
                let old = old.map(|o| row(table, o, None)).transpose()?;
                let unchanged: Vec<usize> =
                    new.iter().enumerate().filter(|(_, c)| **c == Cell::UnchangedToast).map(|(i, _)| i).collect();
                let new = row(table, new, old.as_deref())?;
                let mut event = row_event(txn, table, Operation::Update, &new);
                let old_tenant = old.as_deref().and_then(|o| tenant_of(table, o));
                let mut j = 0;
                if let Some(old_tenant) = old_tenant.filter(|t| *t != event.tenant) {
                    // The row moved to another tenant: the old tenant's consumers see it leave.
                    let old_row = old.clone().unwrap_or_default();
                    let mut moved_out = row_event(txn, table, Operation::Delete, &old_row);
                    moved_out.tenant = old_tenant;
                    moved_out.old_row = old_row;
                    out.push(row_outgoing(key(0), self.row_subject(table, &moved_out.tenant), moved_out, xid, table));
                    j = 1;
                }
                // A filled TOAST value is not repeated in old_row: the event would carry the
                // same megabytes twice (and outgrow NATS' max_payload).
                let mut old = old.unwrap_or_default();
                for i in unchanged {
                    if let Some(c) = old.get_mut(i)
                        && matches!(new.get(i).and_then(|n| n.value.as_ref()), Some(column_value::Value::Text(_)))
                    {
                        c.value = Some(column_value::Value::UnchangedToast(true));
                    }
                }
                event.old_row = old;
                event.new_row = new;
                out.push(row_outgoing(key(j), self.row_subject(table, &event.tenant), event, xid, table));
            }
            PgOutput::Delete { relation, old, old_is_key: _ } => {
                let table = self.tables.get(&relation).ok_or(EventError::UnknownRelation(relation))?;
                let old = row(table, old, None)?;
                let mut event = row_event(txn, table, Operation::Delete, &old);
                event.old_row = old;
                out.push(row_outgoing(key(0), self.row_subject(table, &event.tenant), event, xid, table));
            }
            PgOutput::Truncate { relations, .. } => {
                for (j, relation) in relations.into_iter().enumerate() {
                    let table = self.tables.get(&relation).ok_or(EventError::UnknownRelation(relation))?;
                    let event = table_event(txn, table, Operation::Truncate);
                    let subject = self.subjects.table_wide(table.schema(), table.name());
                    // With its column types, like row events: the table's latest event always
                    // tells a restarted ingester (and consumers) the shape consumers last saw.
                    out.push(row_outgoing(key(j as u32), subject, event, xid, table));
                }
            }
            PgOutput::Relation(_) | PgOutput::Type { .. } | PgOutput::Origin { .. } | PgOutput::Other(_) => {}
        }
        Ok(())
    }

    /// A transactional logical message. Every one but the trace record takes a position (so
    /// positions follow the WAL alone), but only `folio.jobs.<kind>` messages are published.
    /// The trace record (`folio_bus::trace_context::WAL_MESSAGE_PREFIX`, first in every API
    /// transaction) takes none: the transaction's first change keeps position 0, which tells
    /// consumers such as the notifier that no earlier event of the transaction exists.
    pub fn message(&mut self, prefix: &str, content: Bytes, out: &mut Vec<Outgoing>) -> Result<(), EventError> {
        let txn = self.txn.as_mut().ok_or(EventError::NoTransaction)?;
        if prefix == folio_bus::trace_context::WAL_MESSAGE_PREFIX {
            return Ok(());
        }
        let position = txn.next_position;
        txn.next_position += 1;
        if let Some(subject) = self.subjects.job(prefix) {
            out.push(Outgoing {
                key: MsgKey::new(txn.commit_lsn, position, Part::Change(0)),
                target: Target::Jobs,
                subject,
                body: Body::Job(content),
                xid: txn.xid,
                last_in_transaction: false,
                commit_end_lsn: None,
                encoded_suffix: Bytes::new(),
            });
        }
        Ok(())
    }

    fn row_subject(&self, table: &Table, tenant: &str) -> String {
        let tenant = (!tenant.is_empty()).then_some(tenant);
        match self.row_prefixes.get(&table.relation.oid) {
            Some(prefix) => Subjects::row_from_prefix(prefix, tenant),
            None => self.subjects.row(table.schema(), table.name(), tenant),
        }
    }
}

fn table_event(txn: &Transaction, table: &Table, operation: Operation) -> ChangeEvent {
    ChangeEvent {
        commit_lsn: txn.commit_lsn.0,
        xid: txn.xid,
        commit_time: Some(txn.commit_time),
        schema: table.schema().to_owned(),
        table: table.name().to_owned(),
        operation: operation as i32,
        ..Default::default()
    }
}

fn row_event(txn: &Transaction, table: &Table, operation: Operation, row: &[ColumnValue]) -> ChangeEvent {
    let mut event = table_event(txn, table, operation);
    event.tenant = tenant_of(table, row).unwrap_or_default();
    event.primary_key = table.primary_key.iter().filter_map(|&i| row.get(i).cloned()).collect();
    event
}

fn outgoing(key: MsgKey, target: Target, subject: String, event: ChangeEvent, xid: u32) -> Outgoing {
    Outgoing {
        key,
        target,
        subject,
        body: Body::Change(Box::new(event)),
        xid,
        last_in_transaction: false,
        commit_end_lsn: None,
        encoded_suffix: Bytes::new(),
    }
}

/// A row or truncate event: the table's column types travel pre-encoded.
fn row_outgoing(key: MsgKey, subject: String, event: ChangeEvent, xid: u32, table: &Table) -> Outgoing {
    let mut out = outgoing(key, Target::Changes, subject, event, xid);
    out.encoded_suffix = table.column_types_encoded.clone();
    out
}

fn same_shape(a: &[ColumnType], b: &[ColumnType]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.name == b.name && a.type_oid == b.type_oid && a.type_modifier == b.type_modifier)
}

fn tenant_of(table: &Table, row: &[ColumnValue]) -> Option<String> {
    match &row.get(table.tenant_column?)?.value {
        Some(column_value::Value::Text(t)) => Some(t.clone()),
        _ => None,
    }
}

/// A tuple as named column values. An unchanged TOASTed value is taken from the old row of the
/// same change when there is one (REPLICA IDENTITY FULL sends it); otherwise it stays marked.
fn row(table: &Table, tuple: Tuple, old: Option<&[ColumnValue]>) -> Result<Vec<ColumnValue>, EventError> {
    let columns = &table.relation.columns;
    if tuple.len() != columns.len() {
        return Err(EventError::ColumnCount { table: table.name().to_owned(), got: tuple.len(), want: columns.len() });
    }
    Ok(tuple
        .into_iter()
        .zip(columns)
        .enumerate()
        .map(|(i, (cell, column))| {
            let value = match cell {
                Cell::Null => column_value::Value::IsNull(true),
                Cell::Text(bytes) | Cell::Binary(bytes) => column_value::Value::Text(text(bytes)),
                Cell::UnchangedToast => match old.and_then(|o| o.get(i)).and_then(|c| c.value.clone()) {
                    Some(v @ column_value::Value::Text(_)) => v,
                    _ => column_value::Value::UnchangedToast(true),
                },
            };
            ColumnValue { name: column.name.clone(), value: Some(value) }
        })
        .collect())
}

fn text(bytes: Bytes) -> String {
    match String::from_utf8(Vec::from(bytes)) {
        Ok(s) => s,
        // The server encoding is UTF-8 in every supported deployment; never drop a value.
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Relation, RelationColumn};

    fn table() -> Table {
        let columns = ["id", "agency_id", "body"]
            .iter()
            .map(|n| RelationColumn { name: (*n).into(), type_oid: 25, type_modifier: -1, part_of_key: true })
            .collect::<Vec<_>>();
        let column_types = columns
            .iter()
            .map(|c| ColumnType {
                name: c.name.clone(),
                type_oid: 25,
                type_name: "text".into(),
                type_modifier: -1,
                part_of_key: c.name == "id",
            })
            .collect();
        Table::new(
            Relation { oid: 7, schema: "public".into(), name: "notes".into(), replica_identity: b'f', columns },
            column_types,
            vec![0],
            Some(1),
        )
    }

    fn t(s: &str) -> Cell {
        Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn text_of(v: &ColumnValue) -> Option<&str> {
        match &v.value {
            Some(column_value::Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn unchanged_toast_is_filled_from_the_old_row_and_a_tenant_move_fans_out() {
        let mut a = Assembler::new(Subjects::new("folio"));
        a.begin(Lsn(0x100), 42, 0);
        a.relation(table(), None);
        let mut out = Vec::new();
        let update = PgOutput::Update {
            relation: 7,
            old: Some(vec![t("1"), t("A"), t("big")]),
            old_is_key: false,
            new: vec![t("1"), t("B"), Cell::UnchangedToast],
        };
        a.change(update, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        let subjects = Subjects::new("folio");
        assert_eq!(out[0].subject, subjects.row("public", "notes", Some("A")));
        assert_eq!(out[1].subject, subjects.row("public", "notes", Some("B")));
        assert_eq!(out[0].key.to_string(), "0000000000000100:0");
        assert_eq!(out[1].key.to_string(), "0000000000000100:0.1");
        let Body::Change(ev) = &out[1].body else { panic!() };
        assert_eq!(text_of(&ev.new_row[2]), Some("big"));
        assert_eq!(ev.old_row[2].value, Some(column_value::Value::UnchangedToast(true)), "not repeated");
        assert_eq!(text_of(&ev.old_row[1]), Some("A"));
        assert_eq!(ev.operation, Operation::Update as i32);
        assert_eq!(ev.primary_key.len(), 1);
        let Body::Change(moved) = &out[0].body else { panic!() };
        assert_eq!(moved.operation, Operation::Delete as i32);
        assert_eq!(moved.tenant, "A");
    }

    #[test]
    fn a_changed_relation_announces_itself_before_the_next_change() {
        let mut a = Assembler::new(Subjects::new("folio"));
        a.begin(Lsn(0x100), 1, 0);
        a.relation(table(), None);
        let mut out = Vec::new();
        a.change(PgOutput::Insert { relation: 7, new: vec![t("1"), t("A"), t("x")] }, &mut out).unwrap();
        a.commit(&mut out);
        a.begin(Lsn(0x200), 2, 0);
        a.relation(table(), None);
        let mut wider = table();
        wider.relation.columns.push(RelationColumn {
            name: "extra".into(),
            type_oid: 23,
            type_modifier: -1,
            part_of_key: false,
        });
        wider.column_types.push(ColumnType {
            name: "extra".into(),
            type_oid: 23,
            type_name: "int4".into(),
            type_modifier: -1,
            part_of_key: false,
        });
        a.relation(wider, None);
        a.change(PgOutput::Insert { relation: 7, new: vec![t("2"), t("A"), t("y"), Cell::Null] }, &mut out).unwrap();
        let keys: Vec<String> = out.iter().map(|o| o.key.to_string()).collect();
        assert_eq!(keys, ["0000000000000100:0", "0000000000000200:0.s0", "0000000000000200:0"]);
        assert_eq!(out[1].subject, Subjects::new("folio").table_wide("public", "notes"));
    }

    #[test]
    fn the_trace_record_takes_no_position_and_is_not_published() {
        let mut a = Assembler::new(Subjects::new("folio"));
        a.begin(Lsn(0x100), 1, 0);
        a.relation(table(), None);
        let mut out = Vec::new();
        let traceparent = Bytes::from_static(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        a.message(folio_bus::trace_context::WAL_MESSAGE_PREFIX, traceparent, &mut out).unwrap();
        assert!(out.is_empty());
        a.change(PgOutput::Insert { relation: 7, new: vec![t("1"), t("A"), t("x")] }, &mut out).unwrap();
        a.message("folio.jobs.pdf", Bytes::from_static(b"job"), &mut out).unwrap();
        let keys: Vec<String> = out.iter().map(|o| o.key.to_string()).collect();
        assert_eq!(keys, ["0000000000000100:0", "0000000000000100:1"], "the first change is still at 0");
        assert_eq!(out[1].target, Target::Jobs);
    }

    #[test]
    fn a_transaction_over_several_tables_ends_with_one_marker_per_table() {
        let mut a = Assembler::new(Subjects::new("folio"));
        let mut other = table();
        other.relation.oid = 8;
        other.relation.name = "tags".into();
        a.begin(Lsn(0x100), 1, 0);
        a.relation(table(), None);
        a.relation(other, None);
        let mut out = Vec::new();
        let insert = |relation, id: &str| PgOutput::Insert { relation, new: vec![t(id), t("A"), t("x")] };
        a.change(insert(7, "1"), &mut out).unwrap();
        a.commit(&mut out);
        assert_eq!(out.len(), 1, "one table: no marker");

        a.begin(Lsn(0x200), 2, 0);
        for (relation, id) in [(7, "2"), (8, "1"), (7, "3")] {
            a.change(insert(relation, id), &mut out).unwrap();
        }
        out.clear();
        a.commit(&mut out);
        let markers: Vec<(String, String)> = out.iter().map(|o| (o.key.to_string(), o.subject.clone())).collect();
        assert_eq!(
            markers,
            [
                ("0000000000000200:3.e0".to_owned(), Subjects::new("folio").transaction_ends("public", "notes")),
                ("0000000000000200:3.e1".to_owned(), Subjects::new("folio").transaction_ends("public", "tags")),
            ]
        );
        let Body::Change(end) = &out[1].body else { panic!() };
        assert_eq!((end.operation, end.table.as_str(), end.xid), (Operation::TransactionEnd as i32, "tags", 2));
        assert!(end.new_row.is_empty() && end.tenant.is_empty());
        assert!(!out[1].encoded_suffix.is_empty(), "carries the table's column types");
        assert!(!a.in_transaction());
    }
}

//! One transaction's changes of a proposal, as one change.
//!
//! An API call is one Postgres transaction, but it may write the same proposal row more than
//! once (`UpdateProposal` sets the fields, then recomputes the totals and bumps the version):
//! wal-ingest publishes one event per row write. Notifying per event would tell subscribers
//! about an intermediate state nobody committed (the new title with the old version), and
//! twice. So the worker waits for the end of the transaction and folds every event of one
//! proposal into one: the row as it was before the transaction and as it is after it.

use std::collections::HashMap;

use folio_proto::events::v1::{ChangeEvent, ColumnValue, Operation, column_value};
use prost::Message;

/// Whether `event` closes its transaction's part of the `proposals` table: a one-table
/// transaction ends at its event flagged `last_in_transaction`, a multi-table one at a
/// `TRANSACTION_END` marker. An event with no commit LSN did not come from a transaction
/// (hand-published): it stands alone.
pub fn ends_transaction(event: &ChangeEvent) -> bool {
    event.last_in_transaction || event.operation() == Operation::TransactionEnd || event.commit_lsn == 0
}

/// Whether `event` is a row change (the only events that carry transitions).
pub fn is_row_change(event: &ChangeEvent) -> bool {
    matches!(event.operation(), Operation::Insert | Operation::Update | Operation::Delete)
}

/// Folds the row changes of one transaction, in stream order with their message ids, into one
/// change per (tenant, row). Each folded change is keyed by the message id of the row's last
/// event, which is fixed by the WAL, so a redelivered transaction folds to the same keys.
/// A row inserted and deleted inside the transaction was never visible: it yields nothing.
pub fn coalesce(events: Vec<(String, ChangeEvent)>) -> Vec<(String, ChangeEvent)> {
    // A row that moved to another agency is a delete on the old tenant and an update on the new
    // one; each agency hears its own part, so the tenant is part of the key.
    let mut groups: Vec<Vec<(String, ChangeEvent)>> = Vec::new();
    let mut index: HashMap<(String, Vec<Vec<u8>>), usize> = HashMap::new();
    for (id, event) in events {
        if !is_row_change(&event) {
            continue;
        }
        let key = (event.tenant.clone(), row_key(&event));
        match index.get(&key) {
            Some(&i) => groups[i].push((id, event)),
            None => {
                index.insert(key, groups.len());
                groups.push(vec![(id, event)]);
            }
        }
    }
    groups.into_iter().filter_map(fold).collect()
}

/// The row's identity: its primary key, or its `id` column when the event names no key.
fn row_key(event: &ChangeEvent) -> Vec<Vec<u8>> {
    let key: Vec<&ColumnValue> = if event.primary_key.is_empty() {
        event.new_row.iter().chain(&event.old_row).filter(|c| c.name == "id").take(1).collect()
    } else {
        event.primary_key.iter().collect()
    };
    key.into_iter().map(Message::encode_to_vec).collect()
}

fn fold(mut group: Vec<(String, ChangeEvent)>) -> Option<(String, ChangeEvent)> {
    if group.len() == 1 {
        return group.pop();
    }
    let (_, first) = group.first()?;
    let first_op = first.operation();
    let before = (first_op != Operation::Insert).then(|| resolved_old_row(first));
    let (id, mut last) = group.pop()?;
    let deleted = last.operation() == Operation::Delete;
    match (before, deleted) {
        (None, true) => return None,
        (None, false) => {
            last.operation = Operation::Insert as i32;
            last.old_row = Vec::new();
        }
        // The row's last state before the delete is what a `proposal.deleted` reports.
        (Some(_), true) => {}
        (Some(before), false) => {
            last.operation = Operation::Update as i32;
            last.old_row = before;
        }
    }
    Some((id, last))
}

/// The old row of `event` with wal-ingest's `unchanged_toast` markers replaced by the value
/// they stand for (the same column of the event's new row): paired with a later event's new
/// row, a marker would otherwise read that row's value, which may have changed since.
fn resolved_old_row(event: &ChangeEvent) -> Vec<ColumnValue> {
    event
        .old_row
        .iter()
        .map(|c| match &c.value {
            Some(column_value::Value::UnchangedToast(true)) => {
                event.new_row.iter().find(|n| n.name == c.name).cloned().unwrap_or_else(|| c.clone())
            }
            _ => c.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, v: &str) -> ColumnValue {
        ColumnValue { name: name.into(), value: Some(column_value::Value::Text(v.into())) }
    }

    fn row(id: &str, title: &str, version: &str) -> Vec<ColumnValue> {
        vec![col("id", id), col("title", title), col("version", version)]
    }

    fn event(op: Operation, tenant: &str, old: Vec<ColumnValue>, new: Vec<ColumnValue>) -> ChangeEvent {
        let key = new.iter().chain(old.iter()).find(|c| c.name == "id").cloned().into_iter().collect();
        ChangeEvent {
            commit_lsn: 0x100,
            table: "proposals".into(),
            operation: op as i32,
            tenant: tenant.into(),
            primary_key: key,
            old_row: old,
            new_row: new,
            ..Default::default()
        }
    }

    fn text(row: &[ColumnValue], name: &str) -> String {
        match &row.iter().find(|c| c.name == name).unwrap().value {
            Some(column_value::Value::Text(t)) => t.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn two_writes_of_one_row_fold_into_the_change_from_before_to_after() {
        let events = vec![
            ("L:0".to_owned(), event(Operation::Update, "A", row("p", "Old", "1"), row("p", "New", "1"))),
            ("L:1".to_owned(), event(Operation::Update, "A", row("p", "New", "1"), row("p", "New", "2"))),
        ];
        let folded = coalesce(events);
        assert_eq!(folded.len(), 1);
        let (id, e) = &folded[0];
        assert_eq!(id, "L:1", "keyed by the row's last event");
        assert_eq!((text(&e.old_row, "title"), text(&e.old_row, "version")), ("Old".into(), "1".into()));
        assert_eq!((text(&e.new_row, "title"), text(&e.new_row, "version")), ("New".into(), "2".into()));
    }

    #[test]
    fn inserts_deletes_moves_and_other_rows() {
        let folded = coalesce(vec![
            ("L:0".to_owned(), event(Operation::Insert, "A", vec![], row("p", "T", "1"))),
            ("L:1".to_owned(), event(Operation::Update, "A", row("p", "T", "1"), row("p", "T", "2"))),
            ("L:2".to_owned(), event(Operation::Insert, "A", vec![], row("q", "Q", "1"))),
            ("L:3".to_owned(), event(Operation::Delete, "A", row("q", "Q", "1"), vec![])),
            ("L:4".to_owned(), event(Operation::Update, "A", row("r", "R", "1"), row("r", "R", "2"))),
            ("L:5".to_owned(), event(Operation::Delete, "A", row("r", "R", "2"), vec![])),
            ("L:6".to_owned(), event(Operation::Delete, "A", row("s", "S", "1"), vec![])),
            ("L:6.1".to_owned(), event(Operation::Update, "B", row("s", "S", "1"), row("s", "S", "2"))),
        ]);
        let summary: Vec<(&str, Operation)> = folded.iter().map(|(id, e)| (id.as_str(), e.operation())).collect();
        assert_eq!(
            summary,
            [
                ("L:1", Operation::Insert),
                ("L:5", Operation::Delete),
                ("L:6", Operation::Delete),
                ("L:6.1", Operation::Update)
            ],
            "q never existed outside the transaction; s moved agency: each side hears its part"
        );
        assert!(folded[0].1.old_row.is_empty());
        assert_eq!(text(&folded[0].1.new_row, "version"), "2");
        assert_eq!(text(&folded[1].1.old_row, "version"), "2");
    }

    #[test]
    fn an_unchanged_toast_marker_keeps_its_value_from_before_the_transaction() {
        let mut first = event(Operation::Update, "A", row("p", "Long", "1"), row("p", "Long", "2"));
        first.old_row[1] = ColumnValue { name: "title".into(), value: Some(column_value::Value::UnchangedToast(true)) };
        let second = event(Operation::Update, "A", row("p", "Long", "2"), row("p", "Longer", "3"));
        let folded = coalesce(vec![("L:0".into(), first), ("L:1".into(), second)]);
        assert_eq!(text(&folded[0].1.old_row, "title"), "Long");
        assert_eq!(text(&folded[0].1.new_row, "title"), "Longer");
    }

    #[test]
    fn where_a_transaction_ends() {
        let mut e = event(Operation::Update, "A", vec![], vec![]);
        assert!(!ends_transaction(&e));
        e.last_in_transaction = true;
        assert!(ends_transaction(&e));
        let marker = ChangeEvent { commit_lsn: 1, operation: Operation::TransactionEnd as i32, ..Default::default() };
        assert!(ends_transaction(&marker));
        let loose = ChangeEvent { operation: Operation::Update as i32, ..Default::default() };
        assert!(ends_transaction(&loose));
    }
}

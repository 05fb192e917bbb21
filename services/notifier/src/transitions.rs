//! What happened to a proposal, read from one change event's old and new rows (REPLICA
//! IDENTITY FULL gives complete old rows), never from polling the table.

use std::fmt;

use folio_proto::events::v1::{ChangeEvent, ColumnValue, Operation, column_value};
use time::{Date, macros::format_description};
use uuid::Uuid;

/// Every event type the notifier emits. Webhook endpoints subscribe to these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Created,
    Updated,
    Sent,
    Viewed,
    Accepted,
    Declined,
    Withdrawn,
    /// A withdrawn proposal went back to draft.
    Reopened,
    Archived,
    Deleted,
    /// Its validity ends soon; sent at `valid_until` minus the reminder lead.
    Expiring,
    /// Not a proposal event: a webhook endpoint was disabled after failing for days.
    EndpointDisabled,
}

impl EventType {
    pub const PROPOSAL_EVENTS: [EventType; 11] = [
        EventType::Created,
        EventType::Updated,
        EventType::Sent,
        EventType::Viewed,
        EventType::Accepted,
        EventType::Declined,
        EventType::Withdrawn,
        EventType::Reopened,
        EventType::Archived,
        EventType::Deleted,
        EventType::Expiring,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "proposal.created",
            EventType::Updated => "proposal.updated",
            EventType::Sent => "proposal.sent",
            EventType::Viewed => "proposal.viewed",
            EventType::Accepted => "proposal.accepted",
            EventType::Declined => "proposal.declined",
            EventType::Withdrawn => "proposal.withdrawn",
            EventType::Reopened => "proposal.reopened",
            EventType::Archived => "proposal.archived",
            EventType::Deleted => "proposal.deleted",
            EventType::Expiring => "proposal.expiring",
            EventType::EndpointDisabled => "endpoint.disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::PROPOSAL_EVENTS.into_iter().chain([EventType::EndpointDisabled]).find(|t| t.as_str() == s)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The proposal fields notifications talk about, as of the event: the type webhooks carry,
/// shared with the API's event-type catalogue.
pub use folio_webhook::events::ProposalSnapshot;

/// One thing that happened to a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub event_type: EventType,
    pub proposal: ProposalSnapshot,
    pub previous_status: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("column {0} is missing from the row")]
    Missing(&'static str),
    #[error("column {column} has an unreadable value {value:?}")]
    Unreadable { column: &'static str, value: String },
    #[error("a {0:?} event carries no row")]
    NoRow(Operation),
}

/// The transitions one change of the `proposals` table stands for, in a stable order.
/// Events of other tables and table-wide events stand for none.
pub fn transitions(event: &ChangeEvent) -> Result<Vec<Transition>, RowError> {
    if event.table != "proposals" {
        return Ok(Vec::new());
    }
    let op = event.operation();
    match op {
        Operation::Insert => {
            let new = snapshot(&event.new_row, &[])?.ok_or(RowError::NoRow(op))?;
            // Inserted as sent (an import) is still a send.
            let mut out =
                vec![Transition { event_type: EventType::Created, proposal: new.clone(), previous_status: None }];
            if let Some(t) = status_event(&new.status) {
                out.push(Transition { event_type: t, proposal: new, previous_status: Some("draft".into()) });
            }
            Ok(out)
        }
        Operation::Update => {
            // wal-ingest marks a TOASTed value that did not change as `unchanged_toast` in the
            // old row (it is in the new one): each row falls back on the other.
            let old = snapshot(&event.old_row, &event.new_row)?;
            let new = snapshot(&event.new_row, &event.old_row)?.ok_or(RowError::NoRow(op))?;
            let Some(old) = old else {
                // Without an old row (replica identity not FULL) a transition cannot be told
                // from an edit; say only that it changed.
                return Ok(vec![Transition { event_type: EventType::Updated, proposal: new, previous_status: None }]);
            };
            let archived_now = text(&event.new_row, &event.old_row, "archived_at").is_some()
                && text(&event.old_row, &event.new_row, "archived_at").is_none();
            let mut out = Vec::new();
            if old.status != new.status {
                let t = if new.status == "draft" { Some(EventType::Reopened) } else { status_event(&new.status) };
                if let Some(t) = t {
                    out.push(Transition {
                        event_type: t,
                        proposal: new.clone(),
                        previous_status: Some(old.status.clone()),
                    });
                }
            } else if archived_now {
                out.push(Transition { event_type: EventType::Archived, proposal: new.clone(), previous_status: None });
            } else if rows_differ(&event.old_row, &event.new_row) {
                out.push(Transition { event_type: EventType::Updated, proposal: new.clone(), previous_status: None });
            }
            Ok(out)
        }
        Operation::Delete => {
            let old = snapshot(&event.old_row, &[])?.ok_or(RowError::NoRow(op))?;
            Ok(vec![Transition { event_type: EventType::Deleted, proposal: old, previous_status: None }])
        }
        _ => Ok(Vec::new()),
    }
}

/// The expiry a reminder should be scheduled for after this event: the proposal is out with
/// the client and has a `valid_until` that the event set (sent now, or the date moved).
pub fn expiry_to_remind(event: &ChangeEvent) -> Result<Option<(ProposalSnapshot, Date)>, RowError> {
    if event.table != "proposals" || !matches!(event.operation(), Operation::Insert | Operation::Update) {
        return Ok(None);
    }
    let Some(new) = snapshot(&event.new_row, &event.old_row)? else { return Ok(None) };
    let Some(valid_until) = new.valid_until else { return Ok(None) };
    if !matches!(new.status.as_str(), "sent" | "viewed") {
        return Ok(None);
    }
    let old = snapshot(&event.old_row, &event.new_row)?;
    let set_now = match &old {
        None => true,
        Some(old) => !matches!(old.status.as_str(), "sent" | "viewed") || old.valid_until != new.valid_until,
    };
    Ok(set_now.then_some((new, valid_until)))
}

/// Whether any column's value changed, reading through `unchanged_toast` markers.
fn rows_differ(old: &[ColumnValue], new: &[ColumnValue]) -> bool {
    let value = |row: &[ColumnValue], other: &[ColumnValue], name: &str| -> Option<Option<String>> {
        let column = row.iter().find(|c| c.name == name)?;
        Some(match &column.value {
            Some(column_value::Value::UnchangedToast(true)) => text(other, &[], name).map(str::to_owned),
            Some(column_value::Value::Text(t)) => Some(t.clone()),
            _ => None,
        })
    };
    new.iter().any(|c| value(new, old, &c.name) != value(old, new, &c.name))
}

fn status_event(status: &str) -> Option<EventType> {
    match status {
        "sent" => Some(EventType::Sent),
        "viewed" => Some(EventType::Viewed),
        "accepted" => Some(EventType::Accepted),
        "declined" => Some(EventType::Declined),
        "withdrawn" => Some(EventType::Withdrawn),
        _ => None,
    }
}

/// A column's text value; an unchanged TOASTed value is taken from `fallback` (the old row).
fn text<'a>(row: &'a [ColumnValue], fallback: &'a [ColumnValue], name: &str) -> Option<&'a str> {
    let column = row.iter().find(|c| c.name == name)?;
    match &column.value {
        Some(column_value::Value::Text(t)) => Some(t),
        Some(column_value::Value::UnchangedToast(true)) => text(fallback, &[], name),
        _ => None,
    }
}

fn snapshot(row: &[ColumnValue], fallback: &[ColumnValue]) -> Result<Option<ProposalSnapshot>, RowError> {
    if row.is_empty() {
        return Ok(None);
    }
    let req = |name: &'static str| text(row, fallback, name).ok_or(RowError::Missing(name));
    let uuid = |name: &'static str| -> Result<Uuid, RowError> {
        let v = req(name)?;
        Uuid::parse_str(v).map_err(|_| RowError::Unreadable { column: name, value: v.to_owned() })
    };
    let int = |name: &'static str| -> Result<i64, RowError> {
        let v = req(name)?;
        v.parse().map_err(|_| RowError::Unreadable { column: name, value: v.to_owned() })
    };
    let valid_until = match text(row, fallback, "valid_until") {
        None => None,
        Some(v) => Some(
            Date::parse(v, format_description!("[year]-[month]-[day]"))
                .map_err(|_| RowError::Unreadable { column: "valid_until", value: v.to_owned() })?,
        ),
    };
    Ok(Some(ProposalSnapshot {
        id: uuid("id")?,
        agency_id: uuid("agency_id")?,
        client_id: uuid("client_id")?,
        owner_id: uuid("owner_id")?,
        title: req("title")?.to_owned(),
        status: req("status")?.to_owned(),
        currency: req("currency")?.trim().to_owned(),
        total_minor: int("total_minor")?,
        valid_until,
        version: int("version")?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue the API serves and docs/webhooks.md lists is exactly what fanout emits.
    #[test]
    fn every_webhook_event_type_is_in_the_catalogue_and_nothing_else() {
        let mut emitted: Vec<&str> = EventType::PROPOSAL_EVENTS.iter().map(|t| t.as_str()).collect();
        emitted.push(folio_webhook::events::TEST_EVENT);
        let catalogue: Vec<&str> = folio_webhook::events::catalogue().iter().map(|t| t.name).collect();
        assert_eq!(emitted, catalogue);
    }

    fn col(name: &str, v: Option<&str>) -> ColumnValue {
        ColumnValue {
            name: name.into(),
            value: Some(match v {
                Some(t) => column_value::Value::Text(t.into()),
                None => column_value::Value::IsNull(true),
            }),
        }
    }

    fn row(status: &str, valid_until: Option<&str>, title: &str, archived: Option<&str>) -> Vec<ColumnValue> {
        vec![
            col("id", Some("0193a000-0000-7000-8000-000000000001")),
            col("agency_id", Some("0193a000-0000-7000-8000-000000000002")),
            col("client_id", Some("0193a000-0000-7000-8000-000000000003")),
            col("owner_id", Some("0193a000-0000-7000-8000-000000000004")),
            col("title", Some(title)),
            col("status", Some(status)),
            col("currency", Some("EUR")),
            col("total_minor", Some("12100")),
            col("valid_until", valid_until),
            col("version", Some("3")),
            col("archived_at", archived),
        ]
    }

    fn update(old: Vec<ColumnValue>, new: Vec<ColumnValue>) -> ChangeEvent {
        ChangeEvent {
            table: "proposals".into(),
            operation: Operation::Update as i32,
            old_row: old,
            new_row: new,
            ..Default::default()
        }
    }

    fn types(e: &ChangeEvent) -> Vec<&'static str> {
        transitions(e).unwrap().into_iter().map(|t| t.event_type.as_str()).collect()
    }

    #[test]
    fn each_status_change_is_its_event() {
        for (from, to, want) in [
            ("draft", "sent", "proposal.sent"),
            ("sent", "viewed", "proposal.viewed"),
            ("viewed", "accepted", "proposal.accepted"),
            ("sent", "declined", "proposal.declined"),
            ("viewed", "withdrawn", "proposal.withdrawn"),
            ("withdrawn", "draft", "proposal.reopened"),
        ] {
            let e = update(row(from, None, "t", None), row(to, None, "t", None));
            assert_eq!(types(&e), vec![want], "{from} -> {to}");
            let t = &transitions(&e).unwrap()[0];
            assert_eq!(t.previous_status.as_deref(), Some(from));
            assert_eq!(t.proposal.status, to);
            assert_eq!(t.proposal.total_minor, 12100);
        }
    }

    #[test]
    fn edits_archives_inserts_and_deletes() {
        assert_eq!(
            types(&update(row("draft", None, "a", None), row("draft", None, "b", None))),
            vec!["proposal.updated"]
        );
        assert_eq!(types(&update(row("draft", None, "a", None), row("draft", None, "a", None))), Vec::<&str>::new());
        assert_eq!(
            types(&update(
                row("accepted", None, "a", None),
                row("accepted", None, "a", Some("2026-11-26 10:00:00+00"))
            )),
            vec!["proposal.archived"]
        );
        let insert = ChangeEvent {
            table: "proposals".into(),
            operation: Operation::Insert as i32,
            new_row: row("draft", None, "a", None),
            ..Default::default()
        };
        assert_eq!(types(&insert), vec!["proposal.created"]);
        let delete = ChangeEvent {
            table: "proposals".into(),
            operation: Operation::Delete as i32,
            old_row: row("draft", None, "a", None),
            ..Default::default()
        };
        assert_eq!(types(&delete), vec!["proposal.deleted"]);
        let other = ChangeEvent { table: "clients".into(), operation: Operation::Insert as i32, ..Default::default() };
        assert!(types(&other).is_empty());
    }

    #[test]
    fn unchanged_toast_comes_from_the_old_row() {
        let mut new = row("sent", None, "long title", None);
        new[4] = ColumnValue { name: "title".into(), value: Some(column_value::Value::UnchangedToast(true)) };
        let e = update(row("draft", None, "long title", None), new);
        assert_eq!(transitions(&e).unwrap()[0].proposal.title, "long title");
    }

    #[test]
    fn an_unchanged_toast_marker_in_the_old_row_reads_the_new_row() {
        let toast =
            |name: &str| ColumnValue { name: name.into(), value: Some(column_value::Value::UnchangedToast(true)) };
        // wal-ingest's shape: the value in new_row, the marker in old_row.
        let mut old = row("draft", None, "long title", None);
        old[4] = toast("title");
        let e = update(old.clone(), row("sent", None, "long title", None));
        assert_eq!(types(&e), vec!["proposal.sent"]);
        // Nothing but the marker differs: no event.
        let e = update(old, row("draft", None, "long title", None));
        assert!(types(&e).is_empty());
    }

    #[test]
    fn expiry_reminders_follow_sends_and_date_moves() {
        let sent = update(row("draft", Some("2026-12-01"), "t", None), row("sent", Some("2026-12-01"), "t", None));
        let (_, d) = expiry_to_remind(&sent).unwrap().unwrap();
        assert_eq!(d.to_string(), "2026-12-01");
        let viewed = update(row("sent", Some("2026-12-01"), "t", None), row("viewed", Some("2026-12-01"), "t", None));
        assert!(expiry_to_remind(&viewed).unwrap().is_none(), "already scheduled when sent");
        let moved = update(row("sent", Some("2026-12-01"), "t", None), row("sent", Some("2026-12-09"), "t", None));
        assert!(expiry_to_remind(&moved).unwrap().is_some());
        let draft = update(row("draft", Some("2026-12-01"), "a", None), row("draft", Some("2026-12-01"), "b", None));
        assert!(expiry_to_remind(&draft).unwrap().is_none());
    }

    #[test]
    fn event_type_names_round_trip() {
        for t in EventType::PROPOSAL_EVENTS {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("proposal.nope"), None);
    }
}

//! A proposal's content edited through the API reaches its open document at once, not at the
//! document's next update or open.
//!
//! Every edge follows the proposals table on the change stream (from where it stood when the
//! edge started: an edge that was down catches up at the next open, which reconciles anyway).
//! An update whose content differs from what the document and the proposal last agreed on
//! schedules the document's persist at once (not debounced), which finds the proposal moved and makes the document
//! follow it by the smallest edit; every connected provider then receives that edit live. Every
//! edge sees the event: the document's lease lets one of them restore, the others find nothing to
//! do. The edge's own persists come back through here too and are recognised by their hash.

use std::{sync::Arc, time::Duration};

use folio_bus::{BusArgs, StreamSeq};
use folio_domain::{AgencyId, ProposalId};
use folio_live::{Follower, Reconnects};
use folio_proto::events::v1::{ChangeEvent, ColumnValue, Operation, column_value};
use prost::Message as _;
use tracing::Instrument as _;

use super::{Yjs, path::DocAddress, proposal::digest};

/// Change events handled per batch.
const BATCH: usize = 256;

/// A proposal's content changed by one event: the proposal and its new content.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ContentEdit {
    pub agency: AgencyId,
    pub proposal: ProposalId,
    pub content: String,
}

fn text<'a>(row: &'a [ColumnValue], column: &str) -> Option<&'a column_value::Value> {
    row.iter().find(|c| c.name == column).and_then(|c| c.value.as_ref())
}

impl ContentEdit {
    /// The content edit `event` makes, if it is an update of a proposal's content.
    pub(crate) fn of(event: &ChangeEvent) -> Option<ContentEdit> {
        if event.operation() != Operation::Update || event.schema != "public" || event.table != "proposals" {
            return None;
        }
        let column_value::Value::Text(content) = text(&event.new_row, "content")? else { return None };
        // An unchanged (TOASTed) content is the old row's: not an edit of it.
        if let Some(column_value::Value::Text(old)) = text(&event.old_row, "content")
            && old == content
        {
            return None;
        }
        if matches!(text(&event.old_row, "content"), Some(column_value::Value::UnchangedToast(true))) {
            return None;
        }
        let column_value::Value::Text(id) = text(&event.new_row, "id")? else { return None };
        let column_value::Value::Text(agency) = text(&event.new_row, "agency_id")? else { return None };
        Some(ContentEdit {
            agency: AgencyId::parse(agency).ok()?,
            proposal: ProposalId::parse(id).ok()?,
            content: content.clone(),
        })
    }
}

impl Yjs {
    /// Follows the proposals table on `bus`'s change stream until shutdown (see the module's
    /// comment). Runs on the edge's tasks.
    pub fn follow_proposal_edits(self: &Arc<Self>, bus: &BusArgs, reconnects: &Reconnects) {
        if self.proposals().is_none() {
            return;
        }
        let this = Arc::clone(self);
        let js = async_nats::jetstream::new(self.streams.store().nats().clone());
        let stream = bus.changes_stream.clone();
        let filter = bus.subjects().table_filter("public", "proposals");
        let reconnects = reconnects.clone();
        self.tasks.spawn(async move {
            let Some(after) = this.stream_end(&js, &stream).await else { return };
            let mut follower = Follower::new(js, &stream, filter, after, &reconnects, this.shutdown.clone());
            while let Some(batch) = follower.next_batch(BATCH).await {
                for message in batch {
                    let Ok(event) = ChangeEvent::decode(message.payload.clone()) else { continue };
                    let Some(edit) = ContentEdit::of(&event) else { continue };
                    let span =
                        tracing::debug_span!("yjs_proposal_edit", proposal = %edit.proposal, lsn = event.commit_lsn);
                    this.proposal_edited(edit).instrument(span).await;
                }
            }
        });
    }

    /// The change stream's last sequence now (following starts after it), waiting for the
    /// stream to exist; None at shutdown.
    async fn stream_end(&self, js: &async_nats::jetstream::Context, stream: &str) -> Option<StreamSeq> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let found = async { js.get_stream(stream).await?.get_info().await.map_err(Into::into) };
            match found.await {
                Ok(info) => return Some(StreamSeq::new(info.state.last_sequence)),
                Err(e) => {
                    let e: Box<dyn std::error::Error + Send + Sync> = e;
                    tracing::warn!(%stream, "proposal documents cannot follow API edits yet: {e}");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(Duration::from_secs(5)),
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    async fn proposal_edited(self: &Arc<Self>, edit: ContentEdit) {
        let doc = DocAddress::of_proposal(edit.agency, edit.proposal);
        let updates = doc.updates();
        let meta = match self.live_meta(&updates).await {
            Ok(Some(meta)) => meta,
            // No document: it will be created from the proposal when first opened.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to look up a proposal's document");
                return;
            }
        };
        match self.records.load(updates.as_str(), &meta.incarnation).await {
            // What both already hold: this edge's (or another's) own persist coming back.
            Ok(Some(record)) if record.persisted.as_deref() == Some(digest(&edit.content).as_str()) => {}
            Ok(_) => self.schedule_persist_now(&doc),
            Err(e) => {
                tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to read a proposal document's record");
                self.schedule_persist_now(&doc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, v: column_value::Value) -> ColumnValue {
        ColumnValue { name: name.into(), value: Some(v) }
    }

    fn update(old: Option<column_value::Value>, new: &str) -> ChangeEvent {
        let id = "0193a7a0-0000-7000-8000-000000000001";
        let agency = "0193a7a0-0000-7000-8000-000000000002";
        let row = |content: column_value::Value| {
            vec![
                value("id", column_value::Value::Text(id.into())),
                value("agency_id", column_value::Value::Text(agency.into())),
                value("content", content),
            ]
        };
        ChangeEvent {
            schema: "public".into(),
            table: "proposals".into(),
            operation: Operation::Update.into(),
            new_row: row(column_value::Value::Text(new.into())),
            old_row: old.map(row).unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_changed_content_is_an_edit() {
        let edit = ContentEdit::of(&update(Some(column_value::Value::Text("a".into())), "b")).unwrap();
        assert_eq!(edit.content, "b");
        assert_eq!(edit.proposal.to_string(), "0193a7a0-0000-7000-8000-000000000001");
        assert_eq!(edit.agency.to_string(), "0193a7a0-0000-7000-8000-000000000002");
        // Another column changed (status, version): not an edit of the content.
        assert_eq!(ContentEdit::of(&update(Some(column_value::Value::Text("b".into())), "b")), None);
        assert_eq!(ContentEdit::of(&update(Some(column_value::Value::UnchangedToast(true)), "b")), None);
        // Without the old row (no REPLICA IDENTITY FULL), every update may be one.
        assert!(ContentEdit::of(&update(None, "b")).is_some());
        let mut insert = update(None, "b");
        insert.set_operation(Operation::Insert);
        assert_eq!(ContentEdit::of(&insert), None);
        let mut other = update(None, "b");
        other.table = "clients".into();
        assert_eq!(ContentEdit::of(&other), None);
    }
}

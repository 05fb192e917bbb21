//! A proposal's content edited through the API reaches its open document at once, not at the
//! document's next update or open.
//!
//! Every edge follows the proposals table on the change stream (from where it stood when the
//! edge started: an edge that was down catches up at the next open, which reconciles anyway).
//! An update whose content differs from what the document and the proposal last agreed on
//! makes the document follow the proposal at once (not debounced, and never the other way
//! round: following writes nothing into the proposal) by the smallest edit; every connected
//! provider receives that edit live. Every edge sees the event: under the document's lease one
//! restores, the others then find the agreement recorded and stop before any replay. The edge's
//! own persists come back through here too and are recognised by their hash.

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
        match text(&event.old_row, "content") {
            // The same text, or an unchanged (TOASTed) value, which is the new row's: not an edit.
            Some(column_value::Value::Text(old)) if old == content => return None,
            Some(column_value::Value::UnchangedToast(true)) => return None,
            _ => {}
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
    /// comment), on the edge's tasks. When the stream exists, every edit committed after this
    /// returns is followed; otherwise following starts once it exists.
    pub async fn follow_proposal_edits(self: &Arc<Self>, bus: &BusArgs, reconnects: &Reconnects) {
        if self.proposals().is_none() {
            return;
        }
        let js = async_nats::jetstream::new(self.streams.store().nats().clone());
        let stream = bus.changes_stream.clone();
        let start = match stream_end(&js, &stream).await {
            Ok(end) => Some(end),
            Err(e) => {
                tracing::warn!(%stream, "proposal documents cannot follow API edits yet (retrying quietly): {e}");
                None
            }
        };
        let this = Arc::clone(self);
        let filter = bus.subjects().table_filter("public", "proposals");
        let reconnects = reconnects.clone();
        self.tasks.spawn(async move {
            let after = match start {
                Some(after) => after,
                None => match this.wait_for_stream(&js, &stream).await {
                    Some(after) => after,
                    None => return,
                },
            };
            tracing::info!(%stream, %after, "proposal documents follow API edits");
            let mut follower = Follower::new(js, &stream, filter, after, &reconnects, this.shutdown.clone());
            while let Some(batch) = follower.next_batch(BATCH).await {
                for message in batch {
                    if this.shutdown.is_cancelled() {
                        return;
                    }
                    let Ok(event) = ChangeEvent::decode(message.payload.clone()) else { continue };
                    let Some(edit) = ContentEdit::of(&event) else { continue };
                    let span =
                        tracing::debug_span!("yjs_proposal_edit", proposal = %edit.proposal, lsn = event.commit_lsn);
                    this.proposal_edited(edit).instrument(span).await;
                }
            }
        });
    }

    /// Waits for the change stream to exist (wal-ingest declares it); its last sequence then,
    /// or None at shutdown.
    async fn wait_for_stream(&self, js: &async_nats::jetstream::Context, stream: &str) -> Option<StreamSeq> {
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(Duration::from_secs(5)),
                _ = self.shutdown.cancelled() => return None,
            }
            match stream_end(js, stream).await {
                Ok(end) => return Some(end),
                Err(e) => tracing::debug!(%stream, "the change stream is not there yet: {e}"),
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
            // The edit moved the proposal away from what both agreed on: the document follows.
            Ok(Some(record)) if record.persisted.as_deref().is_some_and(|h| h != digest(&edit.content)) => {
                self.follow_proposal(&doc)
            }
            // What both already hold (an edge's own persist coming back), or no agreement yet
            // (the next open or update decides).
            Ok(_) => {}
            // Checked again under the document's lease.
            Err(e) => {
                tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to read a proposal document's record");
                self.follow_proposal(&doc);
            }
        }
    }
}

/// The change stream's last sequence now: following starts after it.
async fn stream_end(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Result<StreamSeq, Box<dyn std::error::Error + Send + Sync>> {
    let info = js.get_stream(stream).await?.get_info().await?;
    Ok(StreamSeq::new(info.state.last_sequence))
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

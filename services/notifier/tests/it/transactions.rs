//! One Postgres transaction, one notification per proposal: an `UpdateProposal` writes the
//! proposal row twice (fields, then totals and version), and subscribers must hear about the
//! committed result once, not about the intermediate row.

use folio_domain::ProposalStatus;
use proposals_api::store::proposals::{self, ProposalChanges};
use serde_json::json;

use crate::helpers::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_update_proposal_sends_one_proposal_updated_webhook_with_the_new_version() {
    let mut w = World::new().await.unwrap();
    // wal-ingest declares its own stream (same name and subjects as the world's).
    w.js.delete_stream(&w.stream).await.unwrap();
    w.add_endpoint("/updated", &["proposal.updated"], json!({})).await;
    w.add_endpoint("/sent", &["proposal.sent"], json!({})).await;
    let ingest = w.sandbox.wal_ingest_config();
    w.sandbox.start_wal_ingest(ingest).await.expect("wal-ingest streams its slot");
    let notifier = w.spawn().await;

    let p = w.new_proposal("Before", None).await;
    let version: i64 = sqlx::query_scalar("SELECT version FROM proposals WHERE id = $1")
        .bind(p.as_uuid())
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    let changes = ProposalChanges { title: Some("After".into()), ..Default::default() };
    let updated = proposals::update(&w.db.pool, w.agency, p, version, changes).await.unwrap();
    assert_eq!(updated.proposal.version, version + 1);
    // Events are handled in commit order: once the send (a later transaction) arrived, every
    // webhook of the update has been written.
    proposals::transition(&w.db.pool, w.agency, p, ProposalStatus::Sent, None).await.unwrap();
    folio_testkit::eventually("the later send's webhook", || async {
        (w.receiver.accepted("/sent").await.len() == 1).then_some(())
    })
    .await;
    w.settled().await;

    let hooks = w.receiver.accepted("/updated").await;
    let payloads: Vec<_> = hooks.iter().map(|h| h.payload.clone().unwrap()).collect();
    assert_eq!(payloads.len(), 1, "one UpdateProposal, one proposal.updated: {payloads:#?}");
    let data = &payloads[0]["data"];
    assert_eq!(payloads[0]["type"], "proposal.updated");
    assert_eq!(data["id"], p.to_string());
    assert_eq!(data["title"], "After");
    assert_eq!(data["version"], updated.proposal.version, "the committed version, not the intermediate row's");
    let rows = w.deliveries("proposal.updated").await;
    assert_eq!(rows.len(), 1, "{rows:?}");

    notifier.stop().await;
    let _ = w.js.delete_stream(w.dead_letter_stream()).await;
    // Stops wal-ingest, drops its slot and the streams.
    w.sandbox.stop().await;
}

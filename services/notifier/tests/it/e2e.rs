//! The whole path: a proposal committed in Postgres → wal-ingest (logical replication) →
//! JetStream → notifier → SMTP and a verified webhook.

use folio_domain::ProposalStatus;
use serde_json::json;

use crate::helpers::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transition_flows_through_wal_ingest_to_email_and_webhook() {
    let mut w = World::new().await.unwrap();
    // wal-ingest declares its own stream (same name and subjects as the world's).
    w.js.delete_stream(&w.stream).await.unwrap();
    w.add_endpoint("/e2e", &["proposal.sent"], json!({})).await;
    let ingest = w.sandbox.wal_ingest_config();
    w.sandbox.start_wal_ingest(ingest).await.expect("wal-ingest streams its slot");
    let notifier = w.spawn().await;

    let p = w.new_proposal("Through the WAL", None).await;
    proposals_api::store::proposals::transition(&w.db.pool, w.agency, p, ProposalStatus::Sent, None).await.unwrap();
    folio_testkit::eventually("the client's email and the webhook", || async {
        (w.smtp.to(&w.client_email).len() == 1 && w.receiver.accepted("/e2e").await.len() == 1).then_some(())
    })
    .await;
    w.settled().await;

    let hook = w.receiver.accepted("/e2e").await.remove(0);
    let payload = hook.payload.unwrap();
    assert_eq!(payload["type"], "proposal.sent");
    assert_eq!(payload["data"]["id"], p.to_string());
    assert_eq!(payload["data"]["previous_status"], "draft");
    // The event id is wal-ingest's Nats-Msg-Id: `<commit LSN as 16 hex digits>:<position>`.
    let event_id = payload["data"]["event_id"].as_str().unwrap();
    let (lsn, position) = event_id.split_once(':').unwrap();
    assert!(lsn.len() == 16 && lsn.chars().all(|c| c.is_ascii_hexdigit()), "{event_id}");
    assert!(position.chars().all(|c| c.is_ascii_digit() || c == '.'), "{event_id}");
    let mail = w.smtp.to(&w.client_email).remove(0);
    assert_eq!(mail.event(), "proposal.sent");
    assert!(mail.text().contains(&format!("/p/{p}")));

    notifier.stop().await;
    // Stops wal-ingest, drops its slot and the streams.
    w.sandbox.stop().await;
}

//! The whole path: a proposal committed in Postgres → wal-ingest (logical replication) →
//! JetStream → notifier → SMTP and a verified webhook.

use std::time::Duration;

use folio_domain::ProposalStatus;
use serde_json::json;

use crate::helpers::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transition_flows_through_wal_ingest_to_email_and_webhook() {
    let w = World::new().await.unwrap();
    // wal-ingest declares its own stream (same name and subjects as the world's).
    w.js.delete_stream(&w.stream).await.unwrap();
    w.add_endpoint("/e2e", &["proposal.sent"], json!({})).await;
    let slot = format!("notifier_e2e_{}", folio_testkit::unique_suffix());
    let prefix = w.stream.trim_end_matches("_CHANGES").to_owned();
    let mut ingest_config =
        wal_ingest::Config::for_names(&w.db.url, &folio_testkit::nats_url(), &slot, &w.root, &prefix);
    ingest_config.common.admin_addr = "127.0.0.1:0".parse().unwrap();
    ingest_config.retry_backoff = Duration::from_millis(200);
    ingest_config.standby_poll = Duration::from_millis(200);
    let ingest = wal_ingest::InProcess::spawn(ingest_config);
    ingest.streaming(Duration::from_secs(30)).await.expect("wal-ingest streams its slot");
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
    let _ = ingest.stop().await;
    for _ in 0..50 {
        let _ = sqlx::query(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
        )
        .bind(&slot)
        .execute(&w.db.pool)
        .await;
        if sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot)
            .execute(&w.db.pool)
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.cleanup().await;
    let _ = w.js.delete_stream(format!("{prefix}_JOBS")).await;
}

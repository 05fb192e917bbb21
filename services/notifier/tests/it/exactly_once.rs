//! Exactly one email or webhook per (event, channel, recipient): when JetStream redelivers an
//! event, when two replicas share the work, and when a notifier is killed mid-delivery.

use std::{collections::HashSet, time::Duration};

use folio_domain::ProposalStatus;
use folio_proto::events::v1::Operation;
use serde_json::json;

use crate::helpers::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_twice_by_jetstream_is_notified_once() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/once", &[], json!({})).await;
    let notifier = w.spawn().await;
    let p = w.new_proposal("Twice", None).await;
    let old = w.row(p).await;
    proposals_api::store::proposals::transition(&w.db.pool, w.agency, p, ProposalStatus::Sent, None).await.unwrap();
    let (msg_id, event) = w.event(Operation::Update, old, w.row(p).await);
    w.publish(&msg_id, &event).await;
    // Past the stream's duplicate window, the same event id is stored (and consumed) again,
    // as after a wal-ingest crash outside the window.
    tokio::time::sleep(Duration::from_millis(800)).await;
    w.publish(&msg_id, &event).await;
    let mut stream = w.js.get_stream(&w.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2, "both copies are in the stream");
    folio_testkit::eventually("the consumer acked both copies", || async {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            w.js.get_stream(&w.stream).await.ok()?.get_consumer(&w.consumer).await.ok()?;
        let info = consumer.info().await.ok()?;
        (info.ack_floor.stream_sequence == 2).then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.smtp.to(&w.client_email).len(), 1);
    assert_eq!(w.receiver.accepted("/once").await.len(), 1);
    let rows = w.deliveries("proposal.sent").await;
    assert_eq!(rows.len(), 2, "one email and one webhook");
    assert!(rows.iter().all(|d| d.event_id == msg_id), "keyed by the Nats-Msg-Id");
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_work_and_send_each_delivery_once() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/r1", &[], json!({})).await;
    w.add_endpoint("/r2", &[], json!({})).await;
    let a = w.spawn().await;
    let b = w.spawn().await;
    const PROPOSALS: usize = 10;
    for i in 0..PROPOSALS {
        let p = w.created(&format!("Replica {i}"), None).await;
        w.transition(p, ProposalStatus::Sent).await;
    }
    folio_testkit::eventually("every delivery made", || async {
        let done = w.receiver.accepted("/r1").await.len() == 2 * PROPOSALS
            && w.receiver.accepted("/r2").await.len() == 2 * PROPOSALS
            && w.smtp.to(&w.client_email).len() == PROPOSALS;
        done.then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for path in ["/r1", "/r2"] {
        let hooks = w.receiver.at(path).await;
        assert_eq!(hooks.len(), 2 * PROPOSALS, "{path}: {hooks:#?}");
        let ids: HashSet<_> = hooks.iter().map(|h| h.webhook_id.clone()).collect();
        assert_eq!(ids.len(), 2 * PROPOSALS, "{path} got a repeat");
    }
    let mails = w.smtp.to(&w.client_email);
    assert_eq!(mails.len(), PROPOSALS);
    let ids: HashSet<_> = mails.iter().map(|m| m.header("message-id").map(str::to_owned)).collect();
    assert_eq!(ids.len(), PROPOSALS);
    a.stop().await;
    b.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_mid_delivery_and_restarted_sends_no_duplicate() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/fast-1", &[], json!({})).await;
    w.add_endpoint("/fast-2", &[], json!({})).await;
    // Holds the first request until the sender goes away.
    w.add_endpoint("/held", &[], json!({ "hold_first_s": 30 })).await;
    let mut first = w.spawn_process().unwrap();

    let p = w.new_proposal("Crash test", None).await;
    w.transition(p, ProposalStatus::Sent).await;
    folio_testkit::eventually("the quick deliveries done and the held one in flight", || async {
        let quick = w.receiver.accepted("/fast-1").await.len() == 1
            && w.receiver.accepted("/fast-2").await.len() == 1
            && w.smtp.to(&w.client_email).len() == 1;
        let held = w.receiver.at("/held").await.iter().any(|h| h.outcome == "holding");
        (quick && held).then_some(())
    })
    .await;
    // Wait until the quick ones are recorded, so the kill lands only on the held attempt.
    let pool = w.db.pool.clone();
    folio_testkit::eventually("three deliveries recorded", || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_deliveries WHERE status = 'delivered'")
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == 3).then_some(())
        }
    })
    .await;

    first.kill().await.unwrap();
    folio_testkit::eventually("the receiver sees the sender gone", || async {
        w.receiver.at("/held").await.iter().any(|h| h.outcome == "abandoned").then_some(())
    })
    .await;
    // An event arrives while no notifier runs.
    w.transition(p, ProposalStatus::Viewed).await;

    let mut second = w.spawn_process().unwrap();
    folio_testkit::eventually("the held delivery is made after the restart", || async {
        (w.receiver.accepted("/held").await.len() == 1 && w.smtp.to(&w.owner.email).len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    for path in ["/fast-1", "/fast-2", "/held"] {
        let accepted = w.receiver.accepted(path).await;
        let viewed = accepted.iter().filter(|h| h.event_type() == "proposal.viewed").count();
        let sent = accepted.iter().filter(|h| h.event_type() == "proposal.sent").count();
        assert_eq!((sent, viewed), (1, 1), "{path}: {accepted:#?}");
    }
    assert_eq!(w.smtp.to(&w.client_email).len(), 1, "the client's email was not sent again");
    assert_eq!(w.smtp.to(&w.owner.email).len(), 1);
    let rows = w.deliveries("proposal.sent").await;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|d| d.status == "delivered"), "{rows:#?}");
    second.kill().await.unwrap();
    w.cleanup().await;
}

//! One active ingester per slot: a second one waits as a standby and takes over when the first
//! dies, ending the walsender the dead one left behind.

use std::time::Duration;

use crate::helpers::{Harness, assert_commit_order, with_harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_active_ingester_dies() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let active = h.spawn().await;
        h.wait_for_slot().await;
        let standby = h.spawn().await;
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'one')")
            .bind(uuid::Uuid::new_v4())
            .execute(pool)
            .await
            .unwrap();
        h.read_at_least(&h.changes_stream(), 1).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(active.readiness.is_ready());
        assert!(!standby.readiness.is_ready(), "the standby must not stream while the slot is held");

        // Death, not a graceful stop: the task is dropped mid-flight.
        active.task.abort();
        let _ = active.task.await;
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'two')")
            .bind(uuid::Uuid::new_v4())
            .execute(pool)
            .await
            .unwrap();
        folio_testkit::eventually("the standby takes over", || async { standby.readiness.is_ready().then_some(()) })
            .await;
        let messages = h.read_at_least(&h.changes_stream(), 2).await;
        assert_eq!(messages.len(), 2);
        assert_commit_order(&messages);
        standby.stop().await.expect("ingester stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_walsender_holding_the_slot_is_ended_on_start() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&h.slot)
            .execute(pool)
            .await
            .unwrap();
        // A consumer that holds the slot without the ingesters' lock (a hung predecessor).
        let mut squatter = tokio::process::Command::new("pg_recvlogical")
            .args(["-d", &h.db.url, "-S", &h.slot, "--start", "--no-loop", "-f", "/dev/null"])
            .args(["-o", "proto_version=1", "-o", "publication_names=folio_changes"])
            .kill_on_drop(true)
            .spawn()
            .expect("pg_recvlogical");
        h.wait_for_slot().await;
        let ingester = h.spawn().await;
        folio_testkit::eventually("the ingester takes the slot", || async {
            ingester.readiness.is_ready().then_some(())
        })
        .await;
        let status =
            tokio::time::timeout(Duration::from_secs(10), squatter.wait()).await.expect("squatter ended").unwrap();
        assert!(!status.success(), "pg_recvlogical was terminated: {status}");
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'after takeover')")
            .bind(uuid::Uuid::new_v4())
            .execute(pool)
            .await
            .unwrap();
        let messages = h.read_at_least(&h.changes_stream(), 1).await;
        assert_eq!(messages.len(), 1);
        ingester.stop().await.expect("ingester stops");
    })
    .await;
}

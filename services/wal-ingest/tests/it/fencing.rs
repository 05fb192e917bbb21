//! The startup fence: after the duplicate window has passed, a replay of events the stream
//! already holds is skipped by comparing message ids with the stream's last one, also when the
//! stream ends between two transaction-end markers.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use folio_bus::Part;
use wal_ingest::publish::{StreamSettings, declare_streams};

use crate::helpers::{Harness, assert_commit_order, with_harness};

#[tokio::test]
async fn a_replay_after_the_duplicate_window_is_fenced_off() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        // A second slot created before any write: it will replay everything the first one
        // already published, long after JetStream forgot the ids.
        let replay_slot = format!("{}_replay", h.slot);
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&replay_slot)
            .execute(pool)
            .await
            .unwrap();
        let result = tokio::spawn({
            let h = h.clone();
            let replay_slot = replay_slot.clone();
            async move {
                let pool = &h.db.pool;
                let mut config = h.config();
                config.duplicate_window = Duration::from_secs(1);
                let first = h.spawn_with(config.clone()).await;
                h.wait_for_slot().await;
                for i in 0..3 {
                    sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, $2)")
                        .bind(uuid::Uuid::new_v4())
                        .bind(format!("a{i}"))
                        .execute(pool)
                        .await
                        .unwrap();
                }
                let before = h.read_at_least(&h.changes_stream(), 3).await;
                first.stop().await.expect("ingester stops");
                tokio::time::sleep(Duration::from_millis(2500)).await;

                config.slot = replay_slot;
                let second = h.spawn_with(config).await;
                folio_testkit::eventually("the replaying ingester is streaming", || async {
                    second.readiness.is_ready().then_some(())
                })
                .await;
                sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'after')")
                    .bind(uuid::Uuid::new_v4())
                    .execute(pool)
                    .await
                    .unwrap();
                let after = h.read_at_least(&h.changes_stream(), 4).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert_eq!(h.stream_len(&h.changes_stream()).await, 4, "the replay added nothing");
                assert_commit_order(&after);
                assert_eq!(
                    after[..3].iter().map(|m| &m.msg_id).collect::<Vec<_>>(),
                    before.iter().map(|m| &m.msg_id).collect::<Vec<_>>()
                );
                second.stop().await.expect("ingester stops");
            }
        })
        .await;
        folio_testkit::sandbox::drop_slot(pool, &replay_slot).await;
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}

/// A crash between two transaction-end markers: the stream ends at the first one. The replay
/// (long after the duplicate window) must add exactly the second, chained onto the first.
#[tokio::test]
async fn a_stream_cut_between_two_markers_gets_only_the_missing_one() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let replay_slot = format!("{}_replay", h.slot);
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&replay_slot)
            .execute(pool)
            .await
            .unwrap();
        let result = tokio::spawn({
            let h = h.clone();
            let replay_slot = replay_slot.clone();
            async move {
                let pool = &h.db.pool;
                let mut config = h.config();
                config.duplicate_window = Duration::from_secs(1);
                let first = h.spawn_with(config.clone()).await;
                h.wait_for_slot().await;
                let agency = uuid::Uuid::new_v4();
                let mut tx = pool.begin().await.unwrap();
                sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')")
                    .bind(agency)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, 'Bo', 'b@example.com')")
                    .bind(uuid::Uuid::new_v4())
                    .bind(agency)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                let whole = h.read_at_least(&h.changes_stream(), 4).await;
                first.stop().await.expect("ingester stops");
                let parts: Vec<Part> = whole.iter().map(|m| m.key.part).collect();
                assert_eq!(parts, [Part::Change(0), Part::Change(0), Part::End(0), Part::End(1)]);

                // The same stream as if the ingester had died after the first marker.
                h.js.delete_stream(h.changes_stream()).await.unwrap();
                let streams = StreamSettings {
                    changes_stream: config.bus.changes_stream.clone(),
                    jobs_stream: config.bus.jobs_stream.clone(),
                    replicas: 1,
                    duplicate_window: config.duplicate_window,
                    changes_max_age: config.changes_max_age,
                    changes_max_bytes: config.changes_max_bytes,
                    jobs_max_messages: config.jobs_max_messages,
                };
                declare_streams(&h.js, &h.subjects(), &streams).await.unwrap();
                for m in &whole[..3] {
                    let publish = PublishMessage::build().payload(m.payload.clone()).headers(m.headers.clone());
                    h.js.send_publish(m.subject.clone(), publish).await.unwrap().await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(2500)).await;

                config.slot = replay_slot;
                let second = h.spawn_with(config).await;
                let after = h.read_at_least(&h.changes_stream(), 4).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                assert_eq!(h.stream_len(&h.changes_stream()).await, 4, "nothing but the missing marker");
                assert_commit_order(&after);
                for (replayed, original) in after.iter().zip(&whole) {
                    assert_eq!((&replayed.msg_id, &replayed.payload), (&original.msg_id, &original.payload));
                }
                assert_eq!(
                    after[3].headers.get(folio_bus::headers::EXPECTED_LAST_MSG_ID).map(|v| v.as_str()),
                    Some(whole[2].msg_id.as_str())
                );
                second.stop().await.expect("ingester stops");
            }
        })
        .await;
        folio_testkit::sandbox::drop_slot(pool, &replay_slot).await;
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}

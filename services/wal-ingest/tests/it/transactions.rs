//! A transaction mixing two tables and jobs arrives in commit order, with positions, the
//! last-in-transaction flag per stream (on the changes stream: the last transaction-end
//! marker) and one commit LSN across both streams.

use folio_bus::Part;
use folio_proto::events::v1::Operation;

use crate::helpers::{Harness, assert_commit_order, text, with_harness};

#[tokio::test]
async fn rows_of_two_tables_and_jobs_arrive_in_commit_order_with_positions() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let ingester = h.spawn().await;
        h.wait_for_slot().await;
        let agency = uuid::Uuid::new_v4();
        let client = uuid::Uuid::new_v4();

        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')")
            .bind(agency)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, 'Bo', 'bo@example.com')")
            .bind(client)
            .bind(agency)
            .execute(&mut *tx)
            .await
            .unwrap();
        folio_db::emit_job(&mut tx, "pdf", b"render-1").await.unwrap();
        sqlx::query("UPDATE agencies SET name = 'Acme Ltd' WHERE id = $1")
            .bind(agency)
            .execute(&mut *tx)
            .await
            .unwrap();
        // Not a job prefix: takes a position, is not published.
        sqlx::query("SELECT pg_logical_emit_message(true, 'other.prefix', 'x')").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = pool.begin().await.unwrap();
        folio_db::emit_job(&mut tx, "pdf", b"render-2").await.unwrap();
        folio_db::emit_job(&mut tx, "notify.email", b"mail-1").await.unwrap();
        sqlx::query("UPDATE clients SET name = 'Bob' WHERE id = $1").bind(client).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();

        // Rolled back: nothing of it may appear.
        let mut tx = pool.begin().await.unwrap();
        folio_db::emit_job(&mut tx, "pdf", b"never").await.unwrap();
        sqlx::query("UPDATE clients SET name = 'Nope' WHERE id = $1").bind(client).execute(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();

        // A non-transactional message is not a job either.
        sqlx::query("SELECT pg_logical_emit_message(false, $1, 'loose')")
            .bind(folio_bus::subjects::job_message_prefix("pdf"))
            .execute(pool)
            .await
            .unwrap();

        let changes = h.read_at_least(&h.changes_stream(), 6).await;
        let jobs = h.read_at_least(&h.jobs_stream(), 3).await;
        assert_commit_order(&changes);
        assert_commit_order(&jobs);
        assert_eq!(changes.len(), 6);
        assert_eq!(jobs.len(), 3);

        let t1 = changes[0].key.commit_lsn;
        let described: Vec<(String, String, u32, bool)> = changes
            .iter()
            .map(|m| {
                let e = m.event();
                (e.table.clone(), m.subject.rsplit('.').next().unwrap().to_owned(), e.position, e.last_in_transaction)
            })
            .collect();
        let a = agency.to_string();
        assert_eq!(
            described,
            vec![
                ("agencies".into(), a.clone(), 0, false),
                ("clients".into(), a.clone(), 1, false),
                ("agencies".into(), a.clone(), 3, false),
                // Two tables: each gets a marker after the transaction's last change.
                ("agencies".into(), "_txn".into(), 5, false),
                ("clients".into(), "_txn".into(), 5, true),
                // One table: its last event is flagged, no marker.
                ("clients".into(), a.clone(), 2, true),
            ]
        );
        for m in &changes[1..5] {
            assert_eq!(m.key.commit_lsn, t1);
        }
        let t2 = changes[5].key.commit_lsn;
        assert!(t2 > t1);
        assert_eq!(changes[2].event().operation, Operation::Update as i32);
        assert_eq!(text(&changes[2].event().old_row, "name"), Some("Acme"));
        assert_eq!(changes[3].event().operation, Operation::TransactionEnd as i32);
        assert_eq!(text(&changes[5].event().new_row, "name"), Some("Bob"));
        assert_eq!(changes[0].event().commit_end_lsn, 0, "known only at the commit");
        assert_eq!(changes[2].event().commit_end_lsn, 0, "not the last event of the transaction");
        assert!(changes[4].event().commit_end_lsn > t1.0);

        let jobs_seen: Vec<(String, Vec<u8>, u64, u32, bool)> = jobs
            .iter()
            .map(|m| {
                (
                    m.subject.clone(),
                    m.payload.to_vec(),
                    m.key.commit_lsn.0,
                    m.key.position,
                    m.headers.get(folio_bus::headers::LAST_IN_TRANSACTION).is_some(),
                )
            })
            .collect();
        assert_eq!(
            jobs_seen,
            vec![
                (h.subjects().jobs("pdf"), b"render-1".to_vec(), t1.0, 2, true),
                (h.subjects().jobs("pdf"), b"render-2".to_vec(), t2.0, 0, false),
                (h.subjects().jobs("notify.email"), b"mail-1".to_vec(), t2.0, 1, true),
            ]
        );
        let parts: Vec<Part> = changes.iter().chain(&jobs).map(|m| m.key.part).collect();
        let c = Part::Change(0);
        assert_eq!(parts, [c, c, c, Part::End(0), Part::End(1), c, c, c, c]);
        for m in changes.iter().chain(&jobs) {
            assert_eq!(
                m.headers.get(folio_bus::headers::COMMIT_LSN).map(|v| v.as_str().to_owned()),
                Some(m.key.commit_lsn.to_string())
            );
        }

        // The slot confirms the commit's end LSN once everything is acked.
        let end = changes[5].event().commit_end_lsn;
        let slot = h.slot.clone();
        folio_testkit::eventually("the slot confirms the last commit", || {
            let pool = pool.clone();
            let slot = slot.clone();
            async move {
                let (lsn,): (String,) =
                    sqlx::query_as("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1")
                        .bind(&slot)
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                let lsn: folio_domain::Lsn = lsn.parse().ok()?;
                (lsn.0 >= end).then_some(())
            }
        })
        .await;
        assert!(ingester.readiness.is_ready());
        ingester.stop().await.expect("ingester stops");
    })
    .await;
}

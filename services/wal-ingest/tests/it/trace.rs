//! The trace record an API transaction writes first (`folio_db::emit_trace_context`) reaches
//! every event and job of that transaction as its `traceparent` header. This wal-ingest exports
//! no traces, so it passes the record through unchanged; the record takes no position and is
//! not published; a malformed record is not trusted into a header.

use crate::helpers::{Harness, with_harness};

#[tokio::test]
async fn a_transactions_trace_record_is_every_one_of_its_events_traceparent() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let ingester = h.spawn().await;
        h.wait_for_slot().await;
        let agency = uuid::Uuid::new_v4();
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

        let mut tx = pool.begin().await.unwrap();
        folio_db::emit_trace_context(&mut tx, traceparent).await.unwrap();
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')")
            .bind(agency)
            .execute(&mut *tx)
            .await
            .unwrap();
        folio_db::emit_job(&mut tx, "pdf", b"render-1").await.unwrap();
        tx.commit().await.unwrap();

        // A record that is no traceparent (a header injection attempt among them).
        let mut tx = pool.begin().await.unwrap();
        folio_db::emit_trace_context(&mut tx, "00-x\r\nNats-Msg-Id: forged").await.unwrap();
        sqlx::query("UPDATE agencies SET name = 'Acme Ltd' WHERE id = $1")
            .bind(agency)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        // No record (a write from outside the API): no header.
        sqlx::query("UPDATE agencies SET name = 'Acme Inc' WHERE id = $1").bind(agency).execute(pool).await.unwrap();

        let changes = h.read_at_least(&h.changes_stream(), 3).await;
        let jobs = h.read_at_least(&h.jobs_stream(), 1).await;
        let seen = |m: &crate::helpers::Stored| {
            (m.key.position, m.headers.get(folio_bus::headers::TRACEPARENT).map(|v| v.as_str().to_owned()))
        };
        assert_eq!(
            changes.iter().map(seen).collect::<Vec<_>>(),
            [(0, Some(traceparent.to_owned())), (0, None), (0, None)],
            "the record takes no position; only a well-formed one becomes the header"
        );
        assert_eq!(jobs.iter().map(seen).collect::<Vec<_>>(), [(1, Some(traceparent.to_owned()))]);
        assert_eq!(changes[1].msg_id, changes[1].key.to_string(), "the message id is wal-ingest's own");
        ingester.stop().await.unwrap();
    })
    .await;
}

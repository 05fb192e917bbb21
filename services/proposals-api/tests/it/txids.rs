//! A write's `txid` (`store::commit`) names its transaction only when the transaction changed
//! rows: the trace record every traced write starts with (`store::begin`) gives a transaction
//! an id on its own, and a client would wait forever for an id no shape stream ever shows.

use proposals_api::store;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn a_transaction_with_only_its_trace_record_reports_txid_0_and_a_write_its_own_id() {
    let db = folio_testkit::TestDb::new().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    folio_db::emit_trace_context(&mut tx, TRACEPARENT).await.unwrap();
    let nothing = store::commit(tx, ()).await.unwrap();
    assert_eq!(nothing.txid, store::Txid(0));

    let mut tx = db.pool.begin().await.unwrap();
    folio_db::emit_trace_context(&mut tx, TRACEPARENT).await.unwrap();
    let agency: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO agencies (id, name) VALUES (gen_random_uuid(), 'Acme') RETURNING id")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let wrote = store::commit(tx, ()).await.unwrap();
    let xmin: String = sqlx::query_scalar("SELECT xmin::text FROM agencies WHERE id = $1")
        .bind(agency)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(wrote.txid, store::Txid(xmin.parse().unwrap()), "the id of the transaction that wrote the row");
}

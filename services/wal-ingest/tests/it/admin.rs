//! The admin server: readiness while streaming, and the metrics the issue asks for.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Harness, with_harness};

async fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await.ok()?;
    Some(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_metrics_are_served() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut config = h.config();
        config.common.admin_addr = addr;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(wal_ingest::run(config, shutdown.clone()));
        h.wait_for_slot().await;
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')")
            .bind(uuid::Uuid::new_v4())
            .execute(&h.db.pool)
            .await
            .unwrap();
        h.read_at_least(&h.changes_stream(), 1).await;
        let ready = get(addr, "/readyz").await.unwrap();
        assert!(ready.starts_with("HTTP/1.0 200") || ready.starts_with("HTTP/1.1 200"), "{ready}");
        let metrics = folio_testkit::eventually("metrics are exported", || async {
            let body = get(addr, "/metrics").await?;
            body.contains("folio_wal_ingest_events_total").then_some(body)
        })
        .await;
        for name in [
            "folio_wal_ingest_events_total",
            "folio_wal_ingest_transactions_total",
            "folio_wal_ingest_publish_latency_seconds",
            "folio_wal_ingest_slot_lag_bytes",
            "folio_wal_ingest_confirmed_lsn",
        ] {
            assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap().unwrap();
    })
    .await;
}

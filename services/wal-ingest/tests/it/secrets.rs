//! A webhook endpoint's signing secrets never reach the change stream other services read.

use crate::helpers::{Harness, text, with_harness};

#[tokio::test]
async fn a_webhook_endpoints_signing_secrets_never_reach_the_change_stream() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        let pool = &h.db.pool;
        let _ingester = h.spawn().await;
        h.wait_for_slot().await;
        let (agency, endpoint) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Acme')").bind(agency).execute(pool).await.unwrap();
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, agency_id, url, secret) \
             VALUES ($1, $2, 'https://hooks.example.com/a', 'whsec_first-secret-value')",
        )
        .bind(endpoint)
        .bind(agency)
        .execute(pool)
        .await
        .unwrap();
        // A rotation keeps the old secret for a grace period.
        sqlx::query(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = 'whsec_second-secret-value', \
             url = 'https://hooks.example.com/b' WHERE id = $1",
        )
        .bind(endpoint)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(endpoint).execute(pool).await.unwrap();

        let changes = h.read_at_least(&h.changes_stream(), 4).await;
        let endpoint_events: Vec<_> =
            changes.iter().map(|m| m.event()).filter(|e| e.table == "webhook_endpoints").collect();
        assert_eq!(endpoint_events.len(), 3, "insert, update and delete are published");
        assert_eq!(text(&endpoint_events[1].new_row, "url"), Some("https://hooks.example.com/b"));
        assert_eq!(text(&endpoint_events[2].old_row, "id"), Some(endpoint.to_string().as_str()));
        for e in &endpoint_events {
            for column in e.new_row.iter().chain(&e.old_row) {
                assert!(!column.name.contains("secret"), "{} published in {e:?}", column.name);
            }
        }
        for m in &changes {
            let raw = String::from_utf8_lossy(&m.payload);
            assert!(!raw.contains("secret-value"), "a secret in {}: {raw}", m.subject);
        }
    })
    .await;
}

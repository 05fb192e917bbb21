//! SSRF refusal of private addresses (literal and resolved), and secret rotation.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{World, attempts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_address_urls_are_refused_including_names_resolving_to_loopback() {
    let w = World::new().await.unwrap();
    // The receiver listens on loopback; without the allow-list nothing may reach it.
    w.receiver.configure("/ssrf", json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" })).await;
    let port = w.receiver.base.rsplit(':').next().unwrap().to_owned();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let urls = [
        format!("http://127.0.0.1:{port}/ssrf"),
        format!("http://localhost:{port}/ssrf"),
        format!("http://[::1]:{port}/ssrf"),
        format!("http://[::ffff:127.0.0.1]:{port}/ssrf"),
        format!("http://0x7f000001:{port}/ssrf"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.1.2.3/hook".to_owned(),
        "http://[fd00::1]/hook".to_owned(),
    ];
    for url in &urls {
        w.insert_endpoint(url, &[], secret).await;
    }
    let mut config = w.config();
    config.webhook_allowed_subnets.clear();
    let notifier = w.spawn_with(config).await;
    w.created("Reach inside", None).await;
    let pool = w.db.pool.clone();
    folio_testkit::eventually("every delivery refused", || {
        let pool = pool.clone();
        async move {
            let failed: i64 =
                sqlx::query_scalar("SELECT count(*) FROM notification_deliveries WHERE status = 'failed'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (failed == 8).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.receiver.log().await.is_empty(), "nothing reached the receiver");
    let rows: Vec<(uuid::Uuid, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT d.id, e.url, d.attempts, d.last_error FROM notification_deliveries d \
           JOIN webhook_endpoints e ON e.id::text = d.recipient",
    )
    .fetch_all(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 8);
    for (id, url, attempts_made, error) in rows {
        let error = error.unwrap_or_default();
        assert!(error.starts_with("refused"), "{url}: {error}");
        // Refusals are permanent: one logged attempt, no retries.
        assert_eq!(attempts_made, 1, "{url}");
        let log = attempts(&w.db.pool, id).await;
        assert_eq!(log.len(), 1);
        assert!(!log[0].succeeded && log[0].response_code.is_none());
        if url.contains("localhost") {
            assert!(error.contains("resolves only to refused addresses") && error.contains("loopback"), "{error}");
        }
    }
    // A refused URL is no sign the endpoint is down: it is not put on the path to disabling.
    let failing: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE failing_since IS NOT NULL")
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(failing, 0);
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_keeps_the_old_one_valid_during_its_grace_period() {
    let w = World::new().await.unwrap();
    let old = notifier::webhook::sign::Secret::generate();
    let new = notifier::webhook::sign::Secret::generate();
    // Consumers still holding the old secret, and one already on the new secret.
    w.receiver.configure("/old", json!({ "secret": old })).await;
    w.receiver.configure("/new", json!({ "secret": new })).await;
    w.receiver.configure("/expired", json!({ "secret": old })).await;
    for (path, grace) in [("/old", "1 hour"), ("/new", "1 hour"), ("/expired", "-1 second")] {
        let id = w.insert_endpoint(&format!("{}{path}", w.receiver.base), &[], &new).await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_endpoints SET previous_secret = $2, previous_secret_expires_at = now() + interval '{grace}' WHERE id = $1"
        )))
        .bind(id)
        .bind(&old)
        .execute(&w.db.pool)
        .await
        .unwrap();
    }
    let notifier = w.spawn().await;
    w.created("Rotate", None).await;
    folio_testkit::eventually("both verify", || async {
        (w.receiver.accepted("/old").await.len() == 1 && w.receiver.accepted("/new").await.len() == 1).then_some(())
    })
    .await;
    let rejected = folio_testkit::eventually("the expired secret no longer verifies", || async {
        w.receiver.at("/expired").await.into_iter().find(|h| h.outcome == "rejected")
    })
    .await;
    assert_eq!(rejected.status, Some(400));
    assert!(rejected.error.as_deref().unwrap().contains("No matching signature"), "{rejected:?}");
    assert!(w.receiver.accepted("/expired").await.is_empty());
    notifier.stop().await;
    w.cleanup().await;
}

//! Durable retries: the attempt log, the schedule, Retry-After, SMTP temporary failures,
//! giving up, a manual retry through the API, and disabling an endpoint that keeps failing.

use std::time::Duration;

use folio_domain::ProposalStatus;
use proposals_api::Role;
use serde_json::json;

use crate::helpers::{SmtpSink, World, attempts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_three_times_then_succeeding_gets_the_event_once_with_attempts_logged() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/flaky", &[], json!({ "fail_first": 3, "fail_status": 503 })).await;
    let notifier = w.spawn().await;
    w.created("Retry me", None).await;

    folio_testkit::eventually("the fourth attempt is accepted", || async {
        (!w.receiver.accepted("/flaky").await.is_empty()).then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seen = w.receiver.at("/flaky").await;
    let outcomes: Vec<&str> = seen.iter().map(|h| h.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["failed", "failed", "failed", "accepted"], "{seen:#?}");
    // One message, retried: the same webhook-id every time, so a consumer could dedupe.
    assert!(seen.iter().all(|h| h.webhook_id == seen[0].webhook_id));
    assert_eq!(
        seen.iter().map(|h| (h.n, h.status)).collect::<Vec<_>>(),
        vec![(1, Some(503)), (2, Some(503)), (3, Some(503)), (4, Some(200))]
    );

    let deliveries = w.deliveries("proposal.created").await;
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert_eq!((d.status.as_str(), d.attempts), ("delivered", 4));
    assert_eq!(seen[0].webhook_id.as_deref(), Some(format!("msg_{}", d.id.simple()).as_str()));
    let log = attempts(&w.db.pool, d.id).await;
    assert_eq!(log.len(), 4);
    for a in &log[..3] {
        assert!(!a.succeeded);
        assert_eq!(a.response_code, Some(503));
        assert!(a.response_body.as_deref().unwrap().contains("failing on purpose"), "{a:?}");
        assert!(a.error.is_some() && a.latency_ms.is_some());
    }
    assert!(log[3].succeeded);
    assert_eq!((log[3].response_code, log[3].response_body.as_deref()), (Some(200), Some("ok")));
    // Each retry waited its (jittered, 240-360 ms) delay, not a moment after the failure.
    for pair in log.windows(2) {
        let gap = pair[1].attempted_at - pair[0].attempted_at;
        assert!(gap >= time::Duration::milliseconds(200), "retried after only {gap}");
    }
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_longer_than_the_schedule_is_honoured() {
    let w = World::new().await.unwrap();
    // A 50 kB answer: only the first 20 kB is kept.
    w.add_endpoint(
        "/busy",
        &[],
        json!({ "fail_first": 1, "fail_status": 429, "retry_after": 2, "fail_body_size": 50_000 }),
    )
    .await;
    let notifier = w.spawn().await;
    w.created("Slow down", None).await;
    folio_testkit::eventually("accepted after Retry-After", || async {
        (!w.receiver.accepted("/busy").await.is_empty()).then_some(())
    })
    .await;
    w.settled().await;
    let d = &w.deliveries("proposal.created").await[0];
    let log = attempts(&w.db.pool, d.id).await;
    assert_eq!(log.iter().map(|a| a.response_code).collect::<Vec<_>>(), vec![Some(429), Some(200)]);
    let gap = log[1].attempted_at - log[0].attempted_at;
    assert!(gap >= time::Duration::milliseconds(1900), "Retry-After: 2 was not honoured ({gap})");
    let kept = log[0].response_body.as_deref().unwrap();
    assert_eq!(kept.len(), 20 * 1024);
    assert!(kept.starts_with("receiver failing on purpose"));
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_temporary_failure_is_retried_and_the_email_sent_once() {
    let w = World::with_smtp(SmtpSink::start(2).await.unwrap()).await.unwrap();
    let notifier = w.spawn().await;
    let p = w.created("Mail later", None).await;
    w.transition(p, ProposalStatus::Sent).await;
    folio_testkit::eventually("the client's email", || async { (w.smtp.to(&w.client_email).len() == 1).then_some(()) })
        .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.smtp.messages().len(), 1);
    let d = w.deliveries("proposal.sent").await.into_iter().find(|d| d.channel == "email").unwrap();
    assert_eq!((d.status.as_str(), d.attempts), ("delivered", 3));
    let log = attempts(&w.db.pool, d.id).await;
    assert_eq!(log.iter().map(|a| a.response_code).collect::<Vec<_>>(), vec![Some(451), Some(451), Some(250)]);
    assert!(log[0].error.as_deref().unwrap().contains("Temporary failure on purpose"), "{:?}", log[0]);
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_delivery_fails_and_a_manual_retry_through_the_api_delivers_it() {
    let w = World::new().await.unwrap();
    // Eight failures: the first attempt and all seven retries of the schedule.
    w.add_endpoint("/down", &[], json!({ "fail_first": 8 })).await;
    let notifier = w.spawn().await;
    w.created("Give up", None).await;
    let pool = w.db.pool.clone();
    folio_testkit::eventually("the delivery fails for good", || {
        let pool = pool.clone();
        async move {
            let status: String =
                sqlx::query_scalar("SELECT status FROM notification_deliveries WHERE event_type = 'proposal.created'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (status == "failed").then_some(())
        }
    })
    .await;
    let d = w.deliveries("proposal.created").await.remove(0);
    assert_eq!(d.attempts, 8);
    assert!(d.last_error.as_deref().unwrap().contains("500"), "{d:?}");
    assert_eq!(w.receiver.at("/down").await.len(), 8);

    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/deliveries/{}/retry", notifier.http, d.id);
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(http.post(&url).send().await.unwrap()), 401);
    assert_eq!(status(http.post(&url).bearer_auth(w.token(&w.viewer, Role::Viewer)).send().await.unwrap()), 403);
    let stranger = proposals_api::Authenticator::new(crate::helpers::JWT_SECRET.as_bytes()).issue(
        &proposals_api::Caller { user_id: w.owner.id, agency_id: folio_domain::AgencyId::new(), role: Role::Admin },
        Duration::from_secs(60),
    );
    assert_eq!(status(http.post(&url).bearer_auth(stranger).send().await.unwrap()), 404, "other agencies see nothing");
    let response = http.post(&url).bearer_auth(w.token(&w.owner, Role::Admin)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);

    folio_testkit::eventually("the manual retry is accepted", || async {
        (w.receiver.accepted("/down").await.len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    let d = w.deliveries("proposal.created").await.remove(0);
    assert_eq!((d.status.as_str(), d.attempts), ("delivered", 9));
    // The API shows the whole attempt log.
    let view: serde_json::Value = http
        .get(format!("http://{}/v1/deliveries/{}", notifier.http, d.id))
        .bearer_auth(w.token(&w.viewer, Role::Viewer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "delivered");
    assert_eq!(view["attempt_log"].as_array().unwrap().len(), 9);
    // Only failed deliveries are retried by hand.
    let again = http.post(&url).bearer_auth(w.token(&w.owner, Role::Admin)).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 412);
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_five_days_is_disabled_and_the_agency_told() {
    let w = World::new().await.unwrap();
    let endpoint = w.add_endpoint("/dead", &[], json!({ "fail_first": 1000 })).await;
    // The streak began six days ago; the next failure crosses the five-day line.
    sqlx::query("UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = $1")
        .bind(endpoint)
        .execute(&w.db.pool)
        .await
        .unwrap();
    let notifier = w.spawn().await;
    let p = w.created("Nobody listens", None).await;
    folio_testkit::eventually("the admin hears of the disabled endpoint", || async {
        w.smtp.to(&w.owner.email).into_iter().find(|m| m.event() == "endpoint.disabled")
    })
    .await;
    w.settled().await;
    let disabled: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT disabled_at FROM webhook_endpoints WHERE id = $1")
            .bind(endpoint)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert!(disabled.is_some());
    // The rest of its retries stop; new events are no longer sent to it.
    let d = w.deliveries("proposal.created").await.remove(0);
    assert_eq!(d.status, "failed");
    assert_eq!(d.attempts, 1);
    w.transition(p, ProposalStatus::Sent).await;
    folio_testkit::eventually("the send is handled", || async {
        (w.smtp.to(&w.client_email).len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    // A disabled endpoint is sent nothing: its messages are recorded as failed without an
    // attempt, so that recovering it once re-enabled delivers them (admin_api.rs).
    for d in w.deliveries("proposal.sent").await.iter().filter(|d| d.channel == "webhook") {
        assert_eq!((d.status.as_str(), d.attempts), ("failed", 0));
        assert_eq!(d.last_error.as_deref(), Some(notifier::fanout::DISABLED_WHEN_SENT));
    }
    // Only admins are told (the owner is the admin here), once.
    assert_eq!(w.smtp.to(&w.owner.email).len(), 1);
    assert!(w.smtp.to(&w.editor.email).is_empty());
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_reminder_that_comes_due_after_the_answer_is_skipped() {
    let w = World::new().await.unwrap();
    let notifier = w.spawn().await;
    // Valid for 20 more days: the reminder is due in 17 (3-day lead), not now.
    let valid_until = time::OffsetDateTime::now_utc().date() + time::Duration::days(20);
    let p = w.created("Long offer", Some(valid_until)).await;
    w.transition(p, ProposalStatus::Sent).await;
    folio_testkit::eventually("the client's email", || async { (w.smtp.to(&w.client_email).len() == 1).then_some(()) })
        .await;
    let reminder = w.deliveries("proposal.expiring").await;
    assert_eq!(reminder.len(), 1);
    assert_eq!(reminder[0].status, "pending");
    let due: time::OffsetDateTime =
        sqlx::query_scalar("SELECT next_attempt_at FROM notification_deliveries WHERE id = $1")
            .bind(reminder[0].id)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    let expected = valid_until.next_day().unwrap().midnight().assume_utc() - time::Duration::days(3);
    assert_eq!(due, expected, "reminded three days before the end of valid_until (UTC)");

    // The client accepts; then the reminder's time comes (moved forward here, not waited for).
    w.transition(p, ProposalStatus::Accepted).await;
    folio_testkit::eventually("the acceptance email", || async {
        (w.smtp.to(&w.owner.email).len() == 1).then_some(())
    })
    .await;
    sqlx::query("UPDATE notification_deliveries SET next_attempt_at = now() WHERE id = $1")
        .bind(reminder[0].id)
        .execute(&w.db.pool)
        .await
        .unwrap();
    w.settled().await;
    let reminder = w.deliveries("proposal.expiring").await.remove(0);
    assert_eq!((reminder.status.as_str(), reminder.attempts), ("skipped", 0));
    assert_eq!(reminder.last_error.as_deref(), Some("the proposal is accepted now"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.smtp.to(&w.owner.email).iter().all(|m| m.event() != "proposal.expiring"));
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_the_timeout_is_a_failed_attempt_and_retried() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/slow", &[], json!({ "hold_first_s": 5 })).await;
    let mut config = w.config();
    config.webhook_timeout = Duration::from_secs(1);
    let notifier = w.spawn_with(config).await;
    w.created("Too slow", None).await;
    folio_testkit::eventually("accepted on the second attempt", || async {
        (w.receiver.accepted("/slow").await.len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    let d = w.deliveries("proposal.created").await.remove(0);
    assert_eq!((d.status.as_str(), d.attempts), ("delivered", 2));
    let log = attempts(&w.db.pool, d.id).await;
    assert!(!log[0].succeeded && log[0].response_code.is_none());
    assert!(log[0].error.as_deref().unwrap().contains("timed out"), "{:?}", log[0]);
    assert!((900..3000).contains(&log[0].latency_ms.unwrap()), "{:?}", log[0]);
    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_scheduled_before_a_restart_is_made_after_it() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/later", &[], json!({ "fail_first": 1 })).await;
    let mut config = w.config();
    config.retry_schedule = vec![Duration::from_secs(2); 7];
    let first = w.spawn_with(config.clone()).await;
    w.created("Across restarts", None).await;
    let pool = w.db.pool.clone();
    folio_testkit::eventually("the first attempt failed and a retry is scheduled", || {
        let pool = pool.clone();
        async move {
            let (status, attempts): (String, i32) =
                sqlx::query_as("SELECT status, attempts FROM notification_deliveries").fetch_one(&pool).await.ok()?;
            (status == "pending" && attempts == 1).then_some(())
        }
    })
    .await;
    first.stop().await;
    let second = w.spawn_with(config).await;
    folio_testkit::eventually("the retry made by the new process", || async {
        (w.receiver.accepted("/later").await.len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    let d = w.deliveries("proposal.created").await.remove(0);
    assert_eq!((d.status.as_str(), d.attempts), ("delivered", 2));
    assert_eq!(w.receiver.at("/later").await.len(), 2);
    second.stop().await;
    w.cleanup().await;
}

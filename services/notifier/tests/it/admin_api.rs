//! Webhook administration end to end: endpoints created, rotated, tested, re-enabled,
//! recovered and replayed through the API's WebhookService (gRPC), delivered by the real
//! notifier to the receiver that verifies every signature with the `standardwebhooks` package.

use std::time::Duration;

use folio_proto::api::v1::{self as pb, webhook_service_client::WebhookServiceClient};
use folio_proto::tonic::{self, service::interceptor::InterceptedService, transport::Channel};
use folio_runtime::Spawned;
use proposals_api::Role;
use serde_json::json;

use crate::helpers::{JWT_SECRET, World};
use folio_testkit::Bearer;

type Webhooks = WebhookServiceClient<InterceptedService<Channel, Bearer>>;

/// The real API on the world's database, allowed to register the loopback receiver (as the
/// notifier is allowed to reach it), and a client holding the agency admin's token.
async fn api(w: &World) -> (Spawned<proposals_api::Error>, Webhooks) {
    let mut config = proposals_api::Config::new(&w.db.url, JWT_SECRET);
    config.listen_addr = ([127, 0, 0, 1], 0).into();
    config.common.admin_addr = ([127, 0, 0, 1], 0).into();
    config.migrate = false;
    config.webhook_allowed_subnets = vec!["127.0.0.0/8".parse().unwrap()];
    let bound = proposals_api::bind(config).await.expect("bind the API");
    let channel = Channel::from_shared(format!("http://{}", bound.addr())).unwrap().connect_lazy();
    let service = bound.spawn();
    let token = format!("Bearer {}", w.token(&w.owner, Role::Admin)).parse().unwrap();
    let client = WebhookServiceClient::with_interceptor(channel, Bearer(token));
    let mut probe = client.clone();
    folio_testkit::eventually("the API to serve", || {
        let mut probe = probe.clone();
        async move { probe.list_event_types(pb::ListEventTypesRequest {}).await.ok().map(drop) }
    })
    .await;
    probe.list_event_types(pb::ListEventTypesRequest {}).await.expect("serving");
    (service, client)
}

async fn create(api: &mut Webhooks, url: String) -> (String, String) {
    let created = api
        .create_webhook_endpoint(pb::CreateWebhookEndpointRequest { url, ..Default::default() })
        .await
        .expect("create endpoint")
        .into_inner();
    (created.endpoint.unwrap().id, created.secret)
}

async fn rotate(api: &mut Webhooks, id: &str, grace: Duration) -> (String, time::OffsetDateTime) {
    let rotated = api
        .rotate_webhook_secret(pb::RotateWebhookSecretRequest {
            id: id.to_owned(),
            grace_period: Some(prost_types::Duration::try_from(grace).unwrap()),
        })
        .await
        .expect("rotate")
        .into_inner();
    let until = rotated.endpoint.unwrap().previous_secret_expires_at.unwrap();
    // With its nanoseconds: cut to the second, "after the grace period" could still be inside it.
    let nanos = i128::from(until.seconds) * 1_000_000_000 + i128::from(until.nanos);
    (rotated.secret, time::OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_verifies_with_either_secret_during_the_grace_period_and_only_the_new_one_after() {
    let w = World::new().await.unwrap();
    let (api_task, mut api) = api(&w).await;
    let notifier = w.spawn().await;
    let base = w.receiver.base.clone();
    // Two endpoints, both rotated: one receiver keeps the old secret, the other switched.
    let (old_side, old_secret) = create(&mut api, format!("{base}/holds-old")).await;
    let (new_side, _) = create(&mut api, format!("{base}/holds-new")).await;
    w.receiver.configure("/holds-old", json!({ "secret": old_secret })).await;

    // A test event first: delivered and verified like any other.
    let test = api.send_test_event(pb::SendTestEventRequest { id: old_side.clone() }).await.unwrap().into_inner();
    let test = test.delivery.unwrap();
    let got = folio_testkit::eventually("the test event", || async {
        w.receiver.accepted("/holds-old").await.into_iter().next()
    })
    .await;
    assert_eq!((got.event_type(), got.webhook_id.as_deref()), ("webhook.test", Some(test.webhook_id.as_str())));

    let grace = Duration::from_secs(8);
    let (old_side_new_secret, until) = rotate(&mut api, &old_side, grace).await;
    let (new_side_secret, _) = rotate(&mut api, &new_side, grace).await;
    w.receiver.configure("/holds-new", json!({ "secret": new_side_secret })).await;
    for title in ["During grace 1", "During grace 2"] {
        w.created(title, None).await;
    }
    folio_testkit::eventually("both receivers verify every delivery during the grace period", || async {
        let old = w.receiver.accepted("/holds-old").await.len();
        let new = w.receiver.accepted("/holds-new").await.len();
        (old == 3 && new == 2).then_some(())
    })
    .await;
    assert!(time::OffsetDateTime::now_utc() < until, "delivered within the grace period");
    assert!(w.receiver.log().await.iter().all(|h| h.outcome == "accepted"), "nothing rejected during the grace");

    // After the grace period only the new secret signs.
    let wait = until - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    w.created("After grace", None).await;
    let rejected = folio_testkit::eventually("the old secret no longer verifies", || async {
        w.receiver.at("/holds-old").await.into_iter().find(|h| h.outcome == "rejected")
    })
    .await;
    assert!(rejected.error.as_deref().unwrap_or_default().contains("No matching signature"), "{rejected:?}");
    folio_testkit::eventually("the new secret verifies", || async {
        (w.receiver.accepted("/holds-new").await.len() == 3).then_some(())
    })
    .await;
    w.settled().await;

    // The receiver that kept the old secret switches; the failed message is replayed to it
    // with its original webhook-id, and the attempt log shows every refusal.
    w.receiver.configure("/holds-old", json!({ "secret": old_side_new_secret })).await;
    let attempts = api
        .list_endpoint_attempts(pb::ListEndpointAttemptsRequest { id: old_side.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .attempts;
    let refused: Vec<_> = attempts.iter().filter(|a| !a.succeeded).collect();
    assert!(!refused.is_empty() && refused.iter().all(|a| a.response_code == 400 && a.duration_ms >= 0));
    assert!(refused.iter().all(|a| a.delivery_status() == pb::DeliveryStatus::Failed));
    let failed = refused[0].delivery_id.clone();
    let log = api
        .list_delivery_attempts(pb::ListDeliveryAttemptsRequest { delivery_id: failed.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.attempts.len(), 8, "the first attempt and seven retries: {:?}", log.attempts);
    let webhook_id = log.delivery.unwrap().webhook_id;
    api.replay_delivery(pb::ReplayDeliveryRequest { delivery_id: failed }).await.unwrap();
    let replayed = folio_testkit::eventually("the replay", || async {
        w.receiver.accepted("/holds-old").await.into_iter().find(|h| h.webhook_id.as_deref() == Some(&webhook_id))
    })
    .await;
    assert_eq!(replayed.event_type(), "proposal.created");
    notifier.stop().await;
    api_task.stop().await.unwrap();
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_an_outage_delivers_every_missed_message_once_in_order_with_its_original_id() {
    let w = World::new().await.unwrap();
    let (api_task, mut api) = api(&w).await;
    let mut config = w.config();
    // Disabled after failing for a second (five days in production).
    config.endpoint_disable_after = Duration::from_secs(1);
    let notifier = w.spawn_with(config).await;
    let (endpoint, secret) = create(&mut api, format!("{}/crm", w.receiver.base)).await;
    // The receiver is down: it answers 503 to everything.
    w.receiver.configure("/crm", json!({ "secret": secret, "fail_first": 1_000_000, "fail_status": 503 })).await;
    let outage_start = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);

    for i in 1..=3 {
        w.created(&format!("While failing {i}"), None).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    folio_testkit::eventually("the endpoint disabled by the notifier", || {
        let mut api = api.clone();
        let id = endpoint.clone();
        async move {
            let ep = api.get_webhook_endpoint(pb::GetWebhookEndpointRequest { id }).await.ok()?.into_inner();
            (!ep.endpoint?.enabled).then_some(())
        }
    })
    .await;
    // Events while it is disabled are kept as failed, without an attempt.
    for i in 1..=2 {
        w.created(&format!("While disabled {i}"), None).await;
    }
    w.settled().await;
    let missed: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT id, status FROM notification_deliveries WHERE channel = 'webhook' AND recipient = $1 \
          ORDER BY created_at, id",
    )
    .bind(&endpoint)
    .fetch_all(&w.db.pool)
    .await
    .unwrap();
    assert_eq!(missed.len(), 5);
    assert!(missed.iter().all(|(_, s)| s == "failed"), "{missed:?}");
    assert!(w.receiver.accepted("/crm").await.is_empty());

    // Recovering a disabled endpoint is refused: it would fail again at once.
    let since = Some(prost_types::Timestamp { seconds: outage_start.unix_timestamp(), nanos: 0 });
    let err = api
        .recover_webhook_endpoint(pb::RecoverWebhookEndpointRequest { id: endpoint.clone(), since })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // The receiver is back; the admin re-enables the endpoint and recovers since the outage.
    w.receiver.configure("/crm", json!({ "secret": secret })).await;
    let enabled = api.enable_webhook_endpoint(pb::EnableWebhookEndpointRequest { id: endpoint.clone() }).await;
    let enabled = enabled.unwrap().into_inner().endpoint.unwrap();
    assert!(enabled.enabled && enabled.failing_since.is_none());
    let recovered = api
        .recover_webhook_endpoint(pb::RecoverWebhookEndpointRequest { id: endpoint.clone(), since })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recovered.recovered, 5);
    assert!(recovered.txid > 0);

    let expected: Vec<String> = missed.iter().map(|(id, _)| folio_webhook::events::message_id(*id)).collect();
    folio_testkit::eventually("every missed message delivered", || async {
        (w.receiver.accepted("/crm").await.len() >= expected.len()).then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted: Vec<String> =
        w.receiver.accepted("/crm").await.into_iter().map(|h| h.webhook_id.unwrap_or_default()).collect();
    assert_eq!(accepted, expected, "each once, in order of creation, with its original webhook-id");
    // The ids the receiver saw failing before the outage ended are those it now accepted.
    let failed_ids: Vec<String> = w
        .receiver
        .at("/crm")
        .await
        .into_iter()
        .filter(|h| h.outcome == "failed")
        .filter_map(|h| h.webhook_id)
        .collect();
    assert!(!failed_ids.is_empty() && failed_ids.iter().all(|id| expected[..3].contains(id)), "{failed_ids:?}");
    let titles: Vec<String> = w
        .receiver
        .accepted("/crm")
        .await
        .into_iter()
        .map(|h| h.payload.unwrap()["data"]["title"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        titles,
        ["While failing 1", "While failing 2", "While failing 3", "While disabled 1", "While disabled 2"]
    );
    notifier.stop().await;
    api_task.stop().await.unwrap();
    w.cleanup().await;
}

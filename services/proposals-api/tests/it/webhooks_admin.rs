//! WebhookService over gRPC: every RPC's happy path, and its refusals (viewer and editor →
//! PERMISSION_DENIED, another agency's ids → NOT_FOUND, a private-network URL →
//! INVALID_ARGUMENT naming `url`). Delivery itself is the notifier's (its tests/it/admin_api.rs).

use folio_proto::api::v1::{self as pb, webhook_service_client::WebhookServiceClient};
use proposals_api::{Caller, Role, tenancy};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

use crate::helpers::{Bearer, TestApp, spawn_app};

type Webhooks = WebhookServiceClient<InterceptedService<Channel, Bearer>>;

fn client(app: &TestApp, caller: Caller) -> Webhooks {
    WebhookServiceClient::with_interceptor(app.channel.clone(), app.bearer(caller))
}

/// An admin of the test agency, its editor and viewer, and an admin of another agency.
struct Admins {
    admin: Webhooks,
    editor: Webhooks,
    viewer: Webhooks,
    outsider: Webhooks,
}

async fn admins(app: &TestApp) -> Admins {
    let agency = app.editor.caller.agency_id;
    let admin = tenancy::create_user(&app.db.pool, agency, "ad@northwind.test", "Ad Min", Role::Admin).await.unwrap();
    let other = app.outsider.caller.agency_id;
    let outsider =
        tenancy::create_user(&app.db.pool, other, "ad@contoso.test", "Other Admin", Role::Admin).await.unwrap();
    Admins {
        admin: client(app, Caller { user_id: admin, agency_id: agency, role: Role::Admin }),
        editor: client(app, app.editor.caller),
        viewer: client(app, app.viewer.caller),
        outsider: client(app, Caller { user_id: outsider, agency_id: other, role: Role::Admin }),
    }
}

const URL: &str = "https://hooks.example.com/folio";

async fn create(c: &mut Webhooks, url: &str) -> pb::CreateWebhookEndpointResponse {
    c.create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
        url: url.into(),
        description: "CRM sync".into(),
        event_types: vec!["proposal.sent".into(), "proposal.accepted".into()],
    })
    .await
    .expect("create endpoint")
    .into_inner()
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_admin_creates_reads_lists_updates_and_deletes_endpoints() {
    let app = spawn_app().await;
    let mut a = admins(&app).await;
    let created = create(&mut a.admin, URL).await;
    assert!(created.txid > 0);
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    folio_webhook::sign::Secret::parse(&created.secret).expect("the notifier's secret format");
    let ep = created.endpoint.unwrap();
    assert_eq!((ep.url.as_str(), ep.description.as_str(), ep.enabled), (URL, "CRM sync", true));
    assert_eq!(ep.event_types, ["proposal.sent", "proposal.accepted"]);

    let got = a.admin.get_webhook_endpoint(pb::GetWebhookEndpointRequest { id: ep.id.clone() }).await.unwrap();
    assert_eq!(got.into_inner().endpoint.unwrap(), ep);
    create(&mut a.admin, "https://second.example.com/hook").await;
    let page = a
        .admin
        .list_webhook_endpoints(pb::ListWebhookEndpointsRequest { page_size: 1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.endpoints.len(), 1);
    assert!(!page.next_page_token.is_empty());
    let rest = a
        .admin
        .list_webhook_endpoints(pb::ListWebhookEndpointsRequest { page_size: 1, page_token: page.next_page_token })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.endpoints.len(), 1);
    assert_ne!(rest.endpoints[0].id, page.endpoints[0].id);
    // Secrets leave the API only on create and rotate: not a field of the message at all, and
    // not in any byte of a read.
    let raw = format!("{:?}{:?}", page.endpoints, rest.endpoints);
    assert!(!raw.contains("whsec_"));

    let updated = a
        .admin
        .update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
            id: ep.id.clone(),
            url: Some("https://crm.example.com/in".into()),
            description: Some("CRM".into()),
            filter: Some(pb::EventTypeFilter { event_types: vec![] }),
            enabled: Some(false),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.txid > 0);
    let u = updated.endpoint.unwrap();
    assert_eq!((u.url.as_str(), u.description.as_str(), u.enabled), ("https://crm.example.com/in", "CRM", false));
    assert!(u.event_types.is_empty() && u.disabled_at.is_some());
    // Fields not set stay as they are.
    let same = a
        .admin
        .update_webhook_endpoint(pb::UpdateWebhookEndpointRequest { id: ep.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .endpoint
        .unwrap();
    assert_eq!((same.url, same.description, same.enabled), (u.url, u.description, false));

    let enabled =
        a.admin.enable_webhook_endpoint(pb::EnableWebhookEndpointRequest { id: ep.id.clone() }).await.unwrap();
    let enabled = enabled.into_inner();
    assert!(enabled.txid > 0 && enabled.endpoint.unwrap().enabled);

    let deleted =
        a.admin.delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest { id: ep.id.clone() }).await.unwrap();
    assert!(deleted.into_inner().txid > 0);
    let gone = a.admin.get_webhook_endpoint(pb::GetWebhookEndpointRequest { id: ep.id }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn a_private_network_url_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let mut a = admins(&app).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "ftp://example.com/hook",
    ] {
        let err = a
            .admin
            .create_webhook_endpoint(pb::CreateWebhookEndpointRequest { url: url.into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}");
        assert_eq!(violated_fields(&err), ["url"], "{url}: {err:?}");
    }
    let ep = create(&mut a.admin, URL).await.endpoint.unwrap();
    let err = a
        .admin
        .update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
            id: ep.id.clone(),
            url: Some("http://192.168.1.1/".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), violated_fields(&err)), (Code::InvalidArgument, vec!["url".to_owned()]));
    // Unknown event types and out-of-range grace periods name their fields too.
    let err = a
        .admin
        .create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
            url: URL.into(),
            event_types: vec!["proposal.sent".into(), "proposal.exploded".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["event_types[1]"]);
    let err = a
        .admin
        .rotate_webhook_secret(pb::RotateWebhookSecretRequest {
            id: ep.id,
            grace_period: Some(prost_types::Duration { seconds: 8 * 86_400, nanos: 0 }),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["grace_period"]);
}

#[tokio::test]
async fn rotation_returns_a_new_secret_and_keeps_the_old_one_for_the_grace_period() {
    let app = spawn_app().await;
    let mut a = admins(&app).await;
    let created = create(&mut a.admin, URL).await;
    let id = created.endpoint.unwrap().id;
    let rotated = a
        .admin
        .rotate_webhook_secret(pb::RotateWebhookSecretRequest {
            id: id.clone(),
            grace_period: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.txid > 0 && rotated.secret.starts_with("whsec_") && rotated.secret != created.secret);
    let expires = rotated.endpoint.unwrap().previous_secret_expires_at.expect("a grace period");
    let in_an_hour = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    assert!((expires.seconds - in_an_hour).abs() < 60, "{expires:?}");
    let (secret, previous): (String, Option<String>) =
        sqlx::query_as("SELECT secret, previous_secret FROM webhook_endpoints WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((secret, previous), (rotated.secret, Some(created.secret)));
}

#[tokio::test]
async fn test_events_replays_recoveries_and_attempt_logs_are_queued_for_the_notifier() {
    let app = spawn_app().await;
    let mut a = admins(&app).await;
    let ep = create(&mut a.admin, URL).await.endpoint.unwrap();
    let sent = a.admin.send_test_event(pb::SendTestEventRequest { id: ep.id.clone() }).await.unwrap().into_inner();
    assert!(sent.txid > 0);
    let d = sent.delivery.unwrap();
    assert_eq!((d.event_type.as_str(), d.endpoint_id.as_str()), ("webhook.test", ep.id.as_str()));
    assert_eq!(d.status(), pb::DeliveryStatus::Pending);
    assert_eq!(d.webhook_id, format!("msg_{}", uuid::Uuid::parse_str(&d.id).unwrap().simple()));
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM notification_deliveries WHERE id = $1::uuid")
            .bind(&d.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(payload["type"], "webhook.test");
    assert_eq!(payload["data"]["endpoint_id"], ep.id.as_str());

    // A pending delivery is not replayed; a failed one is, with its attempt log kept.
    let err = a.admin.replay_delivery(pb::ReplayDeliveryRequest { delivery_id: d.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    sqlx::query(
        "UPDATE notification_deliveries SET status = 'failed', attempts = 1, next_attempt_at = NULL WHERE id = $1::uuid; ",
    )
    .bind(&d.id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO delivery_attempts (delivery_id, succeeded, response_code, latency_ms, error) \
         VALUES ($1::uuid, false, 503, 42, 'endpoint answered 503')",
    )
    .bind(&d.id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let log = a
        .admin
        .list_delivery_attempts(pb::ListDeliveryAttemptsRequest { delivery_id: d.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.delivery.unwrap().status(), pb::DeliveryStatus::Failed);
    assert_eq!(log.attempts.len(), 1);
    let at = &log.attempts[0];
    assert_eq!((at.response_code, at.duration_ms, at.succeeded), (503, 42, false));
    assert_eq!((at.error.as_str(), at.webhook_id.as_str()), ("endpoint answered 503", d.webhook_id.as_str()));
    let by_endpoint = a
        .admin
        .list_endpoint_attempts(pb::ListEndpointAttemptsRequest { id: ep.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_endpoint.attempts, log.attempts);

    let replayed =
        a.admin.replay_delivery(pb::ReplayDeliveryRequest { delivery_id: d.id.clone() }).await.unwrap().into_inner();
    assert!(replayed.txid > 0);
    let r = replayed.delivery.unwrap();
    assert_eq!((r.status(), r.webhook_id), (pb::DeliveryStatus::Pending, d.webhook_id.clone()));

    // Recovery: the failed ones since the time given, none before it.
    sqlx::query("UPDATE notification_deliveries SET status = 'failed' WHERE id = $1::uuid")
        .bind(&d.id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let later = prost_types::Timestamp { seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 60, nanos: 0 };
    let none = a
        .admin
        .recover_webhook_endpoint(pb::RecoverWebhookEndpointRequest { id: ep.id.clone(), since: Some(later) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.recovered, 0);
    let since = prost_types::Timestamp { seconds: 0, nanos: 0 };
    let one = a
        .admin
        .recover_webhook_endpoint(pb::RecoverWebhookEndpointRequest { id: ep.id.clone(), since: Some(since) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.recovered, 1);
    assert!(one.txid > 0);
    let err = a
        .admin
        .recover_webhook_endpoint(pb::RecoverWebhookEndpointRequest { id: ep.id.clone(), since: None })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["since"]);

    // A disabled endpoint gets no test event: enable it first.
    a.admin
        .update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
            id: ep.id.clone(),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = a.admin.send_test_event(pb::SendTestEventRequest { id: ep.id }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn the_event_catalogue_lists_every_type_with_its_payload_schema() {
    let app = spawn_app().await;
    let mut a = admins(&app).await;
    let types = a.admin.list_event_types(pb::ListEventTypesRequest {}).await.unwrap().into_inner().event_types;
    let names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
    for name in ["proposal.sent", "proposal.viewed", "proposal.accepted", "proposal.declined", "proposal.updated"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let sent = types.iter().find(|t| t.name == "proposal.sent").unwrap();
    let schema: serde_json::Value = serde_json::from_str(&sent.payload_schema).unwrap();
    assert_eq!(schema["type"], "object");
    assert!(sent.payload_schema.contains("total_minor") && sent.payload_schema.contains("previous_status"));
}

/// Every RPC, refused to viewers and editors, and NOT_FOUND for another agency's ids.
#[tokio::test]
async fn only_the_agencys_admins_reach_its_endpoints() {
    let app = spawn_app().await;
    let mut a = admins(&app).await;
    let ep = create(&mut a.admin, URL).await.endpoint.unwrap();
    let delivery = a.admin.send_test_event(pb::SendTestEventRequest { id: ep.id.clone() }).await.unwrap().into_inner();
    let delivery_id = delivery.delivery.unwrap().id;
    let since = Some(prost_types::Timestamp { seconds: 0, nanos: 0 });

    async fn every_call(
        c: &mut Webhooks,
        id: &str,
        delivery: &str,
        since: Option<prost_types::Timestamp>,
    ) -> Vec<(&'static str, Code)> {
        let id = id.to_owned();
        let d = delivery.to_owned();
        let code = |r: Result<(), tonic::Status>| r.err().map(|s| s.code()).unwrap_or(Code::Ok);
        vec![
            (
                "create",
                code(
                    c.create_webhook_endpoint(pb::CreateWebhookEndpointRequest {
                        url: URL.into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                ),
            ),
            ("list", code(c.list_webhook_endpoints(pb::ListWebhookEndpointsRequest::default()).await.map(drop))),
            ("event types", code(c.list_event_types(pb::ListEventTypesRequest {}).await.map(drop))),
            ("get", code(c.get_webhook_endpoint(pb::GetWebhookEndpointRequest { id: id.clone() }).await.map(drop))),
            (
                "update",
                code(
                    c.update_webhook_endpoint(pb::UpdateWebhookEndpointRequest {
                        id: id.clone(),
                        description: Some("x".into()),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                ),
            ),
            (
                "rotate",
                code(
                    c.rotate_webhook_secret(pb::RotateWebhookSecretRequest { id: id.clone(), grace_period: None })
                        .await
                        .map(drop),
                ),
            ),
            (
                "enable",
                code(c.enable_webhook_endpoint(pb::EnableWebhookEndpointRequest { id: id.clone() }).await.map(drop)),
            ),
            ("test", code(c.send_test_event(pb::SendTestEventRequest { id: id.clone() }).await.map(drop))),
            (
                "delivery attempts",
                code(
                    c.list_delivery_attempts(pb::ListDeliveryAttemptsRequest { delivery_id: d.clone() })
                        .await
                        .map(drop),
                ),
            ),
            (
                "endpoint attempts",
                code(
                    c.list_endpoint_attempts(pb::ListEndpointAttemptsRequest { id: id.clone(), ..Default::default() })
                        .await
                        .map(drop),
                ),
            ),
            (
                "recover",
                code(
                    c.recover_webhook_endpoint(pb::RecoverWebhookEndpointRequest { id: id.clone(), since })
                        .await
                        .map(drop),
                ),
            ),
            ("replay", code(c.replay_delivery(pb::ReplayDeliveryRequest { delivery_id: d }).await.map(drop))),
            ("delete", code(c.delete_webhook_endpoint(pb::DeleteWebhookEndpointRequest { id }).await.map(drop))),
        ]
    }

    for (who, c) in [("viewer", &mut a.viewer), ("editor", &mut a.editor)] {
        for (rpc, code) in every_call(c, &ep.id, &delivery_id, since).await {
            assert_eq!(code, Code::PermissionDenied, "{who} {rpc}");
        }
    }
    // The other agency's admin may create and list its own, but our ids do not exist for it.
    for (rpc, code) in every_call(&mut a.outsider, &ep.id, &delivery_id, since).await {
        let expected = if matches!(rpc, "create" | "list" | "event types") { Code::Ok } else { Code::NotFound };
        assert_eq!(code, expected, "outsider {rpc}");
    }
    let listed = a.outsider.list_webhook_endpoints(pb::ListWebhookEndpointsRequest::default()).await.unwrap();
    assert!(listed.into_inner().endpoints.iter().all(|e| e.id != ep.id));
    // Still there, untouched.
    let mine = a.admin.get_webhook_endpoint(pb::GetWebhookEndpointRequest { id: ep.id }).await.unwrap();
    assert_eq!(mine.into_inner().endpoint.unwrap().description, "CRM sync");
}

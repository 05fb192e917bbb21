//! Webhook subscriptions: signed wakes verified against the JWKS, callbacks that ack and fence,
//! lease expiry re-issuing a wake, and the SSRF check on webhook URLs.

use std::time::Duration;

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use http::{Method, StatusCode};
use tokio::sync::mpsc;

use crate::helpers::{Agency, spawn_edge, test_prefix};

struct Wake {
    signature: String,
    raw: String,
    body: serde_json::Value,
}

/// A webhook receiver on port 0 that answers `{}` (so wakes stay open until acked).
async fn receiver() -> anyhow::Result<(String, mpsc::UnboundedReceiver<Wake>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/hook",
            post(|State(tx): State<mpsc::UnboundedSender<Wake>>, headers: HeaderMap, raw: String| async move {
                let signature =
                    headers.get("webhook-signature").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let body = serde_json::from_str(&raw).unwrap_or_default();
                let _ = tx.send(Wake { signature, raw, body });
                axum::Json(serde_json::json!({}))
            }),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, rx))
}

fn verify(jwks: &serde_json::Value, wake: &Wake) -> bool {
    let Some((t, rest)) = wake.signature.strip_prefix("t=").and_then(|s| s.split_once(",kid=")) else { return false };
    let Some((kid, sig)) = rest.split_once(",ed25519=") else { return false };
    let Some(key) = jwks["keys"].as_array().and_then(|keys| keys.iter().find(|k| k["kid"] == kid)) else {
        return false;
    };
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(key["x"].as_str().unwrap_or_default())
        .ok()
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; 32]);
    let (Ok(key), Ok(sig)) = (VerifyingKey::from_bytes(&x), URL_SAFE_NO_PAD.decode(sig)) else { return false };
    let Ok(sig) = Signature::from_slice(&sig) else { return false };
    key.verify(format!("{t}.{}", wake.raw).as_bytes(), &sig).is_ok()
}

/// The allow-list that lets webhooks reach this machine's receivers (tests only).
const LOOPBACK_NETS: &str = "127.0.0.0/8,::1/128";

async fn next_wake(rx: &mut mpsc::UnboundedReceiver<Wake>) -> Wake {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a webhook arrives").expect("receiver open")
}

#[tokio::test]
async fn webhook_wakes_are_signed_acked_fenced_and_reissued_after_the_lease() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge =
        spawn_edge(&prefix, &["--ds-webhook-allow-loopback", "--webhook-allowed-subnets", LOOPBACK_NETS]).await?;
    let agency = Agency::new();
    let c = edge.client.with_auth(&agency.admin);
    let (url, mut wakes) = receiver().await?;
    let json = &[("content-type", "application/json")];

    let refused = c
        .expect(
            Method::PUT,
            "/v1/stream/__ds/subscriptions/bad",
            json,
            serde_json::json!({ "type": "webhook", "pattern": agency.name("x/*"), "webhook": { "url": "http://10.0.0.1/hook" } })
                .to_string(),
            StatusCode::BAD_REQUEST,
        )
        .await;
    assert_eq!(refused.json()["error"]["code"], "WEBHOOK_URL_REJECTED");

    let spec = serde_json::json!({ "type": "webhook", "pattern": agency.name("orders/*"), "webhook": { "url": url }, "lease_ttl_ms": 1000 }).to_string();
    let created = c
        .expect(Method::PUT, "/v1/stream/__ds/subscriptions/orders", json, spec.clone(), StatusCode::CREATED)
        .await
        .json();
    c.expect(Method::PUT, "/v1/stream/__ds/subscriptions/orders", json, spec, StatusCode::OK).await;
    // The public key is public: webhook receivers fetch it without a token.
    let jwks = c.anonymous().expect(Method::GET, "/v1/stream/__ds/jwks.json", &[], "", StatusCode::OK).await;
    assert_eq!(jwks.header("content-type"), Some("application/jwk-set+json"));
    let jwks = jwks.json();
    assert_eq!(created["webhook"]["signing"]["kid"], jwks["keys"][0]["kid"]);

    let orders = agency.name("orders/1");
    let tail =
        c.expect(Method::PUT, &agency.path("orders/1"), json, r#"{"n":1}"#, StatusCode::CREATED).await.next_offset();
    c.expect(Method::PUT, &agency.path("invoices/1"), json, r#"{"n":1}"#, StatusCode::CREATED).await;
    let wake = next_wake(&mut wakes).await;
    assert!(verify(&jwks, &wake), "signature verifies with the published key: {}", wake.signature);
    let tampered = Wake {
        raw: wake.raw.replace("orders", "0rders"),
        signature: wake.signature.clone(),
        body: serde_json::Value::Null,
    };
    assert!(!verify(&jwks, &tampered));
    let streams = wake.body["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "only matching streams: {streams:?}");
    assert_eq!(streams[0]["path"], orders.as_str());
    assert_eq!(streams[0]["tail_offset"], tail.as_str());
    assert_eq!(streams[0]["has_pending"], true);

    // Not acked within the 1 s lease: the wake is re-issued with a newer generation.
    let again = next_wake(&mut wakes).await;
    let (g1, g2) = (wake.body["generation"].as_u64().unwrap(), again.body["generation"].as_u64().unwrap());
    assert!(g2 > g1, "generation {g2} after {g1}");

    let callback_path =
        again.body["callback_url"].as_str().unwrap().split_once("/v1/").map(|(_, p)| format!("/v1/{p}")).unwrap();
    let bearer = format!("Bearer {}", again.body["callback_token"].as_str().unwrap());
    let auth = &[("content-type", "application/json"), ("authorization", bearer.as_str())];
    let ack = serde_json::json!({ "wake_id": again.body["wake_id"], "generation": g2, "acks": [{ "stream": orders, "offset": tail }], "done": true }).to_string();
    let stale =
        serde_json::json!({ "wake_id": wake.body["wake_id"], "generation": g1, "acks": [], "done": true }).to_string();
    let fenced = c.expect(Method::POST, &callback_path, auth, stale, StatusCode::CONFLICT).await;
    assert_eq!(fenced.json()["error"]["code"], "FENCED");
    let ok = c.expect(Method::POST, &callback_path, auth, ack.clone(), StatusCode::OK).await;
    assert_eq!(ok.json(), serde_json::json!({ "ok": true, "next_wake": false }));
    c.expect(Method::POST, &callback_path, auth, ack, StatusCode::CONFLICT).await;
    let sub = c.expect(Method::GET, "/v1/stream/__ds/subscriptions/orders", &[], "", StatusCode::OK).await.json();
    assert_eq!(sub["streams"][0]["acked_offset"], tail.as_str());

    // New data after the ack opens the next wake.
    c.expect(Method::POST, &agency.path("orders/1"), json, r#"{"n":2}"#, StatusCode::NO_CONTENT).await;
    let third = next_wake(&mut wakes).await;
    assert!(third.body["generation"].as_u64().unwrap() > g2);
    assert_eq!(third.body["streams"][0]["acked_offset"], tail.as_str());

    c.expect(Method::DELETE, "/v1/stream/__ds/subscriptions/orders", &[], "", StatusCode::NO_CONTENT).await;
    c.expect(Method::GET, "/v1/stream/__ds/subscriptions/orders", &[], "", StatusCode::NOT_FOUND).await;
    edge.stop().await?;
    Ok(())
}

/// Issue 13, finding 1: a webhook to a host name resolving to 127.0.0.1 was called. A host name
/// is judged by the addresses it resolves to, when the wake is sent (folio-webhook): `localhost`
/// resolves to loopback, which is refused unless allow-listed (the literal-IP check at
/// creation cannot see it). With the allow-list the same subscription is delivered, so the
/// refusal is the policy's, not a broken receiver.
#[tokio::test]
async fn a_webhook_to_a_host_name_resolving_to_127_0_0_1_is_not_called() -> anyhow::Result<()> {
    let json = &[("content-type", "application/json")];
    for allowed in [false, true] {
        let (prefix, _cleanup) = test_prefix();
        let mut args = vec!["--ds-webhook-allow-loopback"];
        if allowed {
            args.extend(["--webhook-allowed-subnets", LOOPBACK_NETS]);
        }
        let edge = spawn_edge(&prefix, &args).await?;
        let agency = Agency::new();
        let c = edge.client.with_auth(&agency.editor);
        let (url, mut wakes) = receiver().await?;
        let by_name = url.replace("127.0.0.1", "localhost");
        let spec =
            serde_json::json!({ "type": "webhook", "pattern": agency.name("named/*"), "webhook": { "url": by_name } });
        c.expect(Method::PUT, "/v1/stream/__ds/subscriptions/named", json, spec.to_string(), StatusCode::CREATED).await;
        c.expect(Method::PUT, &agency.path("named/1"), json, r#"{"n":1}"#, StatusCode::CREATED).await;
        let wake = tokio::time::timeout(Duration::from_secs(3), wakes.recv()).await;
        if allowed {
            assert!(matches!(wake, Ok(Some(_))), "an allow-listed name is delivered");
        } else {
            assert!(wake.is_err(), "a name resolving to loopback must not be called");
        }
        edge.stop().await?;
    }
    Ok(())
}

//! `all-in-one` started with default settings on a local cluster — no `FOLIO_…` variable but
//! `FOLIO_ENV=development` (which accepts the built-in secrets) and the allow-list that lets the
//! notifier call this test's loopback receiver — carries one proposal the whole way:
//! created through the API, seen in a live shape at the edge, rendered to a PDF, and delivered
//! as a signed webhook when it is sent. It fails if any service's default disagrees with
//! another's (a database, a subject root, a stream, a port or a secret).
//!
//! It takes the defaults' ports (API 50051, edge 4437, notifier 8090), the `folio` database on
//! 127.0.0.1:5432 and the NATS server on 4333, as a developer's first `cargo run -p all-in-one`
//! would: stop a local cluster (`scripts/dev-down.sh`) before running it.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use folio_auth::{Authenticator, Caller, Role};
use folio_proto::api::v1 as pb;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

const API: &str = "127.0.0.1:50051";
const EDGE: &str = "127.0.0.1:4437";
const NOTIFIER: &str = "127.0.0.1:8090";
const SLOT: &str = "folio_wal_ingest";

#[derive(Default)]
struct Received(Mutex<Vec<(HeaderMap, Bytes)>>);

async fn receive(State(received): State<Arc<Received>>, headers: HeaderMap, body: Bytes) -> &'static str {
    received.0.lock().unwrap().push((headers, body));
    "ok"
}

/// The `folio` database the defaults name, created when missing (the API migrates it).
async fn default_database() -> PgConnection {
    let server = folio_db::with_database(folio_db::DEFAULT_DATABASE_URL, "postgres");
    let mut admin = PgConnection::connect(&server).await.expect("PostgreSQL on 127.0.0.1:5432 (the default)");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = 'folio'")
        .fetch_optional(&mut admin)
        .await
        .unwrap();
    if exists.is_none() {
        sqlx::query("CREATE DATABASE folio").execute(&mut admin).await.unwrap();
    }
    admin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_with_default_settings_carries_a_proposal_from_api_to_shape_pdf_and_webhook() {
    for addr in [API, EDGE, NOTIFIER] {
        assert!(
            std::net::TcpListener::bind(addr).is_ok(),
            "{addr} is taken: this test runs all-in-one on its default ports; stop the local cluster (scripts/dev-down.sh)"
        );
    }
    let _server = default_database().await;

    // The receiver the endpoint points at.
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver: SocketAddr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(receive)).with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_all-in-one"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        // The built-in secrets are accepted only on a local cluster.
        .env("FOLIO_ENV", "development")
        .env("FOLIO_WEBHOOK_ALLOWED_SUBNETS", "127.0.0.0/8")
        .kill_on_drop(true)
        .spawn()
        .expect("start all-in-one");

    let pool = sqlx::PgPool::connect(folio_db::DEFAULT_DATABASE_URL).await.unwrap();
    // The API's port accepts connections once bound, before its migrations ran: wait for those.
    let migrations = folio_db::MIGRATOR.iter().count() as i64;
    folio_testkit::eventually("wal-ingest to stream its slot and the API to listen", || async {
        let migrated: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await.ok()?;
        let streaming: Option<bool> =
            sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND active")
                .bind(SLOT)
                .fetch_optional(&pool)
                .await
                .ok()?;
        let api = tokio::net::TcpStream::connect(API).await.ok();
        (migrated == migrations && streaming.is_some() && api.is_some()).then_some(())
    })
    .await;
    if let Ok(Some(status)) = child.try_wait() {
        panic!("all-in-one exited: {status}");
    }

    // An agency of our own in the shared default database, its editor and an endpoint.
    let suffix = folio_testkit::unique_suffix();
    let agency = proposals_api::tenancy::create_agency(&pool, &format!("Defaults {suffix}"), "#123456").await.unwrap();
    let editor = proposals_api::tenancy::create_user(
        &pool,
        agency,
        &format!("ed.{suffix}@defaults.test"),
        "Ed Defaults",
        Role::Editor,
    )
    .await
    .unwrap();
    let secret = notifier::webhook::sign::Secret::generate();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, agency_id, url, event_types, secret) \
         VALUES ($1, $2, $3, '{proposal.sent}', $4)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(agency.as_uuid())
    .bind(format!("http://{receiver}/hook"))
    .bind(&secret)
    .execute(&pool)
    .await
    .unwrap();
    let token = Authenticator::new(folio_auth::DEVELOPMENT_SECRET.as_bytes())
        .issue(&Caller { user_id: editor, agency_id: agency, role: Role::Editor }, Duration::from_secs(600));
    let bearer = format!("Bearer {token}");

    // The live shape, from before the proposal exists.
    let http = reqwest::Client::new();
    let shape = |query: String| {
        let (http, bearer) = (http.clone(), bearer.clone());
        async move {
            let r = http
                .get(format!("http://{EDGE}/v1/shape?table=proposals&{query}"))
                .header("authorization", bearer)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .expect("GET /v1/shape");
            assert!(r.status().is_success(), "shape request: {}", r.status());
            let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
            let (handle, offset) = (header("electric-handle").unwrap(), header("electric-offset").unwrap());
            let body: Vec<Value> = r.json().await.unwrap();
            (handle, offset, body)
        }
    };
    let (handle, mut offset, snapshot) = shape("offset=-1".into()).await;
    assert!(snapshot.iter().all(|m| m.get("value").is_none()), "a new agency starts with no proposals");

    let mut api = folio_e2e::proposals_client(API.parse().unwrap(), &token).unwrap();
    let title = format!("Defaults {suffix}");
    let created = folio_e2e::draft_proposal(&mut api, &pool, agency, &title, 99_900).await.expect("CreateProposal");

    // 1. The live shape delivers it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'live: loop {
        assert!(tokio::time::Instant::now() < deadline, "the proposal never reached the live shape");
        let (_, next, messages) = shape(format!("handle={handle}&offset={offset}&live=true")).await;
        for m in &messages {
            if m["value"]["id"] == created.id.as_str() {
                assert_eq!(m["headers"]["operation"], "insert");
                assert_eq!(m["value"]["title"], title.as_str());
                break 'live;
            }
        }
        offset = next;
    }

    // 2. Its PDF renders and downloads.
    let requested =
        api.request_pdf(pb::RequestPdfRequest { proposal_id: created.id.clone() }).await.unwrap().into_inner();
    folio_e2e::rendered_pdf(&api, &requested.rendition_id).await.expect("the PDF renders and downloads");

    // 3. Sending it delivers one signed webhook.
    api.transition_proposal(pb::TransitionProposalRequest {
        id: created.id.clone(),
        to: pb::ProposalStatus::Sent as i32,
        expected_version: 0,
    })
    .await
    .expect("send the proposal");
    let (headers, body) = folio_testkit::eventually("the proposal.sent webhook", || async {
        received.0.lock().unwrap().first().cloned()
    })
    .await;
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["type"], "proposal.sent");
    assert_eq!(payload["data"]["id"], created.id.as_str());
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let expected = notifier::webhook::sign::Secret::parse(&secret).unwrap().sign(
        &header("webhook-id"),
        header("webhook-timestamp").parse().unwrap(),
        &body,
    );
    assert!(header("webhook-signature").split(' ').any(|s| s == expected), "the signature verifies");

    // SIGTERM: every service drains and the process exits cleanly.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "all-in-one exited with {status}");
    // The slot would pin WAL on this machine until the next start.
    folio_testkit::sandbox::drop_slot(&pool, SLOT).await;
}

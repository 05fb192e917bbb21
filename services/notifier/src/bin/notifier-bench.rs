//! Webhook delivery throughput: the notifier (JetStream → delivery rows → claim → sign → POST
//! → attempt log) against 1,000 endpoints on a local receiver, then, in the same run and
//! against the same receiver, a plain unsigned HTTP client loop with the same concurrency
//! and bodies of the same size. Prints both rates and their ratio.
//!
//! `cargo run --release -p notifier --bin notifier-bench -- --endpoints 1000 --events 20`
//! Needs PostgreSQL and NATS (FOLIO_DATABASE_URL / FOLIO_NATS_URL, as the tests); creates
//! and drops its own database and stream.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream;
use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use clap::Parser;
use folio_proto::events::v1::{ChangeEvent, ColumnValue, Operation, column_value};
use notifier::webhook::sign::Secret;
use prost::Message as _;
use sqlx::{Connection as _, PgConnection};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "bench", about = "Webhook deliveries per second: notifier (signed) vs a plain HTTP client loop")]
struct Args {
    /// Any database on the server: the bench creates and drops its own database beside it.
    #[command(flatten)]
    db: folio_db::DbArgs,
    #[arg(long, env = "FOLIO_NATS_URL", default_value = "nats://127.0.0.1:4333")]
    nats_url: String,
    /// Webhook endpoints of the agency; every event goes to each.
    #[arg(long, default_value_t = 1000)]
    endpoints: usize,
    /// Proposal events published; deliveries = events × endpoints.
    #[arg(long, default_value_t = 20)]
    events: usize,
    /// Requests in flight at once, for the notifier and for the plain loop alike.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// The receiver: verifies signed requests, counts both kinds.
struct Receiver {
    secrets: HashMap<usize, Secret>,
    signed: AtomicU64,
    unsigned: AtomicU64,
    bad: AtomicU64,
}

async fn receive(State(r): State<Arc<Receiver>>, Path(i): Path<usize>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(signature) = headers.get("webhook-signature").and_then(|v| v.to_str().ok()) else {
        r.unsigned.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    };
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let ts: i64 =
        headers.get("webhook-timestamp").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    let ok = r.secrets.get(&i).is_some_and(|s| signature.split(' ').any(|sig| sig == s.sign(id, ts, &body)));
    if ok {
        r.signed.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    } else {
        r.bad.fetch_add(1, Ordering::Relaxed);
        StatusCode::BAD_REQUEST
    }
}

fn col(name: &str, v: &str) -> ColumnValue {
    ColumnValue { name: name.into(), value: Some(column_value::Value::Text(v.into())) }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let suffix = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let db_name = format!("folio_bench_{suffix}");
    let mut admin = PgConnection::connect(&args.db.database_url).await.context("connect to postgres")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}"))).execute(&mut admin).await?;
    let db_url = folio_db::with_database(&args.db.database_url, &db_name);
    let result = run(&args, &suffix, &db_url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    result
}

async fn run(args: &Args, suffix: &str, db_url: &str) -> anyhow::Result<()> {
    let pool = folio_db::connect(db_url, 8).await?;
    folio_db::migrate(&pool).await?;
    let js = jetstream::new(async_nats::connect(&args.nats_url).await.context("connect to nats")?);
    let root = format!("b{suffix}");
    let subjects = folio_bus::Subjects::new(root.clone());
    let stream = format!("B{suffix}_CHANGES");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subjects.changes_filter()],
        ..Default::default()
    })
    .await?;

    // The receiver, on loopback port 0.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut secrets = HashMap::new();
    let (agency, owner, client, proposal) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, 'Bench Agency')").bind(agency).execute(&pool).await?;
    sqlx::query(
        "INSERT INTO users (id, agency_id, email, name, role) VALUES ($1, $2, 'owner@bench.test', 'Owner', 'admin')",
    )
    .bind(owner)
    .bind(agency)
    .execute(&pool)
    .await?;
    sqlx::query("INSERT INTO clients (id, agency_id, name, email) VALUES ($1, $2, 'Client', 'client@bench.test')")
        .bind(client)
        .bind(agency)
        .execute(&pool)
        .await?;
    for i in 0..args.endpoints {
        let secret = Secret::generate();
        secrets.insert(i, Secret::parse(&secret)?);
        sqlx::query("INSERT INTO webhook_endpoints (id, agency_id, url, secret) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::now_v7())
            .bind(agency)
            .bind(format!("http://127.0.0.1:{port}/e/{i}"))
            .bind(secret)
            .execute(&pool)
            .await?;
    }
    let receiver =
        Arc::new(Receiver { secrets, signed: AtomicU64::new(0), unsigned: AtomicU64::new(0), bad: AtomicU64::new(0) });
    let app = Router::new().route("/e/{i}", post(receive)).with_state(receiver.clone());
    let server_stop = CancellationToken::new();
    let serve = axum::serve(listener, app).with_graceful_shutdown(server_stop.clone().cancelled_owned());
    let server = tokio::spawn(async move { serve.await });

    // The notifier, in-process.
    let mut config = notifier::Config::new(db_url, &args.nats_url);
    // A local measurement with the built-in secrets.
    config.common.environment = folio_runtime::Environment::Development;
    config.common.admin_addr = "127.0.0.1:0".parse()?;
    config.http_addr = "127.0.0.1:0".parse()?;
    config.bus.subject_root = root.clone();
    config.bus.changes_stream = stream.clone();
    config.consumer = format!("bench_{suffix}");
    config.deliver_from = "all".into();
    config.webhook_allowed_subnets = vec!["127.0.0.0/8".parse()?];
    config.delivery_concurrency = args.concurrency;
    config.db_max_connections = 16;
    config.scheduler_poll = Duration::from_millis(50);
    config.migrate = false;
    let app = notifier::bind(config).await?;
    let stop = CancellationToken::new();
    let notifier_task = tokio::spawn(app.run(stop.clone()));

    // Signed: publish the events (title edits: webhooks only), wait for every delivery.
    let total = (args.events * args.endpoints) as u64;
    let row = |title: &str| {
        vec![
            col("id", &proposal.to_string()),
            col("agency_id", &agency.to_string()),
            col("client_id", &client.to_string()),
            col("owner_id", &owner.to_string()),
            col("title", title),
            col("status", "draft"),
            col("currency", "EUR"),
            col("total_minor", "12100"),
            col("version", "1"),
        ]
    };
    let started = Instant::now();
    let mut body_size = 0;
    for e in 0..args.events {
        let event = ChangeEvent {
            commit_lsn: 0x1_0000_0000 + e as u64,
            // Each edit is its own one-event transaction.
            last_in_transaction: true,
            table: "proposals".into(),
            schema: "public".into(),
            operation: Operation::Update as i32,
            tenant: agency.to_string(),
            old_row: row(&format!("Benchmark proposal {e}")),
            new_row: row(&format!("Benchmark proposal {e} (edited)")),
            ..Default::default()
        };
        if body_size == 0 {
            let payload = notifier::fanout::webhook_payload(
                notifier::transitions::EventType::Updated,
                &notifier::transitions::transitions(&event)?[0].proposal,
                None,
                "0000000100000000:0",
                time::OffsetDateTime::now_utc(),
            );
            body_size = payload.to_string().len();
        }
        let mut headers = async_nats::HeaderMap::new();
        let id = folio_bus::MsgKey::new(folio_domain::Lsn(event.commit_lsn), 0, folio_bus::Part::Change(0));
        headers.insert(folio_bus::headers::MSG_ID, id.to_string().as_str());
        js.publish_with_headers(
            subjects.row("public", "proposals", Some(&agency.to_string())),
            headers,
            event.encode_to_vec().into(),
        )
        .await?
        .await?;
    }
    while receiver.signed.load(Ordering::Relaxed) < total {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "deliveries stalled");
        anyhow::ensure!(receiver.bad.load(Ordering::Relaxed) == 0, "a signature did not verify");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let signed_elapsed = started.elapsed();
    // The receiver answers before the notifier records; wait for the log to catch up, then
    // check nothing was sent twice.
    let delivered = loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_deliveries WHERE status = 'delivered'")
            .fetch_one(&pool)
            .await?;
        if n as u64 >= total || started.elapsed() > Duration::from_secs(600) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(receiver.signed.load(Ordering::Relaxed) == total, "a delivery was received twice");
    stop.cancel();
    let _ = notifier_task.await;

    // Plain: unsigned POSTs of the same size, same concurrency; at least 100,000 of them so the
    // figure is not a blip, after one warm-up request per connection.
    let plain_total = total.max(100_000);
    let client_http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let body = Bytes::from(vec![b'x'; body_size]);
    let warm: Vec<_> = (0..args.concurrency)
        .map(|i| client_http.post(format!("http://127.0.0.1:{port}/e/{i}")).body(body.clone()).send())
        .collect();
    for r in futures::future::join_all(warm).await {
        r?.error_for_status()?;
    }
    let warmed = receiver.unsigned.load(Ordering::Relaxed);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client_http, body, next, endpoints) = (client_http.clone(), body.clone(), next.clone(), args.endpoints);
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= plain_total {
                    return Ok::<_, reqwest::Error>(());
                }
                let url = format!("http://127.0.0.1:{port}/e/{}", n as usize % endpoints);
                client_http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let plain_elapsed = started.elapsed();
    server_stop.cancel();
    let _ = server.await;
    let _ = js.delete_stream(&stream).await;
    pool.close().await;

    let signed_rate = total as f64 / signed_elapsed.as_secs_f64();
    let plain_rate = plain_total as f64 / plain_elapsed.as_secs_f64();
    println!(
        "endpoints={} events={} deliveries={total} concurrency={} body={body_size}B",
        args.endpoints, args.events, args.concurrency
    );
    println!(
        "notifier (signed, durable): {signed_rate:>9.0} deliveries/s  ({:.2} s; {delivered} rows delivered, {} verified)",
        signed_elapsed.as_secs_f64(),
        receiver.signed.load(Ordering::Relaxed)
    );
    println!(
        "plain HTTP client loop:     {plain_rate:>9.0} requests/s    ({:.2} s; {} received)",
        plain_elapsed.as_secs_f64(),
        receiver.unsigned.load(Ordering::Relaxed) - warmed
    );
    println!("ratio notifier / plain:     {:>9.3}", signed_rate / plain_rate);
    Ok(())
}

//! Create and get throughput of proposals-api with 32 concurrent gRPC clients, beside a baseline
//! measured in the same run: the same store calls (the same SQL) issued straight through sqlx
//! with the same pool size, so the ratio is the cost of gRPC, auth and validation.
//!
//!   cargo run -p proposals-api --release --bin api-bench -- --seconds 10

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use folio_domain::{AgencyId, ClientId, LineItemAmounts, ProposalId, UserId};
use folio_proto::api::v1::{self as pb, proposal_service_client::ProposalServiceClient};
use proposals_api::{Authenticator, Caller, Config, Role, store::proposals, tenancy};
use sqlx::Connection;

#[derive(Parser)]
struct Args {
    /// Any database on the server: the bench creates and drops its own database beside it.
    #[command(flatten)]
    db: folio_db::DbArgs,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Connections in the pool, for the API and the baseline alike.
    #[arg(long, default_value_t = 16)]
    pool: u32,
}

const SECRET: &str = "bench-secret-bench-secret-bench-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db_name = format!("folio_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&args.db.database_url).await.context("connect")?;
    // Our own generated name, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}"))).execute(&mut admin).await?;
    let url = folio_db::with_database(&args.db.database_url, &db_name);
    let result = bench(&args, &url).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db_name} WITH (FORCE)"))).execute(&mut admin).await?;
    result
}

struct Fixture {
    agency: AgencyId,
    owner: UserId,
    client: ClientId,
}

async fn bench(args: &Args, url: &str) -> anyhow::Result<()> {
    let pool = folio_db::connect(url, args.pool).await?;
    folio_db::migrate(&pool).await?;
    let agency = tenancy::create_agency(&pool, "Bench", "#000000").await?;
    let owner = tenancy::create_user(&pool, agency, "bench@bench.test", "Bench", Role::Editor).await?;
    let client = proposals_api::store::clients::create(
        &pool,
        agency,
        proposals_api::store::clients::ClientFields {
            name: "C".into(),
            email: "c@c.test".into(),
            company: String::new(),
        },
    )
    .await?;
    let fx = Arc::new(Fixture { agency, owner, client: client.id.into() });

    let mut config = Config::new(url, SECRET);
    config.listen_addr = "127.0.0.1:0".parse()?;
    config.db_max_connections = args.pool;
    config.migrate = false;
    let api = proposals_api::bind(config).await?;
    let addr = api.addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api.run(shutdown.clone()));
    let token = Authenticator::new(SECRET.as_bytes())
        .issue(&Caller { user_id: owner, agency_id: agency, role: Role::Editor }, Duration::from_secs(3600));
    let mut grpc_clients = Vec::new();
    for _ in 0..args.clients {
        // One HTTP/2 connection per client, as 32 separate callers would have.
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?.connect().await?;
        grpc_clients.push(ProposalServiceClient::new(channel));
    }
    let duration = Duration::from_secs(args.seconds);
    println!(
        "proposals-api bench: {} concurrent clients, {} s per phase, pool {}",
        args.clients, args.seconds, args.pool
    );

    let created: Arc<std::sync::Mutex<Vec<ProposalId>>> = Default::default();
    let base_create = run_phase(args.clients, duration, {
        let (pool, fx, created) = (pool.clone(), fx.clone(), created.clone());
        move |_| {
            let (pool, fx, created) = (pool.clone(), fx.clone(), created.clone());
            async move {
                let p = proposals::create(&pool, fx.agency, fx.owner, new_proposal(&fx), None).await?;
                created.lock().unwrap().push(p.proposal.id.into());
                Ok(())
            }
        }
    })
    .await?;
    let api_create = run_phase(args.clients, duration, {
        let (clients, fx, token) = (grpc_clients.clone(), fx.clone(), token.clone());
        move |i| {
            let mut api = clients[i % clients.len()].clone();
            let request = authorized(&token, create_request(&fx));
            async move {
                api.create_proposal(request).await?;
                Ok(())
            }
        }
    })
    .await?;
    let ids = Arc::new(created.lock().unwrap().clone());
    let base_get = run_phase(args.clients, duration, {
        let (pool, fx, ids) = (pool.clone(), fx.clone(), ids.clone());
        move |n| {
            let (pool, fx, id) = (pool.clone(), fx.clone(), ids[n * 7919 % ids.len()]);
            async move {
                proposals::get(&pool, fx.agency, id).await?;
                Ok(())
            }
        }
    })
    .await?;
    let api_get = run_phase(args.clients, duration, {
        let (clients, ids, token) = (grpc_clients.clone(), ids.clone(), token.clone());
        move |n| {
            let mut api = clients[n % clients.len()].clone();
            let request = authorized(&token, pb::GetProposalRequest { id: ids[n * 7919 % ids.len()].to_string() });
            async move {
                api.get_proposal(request).await?;
                Ok(())
            }
        }
    })
    .await?;
    shutdown.cancel();

    println!("{:<8} {:>16} {:>16} {:>8}", "op", "sqlx baseline/s", "gRPC API/s", "ratio");
    for (op, base, api) in [("create", base_create, api_create), ("get", base_get, api_get)] {
        println!("{op:<8} {base:>16.0} {api:>16.0} {:>8.2}", api / base);
    }
    Ok(())
}

fn authorized<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    request
}

fn new_proposal(fx: &Fixture) -> proposals::NewProposal {
    let line = |d: &str, q, p| proposals::NewLineItem {
        description: d.into(),
        amounts: LineItemAmounts::parse(q, p, 190_000).unwrap(),
    };
    proposals::NewProposal {
        client_id: fx.client,
        template_id: None,
        title: "Benchmark proposal".into(),
        currency: "EUR".into(),
        valid_until: None,
        content: "Content".into(),
        terms: "Terms".into(),
        line_items: vec![line("Design", 2_000, 100_000), line("Build", 10_000, 12_000), line("Hosting", 12_000, 4_900)],
    }
}

fn create_request(fx: &Fixture) -> pb::CreateProposalRequest {
    let line = |d: &str, q, p| pb::LineItemInput {
        description: d.into(),
        quantity_milli: q,
        unit_price_minor: p,
        tax_rate_ppm: 190_000,
    };
    pb::CreateProposalRequest {
        client_id: fx.client.to_string(),
        title: "Benchmark proposal".into(),
        currency: "EUR".into(),
        content: "Content".into(),
        terms: "Terms".into(),
        line_items: vec![line("Design", 2_000, 100_000), line("Build", 10_000, 12_000), line("Hosting", 12_000, 4_900)],
        ..Default::default()
    }
}

/// Runs `op` from `workers` tasks for `duration`; returns completed operations per second.
async fn run_phase<F, Fut>(workers: usize, duration: Duration, op: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    op(n).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    n += workers;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

//! The rate limiter's cost: `GetProposal` throughput of two API instances in one process, one
//! with the limits on (through NATS, set high enough that nothing is refused) and one with
//! `FOLIO_API_RATE_LIMITS=off`, in alternating phases so drift hits both; then the raw cost of
//! one decision served from a local lease.
//!
//!   cargo run -p proposals-api --release --bin limiter-bench -- --seconds 5 --rounds 3

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
use folio_quota::{QuotaArgs, QuotaKey, RateLimiter, RatePolicy};
use proposals_api::{Authenticator, Caller, Config, Role, store::proposals, tenancy};
use sqlx::Connection;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Any database on the server: the bench creates and drops its own database beside it.
    #[command(flatten)]
    db: folio_db::DbArgs,
    #[arg(long, env = "FOLIO_NATS_URL", default_value = "nats://127.0.0.1:4333")]
    nats_url: String,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Off/on phase pairs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Decisions timed for the raw cost.
    #[arg(long, default_value_t = 2_000_000)]
    decisions: u32,
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
    let bucket = format!("bench-rates-{}", uuid::Uuid::new_v4().simple());
    let result = bench(&args, &url, &bucket).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db_name} WITH (FORCE)"))).execute(&mut admin).await?;
    if let Ok(nats) = async_nats::connect(&args.nats_url).await {
        let _ = async_nats::jetstream::new(nats).delete_key_value(&bucket).await;
    }
    result
}

async fn bench(args: &Args, url: &str, bucket: &str) -> anyhow::Result<()> {
    let pool = folio_db::connect(url, 4).await?;
    folio_db::migrate(&pool).await?;
    let agency = tenancy::create_agency(&pool, "Bench", "#000000").await?;
    let owner = tenancy::create_user(&pool, agency, "bench@bench.test", "Bench", Role::Editor).await?;
    let ids = Arc::new(seed(&pool, agency, owner).await?);
    let token = Authenticator::new(SECRET.as_bytes())
        .issue(&Caller { user_id: owner, agency_id: agency, role: Role::Editor }, Duration::from_secs(3600));

    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut apis = Vec::new();
    for limits_on in [false, true] {
        let mut config = Config::new(url, SECRET);
        config.listen_addr = "127.0.0.1:0".parse()?;
        config.db_max_connections = args.pool;
        config.migrate = false;
        config.bus.nats_url = args.nats_url.clone();
        config.limits.rate_limits = limits_on;
        config.limits.quota.rate_bucket = bucket.to_owned();
        // Far above what the bench offers: every call pays for the check, none is refused.
        config.limits.agency_reads_per_sec = 1_000_000;
        config.limits.user_reads_per_sec = 1_000_000;
        let api = proposals_api::bind(config).await?;
        let addr = api.addr();
        tokio::spawn(api.run(shutdown.clone()));
        let mut clients = Vec::new();
        for _ in 0..args.clients {
            let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
            clients.push(ProposalServiceClient::new(channel));
        }
        apis.push(clients);
    }
    println!(
        "limiter-bench: GetProposal, {} concurrent clients, {} s per phase, {} rounds of off/on",
        args.clients, args.seconds, args.rounds
    );
    let duration = Duration::from_secs(args.seconds);
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for (limits_on, clients) in apis.iter().enumerate() {
            let rate = gets(clients, &ids, &token, args.clients, duration).await?;
            println!("round {round}: limits {:<3} {rate:>8.0} gets/s", if limits_on == 1 { "on" } else { "off" });
            if limits_on == 1 { on.push(rate) } else { off.push(rate) }
        }
    }
    shutdown.cancel();
    let (off, on) = (mean(&off), mean(&on));
    println!(
        "GetProposal: off {off:.0}/s, on {on:.0}/s, on/off {:.3} (overhead {:+.1} %)",
        on / off,
        (off / on - 1.0) * 100.0
    );

    decision_cost(args, bucket).await
}

/// One decision from a warm local lease, timed over many, single-threaded; and the API's pair
/// of checks (caller, then agency) with their keys built per call, as `limits.rs` does.
async fn decision_cost(args: &Args, bucket: &str) -> anyhow::Result<()> {
    let nats = async_nats::connect(&args.nats_url).await?;
    let quota = QuotaArgs { rate_bucket: bucket.to_owned(), ..QuotaArgs::default() };
    let limiter = RateLimiter::new(async_nats::jetstream::new(nats), &quota, 1);
    let policy = RatePolicy::per_second("bench", 1_000_000_000, 2_000_000_000);
    let key = QuotaKey::agency("bench", "api-reads")?;
    for _ in 0..1_000 {
        limiter.check(&key, &policy).await;
    }
    let n = args.decisions;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(limiter.check(&key, &policy).await);
    }
    let one = started.elapsed().as_nanos() as f64 / f64::from(n);
    let (user, agency) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let started = Instant::now();
    for _ in 0..n {
        for key in [QuotaKey::token(user, "api-reads")?, QuotaKey::agency(agency, "api-reads")?] {
            std::hint::black_box(limiter.check(&key, &policy).await);
        }
    }
    let pair = started.elapsed().as_nanos() as f64 / f64::from(n);
    println!("one local-lease decision: {one:.0} ns; caller + agency check with keys built: {pair:.0} ns");
    Ok(())
}

async fn gets(
    clients: &[ProposalServiceClient<Channel>],
    ids: &Arc<Vec<ProposalId>>,
    token: &str,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (mut api, ids, stop, done) = (clients[w].clone(), ids.clone(), stop.clone(), done.clone());
            let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii");
            tokio::spawn(async move {
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    let mut request =
                        tonic::Request::new(pb::GetProposalRequest { id: ids[n % ids.len()].to_string() });
                    request.metadata_mut().insert("authorization", auth.clone());
                    api.get_proposal(request).await?;
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

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

async fn seed(pool: &sqlx::PgPool, agency: AgencyId, owner: UserId) -> anyhow::Result<Vec<ProposalId>> {
    let fields = proposals_api::store::clients::ClientFields {
        name: "C".into(),
        email: "c@c.test".into(),
        company: String::new(),
    };
    let client: ClientId = proposals_api::store::clients::create(pool, agency, fields).await?.id.into();
    let mut ids = Vec::new();
    for i in 0..200 {
        let proposal = proposals::NewProposal {
            client_id: client,
            template_id: None,
            title: format!("Benchmark proposal {i}"),
            currency: "EUR".into(),
            valid_until: None,
            content: "Content".into(),
            terms: "Terms".into(),
            line_items: vec![proposals::NewLineItem {
                description: "Design".into(),
                amounts: LineItemAmounts::parse(2_000, 100_000, 190_000)?,
            }],
        };
        ids.push(proposals::create(pool, agency, owner, proposal, None).await?.proposal.id.into());
    }
    Ok(ids)
}

//! Shape API benchmark against a running edge + wal-ingest (services/shape-edge/bench/shapes.sh
//! starts them): (a) initial sync of a large shape beside `COPY (SELECT …) TO STDOUT` of the
//! same rows in the same run; (b) fan-out: N live clients on one shape and on many shapes,
//! commit → client latency beside commit → change-stream arrival, and edge memory per client.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "BENCH_EDGE_URL")]
    edge_url: String,
    /// The edge's pid, for its resident memory.
    #[arg(long, env = "BENCH_EDGE_PID")]
    edge_pid: u32,
    /// The database the edge and wal-ingest use.
    #[command(flatten)]
    db: folio_db::DbArgs,
    /// NATS and the subject root wal-ingest publishes under.
    #[command(flatten)]
    bus: folio_bus::BusArgs,
    #[arg(long, default_value_t = 100_000)]
    rows: i64,
    #[arg(long, default_value_t = 3)]
    sync_runs: usize,
    /// `initial-sync`, or `fan-out` with `--clients` and `--shapes`. One measurement per edge
    /// process, so its memory figure is not shared with an earlier run.
    #[arg(long, default_value = "initial-sync")]
    mode: String,
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    shapes: usize,
    #[arg(long, default_value_t = 5)]
    writes: usize,
}

type Http = Client<HttpConnector, Empty<Bytes>>;

struct Res {
    headers: http::HeaderMap,
    body: Bytes,
}

async fn get(http: &Http, url: &str) -> anyhow::Result<Res> {
    let res = http.get(url.parse()?).await.with_context(|| url.to_owned())?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        bail!("{url}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(Res { headers, body })
}

fn header(r: &Res, name: &str) -> String {
    r.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&args.db.database_url).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(usize::MAX).build(connector);
    match args.mode.as_str() {
        "initial-sync" => initial_sync(&args, &pool, &http).await,
        "fan-out" => fan_out(&args, &pool, &http, args.clients, args.shapes.clamp(1, args.clients)).await,
        other => bail!("unknown --mode {other}"),
    }
}

async fn initial_sync(args: &Args, pool: &sqlx::PgPool, http: &Http) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_rows;
         CREATE TABLE bench_rows (id int8 PRIMARY KEY, title text NOT NULL, qty int4 NOT NULL,
                                  price numeric(12,2) NOT NULL, created timestamptz NOT NULL)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO bench_rows SELECT g, 'proposal line item number ' || g, g % 100, (g % 1000) / 7.0,
                now() - g * interval '1 minute' FROM generate_series(1, $1) g",
    )
    .bind(args.rows)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE bench_rows").execute(pool).await?;
    let (mut edge, mut copy) = (Vec::new(), Vec::new());
    for run in 0..=args.sync_runs {
        // A distinct (always true) where clause per run: every run takes a fresh snapshot.
        let url = format!("{}/v1/shape?table=bench_rows&where=id%20%3E%20-{}", args.edge_url, run + 1);
        let started = Instant::now();
        let (mut offset, mut handle, mut rows, mut responses, mut bytes) =
            ("-1".to_owned(), String::new(), 0usize, 0, 0);
        loop {
            let mut u = format!("{url}&offset={offset}");
            if !handle.is_empty() {
                u.push_str(&format!("&handle={handle}"));
            }
            let r = get(http, &u).await?;
            responses += 1;
            bytes += r.body.len();
            // Rows are counted, not parsed: the figure is the edge's, COPY's rows are not parsed either.
            rows += r.body.windows(7).filter(|w| w == b"{\"key\":").count();
            offset = header(&r, "electric-offset");
            handle = header(&r, "electric-handle");
            if r.headers.contains_key("electric-up-to-date") {
                break;
            }
        }
        let edge_s = started.elapsed().as_secs_f64();
        if rows as i64 != args.rows {
            bail!("shape delivered {rows} rows, table has {}", args.rows);
        }
        let started = Instant::now();
        let mut conn = pool.acquire().await?;
        let mut out = conn
            .copy_out_raw("COPY (SELECT id, title, qty, price, created FROM bench_rows WHERE id > -1) TO STDOUT")
            .await?;
        let mut copied = 0usize;
        while let Some(chunk) = out.next().await {
            copied += chunk?.iter().filter(|b| **b == b'\n').count();
        }
        let copy_s = started.elapsed().as_secs_f64();
        if run > 0 {
            // Run 0 warms caches and the connection.
            edge.push(rows as f64 / edge_s);
            copy.push(copied as f64 / copy_s);
            println!(
                "initial sync run {run}: edge {:.0} rows/s ({responses} responses, {:.1} MB), COPY {:.0} rows/s",
                rows as f64 / edge_s,
                bytes as f64 / 1e6,
                copied as f64 / copy_s
            );
        }
    }
    edge.sort_by(f64::total_cmp);
    copy.sort_by(f64::total_cmp);
    let (e, c) = (pct(&edge, 0.5), pct(&copy, 0.5));
    println!("RESULT initial_sync rows={} edge_rows_per_s={e:.0} copy_rows_per_s={c:.0} ratio={:.2}", args.rows, e / c);
    Ok(())
}

struct Client1 {
    url: String,
    handle: String,
    offset: String,
    cursor: String,
}

/// `n` live clients over `shapes` shapes (`bucket = k`); `writes` transactions, each inserting
/// one row per shape; latency from each commit to each client's response carrying its row.
async fn fan_out(args: &Args, pool: &sqlx::PgPool, http: &Http, n: usize, shapes: usize) -> anyhow::Result<()> {
    let table = format!("bench_fan_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigserial PRIMARY KEY, bucket int4 NOT NULL, round int4 NOT NULL)"
    )))
    .execute(pool)
    .await?;
    let rss_before = rss_kib(args.edge_pid);
    // Clients connect and catch up, a few hundred at a time.
    let mut clients = Vec::with_capacity(n);
    let mut setup = futures::stream::iter((0..n).map(|i| {
        let url = if shapes == 1 {
            format!("{}/v1/shape?table={table}", args.edge_url)
        } else {
            format!("{}/v1/shape?table={table}&where=bucket%20%3D%20{}", args.edge_url, i % shapes)
        };
        async move {
            let mut c = Client1 { url, handle: String::new(), offset: "-1".into(), cursor: String::new() };
            loop {
                let mut u = format!("{}&offset={}", c.url, c.offset);
                if !c.handle.is_empty() {
                    u.push_str(&format!("&handle={}", c.handle));
                }
                let r = get(http, &u).await?;
                c.offset = header(&r, "electric-offset");
                c.handle = header(&r, "electric-handle");
                if r.headers.contains_key("electric-up-to-date") {
                    return anyhow::Ok(c);
                }
            }
        }
    }))
    .buffer_unordered(200);
    while let Some(c) = setup.next().await {
        clients.push(c?);
    }
    drop(setup);
    let waiting = Arc::new(AtomicUsize::new(0));
    let received: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::new(Mutex::new(Vec::with_capacity(n * args.writes)));
    let writes = args.writes;
    let mut tasks = Vec::with_capacity(n);
    for mut c in clients {
        let (http, waiting, received) = (http.clone(), Arc::clone(&waiting), Arc::clone(&received));
        tasks.push(tokio::spawn(async move {
            let mut seen = 0usize;
            while seen < writes {
                let u = format!("{}&offset={}&handle={}&live=true&cursor={}", c.url, c.offset, c.handle, c.cursor);
                waiting.fetch_add(1, Ordering::SeqCst);
                let r = get(&http, &u).await;
                waiting.fetch_sub(1, Ordering::SeqCst);
                let r = r?;
                let at = Instant::now();
                c.offset = header(&r, "electric-offset");
                c.cursor = header(&r, "electric-cursor");
                // Found by scanning, not parsing: the client's own CPU would otherwise weigh on
                // the edge's figure (both share the machine).
                let rounds = round_values(&r.body);
                let mut got = received.lock().unwrap_or_else(|p| p.into_inner());
                for round in rounds {
                    got.push((round, at));
                    seen += 1;
                }
            }
            anyhow::Ok(())
        }));
    }
    // The change stream's own delivery, as the baseline: a core NATS subscriber on the table.
    let nats = async_nats::connect(&args.bus.nats_url).await?;
    let mut sub = nats.subscribe(args.bus.subjects().table_filter("public", &table)).await?;
    let stream_arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let arrivals = Arc::clone(&stream_arrivals);
    let listener = tokio::spawn(async move {
        while sub.next().await.is_some() {
            arrivals.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
        }
    });
    let mut commits: HashMap<usize, Instant> = HashMap::new();
    let mut stream_latency = Vec::new();
    let mut rss_waiting = 0;
    for round in 0..writes {
        let deadline = Instant::now() + Duration::from_secs(60);
        while waiting.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                bail!("only {} of {n} clients are waiting", waiting.load(Ordering::SeqCst));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Requests counted as waiting must have reached the edge.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if round == 0 {
            rss_waiting = rss_kib(args.edge_pid);
        }
        stream_arrivals.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let mut tx = pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (bucket, round) SELECT b, $1 FROM generate_series(0, $2 - 1) b"
        )))
        .bind(round as i32)
        .bind(shapes as i32)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let committed = Instant::now();
        commits.insert(round, committed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(first) = stream_arrivals.lock().unwrap_or_else(|p| p.into_inner()).first() {
            stream_latency.push(first.saturating_duration_since(committed).as_secs_f64() * 1000.0);
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(r) => r??,
            Err(_) => bail!(
                "clients did not receive every write within 2 minutes: {} of {} deliveries",
                received.lock().unwrap_or_else(|p| p.into_inner()).len(),
                n * writes
            ),
        }
    }
    listener.abort();
    let mut lat: Vec<f64> = received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(round, at)| at.saturating_duration_since(commits[round]).as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    stream_latency.sort_by(f64::total_cmp);
    let (p50, p99, s50) = (pct(&lat, 0.5), pct(&lat, 0.99), pct(&stream_latency, 0.5));
    let per_client = (rss_waiting.saturating_sub(rss_before)) as f64 / n as f64;
    println!(
        "RESULT fan_out clients={n} shapes={shapes} deliveries={} commit_to_client_p50_ms={p50:.1} p99_ms={p99:.1} \
         commit_to_stream_p50_ms={s50:.1} ratio_p50={:.1} edge_rss_mb={:.0} rss_per_client_kib={per_client:.1}",
        lat.len(),
        p50 / s50,
        rss_waiting as f64 / 1024.0
    );
    Ok(())
}

/// The `round` values of the rows in a response body (`"round":"<n>"`).
fn round_values(body: &[u8]) -> Vec<usize> {
    const NEEDLE: &[u8] = b"\"round\":\"";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = body[i..].windows(NEEDLE.len()).position(|w| w == NEEDLE) {
        let start = i + p + NEEDLE.len();
        let end = body[start..].iter().position(|b| *b == b'"').map_or(body.len(), |e| start + e);
        if let Some(n) = std::str::from_utf8(&body[start..end]).ok().and_then(|s| s.parse().ok()) {
            out.push(n);
        }
        i = end;
    }
    out
}

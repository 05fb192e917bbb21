//! End-to-end benchmark: row changes per second from commit to JetStream ack, beside the decode
//! limit (`pg_recvlogical` with pgoutput to /dev/null on the same WAL) and raw pipelined
//! JetStream publishing of the same number of same-sized messages, measured in the same run.
//! Then commit→delivery latency at a fixed moderate rate.
//!
//! `cargo run --release -p wal-ingest --bin wal-bench` (FOLIO_DATABASE_URL / FOLIO_NATS_URL apply).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull::OrderedConfig, message::PublishMessage};
use clap::Parser;
use futures::{StreamExt, stream::FuturesOrdered};
use prost::Message as _;
use sqlx::{Connection, PgConnection, PgPool};

#[derive(Parser)]
struct Args {
    /// Any database on the server: the bench creates and drops its own database beside it.
    #[command(flatten)]
    db: folio_db::DbArgs,
    #[arg(long, env = "FOLIO_NATS_URL", default_value = "nats://127.0.0.1:4333")]
    nats_url: String,
    /// Rows for the 1-row-transaction run.
    #[arg(long, default_value_t = 50_000)]
    rows_single: u64,
    /// Rows for the 100-row-transaction run.
    #[arg(long, default_value_t = 300_000)]
    rows_batched: u64,
    /// Rows of the single large transaction (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    rows_large_txn: u64,
    /// Rows per second for the latency run.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    latency_duration: Duration,
}

struct World {
    admin_url: String,
    db: String,
    url: String,
    pool: PgPool,
    js: jetstream::Context,
    nats_url: String,
    suffix: String,
    slots: Vec<String>,
    streams: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let suffix = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() & 0xffff_ffff_ffff
    );
    let db = format!("folio_bench_{suffix}");
    let mut admin = PgConnection::connect(&args.db.database_url).await.context("connect to postgres")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&mut admin).await?;
    let url = replace_db(&args.db.database_url, &db);
    let pool = folio_db::connect(&url, 8).await?;
    folio_db::migrate(&pool).await?;
    for sql in [
        "CREATE TABLE bench_rows (id bigserial PRIMARY KEY, agency_id uuid NOT NULL, title text NOT NULL, amount numeric NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
        "ALTER TABLE bench_rows REPLICA IDENTITY FULL",
        "ALTER PUBLICATION folio_changes ADD TABLE bench_rows",
    ] {
        sqlx::query(sql).execute(&pool).await?;
    }
    let js = jetstream::new(async_nats::connect(&args.nats_url).await?);
    let mut world = World {
        admin_url: args.db.database_url.clone(),
        db,
        url,
        pool,
        js,
        nats_url: args.nats_url.clone(),
        suffix,
        slots: Vec::new(),
        streams: Vec::new(),
    };
    let result = bench(&mut world, &args).await;
    world.cleanup(admin).await;
    result
}

async fn bench(w: &mut World, args: &Args) -> anyhow::Result<()> {
    println!(
        "wal-ingest benchmark (PostgreSQL + nats-server on this machine, {} cores)",
        std::thread::available_parallelism()?
    );
    println!();
    println!(
        "| transaction size | rows | wal-ingest commit→ack rows/s | pg_recvlogical decode rows/s | raw JetStream publish msg/s | ratio vs decode | ratio vs raw publish |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (txn_size, rows) in [(1u64, args.rows_single), (100, args.rows_batched)] {
        throughput(w, txn_size, rows).await?;
    }
    println!();
    if args.rows_large_txn > 0 {
        large_transaction(w, args.rows_large_txn).await?;
    }
    latency(w, args).await
}

/// One transaction of `rows` rows through the real binary (a separate process, so its peak
/// RSS is its own): it must stream through without being held in memory.
async fn large_transaction(w: &mut World, rows: u64) -> anyhow::Result<()> {
    let run = format!("{}_large", w.suffix);
    let slot = format!("bench_ingest_{run}");
    let prefix = format!("BENCH_{run}");
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')").bind(&slot).execute(&w.pool).await?;
    w.slots.push(slot.clone());
    w.streams.push(format!("{prefix}_CHANGES"));
    w.streams.push(format!("{prefix}_JOBS"));
    sqlx::query(
        "INSERT INTO bench_rows (agency_id, title, amount) \
         SELECT '00000000-0000-4000-8000-000000000000', 'line item ' || g, g * 1.25 FROM generate_series(1, $1) g",
    )
    .bind(rows as i64)
    .execute(&w.pool)
    .await?;
    let binary = std::env::current_exe()?.with_file_name("wal-ingest");
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&binary)
        .env("FOLIO_DATABASE_URL", &w.url)
        .env("FOLIO_NATS_URL", &w.nats_url)
        .env("FOLIO_WAL_SLOT", &slot)
        .env("FOLIO_SUBJECT_ROOT", format!("bench{run}"))
        .env("FOLIO_CHANGES_STREAM", format!("{prefix}_CHANGES"))
        .env("FOLIO_JOBS_STREAM", format!("{prefix}_JOBS"))
        .env("FOLIO_ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {}", binary.display()))?;
    let pid = child.id().context("child pid")?;
    let changes = format!("{prefix}_CHANGES");
    let mut first_at = None;
    loop {
        if let Ok(mut s) = w.js.get_stream(&changes).await
            && let Ok(info) = s.info().await
        {
            if info.state.messages > 0 && first_at.is_none() {
                first_at = Some(started.elapsed());
            }
            if info.state.messages >= rows {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak =
        status.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.trim_start_matches("VmHWM:").trim().to_owned());
    child.kill().await?;
    println!(
        "one {rows}-row transaction: {:.0} rows/s commit→ack ({:.1} s; first event after {:.1} s, while Postgres decodes the spilled transaction); wal-ingest peak RSS {}",
        rows as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        first_at.unwrap_or_default().as_secs_f64(),
        peak.unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

async fn throughput(w: &mut World, txn_size: u64, rows: u64) -> anyhow::Result<()> {
    let run = format!("{}_{txn_size}", w.suffix);
    let ingest_slot = format!("bench_ingest_{run}");
    let decode_slot = format!("bench_decode_{run}");
    for slot in [&ingest_slot, &decode_slot] {
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')").bind(slot).execute(&w.pool).await?;
        w.slots.push(slot.clone());
    }
    write_backlog(&w.pool, txn_size, rows).await?;
    let (end_lsn,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text").fetch_one(&w.pool).await?;

    // Decode limit: the walsender decoding the same WAL with pgoutput, to /dev/null.
    let started = Instant::now();
    let status = tokio::process::Command::new("pg_recvlogical")
        .args(["-d", &w.url, "-S", &decode_slot, "--start", "--no-loop", "-E", &end_lsn, "-f", "/dev/null"])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            &format!("publication_names={}", folio_db::PUBLICATION),
            "-o",
            "messages=true",
        ])
        .status()
        .await
        .context("run pg_recvlogical")?;
    anyhow::ensure!(status.success(), "pg_recvlogical failed: {status}");
    let decode_rate = rows as f64 / started.elapsed().as_secs_f64();

    // wal-ingest: drain the same backlog, from process start to the last ack.
    let prefix = format!("BENCH_{run}");
    let root = format!("bench{run}");
    w.streams.push(format!("{prefix}_CHANGES"));
    w.streams.push(format!("{prefix}_JOBS"));
    let mut config = wal_ingest::Config::for_names(&w.url, &w.nats_url, &ingest_slot, &root, &prefix);
    config.common.admin_addr = "127.0.0.1:0".parse()?;
    let started = Instant::now();
    let ingest = wal_ingest::bind(config).await?.spawn();
    let changes = format!("{prefix}_CHANGES");
    let (bytes, elapsed) = loop {
        if let Ok(mut s) = w.js.get_stream(&changes).await
            && let Ok(info) = s.info().await
            && info.state.messages >= rows
        {
            break (info.state.bytes, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    ingest.stop().await.map_err(anyhow::Error::msg)?;
    let ingest_rate = rows as f64 / elapsed.as_secs_f64();

    // Raw JetStream: the same number of messages of the same average size, pipelined with
    // msg ids (window 4096), file storage.
    let avg = (bytes / rows) as usize;
    let raw = format!("BENCH_RAW_{run}");
    w.streams.push(raw.clone());
    w.js.create_stream(jetstream::stream::Config {
        name: raw.clone(),
        subjects: vec![format!("benchraw{run}.>")],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await?;
    let payload = bytes::Bytes::from(vec![b'x'; avg.saturating_sub(120).max(16)]);
    let started = Instant::now();
    let mut acks = FuturesOrdered::new();
    for i in 0..rows {
        if acks.len() >= 4096 {
            acks.next().await.expect("ack")?;
        }
        let ack =
            w.js.send_publish(
                format!("benchraw{run}.t"),
                PublishMessage::build().payload(payload.clone()).message_id(format!("{i:016X}:0")),
            )
            .await?;
        acks.push_back(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    let raw_rate = rows as f64 / started.elapsed().as_secs_f64();
    println!(
        "| {txn_size} | {rows} | {ingest_rate:.0} | {decode_rate:.0} | {raw_rate:.0} | {:.2} | {:.2} |",
        ingest_rate / decode_rate,
        ingest_rate / raw_rate
    );
    Ok(())
}

/// Commits `rows` rows in transactions of `txn_size` from 4 connections (asynchronous commit,
/// so the writer is not the bottleneck of the setup).
async fn write_backlog(pool: &PgPool, txn_size: u64, rows: u64) -> anyhow::Result<()> {
    let writers = 4;
    let per_writer = rows / writers;
    let mut tasks = Vec::new();
    for wi in 0..writers {
        let pool = pool.clone();
        let n = if wi == writers - 1 { rows - per_writer * (writers - 1) } else { per_writer };
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            sqlx::query("SET synchronous_commit = off").execute(&mut *conn).await?;
            let agency = format!("00000000-0000-4000-8000-{:012}", wi);
            let mut done = 0;
            while done < n {
                let k = txn_size.min(n - done);
                sqlx::query(
                    "INSERT INTO bench_rows (agency_id, title, amount) \
                     SELECT $1::uuid, 'line item ' || g, g * 1.25 FROM generate_series(1, $2) g",
                )
                .bind(&agency)
                .bind(k as i64)
                .execute(&mut *conn)
                .await?;
                done += k;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Commit→delivery latency of 1-row transactions at a fixed rate: the commit time is in the
/// event (Postgres clock), delivery is when an ordered consumer on the stream receives it
/// (after the ack path stored it), on the same machine.
async fn latency(w: &mut World, args: &Args) -> anyhow::Result<()> {
    let run = format!("{}_lat", w.suffix);
    let slot = format!("bench_ingest_{run}");
    let prefix = format!("BENCH_{run}");
    let root = format!("bench{run}");
    w.slots.push(slot.clone());
    w.streams.push(format!("{prefix}_CHANGES"));
    w.streams.push(format!("{prefix}_JOBS"));
    let mut config = wal_ingest::Config::for_names(&w.url, &w.nats_url, &slot, &root, &prefix);
    config.common.admin_addr = "127.0.0.1:0".parse()?;
    let ingest = wal_ingest::bind(config).await?.spawn();
    ingest.ready(Duration::from_secs(60)).await.map_err(anyhow::Error::msg)?;
    let stream = w.js.get_stream(format!("{prefix}_CHANGES")).await?;
    let consumer = stream.create_consumer(OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?;
    let total = args.rate * args.latency_duration.as_secs();
    let pool = w.pool.clone();
    let rate = args.rate;
    let writer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut conns = VecDeque::new();
        for _ in 0..4 {
            let mut conn = pool.acquire().await?;
            // The backlog writers turned it off on pooled sessions; a commit must be flushed
            // before the walsender may send it, so an asynchronous commit adds up to
            // wal_writer_delay (200 ms) of latency.
            sqlx::query("SET synchronous_commit = on").execute(&mut *conn).await?;
            conns.push_back(conn);
        }
        let mut inflight = FuturesOrdered::new();
        for i in 0..total {
            tick.tick().await;
            if inflight.len() >= 4 {
                let conn: sqlx::pool::PoolConnection<sqlx::Postgres> = inflight.next().await.expect("a writer")?;
                conns.push_back(conn);
            }
            let mut conn = conns.pop_front().expect("a free connection");
            inflight.push_back(async move {
                sqlx::query("INSERT INTO bench_rows (agency_id, title, amount) VALUES ('00000000-0000-4000-8000-000000000000', $1, 1)")
                    .bind(format!("latency {i}"))
                    .execute(&mut *conn)
                    .await?;
                anyhow::Ok(conn)
            });
        }
        while let Some(r) = inflight.next().await {
            r?;
        }
        anyhow::Ok(())
    });
    let mut latencies = Vec::with_capacity(total as usize);
    while (latencies.len() as u64) < total {
        let msg = tokio::time::timeout(Duration::from_secs(30), messages.next()).await?.context("stream ended")??;
        let received = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        let event = folio_proto::events::v1::ChangeEvent::decode(msg.payload.clone())?;
        let commit = event.commit_time.context("commit time")?;
        let committed = Duration::new(commit.seconds as u64, commit.nanos as u32);
        latencies.push(received.saturating_sub(committed));
    }
    writer.await??;
    ingest.stop().await.map_err(anyhow::Error::msg)?;
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "commit→delivery latency at {} rows/s (1-row transactions, {} rows): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        args.rate,
        total,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    Ok(())
}

impl World {
    async fn cleanup(&self, mut admin: PgConnection) {
        for slot in &self.slots {
            let _ = sqlx::query("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL")
                .bind(slot)
                .execute(&self.pool)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for slot in &self.slots {
            if let Err(e) = sqlx::query("SELECT pg_drop_replication_slot($1)").bind(slot).execute(&self.pool).await {
                eprintln!("failed to drop slot {slot}: {e}");
            }
        }
        for stream in &self.streams {
            let _ = self.js.delete_stream(stream).await;
        }
        self.pool.close().await;
        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {} WITH (FORCE)", self.db)))
            .execute(&mut admin)
            .await
        {
            eprintln!("failed to drop database {}: {e} (admin url {})", self.db, self.admin_url);
        }
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("a postgres URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

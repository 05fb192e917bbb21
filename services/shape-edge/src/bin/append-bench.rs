//! The cost of the streams API's limits (folio-quota) per append: two edges in this process on
//! one NATS server, one with `--ds-quotas on` (limits far above the offered load, so every
//! append pays for its checks and none is refused) and one with `--ds-quotas off`, in
//! alternating off/on phases of appends from `--clients` concurrent writers (one stream each).
//! Printed: appends/s and mean latency per phase, and on/off of the totals. A third edge with
//! `--ds-max-bytes-per-agency 0` (rates and stream counts only) separates the stored-bytes
//! quota (leased from KV in chunks of `max(1 MiB, limit / 1000)`, spent locally per append, and
//! recorded in the stream's metadata about once a second). Last, one `Counters::spend` from a
//! lease is timed on its own.
//!
//!     FOLIO_NATS_URL=nats://127.0.0.1:4333 append-bench --seconds 5 --rounds 3 --clients 16

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[arg(long, env = "FOLIO_NATS_URL", default_value = "nats://127.0.0.1:4333")]
    nats_url: String,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Bytes per append.
    #[arg(long, default_value_t = 100)]
    body: usize,
}

const SECRET: &str = "append-bench-secret-append-bench-secret-0123";
const HIGH: &str = "100000000";

type Http = Client<HttpConnector, Full<Bytes>>;

struct Edge {
    name: &'static str,
    base: String,
    prefix: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), shape_edge::Error>>,
}

async fn start(name: &'static str, nats: &str, extra: &[&str]) -> anyhow::Result<Edge> {
    let prefix = format!("appendbench_{name}_{}", std::process::id());
    let (rates, counts) = (format!("{prefix}_rates"), format!("{prefix}_quotas"));
    let mut args = vec![
        "shape-edge",
        "--ds-prefix",
        &prefix,
        "--listen-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--nats-url",
        nats,
        "--jwt-secret",
        SECRET,
        "--quota-rate-bucket",
        &rates,
        "--quota-count-bucket",
        &counts,
        "--ds-agency-appends-per-sec",
        HIGH,
        "--ds-token-appends-per-sec",
        HIGH,
    ];
    if !extra.contains(&"--ds-max-bytes-per-agency") {
        // The default 10 GiB: stored bytes are leased in its 10 MiB chunks, as in production.
        args.extend(["--ds-max-bytes-per-agency", "10737418240"]);
    }
    args.extend_from_slice(extra);
    let config = <shape_edge::Config as Parser>::try_parse_from(args)?;
    let bound = shape_edge::bind(config).await?;
    let base = format!("http://{}", bound.http_addr());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(bound.run(shutdown.clone()));
    Ok(Edge { name, base, prefix, shutdown, task })
}

async fn send(http: &Http, method: http::Method, url: &str, auth: &str, body: Bytes) -> anyhow::Result<u16> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", auth)
        .header("content-type", "text/plain")
        .body(Full::new(body))?;
    let res = http.request(req).await.with_context(|| url.to_owned())?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

/// Appends from every client for `seconds`: (appends, total latency).
async fn phase(
    http: &Http,
    urls: &[String],
    auth: &str,
    body: &Bytes,
    seconds: u64,
) -> anyhow::Result<(u64, Duration)> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let (count, nanos) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for url in urls {
        let (http, url, auth, body) = (http.clone(), url.clone(), auth.to_owned(), body.clone());
        let (count, nanos) = (count.clone(), nanos.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let started = Instant::now();
                let status = send(&http, http::Method::POST, &url, &auth, body.clone()).await?;
                if status != 204 {
                    bail!("append answered {status}");
                }
                nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((count.load(Ordering::Relaxed), Duration::from_nanos(nanos.load(Ordering::Relaxed))))
}

/// The stored-bytes quota alone: `Counters::spend` of one append's bytes from a leased chunk of
/// the default 10 GiB budget (one KV compare-and-set per 10 MiB), timed over 200,000 spends.
async fn spend_cost(js: &async_nats::jetstream::Context, prefix: &str, bytes: u64) -> anyhow::Result<()> {
    let args = folio_quota::QuotaArgs { count_bucket: format!("{prefix}_quotas"), ..Default::default() };
    let counters = folio_quota::Counters::new(js.clone(), &args, 1);
    let key = folio_quota::QuotaKey::agency(folio_domain::AgencyId::new(), "bench-bytes")?;
    let (limit, chunk) = (10u64 << 30, folio_durable_streams::quota::bytes_chunk(10 << 30));
    counters.spend(&key, bytes, limit, chunk).await?;
    const SPENDS: u32 = 200_000;
    let started = Instant::now();
    for _ in 0..SPENDS {
        counters.spend(&key, bytes, limit, chunk).await?;
    }
    let each = started.elapsed() / SPENDS;
    counters.give_back().await;
    println!("stored-bytes spend from a lease ({} KiB chunks): {} ns each", chunk >> 10, each.as_nanos());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let edges = [
        start("off", &args.nats_url, &["--ds-quotas", "off"]).await?,
        start("on", &args.nats_url, &["--ds-quotas", "on"]).await?,
        start("rates", &args.nats_url, &["--ds-quotas", "on", "--ds-max-bytes-per-agency", "0"]).await?,
    ];
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let agency = folio_domain::AgencyId::new();
    let caller =
        folio_auth::Caller { user_id: folio_domain::UserId::new(), agency_id: agency, role: folio_auth::Role::Editor };
    let auth = format!(
        "Bearer {}",
        folio_auth::Authenticator::new(SECRET.as_bytes()).issue(&caller, Duration::from_secs(3600))
    );
    let body = Bytes::from(vec![b'x'; args.body]);
    let mut urls = Vec::new();
    for edge in &edges {
        let mut mine = Vec::new();
        for n in 0..args.clients {
            let url = format!("{}/v1/stream/agencies/{agency}/bench-{}-{n}", edge.base, edge.name);
            for _ in 0..100 {
                match send(&http, http::Method::PUT, &url, &auth, Bytes::new()).await {
                    Ok(201) => break,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            mine.push(url);
        }
        // Warm-up: connections, leases, KV buckets.
        phase(&http, &mine, &auth, &body, 1).await?;
        urls.push(mine);
    }
    println!(
        "append-bench: {} clients, {} B appends, {} s phases, {} rounds",
        args.clients, args.body, args.seconds, args.rounds
    );
    let mut totals = vec![(0u64, Duration::ZERO); edges.len()];
    for round in 0..args.rounds {
        for (i, edge) in edges.iter().enumerate() {
            let (n, latency) = phase(&http, &urls[i], &auth, &body, args.seconds).await?;
            println!(
                "round {round} {:>5}: {:>8.0} appends/s, mean {:>7.0} µs",
                edge.name,
                n as f64 / args.seconds as f64,
                latency.as_micros() as f64 / n.max(1) as f64
            );
            totals[i].0 += n;
            totals[i].1 += latency;
        }
    }
    let rate = |i: usize| totals[i].0 as f64 / (args.seconds as f64 * args.rounds as f64);
    let mean = |i: usize| totals[i].1.as_micros() as f64 / totals[i].0.max(1) as f64;
    for (i, edge) in edges.iter().enumerate() {
        println!("total {:>5}: {:>8.0} appends/s, mean {:>7.0} µs", edge.name, rate(i), mean(i));
    }
    println!(
        "on/off throughput {:.3} (overhead {:+.1} %, {:+.0} µs per append); rates-only/off {:.3} ({:+.1} %, {:+.0} µs)",
        rate(1) / rate(0),
        (rate(0) / rate(1) - 1.0) * 100.0,
        mean(1) - mean(0),
        rate(2) / rate(0),
        (rate(0) / rate(2) - 1.0) * 100.0,
        mean(2) - mean(0),
    );
    let nats = async_nats::connect(&args.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    spend_cost(&js, &edges[1].prefix, args.body as u64).await?;
    for edge in edges {
        edge.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), edge.task).await;
        let p = &edge.prefix;
        for name in [
            format!("{p}_streams"),
            format!("KV_{p}_meta"),
            format!("KV_{p}_shapes"),
            format!("KV_{p}_rates"),
            format!("KV_{p}_quotas"),
        ] {
            let _ = js.delete_stream(name).await;
        }
    }
    Ok(())
}

//! Shape API benchmark against a running edge + wal-ingest (services/shape-edge/bench/shapes.sh
//! starts them): (a) initial sync of a large shape beside `COPY (SELECT …) TO STDOUT` of the
//! same rows in the same run; (b) fan-out: N live clients on one shape and on many shapes,
//! commit → client latency beside commit → change-stream arrival, and edge memory per client
//! (over HTTP/1.1 connections, or HTTP/2 streams for more clients than a process has file
//! descriptors); (c) many shapes: commit → client on one shape among 1 … 100,000 others, the
//! edge's share beside the change stream's; (d) throughput: changes each concerning one shape
//! among many, applied by the edge from a backlog, beside reading and decoding the same
//! backlog from JetStream.

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
    /// Live clients over HTTP/2 (prior knowledge), many requests per connection.
    #[arg(long)]
    http2: bool,
    /// Live clients in SSE mode (`live_sse=true`: one open response per client, each change an
    /// event) instead of long-polls.
    #[arg(long)]
    sse: bool,
    /// With `--http2 --sse`: the SSE clients' streams through hyper's client (a task per
    /// stream, as a real application would hold them) instead of the lean frame reader that
    /// reads each connection in one task (as h2load does), for the client's own CPU.
    #[arg(long)]
    hyper_sse: bool,
    /// The shapes' where clauses in `shapes` mode: `eq` (`bucket = k`, indexable) or `like`
    /// (`tag LIKE 'k…-%'`, evaluated for every change).
    #[arg(long, default_value = "eq")]
    kind: String,
    /// Changes in the backlog of `throughput` mode.
    #[arg(long, default_value_t = 200_000)]
    changes: usize,
}

type Http = Client<HttpConnector, Empty<Bytes>>;

/// How a client reaches the edge: pooled HTTP/1.1 connections, or one HTTP/2 connection
/// shared by many clients' requests.
#[derive(Clone)]
enum Conn {
    H1(Box<Http>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// HTTP/2 connections for `clients` clients, each taking at most the edge's concurrent
/// streams per connection (hyper's default, 200) less a margin.
async fn h2_connections(edge_url: &str, clients: usize) -> anyhow::Result<Vec<Conn>> {
    let authority = edge_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut conns = Vec::new();
    for _ in 0..clients.div_ceil(180).max(1) {
        let tcp = tokio::net::TcpStream::connect(&authority).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
                .await
                .context("HTTP/2 handshake with the edge")?;
        tokio::spawn(conn);
        conns.push(Conn::H2(send));
    }
    Ok(conns)
}

struct Res {
    headers: http::HeaderMap,
    body: Bytes,
}

/// The response to a GET, its body not read yet.
async fn open(conn: &Conn, url: &str) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    Ok(match conn {
        Conn::H1(http) => http.get(url.parse()?).await.with_context(|| url.to_owned())?,
        Conn::H2(send) => {
            let mut send = send.clone();
            send.ready().await.context("HTTP/2 connection")?;
            let req = http::Request::get(url).body(Empty::new())?;
            send.send_request(req).await.with_context(|| url.to_owned())?
        }
    })
}

async fn get(conn: &Conn, url: &str) -> anyhow::Result<Res> {
    let res = open(conn, url).await?;
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

/// CPU time (user + system) of a process so far, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
        // Fields after the command name (which may hold spaces), from its closing parenthesis.
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
    });
    // Linux reports clock ticks at 100 Hz (USER_HZ).
    ticks.unwrap_or(f64::NAN) * 10.0
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
    let http =
        Conn::H1(Box::new(Client::builder(TokioExecutor::new()).pool_max_idle_per_host(usize::MAX).build(connector)));
    match args.mode.as_str() {
        "initial-sync" => initial_sync(&args, &pool, &http).await,
        "fan-out" => fan_out(&args, &pool, &http, args.clients, args.shapes.clamp(1, args.clients)).await,
        "shapes" => many_shapes(&args, &pool, &http).await,
        "throughput" => throughput(&args, &pool, &http).await,
        other => bail!("unknown --mode {other}"),
    }
}

async fn initial_sync(args: &Args, pool: &sqlx::PgPool, http: &Conn) -> anyhow::Result<()> {
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
            // Rows are counted (SIMD search), not parsed: the figure is the edge's, and COPY's rows
            // are counted, not parsed, either.
            rows += memchr::memmem::find_iter(&r.body, b"{\"key\":").count();
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

/// A client of the shape at `url`, caught up to its head.
async fn catch_up(conn: &Conn, url: String) -> anyhow::Result<Client1> {
    let mut c = Client1 { url, handle: String::new(), offset: "-1".into(), cursor: String::new() };
    loop {
        let mut u = format!("{}&offset={}", c.url, c.offset);
        if !c.handle.is_empty() {
            u.push_str(&format!("&handle={}", c.handle));
        }
        let r = get(conn, &u).await?;
        c.offset = header(&r, "electric-offset");
        c.handle = header(&r, "electric-handle");
        if r.headers.contains_key("electric-up-to-date") {
            return Ok(c);
        }
    }
}

/// Live clients long-polling until each has received `rows` rows; what they received, with
/// when, and how many are waiting at the edge right now.
struct Live {
    waiting: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Notes>>>,
    n: usize,
}

impl Live {
    /// One task per client running `follow` until it has noted `rows` rows.
    fn spawn<F, Fut>(clients: Vec<(Client1, Conn)>, rows: usize, follow: F) -> Live
    where
        F: Fn(Client1, Conn, Arc<AtomicUsize>, Notes) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Notes>> + Send + 'static,
    {
        let n = clients.len();
        let waiting = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let tasks = clients
            .into_iter()
            .map(|(c, conn)| {
                let notes = Notes { got: Vec::with_capacity(rows), count: Arc::clone(&received), held: None };
                tokio::spawn(follow(c, conn, Arc::clone(&waiting), notes))
            })
            .collect();
        Live { waiting, received, tasks, n }
    }

    /// Long-polling clients, counted as waiting while a request is open.
    fn start(clients: Vec<(Client1, Conn)>, rows: usize) -> Live {
        Live::spawn(clients, rows, move |mut c, conn, waiting, mut notes| async move {
            let mut seen = 0usize;
            while seen < rows {
                let u = format!("{}&offset={}&handle={}&live=true&cursor={}", c.url, c.offset, c.handle, c.cursor);
                waiting.fetch_add(1, Ordering::SeqCst);
                let r = get(&conn, &u).await;
                waiting.fetch_sub(1, Ordering::SeqCst);
                let r = r?;
                let at = Instant::now();
                c.offset = header(&r, "electric-offset");
                c.cursor = header(&r, "electric-cursor");
                seen += notes.note(&r.body, at);
            }
            anyhow::Ok(notes)
        })
    }

    /// Clients in SSE mode: one open response each, counted as waiting once its headers came;
    /// every event's rows are noted as they arrive.
    fn start_sse(clients: Vec<(Client1, Conn)>, rows: usize) -> Live {
        Live::spawn(clients, rows, move |c, conn, waiting, mut notes| async move {
            let u = format!("{}&offset={}&handle={}&live=true&live_sse=true", c.url, c.offset, c.handle);
            let res = open(&conn, &u).await?;
            if res.status() != http::StatusCode::OK {
                bail!("{u}: {}", res.status());
            }
            waiting.fetch_add(1, Ordering::SeqCst);
            let mut body = res.into_body();
            // Events end with a blank line; a row's text may be split between frames.
            let mut pending = Vec::new();
            let mut seen = 0usize;
            while seen < rows {
                let Some(frame) = body.frame().await else { bail!("the SSE response ended after {seen} rows") };
                let Ok(data) = frame?.into_data() else { continue };
                seen += notes.note_events(&mut pending, &data, Instant::now());
            }
            notes.held = Some(Box::new(body));
            anyhow::Ok(notes)
        })
    }

    /// SSE clients as [`Live::start_sse`], their streams read by [`lean_h2`]: 180 streams per
    /// HTTP/2 connection, each connection's frames read by one task.
    fn start_sse_lean(edge_url: &str, clients: Vec<Client1>, rows: usize) -> Live {
        let n = clients.len();
        let waiting = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let authority = edge_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let mut tasks = Vec::new();
        let mut clients = clients.into_iter().peekable();
        while clients.peek().is_some() {
            let paths: Vec<String> = clients
                .by_ref()
                .take(180)
                .map(|c| {
                    let url = format!("{}&offset={}&handle={}&live=true&live_sse=true", c.url, c.offset, c.handle);
                    url.strip_prefix(edge_url.trim_end_matches('/')).unwrap_or(&url).to_owned()
                })
                .collect();
            let notes = Notes { got: Vec::with_capacity(paths.len() * rows), count: Arc::clone(&received), held: None };
            tasks.push(tokio::spawn(lean_h2::sse(authority.clone(), paths, rows, Arc::clone(&waiting), notes)));
        }
        Live { waiting, received, tasks, n }
    }

    /// Until every client has a request open at the edge.
    async fn all_waiting(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.waiting.load(Ordering::SeqCst) < self.n {
            if Instant::now() > deadline {
                bail!("only {} of {} clients are waiting", self.waiting.load(Ordering::SeqCst), self.n);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::Relaxed)
    }

    /// Until every client has received what it waits for. Responses are closed only then: a
    /// client closing its stream while others still wait would add the edge's clean-up to
    /// their latency (the last commit's p99 was twice the others').
    async fn finish(self, expected: usize) -> anyhow::Result<Vec<(usize, Instant)>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        let mut all = Vec::with_capacity(expected);
        let mut held = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(r) => {
                    let mut notes = r??;
                    all.append(&mut notes.got);
                    held.push(notes.held);
                }
                Err(_) => bail!(
                    "clients did not receive every write within 3 minutes: {} of {expected} deliveries",
                    self.received.load(Ordering::Relaxed),
                ),
            }
        }
        drop(held);
        Ok(all)
    }
}

/// Where a client notes the rows it received, with when: its own list (collected at the end),
/// and a count shared by all. The client shares the 2 cores with the edge, so what it does per
/// delivery is kept small: no lock shared by 50,000 clients, no parsing.
struct Notes {
    got: Vec<(usize, Instant)>,
    count: Arc<AtomicUsize>,
    /// What keeps the client's response open once it has all its rows (see [`Live::finish`]).
    held: Option<Box<dyn std::any::Any + Send>>,
}

impl Notes {
    /// Notes the rows in `body` (found by scanning, not parsing); returns how many.
    fn note(&mut self, body: &[u8], at: Instant) -> usize {
        let before = self.got.len();
        self.got.extend(round_values(body).map(|round| (round, at)));
        let n = self.got.len() - before;
        self.count.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Notes the rows of the whole SSE events in `data`, after what `pending` held of an event
    /// split between frames; keeps the unfinished rest in `pending`.
    fn note_events(&mut self, pending: &mut Vec<u8>, data: &[u8], at: Instant) -> usize {
        if pending.is_empty() && data.ends_with(b"\n\n") {
            // Whole events, the usual case: read in place.
            return self.note(data, at);
        }
        pending.extend_from_slice(data);
        let Some(end) = memchr::memmem::rfind(pending, b"\n\n") else { return 0 };
        let n = self.note(&pending[..end], at);
        pending.drain(..end + 2);
        n
    }
}

/// When each round of writes committed and first reached the change stream.
#[derive(Default)]
struct Rounds {
    commits: HashMap<usize, Instant>,
    stream_latency: Vec<f64>,
}

impl Rounds {
    /// `round` committed at `committed`: waits (at most `patience`) until the clients hold
    /// `expected` deliveries, and notes when the stream had it.
    async fn settle(
        &mut self,
        round: usize,
        committed: Instant,
        live: &Live,
        expected: usize,
        patience: Duration,
        stream_arrivals: &Mutex<Vec<Instant>>,
    ) {
        self.commits.insert(round, committed);
        let deadline = Instant::now() + patience;
        while live.received() < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(first) = stream_arrivals.lock().unwrap_or_else(|p| p.into_inner()).first() {
            self.stream_latency.push(first.saturating_duration_since(committed).as_secs_f64() * 1000.0);
        }
    }

    /// Deliveries, commit → client p50 and p99, commit → stream p50 (ms).
    fn percentiles(mut self, received: &[(usize, Instant)]) -> (usize, f64, f64, f64) {
        let mut lat: Vec<f64> = received.iter().map(|(round, at)| self.latency_ms(*round, *at)).collect();
        lat.sort_by(f64::total_cmp);
        self.stream_latency.sort_by(f64::total_cmp);
        (lat.len(), pct(&lat, 0.5), pct(&lat, 0.99), pct(&self.stream_latency, 0.5))
    }

    fn latency_ms(&self, round: usize, at: Instant) -> f64 {
        at.saturating_duration_since(self.commits[&round]).as_secs_f64() * 1000.0
    }

    /// Each round's commit → client p50 / p99 / last (ms): whether a tail is every commit's or
    /// one commit's (the first, say, while buffers grow).
    fn per_round(&self, received: &[(usize, Instant)]) -> String {
        let mut by_round: Vec<Vec<f64>> = vec![Vec::new(); self.commits.len()];
        for (round, at) in received {
            if let Some(lat) = by_round.get_mut(*round) {
                lat.push(self.latency_ms(*round, *at));
            }
        }
        by_round
            .iter_mut()
            .map(|lat| {
                lat.sort_by(f64::total_cmp);
                format!("{:.0}/{:.0}/{:.0}", pct(lat, 0.5), pct(lat, 0.99), lat.last().copied().unwrap_or(f64::NAN))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// When each change event of `table` reaches a plain NATS subscriber: the change stream's
/// own delivery, the baseline of every latency figure.
async fn stream_arrivals(
    args: &Args,
    table: &str,
) -> anyhow::Result<(Arc<Mutex<Vec<Instant>>>, tokio::task::JoinHandle<()>)> {
    let nats = async_nats::connect(&args.bus.nats_url).await?;
    let mut sub = nats.subscribe(args.bus.subjects().table_filter("public", table)).await?;
    nats.flush().await?;
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let into = Arc::clone(&arrivals);
    let listener = tokio::spawn(async move {
        let _nats = nats;
        while sub.next().await.is_some() {
            into.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now());
        }
    });
    Ok((arrivals, listener))
}

/// `n` live clients over `shapes` shapes (`bucket = k`); `writes` transactions, each inserting
/// one row per shape; latency from each commit to each client's response carrying its row.
async fn fan_out(args: &Args, pool: &sqlx::PgPool, http: &Conn, n: usize, shapes: usize) -> anyhow::Result<()> {
    let table = format!("bench_fan_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigserial PRIMARY KEY, bucket int4 NOT NULL, round int4 NOT NULL)"
    )))
    .execute(pool)
    .await?;
    let rss_before = rss_kib(args.edge_pid);
    let conns = if args.http2 { h2_connections(&args.edge_url, n).await? } else { vec![http.clone()] };
    // Clients connect and catch up, a few hundred at a time.
    let mut clients = Vec::with_capacity(n);
    let mut setup = futures::stream::iter((0..n).map(|i| {
        let url = if shapes == 1 {
            format!("{}/v1/shape?table={table}", args.edge_url)
        } else {
            format!("{}/v1/shape?table={table}&where=bucket%20%3D%20{}", args.edge_url, i % shapes)
        };
        let conn = conns[i % conns.len()].clone();
        async move { anyhow::Ok((catch_up(&conn, url).await?, conn)) }
    }))
    .buffer_unordered(200);
    while let Some(c) = setup.next().await {
        clients.push(c?);
    }
    drop(setup);
    let live = match (args.sse, args.http2 && !args.hyper_sse) {
        (true, true) => {
            Live::start_sse_lean(&args.edge_url, clients.into_iter().map(|(c, _)| c).collect(), args.writes)
        }
        (true, false) => Live::start_sse(clients, args.writes),
        (false, _) => Live::start(clients, args.writes),
    };
    let (stream_arrivals, listener) = stream_arrivals(args, &table).await?;
    let mut rounds = Rounds::default();
    let mut rss_waiting = 0;
    let (mut bench_cpu, mut edge_cpu, mut windows) = (0.0, 0.0, Vec::new());
    let me = std::process::id();
    for round in 0..args.writes {
        live.all_waiting().await?;
        // Requests counted as waiting must have reached the edge.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if round == 0 {
            rss_waiting = rss_kib(args.edge_pid);
        }
        stream_arrivals.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let (cpu0, edge0) = (cpu_ms(me), cpu_ms(args.edge_pid));
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
        // The round's deliveries, then the CPU each side spent on them.
        rounds.settle(round, committed, &live, n * (round + 1), Duration::from_secs(60), &stream_arrivals).await;
        windows.push(committed.elapsed().as_secs_f64() * 1000.0);
        bench_cpu += cpu_ms(me) - cpu0;
        edge_cpu += cpu_ms(args.edge_pid) - edge0;
    }
    let received = live.finish(n * args.writes).await?;
    listener.abort();
    let per_round = rounds.per_round(&received);
    let (deliveries, p50, p99, s50) = rounds.percentiles(&received);
    let per_client = (rss_waiting.saturating_sub(rss_before)) as f64 / n as f64;
    let window: f64 = windows.iter().sum();
    println!(
        "RESULT fan_out clients={n} shapes={shapes} transport={} deliveries={} commit_to_client_p50_ms={p50:.1} p99_ms={p99:.1} \
         commit_to_stream_p50_ms={s50:.1} ratio_p50={:.1} edge_rss_mb={:.0} rss_per_client_kib={per_client:.2} \
         delivery_window_ms={window:.0} client_cpu_ms={bench_cpu:.0} edge_cpu_ms={edge_cpu:.0} \
         rounds_p50_p99_last_ms={per_round}",
        match (args.http2, args.sse) {
            (true, true) => "h2-sse",
            (true, false) => "h2",
            (false, true) => "http1-sse",
            (false, false) => "http1",
        },
        deliveries,
        p50 / s50,
        rss_waiting as f64 / 1024.0
    );
    Ok(())
}

/// The where clause of shape `k` of `many_shapes` and `throughput`, and a `tag` its rows hold.
fn clause_of(kind: &str, k: usize) -> anyhow::Result<String> {
    Ok(match kind {
        "eq" => format!("bucket%20%3D%20{k}"),
        "like" => format!("tag%20LIKE%20%27k{k}-%25%27"),
        other => bail!("unknown --kind {other}"),
    })
}

/// `n` shapes on one table, created (and caught up) 64 at a time; returns the clients of the
/// first `keep`.
async fn create_shapes(args: &Args, http: &Conn, table: &str, n: usize, keep: usize) -> anyhow::Result<Vec<Client1>> {
    let started = Instant::now();
    let mut kept = Vec::new();
    let mut setup = futures::stream::iter((0..n).map(|k| {
        let url = clause_of(&args.kind, k).map(|w| format!("{}/v1/shape?table={table}&where={w}", args.edge_url));
        async move { anyhow::Ok((k, catch_up(http, url?).await?)) }
    }))
    .buffer_unordered(64);
    while let Some(c) = setup.next().await {
        let (k, c) = c?;
        if k < keep {
            kept.push(c);
        }
    }
    let s = started.elapsed().as_secs_f64();
    println!("created {n} shapes in {s:.1} s ({:.0}/s)", n as f64 / s);
    Ok(kept)
}

fn many_table(table: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigserial PRIMARY KEY, bucket int4 NOT NULL, \
         tag text NOT NULL, round int4 NOT NULL)"
    )
}

/// `--shapes` shapes on one table (`--kind`), `--clients` live clients on shape 0, and
/// `--writes` commits one after another, each inserting one row that only shape 0 holds:
/// commit → client beside commit → change stream, so the edge's share shows how a change's
/// cost grows with the shapes it does not concern.
async fn many_shapes(args: &Args, pool: &sqlx::PgPool, http: &Conn) -> anyhow::Result<()> {
    let table = format!("bench_many_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(many_table(&table))).execute(pool).await?;
    let n = args.shapes.max(1);
    let rss_before = rss_kib(args.edge_pid);
    let first = create_shapes(args, http, &table, n, 1).await?.pop().context("shape 0")?;
    let rss_shapes = rss_kib(args.edge_pid);
    let clients = args.clients.max(1);
    let live = Live::start((0..clients).map(|_| (clone_client(&first), http.clone())).collect(), args.writes);
    let (stream_arrivals, listener) = stream_arrivals(args, &table).await?;
    let mut rounds = Rounds::default();
    for round in 0..args.writes {
        live.all_waiting().await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        stream_arrivals.lock().unwrap_or_else(|p| p.into_inner()).clear();
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {table} (bucket, tag, round) VALUES (0, 'k0-row', $1)")))
            .bind(round as i32)
            .execute(pool)
            .await?;
        let committed = Instant::now();
        rounds.settle(round, committed, &live, clients * (round + 1), Duration::from_secs(30), &stream_arrivals).await;
    }
    let received = live.finish(clients * args.writes).await?;
    listener.abort();
    let (_, p50, p99, s50) = rounds.percentiles(&received);
    println!(
        "RESULT shapes kind={} shapes={n} clients={clients} writes={} commit_to_client_p50_ms={p50:.2} p99_ms={p99:.2} \
         commit_to_stream_p50_ms={s50:.2} edge_share_p50_ms={:.2} edge_rss_mb={:.0} rss_per_shape_kib={:.2}",
        args.kind,
        args.writes,
        p50 - s50,
        rss_shapes as f64 / 1024.0,
        rss_shapes.saturating_sub(rss_before) as f64 / n as f64
    );
    Ok(())
}

fn clone_client(c: &Client1) -> Client1 {
    Client1 { url: c.url.clone(), handle: c.handle.clone(), offset: c.offset.clone(), cursor: c.cursor.clone() }
}

/// `--shapes` shapes (`bucket = k`) and a backlog of `--changes` row inserts, each held by one
/// shape, written while the edge is stopped (SIGSTOP), so the edge then applies them as fast as
/// it can: changes per second from SIGCONT until a client of the last shape receives the
/// backlog's last row, beside reading and decoding the same backlog from JetStream with the
/// edge's own follower in the same run.
async fn throughput(args: &Args, pool: &sqlx::PgPool, http: &Conn) -> anyhow::Result<()> {
    let table = format!("bench_tp_{}", std::process::id());
    sqlx::raw_sql(sqlx::AssertSqlSafe(many_table(&table))).execute(pool).await?;
    let n = args.shapes.max(1);
    let last = n - 1;
    let mut kept = create_shapes(args, http, &table, n, n).await?;
    kept.retain(|c| c.url.ends_with(&format!("%3D%20{last}")));
    let watcher = kept.pop().context("the last shape")?;
    let js = async_nats::jetstream::new(async_nats::connect(&args.bus.nats_url).await?);
    let mut stream = js.get_stream(&args.bus.changes_stream).await?;
    let before = stream.info().await?.state.last_sequence;
    // The edge stops; the backlog is written and reaches the stream.
    signal(args.edge_pid, "-STOP")?;
    let written = Instant::now();
    let per_tx = 1000;
    for from in (0..args.changes).step_by(per_tx) {
        let to = (from + per_tx).min(args.changes);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (bucket, tag, round) SELECT g % $3, 'r', 0 FROM generate_series($1, $2 - 1) g"
        )))
        .bind(from as i64)
        .bind(to as i64)
        .bind(n as i64)
        .execute(pool)
        .await?;
    }
    // The marker, the backlog's last change: round 1 in the last shape.
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {table} (bucket, tag, round) VALUES ($1, 'r', 1)")))
        .bind(last as i32)
        .execute(pool)
        .await?;
    let expected = (args.changes + 1) as u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let end = loop {
        let at = stream.info().await?.state.last_sequence;
        // Each transaction adds no marker for a one-table transaction: one event per row.
        if at >= before + expected {
            break at;
        }
        if Instant::now() > deadline {
            signal(args.edge_pid, "-CONT")?;
            bail!("the backlog did not reach the stream: {} of {expected}", at - before);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ingest_s = written.elapsed().as_secs_f64();
    // The client's request waits at the edge (sent before SIGSTOP or queued in its socket).
    let live = Live::start(vec![(watcher, http.clone())], 1 + args.changes / n);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resumed = Instant::now();
    signal(args.edge_pid, "-CONT")?;
    let received = live.finish(1).await?;
    let marker_at = received.iter().find(|(round, _)| *round == 1).map(|(_, at)| *at).context("no marker")?;
    let edge_s = marker_at.duration_since(resumed).as_secs_f64();
    let events = end - before;
    // Baseline: the same events read and decoded by the edge's follower.
    let started = Instant::now();
    let mut follower = folio_live::Follower::new(
        js.clone(),
        &args.bus.changes_stream,
        args.bus.subjects().table_filter("public", &table),
        folio_bus::StreamSeq::new(before),
        &folio_live::Reconnects::never(),
        tokio_util::sync::CancellationToken::new(),
    );
    let (mut read, mut rows) = (0u64, 0usize);
    while read < events {
        let Some(batch) = follower.next_batch(512).await else { bail!("follower ended") };
        for m in batch {
            read += 1;
            let ev = <folio_proto::events::v1::ChangeEvent as prost::Message>::decode(m.payload.as_ref())?;
            rows += usize::from(!ev.new_row.is_empty());
        }
    }
    let follow_s = started.elapsed().as_secs_f64();
    let (edge_rate, follow_rate) = (events as f64 / edge_s, events as f64 / follow_s);
    println!(
        "RESULT throughput shapes={n} changes={events} ({rows} rows) edge_changes_per_s={edge_rate:.0} \
         follower_read_decode_per_s={follow_rate:.0} ratio={:.2} wal_ingest_per_s={:.0}",
        edge_rate / follow_rate,
        events as f64 / ingest_s
    );
    Ok(())
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status()?;
    if !status.success() {
        bail!("kill {sig} {pid}: {status}");
    }
    Ok(())
}

/// The `round` values of the rows in a response body (`"round":"<n>"`).
fn round_values(body: &[u8]) -> impl Iterator<Item = usize> + '_ {
    const NEEDLE: &[u8] = b"\"round\":\"";
    memchr::memmem::find_iter(body, NEEDLE).filter_map(|p| {
        let start = p + NEEDLE.len();
        let end = memchr::memchr(b'"', &body[start..]).map_or(body.len(), |e| start + e);
        std::str::from_utf8(&body[start..end]).ok()?.parse().ok()
    })
}

/// A minimal HTTP/2 client for many SSE streams on one connection, read by one task: frames
/// are parsed as they arrive and each DATA frame's rows noted, with no task, lock or wake-up
/// per stream (hyper's client costs about as much CPU per event as the edge does, on the same
/// 2 cores). Response headers are not decoded beyond `:status 200`; flow-control windows are
/// opened wide at the start, so the edge never waits for this client's window updates.
mod lean_h2 {
    use std::{
        collections::HashMap,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Instant,
    };

    use anyhow::{Context, bail};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::Notes;

    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const CONTINUATION: u8 = 0x9;
    const END_STREAM: u8 = 0x1;
    const ACK: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;
    const MAX_WINDOW: u32 = (1 << 31) - 1;

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
    fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
        let max = (1usize << n) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128 + 128) as u8);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// `GET path` as an HPACK block: static-table method and scheme, the path and authority
    /// as literals without indexing (no Huffman, no dynamic table).
    fn get_block(authority: &str, path: &str) -> Vec<u8> {
        let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
        for (name_index, value) in [(4, path), (1, authority)] {
            hpack_int(&mut b, 0x00, 4, name_index);
            hpack_int(&mut b, 0x00, 7, value.len());
            b.extend_from_slice(value.as_bytes());
        }
        b
    }

    struct Stream {
        pending: Vec<u8>,
        seen: usize,
    }

    /// Opens one SSE stream per path on a new connection to `authority` and reads them until
    /// each has noted `rows` rows; counts a stream in `waiting` once its 200 came.
    pub async fn sse(
        authority: String,
        paths: Vec<String>,
        rows: usize,
        waiting: Arc<AtomicUsize>,
        mut notes: Notes,
    ) -> anyhow::Result<Notes> {
        let mut tcp = tokio::net::TcpStream::connect(&authority).await.context("connecting to the edge")?;
        tcp.set_nodelay(true)?;
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 2^31-1; then the connection's window likewise.
        let mut settings = vec![0, 2, 0, 0, 0, 0, 0, 4];
        settings.extend_from_slice(&MAX_WINDOW.to_be_bytes());
        frame(&mut out, SETTINGS, 0, 0, &settings);
        frame(&mut out, 0x8, 0, 0, &(MAX_WINDOW - 65_535).to_be_bytes());
        let mut streams = HashMap::with_capacity(paths.len());
        for (i, path) in paths.iter().enumerate() {
            let id = 2 * i as u32 + 1;
            frame(&mut out, HEADERS, END_STREAM | END_HEADERS, id, &get_block(&authority, path));
            streams.insert(id, Stream { pending: Vec::new(), seen: 0 });
        }
        tcp.write_all(&out).await?;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut done = 0;
        let mut consumed: u64 = 0;
        while done < paths.len() {
            if buf.capacity() - buf.len() < 1 << 14 {
                buf.reserve(1 << 16);
            }
            if tcp.read_buf(&mut buf).await? == 0 {
                bail!("the edge closed the connection with {} of {} streams done", done, paths.len());
            }
            let at = Instant::now();
            let mut pos = 0;
            let mut reply = Vec::new();
            while buf.len() - pos >= 9 {
                let len = u32::from_be_bytes([0, buf[pos], buf[pos + 1], buf[pos + 2]]) as usize;
                if buf.len() - pos < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[pos + 3], buf[pos + 4]);
                let id = u32::from_be_bytes([buf[pos + 5], buf[pos + 6], buf[pos + 7], buf[pos + 8]]) & 0x7fff_ffff;
                let mut payload = &buf[pos + 9..pos + 9 + len];
                pos += 9 + len;
                if flags & PADDED != 0 && matches!(kind, DATA | HEADERS) {
                    let pad = *payload.first().context("a padded frame without its pad length")? as usize;
                    payload = payload.get(1..payload.len().saturating_sub(pad)).context("bad padding")?;
                }
                match kind {
                    DATA => {
                        consumed += len as u64;
                        let s = streams.get_mut(&id).with_context(|| format!("DATA on unknown stream {id}"))?;
                        let before = s.seen;
                        s.seen += notes.note_events(&mut s.pending, payload, at);
                        if before < rows && s.seen >= rows {
                            done += 1;
                        }
                        if flags & END_STREAM != 0 && s.seen < rows {
                            bail!("stream {id}: the SSE response ended after {} rows", s.seen);
                        }
                    }
                    HEADERS => {
                        if flags & END_HEADERS == 0 {
                            bail!("stream {id}: headers continued in CONTINUATION frames (not expected)");
                        }
                        let block = if flags & PRIORITY != 0 { payload.get(5..).unwrap_or_default() } else { payload };
                        // :status 200 is the static table's entry 8, indexed.
                        if block.first() != Some(&0x88) {
                            bail!("stream {id}: the response was not 200 (first header byte {:?})", block.first());
                        }
                        waiting.fetch_add(1, Ordering::SeqCst);
                    }
                    SETTINGS if flags & ACK == 0 => frame(&mut reply, SETTINGS, ACK, 0, &[]),
                    PING if flags & ACK == 0 => frame(&mut reply, PING, ACK, 0, payload),
                    RST_STREAM => bail!("stream {id} reset by the edge: {payload:?}"),
                    GOAWAY => bail!("the edge sent GOAWAY: {payload:?}"),
                    CONTINUATION => bail!("unexpected CONTINUATION frame"),
                    _ => {}
                }
            }
            buf.drain(..pos);
            // Keep the connection's window open (streams' windows are 2^31-1 each).
            if consumed > 1 << 30 {
                frame(&mut reply, 0x8, 0, 0, &(consumed as u32).to_be_bytes());
                consumed = 0;
            }
            if !reply.is_empty() {
                tcp.write_all(&reply).await?;
            }
        }
        notes.held = Some(Box::new(tcp));
        Ok(notes)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn hpack_integers() {
            let mut b = Vec::new();
            super::hpack_int(&mut b, 0, 5, 1337);
            assert_eq!(b, [31, 154, 10]); // RFC 7541 C.1.2
            b.clear();
            super::hpack_int(&mut b, 0, 7, 10);
            assert_eq!(b, [10]);
        }
    }
}

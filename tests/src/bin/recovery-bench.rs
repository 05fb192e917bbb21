//! Recovery benchmark: how long after a fault a live shape client receives a change again.
//!
//! One run sets up a scratch database (`folio_bench_<suffix>`, migrated by `folio_db`), a table
//! in the publication `folio_changes` (`REPLICA IDENTITY FULL`), a private nats-server (free
//! port, own store directory: the shared one is never restarted), two wal-ingest processes on
//! one slot (the second waits as the advisory-lock standby), two shape-edge processes, a writer
//! committing one row every `--write-interval` and live clients (raw HTTP long-poll, and SSE)
//! that follow one shape and, on any failed request, retry after 50 ms on the other edge with the
//! same handle, offset and cursor. All services are the real binaries as child processes.
//!
//! It first measures the steady state (commit returned → row received by the client, p50/p99),
//! then for each fault, `--rounds` times: inject it at instant F and record the time from F to
//! the first row *committed after F* (its INSERT was issued after F) reaching every client (the
//! per-round figure is the slowest client's). F is the signal or the terminate call, except for
//! nats-server, where it is the moment the process has exited (after SIGTERM it still delivers
//! for a few ms while it shuts down). After each round every row committed so far must
//! reach every client exactly once (a repeated insert is counted as a duplicate); at the end the
//! rows each client holds are compared with `SELECT id` of the table.
//!
//! Faults: `none` (the same measurement without a fault: the control), `nats-term` /
//! `nats-kill` (nats-server stopped with SIGTERM / SIGKILL, started again `--nats-down` after it
//! exited), `wal-ingest-kill` (SIGKILL of the streaming wal-ingest; the standby takes over, a new
//! standby is started afterwards), `edge-kill` (SIGKILL of the edge most clients use; they move
//! to the other one; the killed edge is started again afterwards), `walsender-kill`
//! (`pg_terminate_backend` of the slot's walsender).
//!
//! ```sh
//! export CARGO_TARGET_DIR=/var/cache/folio-target-bench
//! cargo build --release -p wal-ingest -p shape-edge
//! # the bench itself needs no optimising (and a release build of this crate compiles pdf-render)
//! cargo run -p folio-e2e --bin recovery-bench -- --rounds 5 \
//!   --wal-ingest-bin $CARGO_TARGET_DIR/release/wal-ingest --shape-edge-bin $CARGO_TARGET_DIR/release/shape-edge
//! ```
//!
//! Everything the run created (processes, slot, database, the private nats-server and its
//! store) is removed at the end, also on error or Ctrl-C; child logs are kept only on failure
//! or with `--keep-logs`.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{ArgAction, Parser, ValueEnum};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TABLE: &str = "recovery_rows";
/// The official client retries a failed request after a short pause; so does this one.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The official client aborts a live request still pending after 45 s.
const LIVE_REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Fault {
    /// No fault: the same measurement from an arbitrary instant (the control).
    None,
    /// nats-server SIGTERM, started again `--nats-down` after it exited.
    NatsTerm,
    /// nats-server SIGKILL, started again `--nats-down` after it exited.
    NatsKill,
    /// SIGKILL of the wal-ingest that streams the slot.
    WalIngestKill,
    /// SIGKILL of the edge most clients are on; they continue on the other edge.
    EdgeKill,
    /// `pg_terminate_backend` of the slot's walsender.
    WalsenderKill,
}

impl Fault {
    fn name(self, args: &Args) -> String {
        let down = humantime::format_duration(args.nats_down);
        match self {
            Fault::None => "none (control)".into(),
            Fault::NatsTerm => format!("nats-server SIGTERM, restarted {down} after it exited"),
            Fault::NatsKill => format!("nats-server SIGKILL, restarted {down} after it exited"),
            Fault::WalIngestKill if args.wal_ingest_standby => "wal-ingest SIGKILL, the standby takes over".into(),
            Fault::WalIngestKill => "wal-ingest SIGKILL, restarted at once (no standby)".into(),
            Fault::EdgeKill => "edge SIGKILL, clients move to the other edge".into(),
            Fault::WalsenderKill => "walsender terminated (`pg_terminate_backend`)".into(),
        }
    }
}

#[derive(Parser)]
#[command(
    name = "recovery-bench",
    about = "Time from a fault (nats-server restart, wal-ingest or edge crash, walsender terminated) to the \
             first delivery at a live shape client, beside the steady-state latency of the same run."
)]
struct Args {
    /// Any database on the server: the bench creates and drops its own database beside it.
    #[command(flatten)]
    db: folio_db::DbArgs,
    /// nats-server >= 2.11 for the private server (started on a free port with its own store).
    #[arg(long, env = "FOLIO_NATS_SERVER_BIN", default_value = "/opt/folio-nats/bin/nats-server")]
    nats_server_bin: PathBuf,
    /// wal-ingest binary [default: next to this binary, i.e. $CARGO_TARGET_DIR/<profile>/wal-ingest].
    #[arg(long, env = "RECOVERY_BENCH_WAL_INGEST_BIN")]
    wal_ingest_bin: Option<PathBuf>,
    /// shape-edge binary [default: next to this binary, i.e. $CARGO_TARGET_DIR/<profile>/shape-edge].
    #[arg(long, env = "RECOVERY_BENCH_SHAPE_EDGE_BIN")]
    shape_edge_bin: Option<PathBuf>,
    /// Faults to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,nats-term,nats-kill,wal-ingest-kill,edge-kill,walsender-kill"
    )]
    faults: Vec<Fault>,
    /// Rounds per fault.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// One row is committed this often (one INSERT per transaction).
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    write_interval: Duration,
    /// Live clients using long-poll (`live=true`).
    #[arg(long, default_value_t = 2)]
    long_poll_clients: usize,
    /// Live clients using SSE (`live=true&live_sse=true`).
    #[arg(long, default_value_t = 1)]
    sse_clients: usize,
    /// Length of the steady-state measurement.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    baseline: Duration,
    /// Quiet time before each fault, after every client has caught up (plus a random extra of
    /// up to the same again, so faults hit periodic processes at a random phase).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// How long nats-server stays down after it exited.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    nats_down: Duration,
    /// A round (or a catch-up check) that takes longer fails.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    round_timeout: Duration,
    /// Run a second wal-ingest as the advisory-lock standby (`true`: it takes over a killed one;
    /// `false`: the killed one is started again at once, as a supervisor would).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    wal_ingest_standby: bool,
    /// Extra argument for every wal-ingest (repeatable), e.g. `--wal-ingest-arg=--standby-poll=500ms`.
    #[arg(long = "wal-ingest-arg", allow_hyphen_values = true)]
    wal_ingest_args: Vec<String>,
    /// Extra argument for every shape-edge (repeatable).
    #[arg(long = "edge-arg", allow_hyphen_values = true)]
    edge_args: Vec<String>,
    /// Keep the child processes' logs (they are kept anyway when the run fails).
    #[arg(long)]
    keep_logs: bool,
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process whose output goes to a log file; killed when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn spawn(name: &str, bin: &Path, args: &[String], log_dir: &Path) -> anyhow::Result<Proc> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{name}.log")))
            .context("open log file")?;
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // Only the flags given here configure the child, not the caller's FOLIO_… environment.
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str()
                && (k.starts_with("FOLIO_") || k == "RUST_LOG" || k.starts_with("OTEL_"))
            {
                cmd.env_remove(&key);
            }
        }
        // A local measurement: the built-in secrets and Host-derived links are fine.
        cmd.env("FOLIO_ENV", "development");
        let child = cmd.spawn().with_context(|| format!("start {}", bin.display()))?;
        Ok(Proc { name: name.to_owned(), child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
    }

    fn sigterm(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).stderr(Stdio::null()).status();
    }

    /// Waits for the process to exit; SIGKILL after `patience`.
    async fn wait_exit(&mut self, patience: Duration) {
        let deadline = Instant::now() + patience;
        while !self.exited() {
            if Instant::now() > deadline {
                self.sigkill();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("binary has no directory")?.join(name))
}

// ---------------------------------------------------------------------------------------------
// HTTP

type Http = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn status_of(http: &Http, url: &str) -> Option<u16> {
    let uri = url.parse().ok()?;
    let res = tokio::time::timeout(Duration::from_secs(2), http.get(uri)).await.ok()?.ok()?;
    let status = res.status().as_u16();
    let _ = tokio::time::timeout(Duration::from_secs(2), res.into_body().collect()).await;
    Some(status)
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// What the writer committed and what each client received

struct Write {
    start: Instant,
    /// When the INSERT returned; `None` while in flight or when it failed.
    done: Option<Instant>,
    failed: bool,
}

/// `rows[i]` is the row with id `i + 1`.
#[derive(Default)]
struct WriteLog {
    rows: Vec<Write>,
    errors: u64,
}

struct ClientLog {
    kind: &'static str,
    /// Index of the edge the client uses now.
    edge: usize,
    /// id → first arrival (since the last 409, after which the client starts over).
    received: HashMap<i64, Instant>,
    /// Every first arrival in arrival order.
    arrivals: Vec<(i64, Instant)>,
    duplicates: Vec<i64>,
    /// Live rows that arrived after a later-committed one (the one writer commits in id order).
    out_of_order: u64,
    /// The highest id received so far.
    last_id: Option<i64>,
    refetches: u64,
    failed_requests: u64,
    last_error: Option<String>,
    other_messages: u64,
    live: bool,
}

impl ClientLog {
    fn new(kind: &'static str, edge: usize) -> Self {
        ClientLog {
            kind,
            edge,
            received: HashMap::new(),
            arrivals: Vec::new(),
            duplicates: Vec::new(),
            out_of_order: 0,
            last_id: None,
            refetches: 0,
            failed_requests: 0,
            last_error: None,
            other_messages: 0,
            live: false,
        }
    }

    fn apply(&mut self, messages: &[Value], at: Instant) {
        for m in messages {
            let headers = &m["headers"];
            if headers.get("control").is_some() {
                continue;
            }
            let id = m["value"]["id"].as_str().and_then(|s| s.parse::<i64>().ok());
            match (headers["operation"].as_str(), id) {
                (Some("insert"), Some(id)) => {
                    if self.live && self.last_id.is_some_and(|last| id < last) {
                        self.out_of_order += 1;
                    }
                    self.last_id = Some(self.last_id.map_or(id, |last| last.max(id)));
                    if self.received.insert(id, at).is_some() {
                        self.duplicates.push(id);
                    } else {
                        self.arrivals.push((id, at));
                    }
                }
                _ => self.other_messages += 1,
            }
        }
    }

    /// Earliest arrival of a row with id >= `first_id`, which cannot arrive before `since`.
    fn first_arrival_from(&self, first_id: i64, since: Instant) -> Option<Instant> {
        self.arrivals
            .iter()
            .rev()
            .take_while(|(_, at)| *at >= since)
            .filter(|(id, _)| *id >= first_id)
            .map(|(_, at)| *at)
            .min()
    }
}

/// A uniformly random number in [0, 1) (std's per-process random hash keys; no RNG needed).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Shared<T> = Arc<Mutex<T>>;

// ---------------------------------------------------------------------------------------------
// The writer

async fn writer(db_url: String, interval: Duration, log: Shared<WriteLog>, stop: CancellationToken) {
    let mut conn: Option<PgConnection> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_id = 1i64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match PgConnection::connect(&db_url).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    eprintln!("writer: connect: {e}");
                    lock(&log).errors += 1;
                    continue;
                }
            },
        };
        let id = next_id;
        next_id += 1;
        lock(&log).rows.push(Write { start: Instant::now(), done: None, failed: false });
        let result = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {TABLE} (id) VALUES ($1)")))
            .bind(id)
            .execute(&mut *c)
            .await;
        let done = Instant::now();
        let mut log = lock(&log);
        let row = &mut log.rows[(id - 1) as usize];
        match result {
            Ok(_) => row.done = Some(done),
            Err(e) => {
                // Ambiguous (it may have committed): the final check reads the table.
                row.failed = true;
                log.errors += 1;
                eprintln!("writer: insert {id}: {e}");
                conn = None;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A live shape client

struct ClientCtx {
    http: Http,
    edges: Vec<String>,
    sse: bool,
}

impl ClientCtx {
    fn fail(&self, log: &Shared<ClientLog>, used_edge: usize, error: String) {
        let mut l = lock(log);
        l.failed_requests += 1;
        l.last_error = Some(error);
        // Continue the same shape (handle, offset, cursor) on the other edge.
        if l.edge == used_edge {
            l.edge = (used_edge + 1) % self.edges.len();
        }
    }
}

/// Follows the shape of [`TABLE`] from `offset=-1` for ever, like the official client: catch-up
/// requests until up-to-date, then live requests; a 409 starts over with the new handle.
async fn run_client(ctx: ClientCtx, log: Shared<ClientLog>) {
    let (mut handle, mut offset, mut cursor) = (String::new(), "-1".to_owned(), String::new());
    let mut live = false;
    loop {
        let edge = lock(&log).edge;
        let mut url = format!("{}/v1/shape?table={TABLE}&offset={offset}", ctx.edges[edge]);
        if !handle.is_empty() {
            url.push_str(&format!("&handle={handle}"));
        }
        let sse = live && ctx.sse;
        if live {
            url.push_str(&format!("&cursor={cursor}&live=true"));
            if sse {
                url.push_str("&experimental_live_sse=true&live_sse=true");
            }
        }
        let mut req = http::Request::get(&url);
        if sse {
            req = req.header("accept", "text/event-stream");
        }
        let req = req.body(Empty::new()).expect("request");
        let res = match tokio::time::timeout(LIVE_REQUEST_TIMEOUT, ctx.http.request(req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                ctx.fail(&log, edge, format!("request: {e:?}"));
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(_) => {
                ctx.fail(&log, edge, "no response within 45 s".into());
                continue;
            }
        };
        let status = res.status();
        let headers = res.headers().clone();
        if status == http::StatusCode::CONFLICT {
            // must-refetch: start over with the new handle; the client's rows are cleared.
            let _ = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect()).await;
            handle = header(&headers, "electric-handle").unwrap_or_default();
            (offset, cursor, live) = ("-1".into(), String::new(), false);
            let mut l = lock(&log);
            l.refetches += 1;
            l.received.clear();
            // Starting over from a snapshot: its rows come in no particular order.
            (l.live, l.last_id) = (false, None);
            continue;
        }
        let is_sse = header(&headers, "content-type").is_some_and(|c| c.starts_with("text/event-stream"));
        if status != http::StatusCode::OK {
            let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect()).await;
            let body = match body {
                Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).chars().take(200).collect(),
                _ => String::new(),
            };
            ctx.fail(&log, edge, format!("{status} {body}"));
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        }
        if let Some(h) = header(&headers, "electric-handle") {
            handle = h;
        }
        if let Some(c) = header(&headers, "electric-cursor") {
            cursor = c;
        }
        if let Some(o) = header(&headers, "electric-offset") {
            offset = o;
        }
        if is_sse {
            // One `data:` event per message; buffered until an up-to-date, then applied (as the
            // official client flushes to subscribers), and the next offset is `<lsn>_0`.
            let mut body = res.into_body();
            let (mut buf, mut pending) = (Vec::<u8>::new(), Vec::<Value>::new());
            let outcome: Result<(), String> = loop {
                let frame = match tokio::time::timeout(Duration::from_secs(75), body.frame()).await {
                    Err(_) => break Err("SSE silent for 75 s".into()),
                    Ok(None) => break Ok(()),
                    Ok(Some(Err(e))) => break Err(format!("SSE body: {e:?}")),
                    Ok(Some(Ok(frame))) => frame,
                };
                let Some(data) = frame.data_ref() else { continue };
                buf.extend_from_slice(data);
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&event);
                    let data: String = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.trim_start().trim_end_matches('\r'))
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    let Ok(msg) = serde_json::from_str::<Value>(&data) else {
                        lock(&log).other_messages += 1;
                        continue;
                    };
                    if msg["headers"]["control"] == "up-to-date" {
                        let at = Instant::now();
                        lock(&log).apply(&pending, at);
                        pending.clear();
                        if let Some(lsn) = msg["headers"]["global_last_seen_lsn"].as_str() {
                            offset = format!("{lsn}_0");
                        }
                    } else {
                        pending.push(msg);
                    }
                }
            };
            if let Err(e) = outcome {
                ctx.fail(&log, edge, e);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            continue;
        }
        let body = match tokio::time::timeout(LIVE_REQUEST_TIMEOUT, res.into_body().collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                ctx.fail(&log, edge, format!("body: {e:?}"));
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(_) => {
                ctx.fail(&log, edge, "body not complete within 45 s".into());
                continue;
            }
        };
        let at = Instant::now();
        let messages: Vec<Value> = match serde_json::from_slice(&body) {
            Ok(m) => m,
            Err(e) => {
                ctx.fail(&log, edge, format!("body is not a JSON array: {e}"));
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let mut l = lock(&log);
        l.apply(&messages, at);
        if headers.contains_key("electric-up-to-date") {
            live = true;
            l.live = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The deployment under test

struct WalIngest {
    proc: Proc,
    admin: SocketAddr,
}

struct Edge {
    proc: Option<Proc>,
    port: u16,
    admin: SocketAddr,
}

struct Env {
    args: Args,
    suffix: String,
    run_dir: PathBuf,
    db_name: String,
    db_url: String,
    slot: String,
    wal_bin: PathBuf,
    edge_bin: PathBuf,
    http: Http,
    pool: Option<PgPool>,
    nats: Option<Proc>,
    nats_port: u16,
    wal: Vec<WalIngest>,
    wal_started: usize,
    edges: Vec<Edge>,
    edge_started: usize,
    writer: Option<(JoinHandle<()>, CancellationToken)>,
    clients: Vec<(Shared<ClientLog>, JoinHandle<()>)>,
    writes: Shared<WriteLog>,
    db_created: bool,
    t0: Instant,
}

macro_rules! say {
    ($env:expr, $($arg:tt)*) => {
        eprintln!("[{:7.2}s] {}", $env.t0.elapsed().as_secs_f64(), format!($($arg)*))
    };
}

impl Env {
    fn new(args: Args) -> anyhow::Result<Env> {
        let suffix = folio_testkit::unique_suffix();
        let wal_bin = match &args.wal_ingest_bin {
            Some(p) => p.clone(),
            None => sibling_binary("wal-ingest")?,
        };
        let edge_bin = match &args.shape_edge_bin {
            Some(p) => p.clone(),
            None => sibling_binary("shape-edge")?,
        };
        for (bin, pkg) in [(&wal_bin, "wal-ingest"), (&edge_bin, "shape-edge"), (&args.nats_server_bin, "")] {
            if !bin.is_file() {
                if pkg.is_empty() {
                    bail!(
                        "{} not found (set FOLIO_NATS_SERVER_BIN; scripts/start-services.sh installs one)",
                        bin.display()
                    );
                }
                bail!(
                    "{} not found: build it with the same profile (`cargo build --release -p {pkg}`) or pass its path",
                    bin.display()
                );
            }
        }
        let run_dir = std::env::temp_dir().join(format!("folio-recovery-bench-{suffix}"));
        std::fs::create_dir_all(run_dir.join("nats"))?;
        let db_name = format!("folio_bench_{suffix}");
        let db_url = folio_db::with_database(&args.db.database_url, &db_name);
        Ok(Env {
            slot: format!("recovery_bench_{suffix}"),
            suffix,
            run_dir,
            db_name,
            db_url,
            wal_bin,
            edge_bin,
            http: http_client(),
            pool: None,
            nats: None,
            nats_port: free_port()?,
            wal: Vec::new(),
            wal_started: 0,
            edges: Vec::new(),
            edge_started: 0,
            writer: None,
            clients: Vec::new(),
            writes: Arc::default(),
            db_created: false,
            t0: Instant::now(),
            args,
        })
    }

    fn pool(&self) -> &PgPool {
        self.pool.as_ref().expect("database is set up")
    }

    fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    fn changes_stream(&self) -> String {
        format!("RB_{}_CHANGES", self.suffix)
    }

    fn subject_root(&self) -> String {
        format!("rb{}", self.suffix)
    }

    fn edge_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.edges[i].port)
    }

    async fn create_database(&mut self) -> anyhow::Result<()> {
        let mut admin = PgConnection::connect(&self.args.db.database_url).await.with_context(|| {
            format!("connect to {} (scripts/start-services.sh starts PostgreSQL)", self.args.db.database_url)
        })?;
        // Our own hex token, never user input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", self.db_name))).execute(&mut admin).await?;
        self.db_created = true;
        admin.close().await.ok();
        let pool = folio_db::connect(&self.db_url, 4).await?;
        folio_db::migrate(&pool).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {TABLE} (id int8 PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp());
             ALTER TABLE {TABLE} REPLICA IDENTITY FULL;
             ALTER PUBLICATION {} ADD TABLE {TABLE};",
            folio_db::PUBLICATION
        )))
        .execute(&pool)
        .await?;
        self.pool = Some(pool);
        Ok(())
    }

    /// Starts the private nats-server; returns when it accepts connections.
    async fn start_nats(&mut self) -> anyhow::Result<Instant> {
        let args: Vec<String> = ["-a", "127.0.0.1", "-p", &self.nats_port.to_string(), "-js", "-sd"]
            .into_iter()
            .map(str::to_owned)
            .chain([self.run_dir.join("nats").display().to_string()])
            .collect();
        self.nats = Some(Proc::spawn("nats-server", &self.args.nats_server_bin, &args, &self.run_dir)?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.nats_port)).await.is_ok() {
                return Ok(Instant::now());
            }
            if self.nats.as_mut().is_some_and(Proc::exited) {
                bail!("nats-server exited (see {}/nats-server.log)", self.run_dir.display());
            }
            if Instant::now() > deadline {
                bail!("nats-server does not listen on {}", self.nats_port);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn spawn_wal_ingest(&mut self) -> anyhow::Result<()> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut args: Vec<String> = vec![
            "--database-url".into(),
            self.db_url.clone(),
            "--nats-url".into(),
            self.nats_url(),
            "--slot".into(),
            self.slot.clone(),
            "--publication".into(),
            folio_db::PUBLICATION.into(),
            "--subject-root".into(),
            self.subject_root(),
            "--changes-stream".into(),
            self.changes_stream(),
            "--jobs-stream".into(),
            format!("RB_{}_JOBS", self.suffix),
            "--admin-addr".into(),
            admin.to_string(),
        ];
        args.extend(self.args.wal_ingest_args.iter().cloned());
        self.wal_started += 1;
        let proc = Proc::spawn(&format!("wal-ingest-{}", self.wal_started), &self.wal_bin, &args, &self.run_dir)?;
        self.wal.push(WalIngest { proc, admin });
        Ok(())
    }

    fn spawn_edge(&mut self, i: usize) -> anyhow::Result<()> {
        let (port, admin) = (self.edges[i].port, self.edges[i].admin);
        let mut args: Vec<String> = vec![
            "--listen-addr".into(),
            format!("127.0.0.1:{port}"),
            "--admin-addr".into(),
            admin.to_string(),
            "--nats-url".into(),
            self.nats_url(),
            "--ds-prefix".into(),
            self.subject_root(),
            "--changes-stream".into(),
            self.changes_stream(),
            "--database-url".into(),
            self.db_url.clone(),
            "--publication".into(),
            folio_db::PUBLICATION.into(),
            "--shape-tables".into(),
            "*".into(),
            "--shape-insecure".into(),
        ];
        args.extend(["--subject-root".into(), self.subject_root()]);
        args.extend(["--jobs-stream".into(), format!("RB_{}_JOBS", self.suffix)]);
        args.extend(self.args.edge_args.iter().cloned());
        self.edge_started += 1;
        let name = format!("shape-edge-{}-{}", i + 1, self.edge_started);
        self.edges[i].proc = Some(Proc::spawn(&name, &self.edge_bin, &args, &self.run_dir)?);
        Ok(())
    }

    /// Index of the wal-ingest whose `/readyz` is 200 (the one streaming the slot).
    async fn active_wal_ingest(&self) -> Option<usize> {
        for (i, w) in self.wal.iter().enumerate() {
            if status_of(&self.http, &format!("http://{}/readyz", w.admin)).await == Some(200) {
                return Some(i);
            }
        }
        None
    }

    async fn wait_for<F, Fut>(&self, what: &str, patience: Duration, mut check: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + patience;
        while !check().await {
            if Instant::now() > deadline {
                bail!("timed out after {patience:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn wait_edge_healthy(&self, i: usize) -> anyhow::Result<()> {
        let url = format!("{}/v1/health", self.edge_url(i));
        self.wait_for(&format!("edge {} to answer {url}", i + 1), Duration::from_secs(60), || async {
            status_of(&self.http, &url).await == Some(200)
        })
        .await
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        for w in &mut self.wal {
            if w.proc.exited() {
                bail!("{} exited (see {}/{}.log)", w.proc.name, self.run_dir.display(), w.proc.name);
            }
        }
        for e in &mut self.edges {
            if let Some(p) = e.proc.as_mut()
                && p.exited()
            {
                bail!("{} exited (see {}/{}.log)", p.name, self.run_dir.display(), p.name);
            }
        }
        let patience = self.args.round_timeout;
        self.wait_for("a wal-ingest to stream the slot (/readyz)", patience, || async {
            self.active_wal_ingest().await.is_some()
        })
        .await?;
        for i in 0..self.edges.len() {
            self.wait_edge_healthy(i).await?;
        }
        Ok(())
    }

    async fn setup(&mut self) -> anyhow::Result<()> {
        self.create_database().await?;
        say!(self, "database {} ready", self.db_name);
        self.start_nats().await?;
        say!(self, "private nats-server on {} (store {}/nats)", self.nats_port, self.run_dir.display());
        self.spawn_wal_ingest()?;
        let patience = Duration::from_secs(60);
        self.wait_for("wal-ingest to stream the slot", patience, || async { self.active_wal_ingest().await.is_some() })
            .await?;
        if self.args.wal_ingest_standby {
            self.spawn_wal_ingest()?;
            let url = format!("http://{}/healthz", self.wal[1].admin);
            self.wait_for("the standby wal-ingest to start", patience, || async {
                status_of(&self.http, &url).await == Some(200)
            })
            .await?;
        }
        say!(
            self,
            "wal-ingest streaming slot {}{}",
            self.slot,
            if self.args.wal_ingest_standby { ", a standby waiting" } else { "" }
        );
        for _ in 0..2 {
            let admin = format!("127.0.0.1:{}", free_port()?).parse()?;
            self.edges.push(Edge { proc: None, port: free_port()?, admin });
            let i = self.edges.len() - 1;
            self.spawn_edge(i)?;
        }
        for i in 0..self.edges.len() {
            self.wait_edge_healthy(i).await?;
        }
        say!(self, "edges on {} and {}", self.edge_url(0), self.edge_url(1));
        let edges: Vec<String> = (0..self.edges.len()).map(|i| self.edge_url(i)).collect();
        let kinds = std::iter::repeat_n(false, self.args.long_poll_clients)
            .chain(std::iter::repeat_n(true, self.args.sse_clients));
        for sse in kinds {
            let log = Arc::new(Mutex::new(ClientLog::new(if sse { "sse" } else { "long-poll" }, 0)));
            let ctx = ClientCtx { http: self.http.clone(), edges: edges.clone(), sse };
            let task = tokio::spawn(run_client(ctx, Arc::clone(&log)));
            self.clients.push((log, task));
        }
        let clients: Vec<_> = self.clients.iter().map(|(l, _)| Arc::clone(l)).collect();
        self.wait_for("every client to be live", Duration::from_secs(60), || async {
            clients.iter().all(|c| lock(c).live)
        })
        .await?;
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(writer(self.db_url.clone(), self.args.write_interval, Arc::clone(&self.writes), stop.clone()));
        self.writer = Some((task, stop));
        say!(self, "{} clients live; writer committing a row every {:?}", self.clients.len(), self.args.write_interval);
        Ok(())
    }

    /// Waits until every client holds every row committed so far (except `known_missing`);
    /// returns the rows still missing after `patience` (by client).
    async fn catch_up(&self, known_missing: &HashSet<i64>, patience: Duration) -> Vec<(usize, Vec<i64>)> {
        let expected: Vec<i64> = lock(&self.writes)
            .rows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.done.is_some())
            .map(|(i, _)| i as i64 + 1)
            .filter(|id| !known_missing.contains(id))
            .collect();
        let deadline = Instant::now() + patience;
        loop {
            let missing: Vec<(usize, Vec<i64>)> = self
                .clients
                .iter()
                .enumerate()
                .map(|(i, (c, _))| {
                    let c = lock(c);
                    (i, expected.iter().copied().filter(|id| !c.received.contains_key(id)).collect::<Vec<_>>())
                })
                .filter(|(_, m)| !m.is_empty())
                .collect();
            if missing.is_empty() || Instant::now() > deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// commit returned → client received, in ms, for rows whose INSERT started in `[from, to)`.
    fn latencies(&self, from: Instant, to: Instant) -> Vec<f64> {
        let writes = lock(&self.writes);
        let mut out = Vec::new();
        for (c, _) in &self.clients {
            for (id, at) in &lock(c).arrivals {
                let w = &writes.rows[(*id - 1) as usize];
                if let (true, Some(done)) = (w.start >= from && w.start < to, w.done) {
                    let ms = if *at >= done {
                        at.duration_since(done).as_secs_f64()
                    } else {
                        -done.duration_since(*at).as_secs_f64()
                    };
                    out.push(ms * 1000.0);
                }
            }
        }
        out
    }

    fn totals(&self) -> (u64, u64, u64) {
        self.clients.iter().fold((0, 0, 0), |(f, d, r), (c, _)| {
            let c = lock(c);
            (f + c.failed_requests, d + c.duplicates.len() as u64, r + c.refetches)
        })
    }

    /// Injects `fault` at F and measures; the deployment is whole again when this returns.
    async fn round(&mut self, fault: Fault, round: usize, known_missing: &mut HashSet<i64>) -> anyhow::Result<Round> {
        self.wait_healthy().await?;
        let missing = self.catch_up(known_missing, self.args.round_timeout).await;
        if !missing.is_empty() {
            bail!("clients did not catch up before the round: {}", describe_missing(&missing));
        }
        // A random extra pause up to `--settle`, so the fault does not fall at the same phase of
        // a periodic process every round (the standby's 2 s lock poll, the 1 s retry backoff).
        tokio::time::sleep(self.args.settle + self.args.settle.mul_f64(random_fraction())).await;
        let (failed0, dups0, refetch0) = self.totals();
        let timeout = self.args.round_timeout;
        let clients: Vec<Shared<ClientLog>> = self.clients.iter().map(|(c, _)| Arc::clone(c)).collect();
        let writes = Arc::clone(&self.writes);
        let fault_at;
        let mut back_at: Option<Instant> = None;
        let mut detail = String::new();
        let per_client: Vec<Option<Instant>>;
        match fault {
            Fault::None => {
                fault_at = Instant::now();
                per_client = measure(fault_at, &clients, &writes, timeout).await;
            }
            Fault::NatsTerm | Fault::NatsKill => {
                let down = self.args.nats_down;
                let mut nats = self.nats.take().context("nats-server is not running")?;
                let signal_at = Instant::now();
                if fault == Fault::NatsTerm {
                    nats.sigterm();
                } else {
                    nats.sigkill();
                }
                // The fault is the server being gone: after SIGTERM it still serves (and
                // delivers) for a moment while it shuts down.
                nats.wait_exit(Duration::from_secs(30)).await;
                fault_at = Instant::now();
                drop(nats);
                let restart = async {
                    tokio::time::sleep(down).await;
                    self.start_nats_again().await
                };
                let (started, measured) = tokio::join!(restart, measure(fault_at, &clients, &writes, timeout));
                let (nats, listening) = started?;
                self.nats = Some(nats);
                back_at = Some(listening);
                detail = format!("nats-server exited {} after the signal", ms(fault_at - signal_at));
                per_client = measured;
            }
            Fault::WalIngestKill => {
                let active = self.active_wal_ingest().await.context("no wal-ingest is streaming")?;
                let mut dead = self.wal.remove(active);
                let old_pid = self.slot_pid().await?;
                fault_at = Instant::now();
                dead.proc.sigkill();
                dead.proc.wait_exit(Duration::from_secs(10)).await;
                if !self.args.wal_ingest_standby {
                    // No standby: restarted at once, as a supervisor would.
                    self.spawn_wal_ingest()?;
                }
                let probe = async {
                    loop {
                        if self.active_wal_ingest().await.is_some() {
                            return Some(Instant::now());
                        }
                        if fault_at.elapsed() > timeout {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                };
                let (ready, measured) = tokio::join!(probe, measure(fault_at, &clients, &writes, timeout));
                back_at = ready;
                let new_pid = self.slot_pid().await?;
                let pid = |p: Option<i32>| p.map_or("none".to_owned(), |p| p.to_string());
                detail = format!("walsender pid {} → {}", pid(old_pid), pid(new_pid));
                per_client = measured;
                drop(dead);
                if self.args.wal_ingest_standby {
                    // The replacement becomes the next standby.
                    self.spawn_wal_ingest()?;
                    let url = format!("http://{}/healthz", self.wal.last().expect("spawned").admin);
                    self.wait_for("the new standby to start", Duration::from_secs(60), || async {
                        status_of(&self.http, &url).await == Some(200)
                    })
                    .await?;
                }
            }
            Fault::EdgeKill => {
                let mut users = vec![0usize; self.edges.len()];
                for c in &clients {
                    users[lock(c).edge] += 1;
                }
                let victim = (0..users.len()).max_by_key(|i| (users[*i], usize::MAX - i)).expect("two edges");
                let mut proc = self.edges[victim].proc.take().context("edge is not running")?;
                fault_at = Instant::now();
                proc.sigkill();
                proc.wait_exit(Duration::from_secs(10)).await;
                per_client = measure(fault_at, &clients, &writes, timeout).await;
                detail = format!("killed edge {} ({} of {} clients on it)", victim + 1, users[victim], clients.len());
                drop(proc);
                self.spawn_edge(victim)?;
                self.wait_edge_healthy(victim).await?;
            }
            Fault::WalsenderKill => {
                fault_at = Instant::now();
                let old: Option<i32> = sqlx::query_scalar(
                    "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND pg_terminate_backend(active_pid)",
                )
                .bind(&self.slot)
                .fetch_optional(self.pool())
                .await?;
                let old = old.context("the slot has no walsender to terminate")?;
                let probe = async {
                    loop {
                        if let Ok(Some(pid)) = self.slot_pid().await
                            && pid != old
                        {
                            return Some(Instant::now());
                        }
                        if fault_at.elapsed() > timeout {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                };
                let (streaming, measured) = tokio::join!(probe, measure(fault_at, &clients, &writes, timeout));
                back_at = streaming;
                per_client = measured;
            }
        }
        // Every row committed so far must reach every client.
        let missing = self.catch_up(known_missing, timeout).await;
        let lost: HashSet<i64> = missing.iter().flat_map(|(_, ids)| ids.iter().copied()).collect();
        if !lost.is_empty() {
            say!(self, "{fault:?} round {round}: rows missing after {timeout:?}: {}", describe_missing(&missing));
        }
        known_missing.extend(lost.iter().copied());
        let (failed1, dups1, refetch1) = self.totals();
        let recovery: Vec<Option<f64>> =
            per_client.iter().map(|at| at.map(|at| (at - fault_at).as_secs_f64())).collect();
        let kinds: Vec<&'static str> = clients.iter().map(|c| lock(c).kind).collect();
        let r = Round {
            recovery: recovery.iter().copied().collect::<Option<Vec<f64>>>().map(|v| v.into_iter().fold(0.0, f64::max)),
            per_client: recovery,
            kinds,
            back_after: back_at.map(|b| (b - fault_at).as_secs_f64()),
            failed_requests: failed1 - failed0,
            duplicates: dups1 - dups0,
            refetches: refetch1 - refetch0,
            lost: lost.len() as u64,
            detail,
        };
        say!(self, "{fault:?} round {}: {}", round + 1, r.describe());
        Ok(r)
    }

    async fn start_nats_again(&mut self) -> anyhow::Result<(Proc, Instant)> {
        let listening = self.start_nats().await?;
        Ok((self.nats.take().context("started")?, listening))
    }

    async fn slot_pid(&self) -> anyhow::Result<Option<i32>> {
        Ok(sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&self.slot)
            .fetch_optional(self.pool())
            .await?
            .flatten())
    }

    async fn run(&mut self) -> anyhow::Result<Report> {
        self.setup().await?;
        self.wait_healthy().await?;
        tokio::time::sleep(self.args.settle).await;
        say!(self, "steady state for {:?}", self.args.baseline);
        let from = Instant::now();
        tokio::time::sleep(self.args.baseline).await;
        let to = Instant::now();
        let missing = self.catch_up(&HashSet::new(), self.args.round_timeout).await;
        if !missing.is_empty() {
            bail!("steady state: rows did not arrive: {}", describe_missing(&missing));
        }
        let mut baseline = self.latencies(from, to);
        baseline.sort_by(f64::total_cmp);
        say!(
            self,
            "steady state: {} deliveries, commit → client p50 {:.1} ms, p99 {:.1} ms",
            baseline.len(),
            pct(&baseline, 0.5),
            pct(&baseline, 0.99)
        );
        let mut results: Vec<(Fault, Vec<Round>)> = Vec::new();
        let mut known_missing = HashSet::new();
        let faults = self.args.faults.clone();
        for fault in faults {
            let mut rounds = Vec::new();
            for round in 0..self.args.rounds {
                rounds.push(self.round(fault, round, &mut known_missing).await?);
            }
            results.push((fault, rounds));
        }
        // Final check against the table itself: stop writing, let everything arrive.
        if let Some((task, stop)) = self.writer.take() {
            stop.cancel();
            let _ = task.await;
        }
        let committed: Vec<i64> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM {TABLE} ORDER BY id")))
                .fetch_all(self.pool())
                .await?;
        let committed_set: HashSet<i64> = committed.iter().copied().collect();
        let deadline = Instant::now() + self.args.round_timeout;
        loop {
            let complete = self.clients.iter().all(|(c, _)| {
                let c = lock(c);
                committed.iter().all(|id| c.received.contains_key(id))
            });
            if complete || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut problems = Vec::new();
        for (i, (c, _)) in self.clients.iter().enumerate() {
            let c = lock(c);
            let lost = committed.iter().filter(|id| !c.received.contains_key(id)).count();
            let phantom = c.received.keys().filter(|id| !committed_set.contains(id)).count();
            if lost + phantom + c.duplicates.len() > 0 || c.other_messages > 0 || c.out_of_order > 0 {
                problems.push(format!(
                    "client {} ({}): {lost} rows lost, {phantom} never committed, {} duplicated, {} out of commit order, {} unexpected messages",
                    i + 1,
                    c.kind,
                    c.duplicates.len(),
                    c.out_of_order,
                    c.other_messages
                ));
            }
        }
        let writer_errors = lock(&self.writes).errors;
        say!(
            self,
            "final check: {} rows committed, {} clients: {}",
            committed.len(),
            self.clients.len(),
            if problems.is_empty() {
                "every client holds exactly the committed rows, live ones in commit order".to_owned()
            } else {
                problems.join("; ")
            }
        );
        Ok(Report { baseline, results, committed: committed.len(), problems, writer_errors })
    }

    async fn cleanup(&mut self) {
        if let Some((task, stop)) = self.writer.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        for (_, task) in self.clients.drain(..) {
            task.abort();
        }
        for e in &mut self.edges {
            if let Some(mut p) = e.proc.take() {
                p.sigkill();
                p.wait_exit(Duration::from_secs(5)).await;
            }
        }
        for mut w in self.wal.drain(..) {
            w.proc.sigkill();
            w.proc.wait_exit(Duration::from_secs(5)).await;
        }
        if let Some(mut nats) = self.nats.take() {
            nats.sigkill();
            nats.wait_exit(Duration::from_secs(5)).await;
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if self.db_created {
            let done = async {
                let mut admin = PgConnection::connect(&self.args.db.database_url).await?;
                // The walsender of a killed ingester may take a moment to notice.
                for _ in 0..100 {
                    let active: Option<Option<i32>> =
                        sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                            .bind(&self.slot)
                            .fetch_optional(&mut admin)
                            .await?;
                    match active {
                        None => break,
                        Some(None) => {
                            sqlx::query("SELECT pg_drop_replication_slot($1)")
                                .bind(&self.slot)
                                .execute(&mut admin)
                                .await?;
                            break;
                        }
                        Some(Some(pid)) => {
                            sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut admin).await?;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name)))
                    .execute(&mut admin)
                    .await?;
                anyhow::Ok(())
            };
            match done.await {
                Ok(()) => self.db_created = false,
                Err(e) => eprintln!("cleanup: slot {} / database {}: {e:#}", self.slot, self.db_name),
            }
        }
        let _ = std::fs::remove_dir_all(self.run_dir.join("nats"));
    }
}

/// For each client, when it received its first row whose INSERT was issued at or after
/// `fault_at` (`None` if not within `timeout`).
async fn measure(
    fault_at: Instant,
    clients: &[Shared<ClientLog>],
    writes: &Shared<WriteLog>,
    timeout: Duration,
) -> Vec<Option<Instant>> {
    let deadline = fault_at + timeout;
    let first_id = loop {
        let found = {
            let w = lock(writes);
            let after = w.rows.iter().rev().take_while(|r| r.start >= fault_at).count();
            (after > 0).then(|| (w.rows.len() - after) as i64 + 1)
        };
        if let Some(id) = found {
            break id;
        }
        if Instant::now() > deadline {
            return vec![None; clients.len()];
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    loop {
        let firsts: Vec<Option<Instant>> =
            clients.iter().map(|c| lock(c).first_arrival_from(first_id, fault_at)).collect();
        if firsts.iter().all(Option::is_some) || Instant::now() > deadline {
            return firsts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Results

struct Round {
    /// Seconds from the fault to the slowest client's first post-fault row (`None`: timed out).
    recovery: Option<f64>,
    per_client: Vec<Option<f64>>,
    kinds: Vec<&'static str>,
    /// Seconds from the fault until the failed component was back (nats listening, a wal-ingest
    /// ready, the slot streamed again).
    back_after: Option<f64>,
    failed_requests: u64,
    duplicates: u64,
    refetches: u64,
    lost: u64,
    detail: String,
}

impl Round {
    fn describe(&self) -> String {
        let clients: Vec<String> = self
            .per_client
            .iter()
            .zip(&self.kinds)
            .map(|(r, k)| format!("{k} {}", r.map_or("timeout".into(), secs)))
            .collect();
        format!(
            "recovery {} [{}]{}; {} failed requests, {} duplicates, {} 409s, {} lost{}",
            self.recovery.map_or("TIMEOUT".into(), secs),
            clients.join(", "),
            self.back_after.map_or(String::new(), |b| format!("; back after {}", secs(b))),
            self.failed_requests,
            self.duplicates,
            self.refetches,
            self.lost,
            if self.detail.is_empty() { String::new() } else { format!("; {}", self.detail) }
        )
    }
}

struct Report {
    baseline: Vec<f64>,
    results: Vec<(Fault, Vec<Round>)>,
    committed: usize,
    problems: Vec<String>,
    writer_errors: u64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn secs(s: f64) -> String {
    if s < 1.0 { format!("{:.0} ms", s * 1000.0) } else { format!("{s:.2} s") }
}

fn ms(d: Duration) -> String {
    secs(d.as_secs_f64())
}

fn describe_missing(missing: &[(usize, Vec<i64>)]) -> String {
    missing
        .iter()
        .map(|(c, ids)| {
            let shown: Vec<String> = ids.iter().take(8).map(i64::to_string).collect();
            format!(
                "client {}: {} rows ({}{})",
                c + 1,
                ids.len(),
                shown.join(", "),
                if ids.len() > 8 { ", …" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_report(args: &Args, report: &Report, nats_version: &str) {
    let (p50, p99) = (pct(&report.baseline, 0.5), pct(&report.baseline, 0.99));
    println!();
    println!(
        "{} long-poll + {} SSE clients on one shape, one row committed every {:?}, {} rounds per fault, {nats_version}.",
        args.long_poll_clients, args.sse_clients, args.write_interval, args.rounds
    );
    println!(
        "Steady state (no fault, {:?}, {} deliveries): commit → client p50 {:.1} ms, p99 {:.1} ms.",
        args.baseline,
        report.baseline.len(),
        p50,
        p99
    );
    println!();
    println!(
        "| fault | fault → first post-fault row at every client, median | max | long-poll / SSE, median | component back after, median | median ÷ steady p50 | failed requests | lost / dup / 409 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (fault, rounds) in &report.results {
        let recovered: Vec<f64> = rounds.iter().filter_map(|r| r.recovery).collect();
        let timeouts = rounds.len() - recovered.len();
        let med = median(&recovered);
        let max = recovered.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let by_kind = |kind: &str| {
            let v: Vec<f64> = rounds
                .iter()
                .flat_map(|r| {
                    r.per_client
                        .iter()
                        .zip(&r.kinds)
                        .filter(|(_, k)| **k == kind)
                        .filter_map(|(v, _)| *v)
                        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                })
                .collect();
            median(&v).map_or("–".into(), secs)
        };
        let back: Vec<f64> = rounds.iter().filter_map(|r| r.back_after).collect();
        let sum = |f: fn(&Round) -> u64| rounds.iter().map(f).sum::<u64>();
        println!(
            "| {} | {}{} | {} | {} / {} | {} | {} | {} | {} / {} / {} |",
            fault.name(args),
            med.map_or("–".into(), secs),
            if timeouts > 0 { format!(" ({timeouts} of {} timed out)", rounds.len()) } else { String::new() },
            max.map_or("–".into(), secs),
            by_kind("long-poll"),
            by_kind("sse"),
            median(&back).map_or("–".into(), secs),
            med.map_or("–".into(), |m| format!("{:.0}×", m * 1000.0 / p50)),
            sum(|r| r.failed_requests),
            sum(|r| r.lost),
            sum(|r| r.duplicates),
            sum(|r| r.refetches),
        );
    }
    println!();
    println!(
        "{} rows committed; {}{}",
        report.committed,
        if report.problems.is_empty() {
            "every client ended with exactly the committed rows, none twice".to_owned()
        } else {
            report.problems.join("; ")
        },
        if report.writer_errors > 0 { format!(" ({} writer errors)", report.writer_errors) } else { String::new() }
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.long_poll_clients + args.sse_clients == 0 {
        bail!("--rounds and the number of clients must be at least 1");
    }
    let nats_version = Command::new(&args.nats_server_bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut env = Env::new(args)?;
    say!(env, "run {} (logs in {})", env.suffix, env.run_dir.display());
    let result = tokio::select! {
        r = env.run() => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    env.cleanup().await;
    let failed = match &result {
        Ok(report) => !report.problems.is_empty(),
        Err(_) => true,
    };
    if failed || env.args.keep_logs {
        eprintln!("child logs kept in {}", env.run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&env.run_dir);
    }
    let report = result?;
    print_report(&env.args, &report, &nats_version);
    if !report.problems.is_empty() {
        bail!("clients did not end with exactly the committed rows");
    }
    Ok(())
}

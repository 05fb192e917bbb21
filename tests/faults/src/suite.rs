//! The fault suite: a private PostgreSQL and nats-server, fault proxies in front of both, two
//! wal-ingest replicas behind the proxies, a writer committing all along; one fault after the
//! other, each waited out until the stream has caught up; then the whole stream is checked
//! against what committed, and each fault's recovery is read off the stored messages' times.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::Base,
    ledger::{self, Ledger, Published},
    proxy::{FaultProxy, Link},
    wal_ingest::{IngestSetup, Replica},
};

/// How long a partition or a latency spell lasts.
const SPELL: Duration = Duration::from_secs(3);
/// Added latency during a latency spell.
const LATENCY: Duration = Duration::from_millis(200);
/// How long after a heal a commit still counts as the fault's.
const AFTER_HEAL: Duration = Duration::from_millis(700);
/// The writer's pace: about 150 commits a second.
const PACE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillActiveIngester,
    NatsTerm,
    NatsKill,
    PostgresRestart,
    WalsenderTerminated,
    NatsLatency,
    NatsReset,
    NatsBlackhole,
    PostgresReset,
    PostgresBlackhole,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::KillActiveIngester,
        Fault::NatsTerm,
        Fault::NatsKill,
        Fault::PostgresRestart,
        Fault::WalsenderTerminated,
        Fault::NatsLatency,
        Fault::NatsReset,
        Fault::NatsBlackhole,
        Fault::PostgresReset,
        Fault::PostgresBlackhole,
    ];

    pub fn describe(self) -> String {
        match self {
            Fault::KillActiveIngester => "wal-ingest: the active replica SIGKILLed (the standby takes over)".into(),
            Fault::NatsTerm => "nats-server: SIGTERM, started again".into(),
            Fault::NatsKill => "nats-server: SIGKILL, started again".into(),
            Fault::PostgresRestart => "PostgreSQL: restarted (fast shutdown ends every session)".into(),
            Fault::WalsenderTerminated => "PostgreSQL: wal-ingest's walsender terminated".into(),
            Fault::NatsLatency => {
                format!("wal-ingest ↔ NATS: +{} ms each way for {} s", LATENCY.as_millis(), SPELL.as_secs())
            }
            Fault::NatsReset => "wal-ingest ↔ NATS: every connection reset".into(),
            Fault::NatsBlackhole => format!("wal-ingest ↔ NATS: blackholed for {} s", SPELL.as_secs()),
            Fault::PostgresReset => "wal-ingest ↔ PostgreSQL: every connection reset".into(),
            Fault::PostgresBlackhole => format!("wal-ingest ↔ PostgreSQL: blackholed for {} s", SPELL.as_secs()),
        }
    }
}

/// One fault as it happened: from when it was injected to when it was healed.
#[derive(Debug, Clone)]
pub struct Injected {
    pub fault: Fault,
    pub injected: SystemTime,
    pub healed: SystemTime,
}

/// What a fault cost, read from the stream.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub fault: Fault,
    /// From the heal until every transaction committed before it was in the stream.
    pub backlog_cleared: Duration,
    /// The longest commit → stored delay of a transaction committed during the fault.
    pub worst_delay: Duration,
    pub during: usize,
}

pub struct Report {
    pub committed: usize,
    pub recoveries: Vec<Recovery>,
    /// Commit → stored delays of transactions committed away from every fault: the baseline.
    pub quiet_median: Duration,
    pub quiet_worst: Duration,
    pub elapsed: Duration,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| fault | checked | backlog cleared after the heal | worst commit → stored | commits during |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for r in &self.recoveries {
            let _ = writeln!(
                out,
                "| {} | every committed change once, in commit order | {} ms | {} ms | {} |",
                r.fault.describe(),
                r.backlog_cleared.as_millis(),
                r.worst_delay.as_millis(),
                r.during
            );
        }
        let _ = writeln!(
            out,
            "| (baseline: commits away from every fault) | the same | — | {} ms (median {} ms) | — |",
            self.quiet_worst.as_millis(),
            self.quiet_median.as_millis()
        );
        let _ = writeln!(
            out,
            "\n{} transactions committed and checked, in {:.1} s.",
            self.committed,
            self.elapsed.as_secs_f64()
        );
        out
    }
}

/// Runs every fault `rounds` times. Needs the wal-ingest binary (`bin_dir`) and a nats-server.
pub async fn run(rounds: usize) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let base = Base::start(&[]).await?;
    let base_setup = base.ingest_setup();
    let Base { pg, mut nats, pool, url: direct_url, .. } = base;
    let pg_link = FaultProxy::start(([127, 0, 0, 1], pg.port).into()).await?;
    let nats_link = FaultProxy::start(([127, 0, 0, 1], nats.port).into()).await?;
    // wal-ingest reaches both through the fault proxies; the writer and the checks do not.
    let setup = IngestSetup {
        database_url: format!("postgres://postgres@{}/folio", pg_link.addr()),
        nats_url: format!("nats://{}", nats_link.addr()),
        ..base_setup
    };
    let root = setup.subject_root.clone();
    let mut replicas = [Replica::start(&setup).await?, Replica::start(&setup).await?];
    active(&replicas).await?;

    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let subjects = folio_bus::Subjects::new(root);
    let filter = subjects.table_filter("public", "agencies");

    let ledger = Ledger::default();
    let stop = CancellationToken::new();
    let writer = tokio::spawn(ledger::write(direct_url.clone(), PACE, stop.clone(), ledger.clone()));
    caught_up(&js, &setup.changes_stream, &filter, &ledger).await?;

    let mut injected = Vec::new();
    for _ in 0..rounds {
        for fault in Fault::ALL {
            // Longer than a fault's window after its heal, so no two windows overlap.
            tokio::time::sleep(AFTER_HEAL + Duration::from_millis(300)).await;
            let at = SystemTime::now();
            match fault {
                Fault::KillActiveIngester => {
                    let i = active(&replicas).await?;
                    replicas[i].kill_and_restart().await?;
                }
                Fault::NatsTerm => nats.restart("TERM").await?,
                Fault::NatsKill => nats.restart("KILL").await?,
                Fault::PostgresRestart => pg.restart().await?,
                Fault::WalsenderTerminated => {
                    let ended: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                         WHERE slot_name = $1 AND active_pid IS NOT NULL) t",
                    )
                    .bind(&setup.slot)
                    .fetch_one(&pool)
                    .await?;
                    anyhow::ensure!(ended == 1, "no walsender streamed the slot");
                }
                Fault::NatsLatency => spell(&nats_link, Link::Latency(LATENCY)).await,
                Fault::NatsReset => nats_link.reset_all(),
                Fault::NatsBlackhole => spell(&nats_link, Link::Blackhole).await,
                Fault::PostgresReset => pg_link.reset_all(),
                Fault::PostgresBlackhole => spell(&pg_link, Link::Blackhole).await,
            }
            injected.push(Injected { fault, injected: at, healed: SystemTime::now() });
            caught_up(&js, &setup.changes_stream, &filter, &ledger)
                .await
                .with_context(|| format!("recovering from: {}", fault.describe()))?;
        }
    }
    stop.cancel();
    writer.await??;
    let committed = ledger.committed();
    let published =
        ledger::published(&js, &setup.changes_stream, &filter, committed.len(), Duration::from_secs(60)).await?;
    ledger::check_exactly_once_in_order(&committed, &published)?;
    let recoveries = injected.iter().map(|i| recovery(i, &committed, &published)).collect();
    let stored: std::collections::HashMap<u64, SystemTime> = published.iter().map(|p| (p.txn, p.stored_at)).collect();
    let mut quiet: Vec<Duration> = committed
        .iter()
        .filter(|(_, at)| !injected.iter().any(|i| in_window(i, *at)))
        .filter_map(|(t, at)| stored.get(t).and_then(|s| s.duration_since(*at).ok()))
        .collect();
    quiet.sort();
    let quiet_median = quiet.get(quiet.len() / 2).copied().unwrap_or_default();
    let quiet_worst = quiet.last().copied().unwrap_or_default();
    Ok(Report { committed: committed.len(), recoveries, quiet_median, quiet_worst, elapsed: started.elapsed() })
}

async fn spell(link: &FaultProxy, state: Link) {
    link.set(state);
    tokio::time::sleep(SPELL).await;
    link.set(Link::Pass);
}

/// The index of the replica streaming the slot, once one does.
async fn active(replicas: &[Replica; 2]) -> anyhow::Result<usize> {
    for _ in 0..300 {
        for (i, r) in replicas.iter().enumerate() {
            if r.is_active().await {
                return Ok(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no wal-ingest replica became active within 30 s")
}

/// Waits until every transaction committed so far is in the stream.
async fn caught_up(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
    ledger: &Ledger,
) -> anyhow::Result<()> {
    let wanted = ledger.committed().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let stored = match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages as usize).unwrap_or(0),
            Err(_) => 0,
        };
        // The stream holds the agency inserts and nothing else the writer causes.
        if stored >= wanted {
            let found = ledger::published(js, stream, filter, wanted, Duration::ZERO).await?;
            if found.len() >= wanted {
                return Ok(());
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{stored} of {wanted} committed changes stored after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn recovery(i: &Injected, committed: &[(u64, SystemTime)], published: &[Published]) -> Recovery {
    let stored: std::collections::HashMap<u64, SystemTime> = published.iter().map(|p| (p.txn, p.stored_at)).collect();
    let delay =
        |(txn, at): &(u64, SystemTime)| stored.get(txn).and_then(|s| s.duration_since(*at).ok()).unwrap_or_default();
    let before_heal = committed.iter().filter(|(_, at)| *at <= i.healed);
    let last_stored = before_heal.filter_map(|(t, _)| stored.get(t)).max().copied();
    let backlog_cleared = last_stored.and_then(|s| s.duration_since(i.healed).ok()).unwrap_or_default();
    let during: Vec<_> = committed.iter().filter(|(_, at)| in_window(i, *at)).collect();
    let worst_delay = during.iter().map(|c| delay(c)).max().unwrap_or_default();
    Recovery { fault: i.fault, backlog_cleared, worst_delay, during: during.len() }
}

/// Whether a commit at `at` falls in the fault's window: from its injection until shortly after its heal.
fn in_window(i: &Injected, at: SystemTime) -> bool {
    at >= i.injected && at <= i.healed + AFTER_HEAL
}

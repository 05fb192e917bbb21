//! Crashes: the ingester process is SIGKILLed several times (also amid transactions over two
//! tables), and nats-server is restarted with SIGTERM and SIGKILL, while a writer commits;
//! afterwards the stream holds every committed row (and marker) exactly once, in commit order.
//! After a nats-server restart, ingest resumes within 2 s.

use std::time::{Duration, SystemTime};

use folio_bus::Part;
use folio_proto::events::v1::Operation;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Harness, Stored, assert_commit_order, text, with_harness};

const ROWS: i64 = 50_000;

async fn create_tables(h: &Harness, tables: &[&str]) {
    for table in tables {
        for sql in [
            format!(
                "CREATE TABLE {table} (id bigserial PRIMARY KEY, agency_id uuid NOT NULL, txn int NOT NULL, n int NOT NULL)"
            ),
            format!("ALTER TABLE {table} REPLICA IDENTITY FULL"),
            format!("ALTER PUBLICATION folio_changes ADD TABLE {table}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&h.db.pool).await.unwrap();
        }
    }
}

/// Commits `ROWS` rows in transactions of 1..=100 rows from one connection, so row ids follow
/// commit order. Returns the number of transactions.
async fn write(pool: sqlx::PgPool) -> usize {
    let agency = uuid::Uuid::new_v4();
    let mut written = 0i64;
    let mut txn = 0usize;
    while written < ROWS {
        let size = ((txn * 37) % 100 + 1).min((ROWS - written) as usize) as i64;
        insert(&pool, "crash_rows", agency, txn, size).await;
        written += size;
        txn += 1;
    }
    txn
}

async fn insert<'e>(db: impl sqlx::PgExecutor<'e>, table: &str, agency: uuid::Uuid, txn: usize, size: i64) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (agency_id, txn, n) SELECT $1, $2, g FROM generate_series(1, $3) g"
    )))
    .bind(agency)
    .bind(txn as i32)
    .bind(size as i32)
    .execute(db)
    .await
    .unwrap();
}

/// Waits until the stream holds `expected` messages (or stops growing for 20 s), lets a
/// straggling duplicate land, then reads it all.
async fn settle(h: &Harness, expected: u64) -> Vec<Stored> {
    let mut last = (0, tokio::time::Instant::now());
    loop {
        let len = h.stream_len(&h.changes_stream()).await;
        if len >= expected {
            break;
        }
        if len != last.0 {
            last = (len, tokio::time::Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.read_all(&h.changes_stream()).await
}

/// Exactly once, in commit order: ids 1..=rows in stream order, positions counting from 0 in
/// each transaction, the last row of each transaction flagged.
fn check(messages: &[Stored], rows: i64, transactions: usize) {
    let ids: Vec<i64> = messages.iter().map(|m| text(&m.event().new_row, "id").unwrap().parse().unwrap()).collect();
    for (i, pair) in ids.windows(2).enumerate() {
        if pair[1] != pair[0] + 1 {
            eprintln!(
                "gap after id {} ({}) → id {} ({})",
                pair[0],
                messages[i].msg_id,
                pair[1],
                messages[i + 1].msg_id
            );
        }
    }
    assert_commit_order(messages);
    assert_eq!(messages.len() as i64, rows, "every committed row exactly once");
    let mut expected_position = 0;
    for (i, m) in messages.iter().enumerate() {
        let e = m.event();
        assert_eq!(text(&e.new_row, "id"), Some((i as i64 + 1).to_string().as_str()), "row {i} in commit order");
        assert_eq!(e.position, expected_position, "position of {}", m.msg_id);
        let last = messages.get(i + 1).is_none_or(|next| next.key.commit_lsn != m.key.commit_lsn);
        assert_eq!(e.last_in_transaction, last, "last flag of {}", m.msg_id);
        expected_position = if last { 0 } else { expected_position + 1 };
    }
    let commits = messages.iter().filter(|m| m.event().last_in_transaction).count();
    assert_eq!(commits, transactions);
}

/// SIGKILLs the ingester process five times while it streams; returns the one running now and
/// the id of the stream's last message just after each kill.
async fn kill_repeatedly(h: &Harness, mut child: tokio::process::Child) -> (tokio::process::Child, Vec<String>) {
    let mut last_at_kill = Vec::new();
    for pause_ms in [700u64, 1100, 400, 1500, 900] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        child.kill().await.unwrap();
        // Publishes the dead process had sent may still be in the server's socket buffer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        last_at_kill.push(last_msg_id(h).await.unwrap_or_default());
        child = h.spawn_process().unwrap();
    }
    (child, last_at_kill)
}

async fn last_msg_id(h: &Harness) -> Option<String> {
    let mut stream = h.js.get_stream(h.changes_stream()).await.ok()?;
    let last = stream.info().await.ok()?.state.last_sequence;
    let msg = stream.get_raw_message(last).await.ok()?;
    Some(msg.headers.get(folio_bus::headers::MSG_ID)?.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_ingester_repeatedly_loses_and_duplicates_nothing() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        create_tables(&h, &["crash_rows"]).await;
        let child = h.spawn_process().unwrap();
        h.wait_for_slot().await;
        let writer = tokio::spawn(write(h.db.pool.clone()));
        let (mut child, last_at_kill) = kill_repeatedly(&h, child).await;
        let transactions = writer.await.unwrap();
        let messages = settle(&h, ROWS as u64).await;
        check(&messages, ROWS, transactions);
        let stored_at_kill: Vec<usize> =
            last_at_kill.iter().map(|id| messages.iter().position(|m| &m.msg_id == id).map_or(0, |p| p + 1)).collect();
        assert!(
            stored_at_kill.iter().any(|&n| n > 0 && n < ROWS as usize),
            "at least one kill landed mid-stream: {stored_at_kill:?}"
        );
        child.kill().await.unwrap();
    })
    .await;
}

/// Transactions writing `crash_rows`, `crash_side`, `crash_rows` (1..=5 rows, then one, then
/// one) until `rows` rows of `crash_rows` are committed. Returns the number of transactions.
async fn write_two_tables(pool: sqlx::PgPool, rows: i64) -> usize {
    let agency = uuid::Uuid::new_v4();
    let (mut written, mut txn) = (0i64, 0usize);
    while written < rows {
        let size = (txn % 5 + 1) as i64;
        let mut tx = pool.begin().await.unwrap();
        insert(&mut *tx, "crash_rows", agency, txn, size).await;
        insert(&mut *tx, "crash_side", agency, txn, 1).await;
        insert(&mut *tx, "crash_rows", agency, txn, 1).await;
        tx.commit().await.unwrap();
        written += size + 1;
        txn += 1;
    }
    txn
}

/// Each transaction exactly once, in commit order: its rows, then a marker for `crash_rows`
/// and one for `crash_side`, the second flagged last; row ids without gap in both tables.
fn check_two_tables(messages: &[Stored], transactions: usize) {
    assert_commit_order(messages);
    let mut next_id = [1i64, 1];
    let mut seen = 0;
    for txn in messages.chunk_by(|a, b| a.key.commit_lsn == b.key.commit_lsn) {
        seen += 1;
        assert!(txn.len() >= 5, "a whole transaction: {:?}", txn.iter().map(|m| &m.msg_id).collect::<Vec<_>>());
        let (rows, markers) = txn.split_at(txn.len() - 2);
        for (i, m) in rows.iter().enumerate() {
            let e = m.event();
            let side = i == rows.len() - 2;
            assert_eq!(e.table, if side { "crash_side" } else { "crash_rows" }, "{}", m.msg_id);
            assert_eq!((e.position, e.last_in_transaction), (i as u32, false), "{}", m.msg_id);
            let next = &mut next_id[usize::from(side)];
            assert_eq!(text(&e.new_row, "id"), Some(next.to_string().as_str()), "{}", m.msg_id);
            *next += 1;
        }
        let ends: Vec<(i32, String, Part, u32, bool)> = markers
            .iter()
            .map(|m| {
                let e = m.event();
                (e.operation, e.table, m.key.part, e.position, e.last_in_transaction)
            })
            .collect();
        let at = rows.len() as u32;
        let end = Operation::TransactionEnd as i32;
        assert_eq!(
            ends,
            [(end, "crash_rows".into(), Part::End(0), at, false), (end, "crash_side".into(), Part::End(1), at, true)]
        );
    }
    assert_eq!(seen, transactions, "every transaction exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_ingester_amid_multi_table_transactions_keeps_every_marker_exactly_once() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        create_tables(&h, &["crash_rows", "crash_side"]).await;
        let child = h.spawn_process().unwrap();
        h.wait_for_slot().await;
        let writer = tokio::spawn(write_two_tables(h.db.pool.clone(), 12_000));
        let (mut child, last_at_kill) = kill_repeatedly(&h, child).await;
        let transactions = writer.await.unwrap();
        // Per transaction: 1..=5 + 1 rows of crash_rows, 1 of crash_side, 2 markers.
        let expected: usize = (0..transactions).map(|t| t % 5 + 1 + 4).sum();
        let messages = settle(&h, expected as u64).await;
        // Where the kills cut the stream; `.e0` is a cut between the two markers.
        eprintln!("last message at each kill: {last_at_kill:?}");
        check_two_tables(&messages, transactions);
        child.kill().await.unwrap();
    })
    .await;
}

/// Commits transactions of 1..=20 rows every millisecond until `stop`, from one connection
/// (row ids follow commit order). Returns (rows, transactions).
async fn write_steadily(pool: sqlx::PgPool, stop: CancellationToken) -> (i64, usize) {
    let agency = uuid::Uuid::new_v4();
    let (mut rows, mut txn) = (0i64, 0usize);
    while !stop.is_cancelled() {
        let size = (txn * 7 % 20 + 1) as i64;
        insert(&pool, "crash_rows", agency, txn, size).await;
        rows += size;
        txn += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (rows, txn)
}

/// A private nats-server (the shared one must not be restarted) that can be frozen before it
/// is stopped: frozen, it leaves every publish of that moment awaiting its ack, as a server
/// dying under load does (folio_testkit::PrivateNats cannot freeze).
struct Nats {
    port: u16,
    dir: std::path::PathBuf,
    child: tokio::process::Child,
}

impl Nats {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("wal-ingest-nats-{}", folio_testkit::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Self::spawn(port, &dir).await;
        Self { port, dir, child }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("nats-server runs").to_string();
        let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Freezes the server for 300 ms, ends it with `signal` (TERM or KILL), leaves it down
    /// for `down` and starts it again on the same port and store; returns once it listens,
    /// with the time the old process had ended.
    async fn restart(&mut self, signal: &str, down: Duration) -> SystemTime {
        self.signal("STOP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.signal(signal);
        self.signal("CONT");
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            self.child.kill().await.unwrap();
        }
        let ended = SystemTime::now();
        tokio::time::sleep(down).await;
        self.child = Self::spawn(self.port, &self.dir).await;
        ended
    }

    async fn spawn(port: u16, dir: &std::path::Path) -> tokio::process::Child {
        let binary =
            std::env::var("FOLIO_NATS_SERVER_BIN").unwrap_or_else(|_| "/opt/folio-nats/bin/nats-server".to_owned());
        let child = tokio::process::Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server binary (set FOLIO_NATS_SERVER_BIN)");
        let addr = format!("127.0.0.1:{port}");
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return child;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_resumes_within_two_seconds_of_a_nats_restart_and_loses_nothing() {
    let mut nats = Nats::start().await;
    let h = Harness::with_nats(nats.url()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<Nats>();
    with_harness(h, move |h| async move {
        create_tables(&h, &["crash_rows"]).await;
        // The default ack timeout (10 s): the disconnect, not a timeout, must end the session.
        let ingester = h.spawn().await;
        h.wait_for_slot().await;
        let stop = CancellationToken::new();
        let writer = tokio::spawn(write_steadily(h.db.pool.clone(), stop.clone()));
        let mut restarts = Vec::new();
        for how in ["TERM", "KILL"] {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let ended = nats.restart(how, Duration::from_millis(500)).await;
            let back = SystemTime::now();
            folio_testkit::eventually("events stored after the nats-server restart", || async {
                let mut stream = h.js.get_stream(h.changes_stream()).await.ok()?;
                let last = stream.info().await.ok()?.state.last_timestamp;
                (SystemTime::from(last) > ended).then_some(())
            })
            .await;
            restarts.push((how, ended, back));
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        stop.cancel();
        let (rows, transactions) = writer.await.unwrap();
        let messages = settle(&h, rows as u64).await;
        let mut delays = Vec::new();
        for (how, ended, back) in restarts {
            let first = messages.iter().find(|m| m.stored_at > ended).expect("an event stored after the restart");
            let delay = first.stored_at.duration_since(back).unwrap_or_default();
            eprintln!("nats-server restart (SIG{how}): first event stored {delay:?} after it was back");
            delays.push((how, delay));
        }
        check(&messages, rows, transactions);
        for (how, delay) in delays {
            assert!(
                delay < Duration::from_secs(2),
                "SIG{how}: first event stored {delay:?} after nats-server was back"
            );
        }
        ingester.stop().await.expect("ingester stops");
        // Keep the server alive for the harness' cleanup, then let it go.
        let _ = tx.send(nats);
    })
    .await;
    drop(rx);
}

//! Crashes: the ingester process is SIGKILLed several times, and nats-server is restarted,
//! while a writer commits; afterwards the stream holds every committed row exactly once, in
//! commit order.

use std::time::Duration;

use crate::helpers::{Harness, Stored, assert_commit_order, text, with_harness};

const ROWS: i64 = 50_000;

async fn create_table(h: &Harness) {
    for sql in [
        "CREATE TABLE crash_rows (id bigserial PRIMARY KEY, agency_id uuid NOT NULL, txn int NOT NULL, n int NOT NULL)",
        "ALTER TABLE crash_rows REPLICA IDENTITY FULL",
        "ALTER PUBLICATION folio_changes ADD TABLE crash_rows",
    ] {
        sqlx::query(sql).execute(&h.db.pool).await.unwrap();
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
        sqlx::query("INSERT INTO crash_rows (agency_id, txn, n) SELECT $1, $2, g FROM generate_series(1, $3) g")
            .bind(agency)
            .bind(txn as i32)
            .bind(size as i32)
            .execute(&pool)
            .await
            .unwrap();
        written += size;
        txn += 1;
    }
    txn
}

/// Waits until the stream holds every row (or stops growing for 20 s), lets a straggling
/// duplicate land, then reads it all.
async fn settle(h: &Harness) -> Vec<Stored> {
    let mut last = (0, tokio::time::Instant::now());
    loop {
        let len = h.stream_len(&h.changes_stream()).await;
        if len >= ROWS as u64 {
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

/// Exactly once, in commit order: ids 1..=ROWS in stream order, positions counting from 0 in
/// each transaction, the last row of each transaction flagged.
fn check(messages: &[Stored], transactions: usize) {
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
    assert_eq!(messages.len() as i64, ROWS, "every committed row exactly once");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_ingester_repeatedly_loses_and_duplicates_nothing() {
    let h = Harness::new().await.unwrap();
    with_harness(h, |h| async move {
        create_table(&h).await;
        let mut child = h.spawn_process().unwrap();
        h.wait_for_slot().await;
        let writer = tokio::spawn(write(h.db.pool.clone()));
        let mut kills = 0;
        let mut published_at_kill = Vec::new();
        for pause_ms in [700u64, 1100, 400, 1500, 900] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            child.kill().await.unwrap();
            kills += 1;
            published_at_kill.push(h.stream_len(&h.changes_stream()).await);
            child = h.spawn_process().unwrap();
        }
        let transactions = writer.await.unwrap();
        let messages = settle(&h).await;
        check(&messages, transactions);
        assert_eq!(kills, 5);
        assert!(
            published_at_kill.iter().any(|&n| n > 0 && n < ROWS as u64),
            "at least one kill landed mid-stream: {published_at_kill:?}"
        );
        child.kill().await.unwrap();
    })
    .await;
}

/// A private nats-server (the shared one must not be restarted), on a free port with its own
/// store directory.
struct PrivateNats {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<tokio::process::Child>,
}

impl PrivateNats {
    fn binary() -> String {
        std::env::var("FOLIO_NATS_SERVER_BIN").unwrap_or_else(|_| "/opt/folio-nats/bin/nats-server".to_owned())
    }

    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("wal-ingest-nats-{}", folio_testkit::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = Self { port, dir, child: None };
        nats.restart().await;
        nats
    }

    async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
        let child = tokio::process::Command::new(Self::binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server binary (set FOLIO_NATS_SERVER_BIN)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        folio_testkit::eventually("the private nats-server listens", || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_mid_stream_loses_nothing() {
    let mut nats = PrivateNats::start().await;
    let h = Harness::with_nats(nats.url()).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<PrivateNats>();
    with_harness(h, move |h| async move {
        create_table(&h).await;
        let mut config = h.config();
        config.ack_timeout = Duration::from_secs(2);
        let ingester = h.spawn_with(config);
        h.wait_for_slot().await;
        let writer = tokio::spawn(write(h.db.pool.clone()));
        tokio::time::sleep(Duration::from_millis(800)).await;
        nats.restart().await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        nats.restart().await;
        let transactions = writer.await.unwrap();
        let messages = settle(&h).await;
        check(&messages, transactions);
        ingester.stop().await.expect("ingester stops");
        // Keep the server alive for the harness' cleanup, then let it go.
        let _ = tx.send(nats);
    })
    .await;
    drop(rx);
}

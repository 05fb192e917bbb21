//! One isolated world per test: a fresh database, a unique slot, subject root and stream
//! names, an ingester run in-process or as a real process, and readers for what it published.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use folio_bus::MsgKey;
use folio_proto::events::v1::{ChangeEvent, ColumnValue, column_value};
use folio_testkit::Sandbox;
use futures::StreamExt;
use prost::Message as _;
use wal_ingest::Config;

/// wal-ingest alone in a [`Sandbox`] (its fields read through), with readers for what it
/// published.
pub struct Harness {
    pub sandbox: Sandbox,
}

impl std::ops::Deref for Harness {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

/// One message as stored in a stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub msg_id: String,
    pub key: MsgKey,
    pub payload: bytes::Bytes,
    pub headers: async_nats::HeaderMap,
    /// When the server stored it.
    pub stored_at: std::time::SystemTime,
}

impl Stored {
    pub fn event(&self) -> ChangeEvent {
        ChangeEvent::decode(self.payload.clone()).expect("a ChangeEvent payload")
    }
}

/// wal-ingest running in this process; `ready` = streaming its slot.
pub type InProcess = folio_runtime::Spawned<wal_ingest::Error>;

impl Harness {
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_nats(folio_testkit::nats_url()).await
    }

    pub async fn with_nats(nats_url: String) -> anyhow::Result<Self> {
        init_tracing();
        Ok(Self { sandbox: Sandbox::with_nats(nats_url).await? })
    }

    pub fn config(&self) -> Config {
        self.sandbox.wal_ingest_config()
    }

    pub fn changes_stream(&self) -> String {
        self.sandbox.changes_stream().to_owned()
    }

    pub fn jobs_stream(&self) -> String {
        self.sandbox.jobs_stream().to_owned()
    }

    pub async fn spawn_with(&self, config: Config) -> InProcess {
        Sandbox::spawn_wal_ingest(config).await.expect("bind wal-ingest")
    }

    pub async fn spawn(&self) -> InProcess {
        self.spawn_with(self.config()).await
    }

    /// Starts the real binary, so a test can kill it with SIGKILL.
    pub fn spawn_process(&self) -> anyhow::Result<tokio::process::Child> {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wal-ingest"))
            .env("FOLIO_DATABASE_URL", &self.db.url)
            .env("FOLIO_NATS_URL", &self.bus.nats_url)
            .env("FOLIO_WAL_SLOT", &self.slot)
            .env("FOLIO_SUBJECT_ROOT", &self.bus.subject_root)
            .env("FOLIO_CHANGES_STREAM", self.changes_stream())
            .env("FOLIO_JOBS_STREAM", self.jobs_stream())
            .env("FOLIO_ADMIN_ADDR", "127.0.0.1:0")
            .env("FOLIO_RETRY_BACKOFF", "200ms")
            .env("FOLIO_STANDBY_POLL", "200ms")
            .env("RUST_LOG", std::env::var("WAL_INGEST_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()))
            .kill_on_drop(true)
            .spawn()
            .context("spawn wal-ingest")
    }

    /// Waits until the ingester created the slot (so later writes are captured).
    pub async fn wait_for_slot(&self) {
        let pool = self.db.pool.clone();
        let slot = self.slot.clone();
        folio_testkit::eventually("the replication slot is streaming", || {
            let pool = pool.clone();
            let slot = slot.clone();
            async move {
                // A slot is also "active" while pg_create_logical_replication_slot still waits
                // for its consistent point; only a walsender holding it means later commits
                // will be decoded.
                let streaming: Option<(i32,)> = sqlx::query_as(
                    "SELECT s.active_pid FROM pg_replication_slots s \
                     JOIN pg_stat_activity a ON a.pid = s.active_pid \
                     WHERE s.slot_name = $1 AND a.backend_type = 'walsender'",
                )
                .bind(&slot)
                .fetch_optional(&pool)
                .await
                .ok()?;
                streaming.map(|_| ())
            }
        })
        .await;
    }

    pub async fn stream_len(&self, stream: &str) -> u64 {
        match self.js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Waits until `stream` holds at least `n` messages, then returns all of them in order.
    pub async fn read_at_least(&self, stream: &str, n: u64) -> Vec<Stored> {
        // Longer than testkit's patience: the crash tests push 50k rows through a debug build.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let len = self.stream_len(stream).await;
            if len >= n {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stream} holds {len} messages, expected {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.read_all(stream).await
    }

    /// Every message of `stream`, in stream order.
    pub async fn read_all(&self, stream: &str) -> Vec<Stored> {
        let s = self.js.get_stream(stream).await.expect("stream exists");
        let total = self.stream_len(stream).await as usize;
        if total == 0 {
            return Vec::new();
        }
        if stream.ends_with("_JOBS") {
            // A work queue takes no ordered consumer: read the stored messages one by one.
            let mut s = s;
            let info = s.info().await.expect("stream info").clone();
            let mut out = Vec::new();
            for seq in info.state.first_sequence..=info.state.last_sequence {
                let Ok(msg) = s.get_raw_message(seq).await else { continue };
                let msg_id =
                    msg.headers.get(folio_bus::headers::MSG_ID).map(|v| v.as_str().to_owned()).unwrap_or_default();
                let key = MsgKey::parse(&msg_id).unwrap_or_else(|| panic!("message id {msg_id:?} parses"));
                out.push(Stored {
                    subject: msg.subject.to_string(),
                    msg_id,
                    key,
                    payload: msg.payload,
                    headers: msg.headers,
                    stored_at: system_time(msg.time.unix_timestamp_nanos()),
                });
            }
            return out;
        }
        let consumer = s.create_consumer(OrderedConfig::default()).await.expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            let msg = tokio::time::timeout(Duration::from_secs(20), messages.next())
                .await
                .expect("stream read stalled")
                .expect("stream ended")
                .expect("message");
            let headers = msg.headers.clone().unwrap_or_default();
            let msg_id = headers.get(folio_bus::headers::MSG_ID).map(|v| v.as_str().to_owned()).unwrap_or_default();
            let key = MsgKey::parse(&msg_id).unwrap_or_else(|| panic!("message id {msg_id:?} parses"));
            let stored_at = system_time(msg.info().expect("a JetStream message").published.unix_timestamp_nanos());
            out.push(Stored {
                subject: msg.subject.to_string(),
                msg_id,
                key,
                payload: msg.payload.clone(),
                headers,
                stored_at,
            });
        }
        out
    }

    /// Drops the slot and the streams. Runs after the test body, also when it panicked.
    pub async fn cleanup(&self) {
        self.sandbox.clean_up().await;
    }
}

/// Logs of in-process ingesters, shown for failing tests (`WAL_INGEST_TEST_LOG`, default warn).
fn init_tracing() {
    let filter = std::env::var("WAL_INGEST_TEST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// Runs `body`, then always cleans up (slots pin WAL for everyone), then re-raises a panic.
pub async fn with_harness<F, Fut>(harness: Harness, body: F)
where
    F: FnOnce(std::sync::Arc<Harness>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let harness = std::sync::Arc::new(harness);
    let result = tokio::spawn(body(harness.clone())).await;
    harness.cleanup().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn system_time(unix_nanos: i128) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_nanos).unwrap_or_default())
}

pub fn text<'a>(row: &'a [ColumnValue], name: &str) -> Option<&'a str> {
    let column = row.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("column {name} present"));
    match &column.value {
        Some(column_value::Value::Text(t)) => Some(t),
        _ => None,
    }
}

pub fn is_null(row: &[ColumnValue], name: &str) -> bool {
    let column = row.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("column {name} present"));
    matches!(column.value, Some(column_value::Value::IsNull(true)))
}

/// Messages are in stream order, keys strictly increasing: commit order, no duplicates.
pub fn assert_commit_order(messages: &[Stored]) {
    for pair in messages.windows(2) {
        assert!(pair[0].key < pair[1].key, "{} then {} is out of commit order", pair[0].msg_id, pair[1].msg_id);
    }
}

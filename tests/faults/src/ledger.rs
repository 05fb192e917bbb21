//! The writer whose commits every fault must preserve, and the check of the change stream
//! against it.
//!
//! One connection commits one agency row per transaction, named `txn-<n>`, so commit order is
//! `n` order. When a commit's outcome is unknown (the server went away mid-commit), the row is
//! looked up afterwards: present means committed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail, ensure};
use async_nats::jetstream;
use folio_proto::events::v1::{ChangeEvent, Operation, column_value};
use futures::StreamExt as _;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Committed transactions, in commit order, with when the writer saw each commit.
#[derive(Default, Clone)]
pub struct Ledger {
    inner: Arc<Mutex<Vec<(u64, SystemTime)>>>,
}

impl Ledger {
    pub fn committed(&self) -> Vec<(u64, SystemTime)> {
        self.inner.lock().expect("not poisoned").clone()
    }
}

/// Commits one row about every `pace` until `stop`; returns the ledger of what committed.
pub async fn write(
    database_url: String,
    pace: Duration,
    stop: CancellationToken,
    ledger: Ledger,
) -> anyhow::Result<()> {
    let mut next = 0u64;
    let mut pool: Option<sqlx::PgPool> = None;
    while !stop.is_cancelled() {
        let db = match &pool {
            Some(p) => p.clone(),
            None => match sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&database_url).await {
                Ok(p) => {
                    pool = Some(p.clone());
                    p
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let id = Uuid::new_v4();
        let inserted = sqlx::query("INSERT INTO agencies (id, name) VALUES ($1, $2)")
            .bind(id)
            .bind(format!("txn-{next}"))
            .execute(&db)
            .await;
        let committed = match inserted {
            Ok(_) => true,
            Err(_) => {
                // Unknown outcome: ask again once the server answers.
                pool = None;
                loop {
                    if let Ok(p) = sqlx::PgPool::connect(&database_url).await
                        && let Ok(found) =
                            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM agencies WHERE id = $1)")
                                .bind(id)
                                .fetch_one(&p)
                                .await
                    {
                        break found;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        if committed {
            ledger.inner.lock().expect("not poisoned").push((next, SystemTime::now()));
            next += 1;
        }
        tokio::time::sleep(pace).await;
    }
    Ok(())
}

/// One agency insert as stored in the change stream.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    pub txn: u64,
    pub stored_at: SystemTime,
}

/// Every agency insert in `stream`, in stream order, once `expected` are there (or `patience`
/// has passed: then what is there).
pub async fn published(
    js: &jetstream::Context,
    stream: &str,
    subject_filter: &str,
    expected: usize,
    patience: Duration,
) -> anyhow::Result<Vec<Published>> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let found = read_all(js, stream, subject_filter).await?;
        if found.len() >= expected || tokio::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read_all(js: &jetstream::Context, stream: &str, subject_filter: &str) -> anyhow::Result<Vec<Published>> {
    let stream = js.get_stream(stream).await.context("the changes stream")?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: subject_filter.to_owned(),
            ..Default::default()
        })
        .await?;
    let pending = consumer.clone().info().await?.num_pending;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    for _ in 0..pending {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .context("reading the changes stream")?
            .context("the changes stream ended")??;
        let info = message.info().map_err(|e| anyhow::anyhow!("message info: {e}"))?;
        let stored_at = SystemTime::UNIX_EPOCH + Duration::from_nanos(info.published.unix_timestamp_nanos() as u64);
        let event = ChangeEvent::decode(message.payload.clone())?;
        if event.operation() != Operation::Insert {
            continue;
        }
        let name = event.new_row.iter().find(|c| c.name == "name").and_then(|c| match &c.value {
            Some(column_value::Value::Text(t)) => Some(t.clone()),
            _ => None,
        });
        if let Some(txn) = name.as_deref().and_then(|n| n.strip_prefix("txn-")).and_then(|n| n.parse().ok()) {
            out.push(Published { txn, stored_at });
        }
    }
    Ok(out)
}

/// Every committed transaction exactly once, in commit order, and nothing that did not commit.
pub fn check_exactly_once_in_order(committed: &[(u64, SystemTime)], published: &[Published]) -> anyhow::Result<()> {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for p in published {
        *seen.entry(p.txn).or_default() += 1;
    }
    let duplicated: Vec<u64> = seen.iter().filter(|(_, n)| **n > 1).map(|(t, _)| *t).collect();
    ensure!(duplicated.is_empty(), "published more than once: {:?}", &duplicated[..duplicated.len().min(10)]);
    let missing: Vec<u64> = committed.iter().map(|(t, _)| *t).filter(|t| !seen.contains_key(t)).collect();
    ensure!(
        missing.is_empty(),
        "committed but never published: {:?} ({} in all)",
        &missing[..missing.len().min(10)],
        missing.len()
    );
    ensure!(published.len() == committed.len(), "{} published, {} committed", published.len(), committed.len());
    if let Some(w) = published.windows(2).find(|w| w[0].txn >= w[1].txn) {
        bail!("out of commit order: txn-{} stored before txn-{}", w[0].txn, w[1].txn);
    }
    Ok(())
}

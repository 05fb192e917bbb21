//! A client's state is always a committed state of the table. Transactions of 1 to 5,000 rows,
//! interleaved with writes to another table and spanning many responses, reach long-poll and
//! SSE clients whole: no `up-to-date` and no `last: true` ever falls inside a transaction, and
//! at every up-to-date the rows a client holds equal one of the table's committed states,
//! which the writer records inside each transaction just before it commits.

use std::{
    collections::{BTreeMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::{
    helpers::{TestClient, sse_resume_offset, take_sse_messages},
    shapes::{Env, bearer},
};

const SHAPE: &str = "table=ledger&columns=id,k";

/// `id → k`, the part of the table a state is compared by.
type State = BTreeMap<i64, String>;

fn fingerprint(state: &State) -> u64 {
    let mut h = DefaultHasher::new();
    state.hash(&mut h);
    h.finish()
}

/// What one client saw: its rows, the transactions it is in the middle of, and the state it
/// held at each up-to-date.
#[derive(Default)]
struct Observer {
    rows: BTreeMap<String, (i64, String)>,
    /// Transactions with messages seen but not yet their `last: true`.
    open: HashSet<String>,
    ended: HashSet<String>,
    up_to_dates: Vec<u64>,
    violations: Vec<String>,
}

impl Observer {
    fn state(&self) -> State {
        self.rows.values().cloned().collect()
    }

    fn message(&mut self, m: &Value) -> anyhow::Result<()> {
        let headers = &m["headers"];
        if let Some(control) = headers["control"].as_str() {
            if control == "up-to-date" {
                if !self.open.is_empty() {
                    self.violations.push(format!("up-to-date inside transaction(s) {:?}", self.open));
                }
                self.up_to_dates.push(fingerprint(&self.state()));
            }
            return Ok(());
        }
        let key = m["key"].as_str().context("key")?.to_owned();
        if let Some(txid) = headers["txids"].get(0) {
            let txid = txid.to_string();
            if self.ended.contains(&txid) {
                self.violations.push(format!("a message of transaction {txid} after its last: true"));
            }
            match headers["last"].as_bool() {
                Some(true) => {
                    self.open.remove(&txid);
                    self.ended.insert(txid);
                }
                Some(false) => {
                    self.open.insert(txid);
                }
                None => bail!("change message without last: {m}"),
            }
        }
        let value = &m["value"];
        match headers["operation"].as_str() {
            Some("insert") => {
                let id = value["id"].as_str().context("id")?.parse()?;
                let k = value["k"].as_str().context("k")?.to_owned();
                ensure!(self.rows.insert(key.clone(), (id, k)).is_none(), "duplicate insert of {key}");
            }
            Some("update") => {
                let row = self.rows.get_mut(&key).with_context(|| format!("update of a row not held: {m}"))?;
                if let Some(k) = value["k"].as_str() {
                    row.1 = k.to_owned();
                }
            }
            Some("delete") => {
                ensure!(self.rows.remove(&key).is_some(), "delete of a row not held: {m}");
            }
            other => bail!("unknown operation {other:?}"),
        }
        Ok(())
    }
}

/// Position in a shape's log, carried from response to response.
struct Position {
    handle: String,
    offset: String,
    cursor: String,
}

/// Requests from `offset=-1` until up to date (snapshot and catch-up).
async fn initial_sync(client: &TestClient, auth: &str, seen: &Mutex<Observer>) -> anyhow::Result<Position> {
    let mut pos = Position { handle: String::new(), offset: "-1".into(), cursor: String::new() };
    loop {
        let mut path = format!("/v1/shape?{SHAPE}&offset={}", pos.offset);
        if !pos.handle.is_empty() {
            path.push_str(&format!("&handle={}", pos.handle));
        }
        let res = client.send(Method::GET, &path, &[("authorization", auth)], Bytes::new()).await?;
        ensure!(res.status == StatusCode::OK, "{path}: {} {}", res.status, res.text());
        pos.handle = res.header("electric-handle").context("handle")?.to_owned();
        pos.offset = res.header("electric-offset").context("offset")?.to_owned();
        let messages: Vec<Value> = serde_json::from_slice(&res.body)?;
        let mut o = seen.lock().unwrap();
        for m in &messages {
            o.message(m)?;
        }
        if res.header("electric-up-to-date").is_some() {
            return Ok(pos);
        }
    }
}

/// Follows the shape live with long-polls until `done` says the client holds the final state.
async fn long_poll(
    client: TestClient,
    auth: String,
    seen: Arc<Mutex<Observer>>,
    done: Arc<Mutex<Option<u64>>>,
) -> anyhow::Result<()> {
    let mut pos = initial_sync(&client, &auth, &seen).await?;
    loop {
        if finished(&seen, &done) {
            return Ok(());
        }
        let path =
            format!("/v1/shape?{SHAPE}&offset={}&handle={}&live=true&cursor={}", pos.offset, pos.handle, pos.cursor);
        let res = client.send(Method::GET, &path, &[("authorization", &auth)], Bytes::new()).await?;
        ensure!(res.status == StatusCode::OK, "{path}: {} {}", res.status, res.text());
        pos.offset = res.header("electric-offset").context("offset")?.to_owned();
        pos.cursor = res.header("electric-cursor").unwrap_or_default().to_owned();
        let messages: Vec<Value> = serde_json::from_slice(&res.body)?;
        let mut o = seen.lock().unwrap();
        for m in &messages {
            o.message(m)?;
        }
    }
}

/// Follows the shape live over SSE (one response, reopened from the last up-to-date if the
/// server ends it) until `done` says the client holds the final state.
async fn sse(
    client: TestClient,
    auth: String,
    seen: Arc<Mutex<Observer>>,
    done: Arc<Mutex<Option<u64>>>,
) -> anyhow::Result<()> {
    let mut pos = initial_sync(&client, &auth, &seen).await?;
    loop {
        let path = format!(
            "/v1/shape?{SHAPE}&offset={}&handle={}&live=true&live_sse=true&cursor={}",
            pos.offset, pos.handle, pos.cursor
        );
        let req = http::Request::builder()
            .uri(format!("{}{path}", client.base()))
            .header("authorization", &auth)
            .body(http_body_util::Full::new(Bytes::new()))?;
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let res = http.request(req).await?;
        ensure!(res.status() == StatusCode::OK, "{path}: {}", res.status());
        let mut body = res.into_body();
        let mut buf = Vec::new();
        loop {
            if finished(&seen, &done) {
                return Ok(());
            }
            let frame = match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
                Err(_) => continue,
                Ok(None) => break,
                Ok(Some(f)) => f?,
            };
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            for m in take_sse_messages(&mut buf)? {
                if let Some(offset) = sse_resume_offset(&m) {
                    pos.offset = offset;
                }
                seen.lock().unwrap().message(&m)?;
            }
        }
    }
}

fn finished(seen: &Mutex<Observer>, done: &Mutex<Option<u64>>) -> bool {
    let target = *done.lock().unwrap();
    let o = seen.lock().unwrap();
    target.is_some_and(|t| o.up_to_dates.last() == Some(&t) && o.open.is_empty())
}

/// One transaction of the writer: statements on `ledger` of `size` rows between writes to
/// `other`; returns the committed state of `ledger` it leaves.
async fn transaction(pool: &sqlx::PgPool, n: i64, size: i64, next_id: &mut i64) -> anyhow::Result<State> {
    let mut tx = pool.begin().await?;
    let mut statements = vec![format!("INSERT INTO other (note) VALUES ('before {n}')")];
    match n % 4 {
        0 => {
            statements.push(format!(
                "INSERT INTO ledger (id, k) SELECT {} + g, {n} FROM generate_series(1, {size}) g",
                *next_id
            ));
            *next_id += size;
        }
        1 => statements.push(format!(
            "UPDATE ledger SET k = {n} WHERE id IN (SELECT id FROM ledger ORDER BY md5(id::text || '{n}') LIMIT {size})"
        )),
        2 => {
            statements.push(format!(
                "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger ORDER BY md5(id::text || '{n}') LIMIT {})",
                size / 2
            ));
            statements.push(format!("INSERT INTO other (note) VALUES ('between {n}')"));
            statements.push(format!(
                "INSERT INTO ledger (id, k) SELECT {} + g, {n} FROM generate_series(1, {size}) g",
                *next_id
            ));
            *next_id += size;
        }
        _ => {
            statements.push(format!(
                "INSERT INTO ledger (id, k) SELECT {} + g, {n} FROM generate_series(1, {}) g",
                *next_id,
                size / 2 + 1
            ));
            *next_id += size / 2 + 1;
            statements.push(format!("INSERT INTO other (note) VALUES ('between {n}')"));
            statements.push(format!(
                "UPDATE ledger SET k = k + 1000000 WHERE id IN (SELECT id FROM ledger ORDER BY md5(id::text || '{n}') LIMIT {size})"
            ));
        }
    }
    statements.push(format!("INSERT INTO other (note) VALUES ('after {n}')"));
    for s in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(s)).execute(&mut *tx).await?;
    }
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, k::text FROM ledger ORDER BY id").fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_only_ever_hold_committed_states_long_poll_and_sse() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql(
        "CREATE TABLE ledger (id int8 PRIMARY KEY, k int8 NOT NULL, pad text NOT NULL DEFAULT repeat('x', 40));
         CREATE TABLE other (id serial PRIMARY KEY, note text NOT NULL);
         ALTER TABLE ledger REPLICA IDENTITY FULL; ALTER TABLE other REPLICA IDENTITY FULL;
         ALTER PUBLICATION folio_changes ADD TABLE ledger, other;",
    )
    .await?;
    let edge = env.edge(&["--shape-sse-timeout", "120s"]).await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let done = Arc::new(Mutex::new(None));
    let mut committed: HashSet<u64> = HashSet::from([fingerprint(&State::new())]);

    let followers: Vec<(&str, Arc<Mutex<Observer>>)> =
        vec![("long-poll", Arc::default()), ("sse", Arc::default()), ("late long-poll", Arc::default())];
    let mut tasks = Vec::new();
    for (name, seen) in &followers[..2] {
        let (client, auth, seen, done) = (edge.client.clone(), auth.clone(), Arc::clone(seen), Arc::clone(&done));
        tasks.push(match *name {
            "sse" => tokio::spawn(sse(client, auth, seen, done)),
            _ => tokio::spawn(long_poll(client, auth, seen, done)),
        });
    }

    let sizes = [1, 35, 5000, 2, 500, 1200, 7, 5000, 1, 60, 2500, 3, 300, 1, 900, 40];
    let (mut next_id, mut last) = (0, State::new());
    for (n, size) in sizes.into_iter().enumerate() {
        if n == 5 {
            // A client whose initial sync races the commits.
            let (_, seen) = &followers[2];
            let (client, auth, seen, done) = (edge.client.clone(), auth.clone(), Arc::clone(seen), Arc::clone(&done));
            tasks.push(tokio::spawn(long_poll(client, auth, seen, done)));
        }
        last = transaction(&env.db.pool, n as i64, size, &mut next_id).await?;
        let fp = fingerprint(&last);
        committed.insert(fp);
        if n % 2 == 1 {
            // Let the clients catch up now and then, so each holds many up-to-dates; the other
            // transactions land back to back, while clients are mid-response.
            let live = if n >= 5 { &followers[..] } else { &followers[..2] };
            folio_testkit::eventually("the clients to catch up", || async {
                live.iter().all(|(_, o)| o.lock().unwrap().up_to_dates.last() == Some(&fp)).then_some(())
            })
            .await;
        }
        if n % 3 == 0 {
            // A transaction that touches only the other table.
            env.sql(&format!("INSERT INTO other (note) SELECT 'only other {n}' FROM generate_series(1, 20)")).await?;
        }
    }
    *done.lock().unwrap() = Some(fingerprint(&last));
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .context("a client never reached the final state")???;
    }
    for (name, seen) in &followers {
        let o = seen.lock().unwrap();
        ensure!(o.violations.is_empty(), "{name}: {:#?}", o.violations);
        let outside: Vec<usize> =
            o.up_to_dates.iter().enumerate().filter(|(_, f)| !committed.contains(f)).map(|(i, _)| i).collect();
        ensure!(
            outside.is_empty(),
            "{name}: {} of {} up-to-dates held a state that was never committed (at {outside:?})",
            outside.len(),
            o.up_to_dates.len()
        );
        println!("{name}: {} up-to-dates, each a committed state", o.up_to_dates.len());
    }
    edge.stop().await?;
    env.stop().await
}

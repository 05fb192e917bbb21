//! Shapes whose where clause has `IN (SELECT …)` subqueries (issue 16, item 2), against a real
//! PostgreSQL, wal-ingest and NATS. While a writer changes both tables, every up-to-date a
//! client reaches holds exactly the rows of `SELECT … WHERE <the same clause>` at one committed
//! point of the writer, never going back, for a plain subquery with a parameter inside, a
//! composite key, and NOT IN — each checked against a query that pins the agency inside the
//! subquery itself (another agency's clients never let a row in). A change of the subquery's
//! table that alters what it yields moves rows in or out in the log (Electric's `move-in` /
//! `move-out` events with the transaction's txid, deletes, inserts flagged `is_move_in`, the
//! snapshot's `snapshot-end`), never a 409; one that does not leaves the shape alone; a schema
//! change of that table invalidates it (409).

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};
use rand::Rng;
use serde_json::Value;

use crate::{
    helpers::TestClient,
    shapes::{Env, bearer},
};

pub(crate) fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `key → value` of a shape's rows.
pub(crate) type Rows = BTreeMap<String, serde_json::Map<String, Value>>;

/// A plain shape client (what `@electric-sql/client`'s `Shape` does): inserts, updates and
/// deletes on keys, starting over on 409; strict about duplicates and lost changes.
pub(crate) struct Client {
    http: TestClient,
    query: String,
    auth: String,
    handle: Option<String>,
    offset: String,
    cursor: String,
    rows: Rows,
    pub(crate) refetches: usize,
    changes: usize,
    /// Every `move-in` / `move-out` event and `snapshot-end` received, in order.
    events: Vec<Value>,
    /// Rows inserted by a move (`is_move_in`).
    moved_in: usize,
}

impl Client {
    pub(crate) fn new(http: TestClient, query: String, auth: String) -> Self {
        Client {
            http,
            query,
            auth,
            handle: None,
            offset: "-1".into(),
            cursor: String::new(),
            rows: Rows::new(),
            refetches: 0,
            changes: 0,
            events: Vec::new(),
            moved_in: 0,
        }
    }

    /// Follows the shape live, keeping the rows of every up-to-date, until `done` is set and
    /// four more up-to-dates have come (the writer's last commits reached it).
    pub(crate) async fn follow(&mut self, done: &std::sync::atomic::AtomicBool) -> anyhow::Result<Vec<Rows>> {
        let (mut seen, mut quiet) = (Vec::new(), 0);
        loop {
            if let Some(rows) = self.step(true).await? {
                seen.push(rows);
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    quiet += 1;
                    if quiet > 3 {
                        return Ok(seen);
                    }
                }
            }
        }
    }

    /// One request; Some(rows) when it ended up to date.
    pub(crate) async fn step(&mut self, live: bool) -> anyhow::Result<Option<Rows>> {
        let mut path = format!("/v1/shape?{}&offset={}", self.query, self.offset);
        if let Some(h) = &self.handle {
            path.push_str(&format!("&handle={h}"));
        }
        if live && self.offset != "-1" {
            path.push_str(&format!("&live=true&cursor={}", self.cursor));
        }
        let res = self.http.send(Method::GET, &path, &[("authorization", &self.auth)], Bytes::new()).await?;
        if res.status == StatusCode::CONFLICT {
            ensure!(res.json()[0]["headers"]["control"] == "must-refetch", "409 body: {}", res.text());
            self.refetches += 1;
            self.handle = res.header("electric-handle").map(str::to_owned);
            self.offset = "-1".into();
            self.rows.clear();
            return Ok(None);
        }
        ensure!(res.status == StatusCode::OK, "{path}: {} {}", res.status, res.text());
        self.handle = res.header("electric-handle").map(str::to_owned);
        self.offset = res.header("electric-offset").context("electric-offset")?.to_owned();
        if let Some(c) = res.header("electric-cursor") {
            self.cursor = c.to_owned();
        }
        let messages: Vec<Value> = serde_json::from_slice(&res.body)?;
        for m in &messages {
            let h = &m["headers"];
            if h.get("event").is_some() || h["control"] == "snapshot-end" {
                self.events.push(m.clone());
            }
            if h.get("control").is_some() || h.get("event").is_some() {
                continue;
            }
            if h["is_move_in"] == true {
                self.moved_in += 1;
            }
            let key = m["key"].as_str().context("key")?.to_owned();
            let value = m["value"].as_object().context("value")?.clone();
            if h.get("txids").is_some() {
                self.changes += 1;
            }
            match h["operation"].as_str() {
                Some("insert") => ensure!(self.rows.insert(key.clone(), value).is_none(), "duplicate insert {key}"),
                Some("update") => {
                    self.rows.get_mut(&key).with_context(|| format!("update of a missing {key}"))?.extend(value)
                }
                Some("delete") => ensure!(self.rows.remove(&key).is_some(), "delete of a missing {key}"),
                other => bail!("unknown operation {other:?}: {m}"),
            }
        }
        Ok(res.header("electric-up-to-date").is_some().then(|| self.rows.clone()))
    }
}

/// How many of [`cases`]' last shapes are first requested after the writer's 80th commit.
const LATE: usize = 2;

/// The shapes under test: the edge's where clause and params, and the same selection as SQL
/// over both tables with the agency pinned explicitly inside the subquery.
fn cases(agency: &str) -> Vec<(&'static str, String, Vec<&'static str>, String)> {
    vec![
        (
            "plain subquery with a parameter inside",
            "client_id IN (SELECT id FROM sq_clients WHERE region = $1)".into(),
            vec!["north"],
            format!("client_id IN (SELECT id FROM sq_clients WHERE agency_id = '{agency}' AND region = 'north')"),
        ),
        (
            "composite key, and a predicate",
            "(client_id, owner) IN (SELECT id, owner FROM sq_clients WHERE tier >= $1) AND v > $2".into(),
            vec!["2", "3"],
            format!(
                "(client_id, owner) IN (SELECT id, owner FROM sq_clients WHERE agency_id = '{agency}' AND tier >= 2) AND v > 3"
            ),
        ),
        (
            "a subquery yielding the same value for many rows",
            "owner IN (SELECT owner FROM sq_clients WHERE region = $1)".into(),
            vec!["south"],
            format!("owner IN (SELECT owner FROM sq_clients WHERE agency_id = '{agency}' AND region = 'south')"),
        ),
        (
            "NOT IN, or a predicate",
            "client_id NOT IN (SELECT id FROM sq_clients WHERE region = $2) OR v > $1".into(),
            vec!["8", "south"],
            format!(
                "client_id NOT IN (SELECT id FROM sq_clients WHERE agency_id = '{agency}' AND region = 'south') OR v > 8"
            ),
        ),
        // Created while the writer runs (see LATE): their snapshots race its commits.
        (
            "created mid-run: a plain subquery",
            "client_id IN (SELECT id FROM sq_clients WHERE region = $1)".into(),
            vec!["east"],
            format!("client_id IN (SELECT id FROM sq_clients WHERE agency_id = '{agency}' AND region = 'east')"),
        ),
        (
            "created mid-run: NOT IN with a composite key",
            "(client_id, owner) NOT IN (SELECT id, owner FROM sq_clients WHERE tier < $1)".into(),
            vec!["2"],
            format!(
                "(client_id, owner) NOT IN (SELECT id, owner FROM sq_clients WHERE agency_id = '{agency}' AND tier < 2)"
            ),
        ),
    ]
}

/// Runs `sql` in one transaction; its xid as logical replication carries it (32 bits), which
/// TanStack DB's `awaitTxId` waits for in `txids`.
async fn sql_xid(env: &Env, sql: &str) -> anyhow::Result<u32> {
    let mut tx = env.db.pool.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut *tx).await.with_context(|| sql.to_owned())?;
    let xid: String = sqlx::query_scalar("SELECT pg_current_xact_id()::xid::text").fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(xid.parse()?)
}

async fn expected(env: &Env, agency: &str, sql_where: &str) -> anyhow::Result<Rows> {
    let sql = format!(
        "SELECT id::text, agency_id::text, client_id::text, owner, v::text FROM sq_proposals WHERE agency_id = '{agency}' AND ({sql_where})"
    );
    let rows: Vec<(String, String, String, Option<String>, String)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&env.db.pool).await?;
    Ok(rows
        .into_iter()
        .map(|(id, a, c, o, v)| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), Value::String(id.clone()));
            m.insert("agency_id".into(), Value::String(a));
            m.insert("client_id".into(), Value::String(c));
            m.insert("owner".into(), o.map_or(Value::Null, Value::String));
            m.insert("v".into(), Value::String(v));
            (format!("\"public\".\"sq_proposals\"/\"{id}\""), m)
        })
        .collect())
}

async fn snapshot_state(
    env: &Env,
    agency: &str,
    cases: &[(&'static str, String, Vec<&'static str>, String)],
) -> anyhow::Result<Vec<Rows>> {
    let mut s = Vec::new();
    for (_, _, _, sql) in cases {
        s.push(expected(env, agency, sql).await?);
    }
    Ok(s)
}

async fn schema(env: &Env, a: &str, b: &str) -> anyhow::Result<()> {
    env.sql(
        "CREATE TABLE sq_clients (id int8 PRIMARY KEY, agency_id uuid NOT NULL, region text NOT NULL, tier int4 NOT NULL, owner text, name text);
         CREATE TABLE sq_proposals (id int8 PRIMARY KEY, agency_id uuid NOT NULL, client_id int8 NOT NULL, owner text, v int8 NOT NULL);
         ALTER TABLE sq_clients REPLICA IDENTITY FULL; ALTER TABLE sq_proposals REPLICA IDENTITY FULL;",
    )
    .await?;
    // Clients 1..=20 are agency A's, 21..=30 agency B's (in the same regions: a subquery
    // without A's pin inside would let A's proposals of B's clients in).
    env.sql(&format!(
        "INSERT INTO sq_clients SELECT g, CASE WHEN g <= 20 THEN '{a}'::uuid ELSE '{b}'::uuid END,
            (ARRAY['north','south','east'])[1 + g % 3], g % 4, (ARRAY['ann','bob',NULL])[1 + g % 3], 'c' || g
         FROM generate_series(1, 30) g;
         INSERT INTO sq_proposals SELECT g, CASE WHEN g % 7 = 0 THEN '{b}'::uuid ELSE '{a}'::uuid END,
            1 + g % 30, (ARRAY['ann','bob',NULL])[1 + (1 + g % 30) % 3], g % 12
         FROM generate_series(1, 120) g;"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subquery_shapes_equal_the_database_at_every_up_to_date_while_both_tables_change() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    schema(&env, &a, &b).await?;
    let edge = env.edge(&[]).await?;
    let cases = cases(&a);

    // states[i][k]: shape k's rows after the writer's i-th commit (0: before any).
    let mut states: Vec<Vec<Rows>> = Vec::new();
    states.push(snapshot_state(&env, &a, &cases).await?);
    for (name, _, _, _) in &cases {
        ensure!(!states[0][cases.iter().position(|c| c.0 == *name).unwrap()].is_empty(), "{name}: empty at start");
    }

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut followers = Vec::new();
    for (k, (name, clause, params, _)) in cases.clone().into_iter().enumerate() {
        let start_after = if k + LATE >= cases.len() { 80 } else { 0 };
        let commits = std::sync::Arc::clone(&commits);
        let mut query = format!("table=sq_proposals&where={}", enc(&clause));
        for (i, p) in params.iter().enumerate() {
            query.push_str(&format!("&params%5B{}%5D={}", i + 1, enc(p)));
        }
        let mut client = Client::new(edge.client.clone(), query, bearer(&a));
        let done = std::sync::Arc::clone(&done);
        followers.push(tokio::spawn(async move {
            while commits.load(std::sync::atomic::Ordering::SeqCst) < start_after {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let seen = client.follow(&done).await?;
            anyhow::Ok((name, seen, client.refetches, client.changes, client.moved_in))
        }));
    }

    // Seeded, so a failure can be replayed: FOLIO_TEST_SEED=<the seed printed>.
    let seed: u64 = std::env::var("FOLIO_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("writer seed {seed} (FOLIO_TEST_SEED)");
    let mut r = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut next_id = 1000i64;
    for i in 0..240 {
        let mut tx = env.db.pool.begin().await?;
        let ops = r.random_range(1..4);
        for _ in 0..ops {
            let (kind, client, proposal, v, region, tier, owner) = {
                (
                    r.random_range(0..40),
                    r.random_range(1..=30i64),
                    r.random_range(1..=next_id),
                    r.random_range(0..12i64),
                    ["north", "south", "east"][r.random_range(0..3)],
                    r.random_range(0..4),
                    ["'ann'", "'bob'", "NULL"][r.random_range(0..3)],
                )
            };
            let q = match kind {
                0 => format!("UPDATE sq_clients SET region = '{region}' WHERE id = {client}"),
                1 => format!("UPDATE sq_clients SET tier = {tier}, owner = {owner} WHERE id = {client}"),
                2..=6 => format!("UPDATE sq_clients SET name = 'n{i}' WHERE id = {client}"),
                7..=13 => {
                    next_id += 1;
                    let agency = if client % 5 == 0 { &b } else { &a };
                    format!("INSERT INTO sq_proposals VALUES ({next_id}, '{agency}', {client}, {owner}, {v})")
                }
                14..=23 => format!("UPDATE sq_proposals SET v = {v}, client_id = {client} WHERE id = {proposal}"),
                24..=26 => format!("UPDATE sq_proposals SET owner = {owner} WHERE id = {proposal}"),
                _ => format!("DELETE FROM sq_proposals WHERE id = {proposal}"),
            };
            sqlx::query(sqlx::AssertSqlSafe(q)).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        states.push(snapshot_state(&env, &a, &cases).await?);
        commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(r.random_range(0..25))).await;
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    // Something for every follower to wake up to.
    env.sql("UPDATE sq_proposals SET v = v WHERE id IN (SELECT min(id) FROM sq_proposals)").await?;

    let last = states.len() - 1;
    let (mut total_changes, mut total_moved) = (0, 0);
    for (k, f) in followers.into_iter().enumerate() {
        let (name, seen, refetches, changes, moved_in) =
            tokio::time::timeout(Duration::from_secs(60), f).await.context("follower never settled")???;
        let mut at = 0usize;
        for (n, rows) in seen.iter().enumerate() {
            let Some(j) = (at..states.len()).find(|&j| states[j][k] == *rows) else {
                let missing: Vec<&String> = states[at][k].keys().filter(|key| !rows.contains_key(*key)).collect();
                let extra: Vec<&String> = rows.keys().filter(|key| !states[at][k].contains_key(*key)).collect();
                bail!(
                    "{name}: up-to-date #{n} matches no committed state at or after #{at} (vs it: missing {missing:?}, extra {extra:?}; seed {seed})"
                );
            };
            at = j;
        }
        ensure!(
            seen.last().is_some_and(|r| *r == states[last][k]),
            "{name}: the last up-to-date is not the final state"
        );
        eprintln!(
            "{name}: {} up-to-dates checked, {refetches} refetches, {changes} live changes, {moved_in} rows moved in",
            seen.len()
        );
        // Moves are followed in the log (move-in / move-out), never by starting over.
        ensure!(refetches == 0, "{name}: {refetches} refetches (seed {seed})");
        // Some shapes are sparse (few of the writer's changes touch them): liveness is asserted
        // over all of them below.
        ensure!(seen.len() >= 3, "{name}: the shape was hardly followed live ({} up-to-dates)", seen.len());
        total_changes += changes;
        total_moved += moved_in;
    }
    ensure!(total_changes >= 30, "the shapes were hardly followed live ({total_changes} changes)");
    ensure!(total_moved > 0, "no row moved in (seed {seed})");
    edge.stop().await?;
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_subquery_table_change_does_to_a_live_shape() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    schema(&env, &a, &b).await?;
    let edge = env.edge(&[]).await?;
    let query = format!(
        "table=sq_proposals&where={}&params%5B1%5D=north",
        enc("client_id IN (SELECT id FROM sq_clients WHERE region = $1)")
    );
    let mut c = Client::new(edge.client.clone(), query.clone(), bearer(&a));
    while c.step(false).await?.is_none() {}
    let want = expected(
        &env,
        &a,
        &format!("client_id IN (SELECT id FROM sq_clients WHERE agency_id = '{a}' AND region = 'north')"),
    )
    .await?;
    ensure!(c.rows == want && !want.is_empty(), "snapshot: {} rows, database {}", c.rows.len(), want.len());
    let handle = c.handle.clone();

    // Changes that leave what the subquery yields alone: another column of a client, another
    // agency's client moving into the region, a client moving between two other regions.
    let north_a: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT min(id) FROM sq_clients WHERE agency_id = '{a}' AND region = 'north'"
    )))
    .fetch_one(&env.db.pool)
    .await?;
    let east_a: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT min(id) FROM sq_clients WHERE agency_id = '{a}' AND region = 'east'"
    )))
    .fetch_one(&env.db.pool)
    .await?;
    let south_b: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT min(id) FROM sq_clients WHERE agency_id = '{b}' AND region = 'south'"
    )))
    .fetch_one(&env.db.pool)
    .await?;
    env.sql(&format!("UPDATE sq_clients SET name = 'renamed' WHERE id = {north_a}")).await?;
    env.sql(&format!("UPDATE sq_clients SET region = 'north' WHERE id = {south_b}")).await?;
    env.sql(&format!("UPDATE sq_clients SET region = 'south' WHERE id = {east_a}")).await?;
    env.sql(&format!("INSERT INTO sq_proposals VALUES (5000, '{a}', {north_a}, 'ann', 1)")).await?;
    for _ in 0..50 {
        c.step(true).await?;
        if c.rows.contains_key("\"public\".\"sq_proposals\"/\"5000\"") {
            break;
        }
    }
    ensure!(c.refetches == 0 && c.handle == handle, "the shape was invalidated by changes that do not move rows");
    ensure!(c.rows.contains_key("\"public\".\"sq_proposals\"/\"5000\""), "the new proposal arrived live");

    // A client of A leaving the region moves its proposals out, in the log: Electric's
    // `move-out` event carrying the transaction's txid, then a delete per row; no 409.
    let north_sql = format!("client_id IN (SELECT id FROM sq_clients WHERE agency_id = '{a}' AND region = 'north')");
    let moving: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM sq_proposals WHERE agency_id = '{a}' AND client_id = {north_a}"
    )))
    .fetch_one(&env.db.pool)
    .await?;
    ensure!(moving >= 2, "client {north_a} has {moving} proposals");
    let (before, events) = (c.rows.len(), c.events.len());
    let xid = sql_xid(&env, &format!("UPDATE sq_clients SET region = 'east' WHERE id = {north_a}")).await?;
    for _ in 0..50 {
        if c.step(true).await?.is_some() && c.rows.len() < before {
            break;
        }
    }
    ensure!(c.refetches == 0 && c.handle == handle, "a move out answered 409");
    ensure!(c.rows == expected(&env, &a, &north_sql).await?, "after the move out: {} rows", c.rows.len());
    ensure!(c.rows.len() == before - moving as usize, "{moving} rows moved out of {before}");
    let out = &c.events[events..];
    ensure!(
        out.iter().any(|e| e["headers"]["event"] == "move-out" && e["headers"]["txids"] == serde_json::json!([xid])),
        "a move-out event with the txid {xid}: {out:?}"
    );

    // It comes back (and another agency's client joins the region, which moves nothing in):
    // a `move-in` event with the txid, the rows as inserts flagged `is_move_in`, then the
    // snapshot they were read in (`snapshot-end`).
    let (before, events, moved) = (c.rows.len(), c.events.len(), c.moved_in);
    let xid = sql_xid(
        &env,
        &format!(
            "UPDATE sq_clients SET region = 'north' WHERE id = {north_a}; UPDATE sq_clients SET region = 'north' WHERE agency_id = '{b}'"
        ))
        .await?;
    for _ in 0..50 {
        if c.step(true).await?.is_some() && c.rows.len() > before {
            break;
        }
    }
    ensure!(c.refetches == 0 && c.handle == handle, "a move in answered 409");
    ensure!(c.rows == expected(&env, &a, &north_sql).await?, "after the move in: {} rows", c.rows.len());
    ensure!(c.moved_in - moved == moving as usize, "{} rows moved in, {moving} expected", c.moved_in - moved);
    let ins = &c.events[events..];
    ensure!(
        ins.iter().any(|e| e["headers"]["event"] == "move-in" && e["headers"]["txids"] == serde_json::json!([xid])),
        "a move-in event with the txid {xid}: {ins:?}"
    );
    ensure!(
        ins.last().is_some_and(|e| e["headers"]["control"] == "snapshot-end"),
        "snapshot-end after the rows: {ins:?}"
    );
    ensure!(c.rows.contains_key("\"public\".\"sq_proposals\"/\"5000\""), "proposal 5000 is back");

    // A schema change of the subquery's table (Electric 1535, 4328): 409, never wrong rows.
    let before = c.refetches;
    env.sql("ALTER TABLE sq_clients ADD COLUMN extra int4").await?;
    // pgoutput describes the new columns with the table's next change.
    env.sql("UPDATE sq_clients SET name = name WHERE id = 30").await?;
    for _ in 0..50 {
        if c.step(true).await?.is_some() && c.refetches > before {
            break;
        }
    }
    ensure!(c.refetches == before + 1, "a schema change of the subquery's table answered 409");
    let want = expected(
        &env,
        &a,
        &format!("client_id IN (SELECT id FROM sq_clients WHERE agency_id = '{a}' AND region = 'north')"),
    )
    .await?;
    ensure!(c.rows == want, "after the schema change: {} rows, database {}", c.rows.len(), want.len());

    // Another edge (or this one restarted) does not hold what the subqueries yielded: 409.
    let other = env.edge(&[]).await?;
    let res = other
        .client
        .send(
            Method::GET,
            &format!("/v1/shape?{query}&offset={}&handle={}", c.offset, c.handle.clone().unwrap_or_default()),
            &[("authorization", &bearer(&a))],
            Bytes::new(),
        )
        .await?;
    ensure!(res.status == StatusCode::CONFLICT, "another edge answered {}: {}", res.status, res.text());
    other.stop().await?;
    edge.stop().await?;
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subqueries_answer_400_with_the_reason() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    schema(&env, &a, &b).await?;
    let edge = env.edge(&[]).await?;
    let cases = [
        ("EXISTS (SELECT id FROM sq_clients)", "only `value IN (SELECT ...)` sublinks are supported right now"),
        (
            "client_id IN (SELECT region FROM sq_clients)",
            "left side of `IN (SELECT ...)` has type int8 but subquery returns text",
        ),
        (
            "client_id IN (SELECT id FROM sq_clients WHERE id IN (SELECT id FROM sq_clients))",
            "subqueries nested inside a subquery are not supported",
        ),
        ("client_id + 1 IN (SELECT id FROM sq_clients)", "operator + is not supported"),
        ("client_id IN (SELECT id FROM sq_clients LIMIT 1)", "SELECT statement must not contain any clauses"),
    ];
    for (clause, reason) in cases {
        let res = edge
            .client
            .send(
                Method::GET,
                &format!("/v1/shape?table=sq_proposals&offset=-1&where={}", enc(clause)),
                &[("authorization", &bearer(&a))],
                Bytes::new(),
            )
            .await?;
        ensure!(res.status == StatusCode::BAD_REQUEST, "{clause}: {} {}", res.status, res.text());
        let body = res.json();
        let msg = body["errors"]["where"][0].as_str().unwrap_or_default().to_owned();
        ensure!(msg.contains(reason), "{clause}: {body}");
    }
    // A table that does not exist inside the subquery.
    let res = edge
        .client
        .send(
            Method::GET,
            &format!("/v1/shape?table=sq_proposals&offset=-1&where={}", enc("client_id IN (SELECT id FROM nowhere)")),
            &[("authorization", &bearer(&a))],
            Bytes::new(),
        )
        .await?;
    ensure!(res.status == StatusCode::BAD_REQUEST, "unknown table: {} {}", res.status, res.text());
    // Subqueries are not accepted in a subset's where.
    let res = edge
        .client
        .send(
            Method::GET,
            &format!(
                "/v1/shape?table=sq_proposals&offset=-1&log=changes_only&subset__where={}",
                enc("client_id IN (SELECT id FROM sq_clients)")
            ),
            &[("authorization", &bearer(&a))],
            Bytes::new(),
        )
        .await?;
    ensure!(res.status == StatusCode::BAD_REQUEST, "subset with a subquery: {} {}", res.status, res.text());
    edge.stop().await?;
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_leaves_a_subquery_only_with_its_last_row() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    schema(&env, &a, &b).await?;
    let edge = env.edge(&[]).await?;
    // Agency A's northern clients (3, 6, …, 18) all have owner 'ann'.
    let clause = "owner IN (SELECT owner FROM sq_clients WHERE region = $1)";
    let query = format!("table=sq_proposals&where={}&params%5B1%5D=north", enc(clause));
    let sql = format!("owner IN (SELECT owner FROM sq_clients WHERE agency_id = '{a}' AND region = 'north')");
    let mut c = Client::new(edge.client.clone(), query, bearer(&a));
    while c.step(false).await?.is_none() {}
    ensure!(c.rows == expected(&env, &a, &sql).await? && !c.rows.is_empty(), "snapshot");

    // One of six rows yielding 'ann' leaves: 'ann' is still yielded, nothing moves, no 409.
    env.sql("UPDATE sq_clients SET region = 'east' WHERE id = 3").await?;
    env.sql(&format!("INSERT INTO sq_proposals VALUES (6000, '{a}', 1, 'ann', 1)")).await?;
    let marker = "\"public\".\"sq_proposals\"/\"6000\"";
    for _ in 0..50 {
        c.step(true).await?;
        if c.rows.contains_key(marker) {
            break;
        }
    }
    ensure!(c.refetches == 0, "a value still yielded by other rows invalidated the shape");
    ensure!(c.rows == expected(&env, &a, &sql).await?, "rows after a count-only change");

    // The last five leave together: 'ann' leaves the subquery and every 'ann' proposal moves
    // out in the log (no 409).
    env.sql("UPDATE sq_clients SET region = 'south' WHERE id IN (6, 9, 12, 15, 18)").await?;
    for _ in 0..50 {
        if c.step(true).await?.is_some() && !c.rows.contains_key(marker) {
            break;
        }
    }
    ensure!(c.refetches == 0, "the value's last row leaving answered 409 ({})", c.refetches);
    let want = expected(&env, &a, &sql).await?;
    ensure!(
        c.rows == want && !c.rows.contains_key(marker),
        "after the move out: {} rows, database {}",
        c.rows.len(),
        want.len()
    );
    edge.stop().await?;
    env.stop().await
}

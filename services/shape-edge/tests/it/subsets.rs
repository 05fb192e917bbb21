//! Subset snapshots (`subset__*` on GET, a JSON body on POST) against a real PostgreSQL,
//! wal-ingest and NATS: the rows are the shape's AND the tenant's AND the subset's, in its
//! order and page; bad input is a 400 naming the subset's field; and a subset followed by the
//! shape's `changes_only` log, with the client's rule for changes a subset already contains,
//! equals the database at every up-to-date while writers race the snapshots.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};
use rand::Rng;
use serde_json::Value;

use crate::{
    helpers::{TestClient, TestResponse},
    shapes::{Env, bearer},
};

/// Percent-encodes everything but unreserved characters (a query value).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn get(client: &TestClient, auth: &str, query: &str) -> anyhow::Result<TestResponse> {
    client.send(Method::GET, &format!("/v1/shape?{query}"), &[("authorization", auth)], Bytes::new()).await
}

async fn post(client: &TestClient, auth: &str, query: &str, body: &Value) -> anyhow::Result<TestResponse> {
    let headers = [("authorization", auth), ("content-type", "application/json")];
    client.send(Method::POST, &format!("/v1/shape?{query}"), &headers, Bytes::from(body.to_string())).await
}

/// A subset response's metadata and rows (`key → value`), checked for Electric's form.
struct SubsetAnswer {
    xmin: u64,
    xmax: u64,
    xip: HashSet<u64>,
    rows: Vec<(String, serde_json::Map<String, Value>)>,
    handle: String,
    offset: String,
}

fn subset_answer(res: &TestResponse) -> anyhow::Result<SubsetAnswer> {
    ensure!(res.status == StatusCode::OK, "subset answered {}: {}", res.status, res.text());
    ensure!(res.header("cache-control") == Some("no-store"), "never cached: {:?}", res.header("cache-control"));
    ensure!(res.header("electric-schema").is_some() && res.header("electric-up-to-date").is_none());
    ensure!(res.header("electric-snapshot") == Some("true"), "the client prefetches a subset without it");
    let body = res.json();
    let meta = &body["metadata"];
    let num = |k: &str| {
        meta[k]
            .as_str()
            .with_context(|| format!("metadata.{k} as a string: {meta}"))?
            .parse::<u64>()
            .context(k.to_owned())
    };
    let mark = meta["snapshot_mark"].as_u64().context("snapshot_mark is a number")?;
    ensure!(num("database_lsn")? > 0);
    let mut rows = Vec::new();
    for m in body["data"].as_array().context("data is an array")? {
        let h = &m["headers"];
        ensure!(h["operation"] == "insert" && h["snapshot_mark"] == mark, "row headers: {m}");
        ensure!(h.get("txids").is_none() && h.get("lsn").is_none(), "no replication headers on subset rows: {m}");
        rows.push((m["key"].as_str().context("key")?.to_owned(), m["value"].as_object().context("value")?.clone()));
    }
    Ok(SubsetAnswer {
        xmin: num("xmin")?,
        xmax: num("xmax")?,
        xip: meta["xip_list"]
            .as_array()
            .context("xip_list")?
            .iter()
            .map(|x| x.as_str().and_then(|x| x.parse().ok()).context("xip as a decimal string"))
            .collect::<anyhow::Result<_>>()?,
        rows,
        handle: res.header("electric-handle").context("electric-handle")?.to_owned(),
        offset: res.header("electric-offset").context("electric-offset")?.to_owned(),
    })
}

impl SubsetAnswer {
    /// The client's rule (Electric's `SnapshotTracker`): the snapshot saw the transaction with
    /// this 32-bit xid, widened to 64 bits as the one nearest `xmax`.
    fn saw(&self, xid: u32) -> bool {
        let x8 = self.xmax.wrapping_add_signed(i64::from(xid.wrapping_sub(self.xmax as u32) as i32));
        x8 < self.xmin || (x8 < self.xmax && !self.xip.contains(&x8))
    }
}

#[tokio::test]
async fn a_subset_is_the_shapes_rows_and_the_tenants_and_the_subsets_in_its_order_and_page() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    env.sql(&format!(
        "INSERT INTO agencies (id, name) VALUES ('{a}', 'A'), ('{b}', 'B');
         CREATE TABLE tasks (id int8 PRIMARY KEY, agency_id uuid NOT NULL, priority int4, title text NOT NULL, secret text);
         ALTER TABLE tasks REPLICA IDENTITY FULL;
         INSERT INTO tasks SELECT i, CASE WHEN i % 3 = 0 THEN '{b}'::uuid ELSE '{a}'::uuid END,
           CASE WHEN i % 7 = 0 THEN NULL ELSE i % 5 END, 'task ' || i, 's' FROM generate_series(1, 60) i"
    ))
    .await?;
    let edge = env.edge(&[]).await?;
    let (auth_a, auth_b) = (bearer(&a), bearer(&b));
    let shape = format!("table=tasks&columns=id,agency_id,priority,title&where={}&log=changes_only", enc("id > $1"));
    let shape = format!("{shape}&params%5B1%5D=4");
    // The subset's own `$1` is its own numbering: the shape's `$1` is 4.
    let subset = format!(
        "subset__where={}&subset__params={}&subset__order_by={}&subset__limit=5&subset__offset=2",
        enc("title LIKE $1 OR priority = $2"),
        enc(r#"{"1":"task 1%","2":2}"#),
        enc("priority DESC NULLS LAST, title"),
    );
    let res = get(&edge.client, &auth_a, &format!("{shape}&offset=now&{subset}")).await?;
    let first = subset_answer(&res)?;
    let expected: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM tasks WHERE agency_id = '{a}' AND id > 4 AND (title LIKE 'task 1%' OR priority = 2)
         ORDER BY priority DESC NULLS LAST, title, id LIMIT 5 OFFSET 2"
    )))
    .fetch_all(&env.db.pool)
    .await?;
    let ids: Vec<i64> = first.rows.iter().map(|(_, v)| v["id"].as_str().unwrap_or("0").parse().unwrap_or(0)).collect();
    assert_eq!(ids, expected, "the shape's where, the tenant, the subset's where, order, limit and offset");
    assert_eq!(ids.len(), 5);
    for (_, v) in &first.rows {
        assert_eq!(v["agency_id"], a.as_str());
        assert!(v.get("secret").is_none(), "only the shape's columns: {v:?}");
    }
    assert!(first.offset.ends_with("_0") || first.offset == "0_inf", "offset=now answers the head: {}", first.offset);

    // The same as a POST body, continuing the shape's log from where the first answer put it.
    let at = format!("{shape}&offset={}&handle={}", first.offset, first.handle);
    let body = serde_json::json!({"where": "title LIKE $1 OR priority = $2", "params": {"1": "task 1%", "2": "2"},
        "order_by": "priority DESC NULLS LAST, title", "limit": 5, "offset": 2});
    let posted = subset_answer(&post(&edge.client, &auth_a, &at, &body).await?)?;
    assert_eq!(posted.rows, first.rows);
    assert_eq!((posted.offset.as_str(), posted.handle.as_str()), (first.offset.as_str(), first.handle.as_str()));

    // Another agency's rows never: by the subset's where, or by OR-ing past the shape's.
    for (what, where_) in
        [("agency B by where", format!("agency_id = '{b}'")), ("OR true", "true OR agency_id IS NOT NULL".to_owned())]
    {
        let res = get(&edge.client, &auth_a, &format!("{shape}&offset=now&subset__where={}", enc(&where_))).await?;
        let answer = subset_answer(&res)?;
        assert!(answer.rows.iter().all(|(_, v)| v["agency_id"] == a.as_str()), "{what}: {:?}", answer.rows);
    }
    let whole = subset_answer(&get(&edge.client, &auth_b, &format!("{shape}&offset=now&subset__where=TRUE")).await?)?;
    let count_b: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM tasks WHERE agency_id = '{b}' AND id > 4"
    )))
    .fetch_one(&env.db.pool)
    .await?;
    assert_eq!(whole.rows.len() as i64, count_b, "B's token: B's rows of the shape");

    // Bad input: 400 with the subset's field named as Electric nests it.
    let refused = |field: &'static str, query: String| {
        let edge = &edge;
        let auth_a = &auth_a;
        async move {
            let res = get(&edge.client, auth_a, &query).await?;
            ensure!(res.status == StatusCode::BAD_REQUEST, "{query}: {} {}", res.status, res.text());
            let body = res.json();
            ensure!(body["errors"]["subset"][field][0].is_string(), "{query}: {body}");
            Ok::<_, anyhow::Error>(body["errors"]["subset"][field][0].as_str().unwrap_or_default().to_owned())
        }
    };
    let base = format!("{shape}&offset=now");
    for (field, q) in [
        ("where", format!("{base}&subset__where={}", enc("true) OR (true"))),
        ("where", format!("{base}&subset__where={}", enc("nope = 1"))),
        ("where", format!("{base}&subset__where={}", enc("id IN (SELECT id FROM tasks)"))),
        ("where", format!("{base}&subset__where={}", enc("title = $1"))),
        ("order_by", format!("{base}&subset__order_by={}&subset__limit=1", enc("pg_sleep(5)"))),
        ("order_by", format!("{base}&subset__order_by=secret&subset__limit=1")),
        ("order_by", format!("{base}&subset__order_by={}", enc("id; DROP TABLE tasks"))),
        ("order_by", format!("{base}&subset__limit=3")),
        ("limit", format!("{base}&subset__limit=0&subset__order_by=id")),
        ("offset", format!("{base}&subset__offset=-1&subset__order_by=id")),
        ("params", format!("{base}&subset__where=id%3D%241&subset__params={}", enc("[1]"))),
    ] {
        refused(field, q).await?;
    }
    assert!(refused("where", format!("{base}&subset__where=nope%20%3D%201")).await?.contains("nope"));
    // A value the database refuses for the column (the subset's cast) is the subset's 400.
    let cast = refused("where", format!("{base}&subset__where={}", enc("priority = 'x'"))).await?;
    assert!(!cast.is_empty());
    let bad_body = post(&edge.client, &auth_a, &base, &serde_json::json!([1])).await?;
    assert_eq!(bad_body.status, StatusCode::BAD_REQUEST, "{}", bad_body.text());
    let huge = Bytes::from(format!("{{\"where\":\"{}\"}}", "x".repeat(300 * 1024)));
    let too_large = edge
        .client
        .send(Method::POST, &format!("/v1/shape?{base}"), &[("authorization", auth_a.as_str())], huge)
        .await?;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(too_large.json()["message"].is_string());
    // live on a subset is refused; a handle that is not the shape's gets 409 as for the log.
    let live = get(&edge.client, &auth_a, &format!("{at}&live=true&subset__where=TRUE")).await?;
    assert_eq!(live.status, StatusCode::BAD_REQUEST);
    let stale =
        get(&edge.client, &auth_a, &format!("{shape}&offset=5_0&handle=0123456789abcdef-1&subset__where=TRUE")).await?;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.header("electric-handle"), Some(first.handle.as_str()));
    // No token: 401, for GET and POST alike.
    for res in [
        edge.client.send(Method::GET, &format!("/v1/shape?{base}&subset__where=TRUE"), &[], Bytes::new()).await?,
        edge.client.send(Method::POST, &format!("/v1/shape?{base}"), &[], Bytes::from(r#"{"where":"TRUE"}"#)).await?,
    ] {
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
        assert!(res.json().get("data").is_none());
    }
    edge.stop().await?;
    env.stop().await
}

/// A `changes_only` follower holding subsets: applies the log as Electric's client does after
/// `requestSnapshot` — a change to a key a subset returned, from a transaction that subset's
/// snapshot saw, is dropped — and checks that rule against the rows' versions both ways: a
/// dropped change is one the subset shows (its version is at most the subset's), an applied
/// one is newer than the subset's.
struct Client {
    rows: BTreeMap<String, i64>,
    /// Each subset's snapshot and the versions of the rows it returned.
    subsets: Vec<(SubsetAnswer, BTreeMap<String, i64>)>,
    handle: String,
    offset: String,
    dropped: usize,
    applied_after_subset: usize,
}

impl Client {
    fn version(v: &serde_json::Map<String, Value>) -> anyhow::Result<i64> {
        v["v"].as_str().context("v")?.parse().context("v as a number")
    }

    fn take_subset(&mut self, answer: SubsetAnswer) -> anyhow::Result<()> {
        let mut versions = BTreeMap::new();
        for (key, value) in &answer.rows {
            let v = Self::version(value)?;
            versions.insert(key.clone(), v);
            self.rows.insert(key.clone(), v);
        }
        self.handle = answer.handle.clone();
        self.offset = answer.offset.clone();
        self.subsets.push((answer, versions));
        Ok(())
    }

    fn apply(&mut self, m: &Value) -> anyhow::Result<()> {
        if m["headers"].get("control").is_some() {
            return Ok(());
        }
        let key = m["key"].as_str().context("key")?.to_owned();
        let xid = m["headers"]["txids"][0].as_u64().context("txids on a change")? as u32;
        let op = m["headers"]["operation"].as_str().context("operation")?;
        let version =
            if op == "delete" { None } else { Some(Self::version(m["value"].as_object().context("value")?)?) };
        let mut drop = false;
        for (s, versions) in &self.subsets {
            let Some(&held) = versions.get(&key) else { continue };
            if s.saw(xid) {
                // Rows are never re-inserted under a key and versions only grow: a change the
                // snapshot saw is at or below the version it returned.
                match version {
                    Some(v) => ensure!(v <= held, "dropped change {m} is newer than the subset's v={held}"),
                    None => bail!("the subset returned {key} but saw its delete: {m}"),
                }
                drop = true;
            } else if let Some(v) = version {
                ensure!(v > held, "applied change {m} is already in the subset (v={held})");
            }
        }
        if drop {
            self.dropped += 1;
            return Ok(());
        }
        if self.subsets.iter().any(|(_, versions)| versions.contains_key(&key)) {
            self.applied_after_subset += 1;
        }
        match (op, version) {
            ("insert", Some(v)) => {
                self.rows.insert(key, v);
            }
            // changes_only: updates and deletes of rows the client never loaded are not its.
            ("update", Some(v)) => {
                if let Some(r) = self.rows.get_mut(&key) {
                    *r = v;
                }
            }
            ("delete", _) => {
                self.rows.remove(&key);
            }
            _ => bail!("unexpected message {m}"),
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subsets_taken_while_writers_race_plus_the_log_after_them_equal_the_database_at_every_up_to_date()
-> anyhow::Result<()> {
    let env = Env::start().await?;
    let a = uuid::Uuid::new_v4().to_string();
    env.sql(&format!(
        "INSERT INTO agencies (id, name) VALUES ('{a}', 'A');
         CREATE TABLE counters (id int8 PRIMARY KEY, agency_id uuid NOT NULL, grp int4 NOT NULL, v int8 NOT NULL);
         ALTER TABLE counters REPLICA IDENTITY FULL;
         INSERT INTO counters SELECT i, '{a}', i % 4, 0 FROM generate_series(1, 200) i"
    ))
    .await?;
    let edge = env.edge(&[]).await?;
    let auth = bearer(&a);
    let shape = "table=counters&log=changes_only";
    let res = get(&edge.client, &auth, &format!("{shape}&offset=now")).await?;
    ensure!(res.status == StatusCode::OK, "{}", res.text());
    let mut client = Client {
        rows: BTreeMap::new(),
        subsets: Vec::new(),
        handle: res.header("electric-handle").context("handle")?.to_owned(),
        offset: res.header("electric-offset").context("offset")?.to_owned(),
        dropped: 0,
        applied_after_subset: 0,
    };
    let next_id = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1_000));
    let mut up_to_dates = 0;
    for round in 0..6 {
        // Writers: single-row and multi-row transactions, versions only grow, new ids only.
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let pool = env.db.pool.clone();
                let (a, next_id) = (a.clone(), std::sync::Arc::clone(&next_id));
                tokio::spawn(async move {
                    for i in 0..40 {
                        let k = rand::rng().random_range(1..=200);
                        let sql = match (i + w) % 5 {
                            0 => format!(
                                "INSERT INTO counters VALUES ({}, '{a}', {}, 0)",
                                next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                                k % 4
                            ),
                            1 => format!(
                                "UPDATE counters SET v = v + 1 WHERE id IN ({k}, {}, {})",
                                k % 50 + 1,
                                k % 7 + 1
                            ),
                            2 if k % 9 == 0 => format!("DELETE FROM counters WHERE id = {}", k + 1_000),
                            _ => format!("UPDATE counters SET v = v + 1 WHERE id = {k}"),
                        };
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await?;
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .collect();
        // Subsets while the writers run: a group of rows each round, from where the client is.
        tokio::time::sleep(std::time::Duration::from_millis(20 * round)).await;
        // A transaction in flight across the snapshot, on a row of the group: it commits after
        // the snapshot began, so the subset does not show it and its change must be applied.
        let mut in_flight = env.db.pool.begin().await?;
        sqlx::query("UPDATE counters SET v = v + 1 WHERE id = $1")
            .bind(4 + (round % 4) as i64)
            .execute(&mut *in_flight)
            .await?;
        let in_flight_xid: i64 =
            sqlx::query_scalar("SELECT pg_current_xact_id()::xid::text::int8").fetch_one(&mut *in_flight).await?;
        let at = format!("{shape}&offset={}&handle={}", client.offset, client.handle);
        let subset = if round % 2 == 0 {
            get(
                &edge.client,
                &auth,
                &format!(
                    "{at}&subset__where={}&subset__params={}",
                    enc("grp = $1"),
                    enc(&format!(r#"{{"1":{}}}"#, round % 4))
                ),
            )
            .await?
        } else {
            let body = serde_json::json!({"where": "grp = $1", "params": {"1": (round % 4).to_string()}});
            post(&edge.client, &auth, &at, &body).await?
        };
        let answer = subset_answer(&subset)?;
        in_flight.commit().await?;
        // In xip_list, or at or above xmax when nothing that began after it had ended.
        ensure!(!answer.saw(in_flight_xid as u32), "the snapshot does not see the transaction in flight");
        ensure!(
            answer.offset == client.offset,
            "a real offset is answered as asked: {} vs {}",
            answer.offset,
            client.offset
        );
        client.take_subset(answer)?;
        for w in writers {
            w.await??;
        }
        // A sentinel after every write: once the log has carried it, it has carried them all
        // (wal-ingest publishes in commit order). Then the log to up-to-date.
        let sentinel = 1_000_000 + round;
        env.sql(&format!("INSERT INTO counters VALUES ({sentinel}, '{a}', 99, 0)")).await?;
        let sentinel = format!("\"public\".\"counters\"/\"{sentinel}\"");
        let mut settled = false;
        for _ in 0..2_000 {
            let res =
                get(&edge.client, &auth, &format!("{shape}&offset={}&handle={}", client.offset, client.handle)).await?;
            ensure!(res.status == StatusCode::OK, "{}", res.text());
            client.offset = res.header("electric-offset").context("offset")?.to_owned();
            let messages: Vec<Value> = serde_json::from_slice(&res.body)?;
            for m in &messages {
                client.apply(m)?;
            }
            if res.header("electric-up-to-date").is_none() || !client.rows.contains_key(&sentinel) {
                if messages.len() <= 1 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            } else {
                // Up to date with every write (the writers are done): the client's rows are
                // the database's, for every key the client holds or should hold.
                up_to_dates += 1;
                let db: BTreeMap<String, i64> = sqlx::query_as::<_, (i64, i64)>("SELECT id, v FROM counters")
                    .fetch_all(&env.db.pool)
                    .await?
                    .into_iter()
                    .map(|(id, v)| (format!("\"public\".\"counters\"/\"{id}\""), v))
                    .collect();
                for (key, v) in &client.rows {
                    ensure!(db.get(key) == Some(v), "round {round}: client has {key}={v}, database {:?}", db.get(key));
                }
                let loaded_groups: HashSet<i64> = (0..=round as i64).map(|r| r % 4).collect();
                let should: Vec<&String> = sqlx::query_as::<_, (i64, i32)>("SELECT id, grp FROM counters")
                    .fetch_all(&env.db.pool)
                    .await?
                    .into_iter()
                    .filter(|(_, g)| loaded_groups.contains(&i64::from(*g)))
                    .filter_map(|(id, _)| {
                        db.get_key_value(&format!("\"public\".\"counters\"/\"{id}\"")).map(|(k, _)| k)
                    })
                    .filter(|k| !client.rows.contains_key(*k))
                    .collect();
                // A row of a loaded group the client lacks can only be one that joined the
                // group... which rows never do here (grp is fixed): so none, except rows
                // inserted into a group before it was loaded — those the subset returned.
                ensure!(should.is_empty(), "round {round}: rows of loaded groups missing: {should:?}");
                settled = true;
                break;
            }
        }
        ensure!(settled, "round {round}: never up to date");
    }
    eprintln!(
        "subsets: {} rows held, {} changes dropped as already in a subset, {} applied after one, {up_to_dates} up-to-dates checked",
        client.rows.len(),
        client.dropped,
        client.applied_after_subset
    );
    ensure!(client.applied_after_subset > 0, "the test never applied a change to a subset's row");
    ensure!(client.dropped > 0, "the test never met a change a subset already contained");
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn a_subset_continues_a_shape_another_edge_created_from_the_clients_offset() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let a = uuid::Uuid::new_v4().to_string();
    env.sql(&format!(
        "INSERT INTO agencies (id, name) VALUES ('{a}', 'A');
         CREATE TABLE notes (id int8 PRIMARY KEY, agency_id uuid NOT NULL, body text NOT NULL);
         INSERT INTO notes SELECT i, '{a}', 'note ' || i FROM generate_series(1, 20) i"
    ))
    .await?;
    let (one, two) = (env.edge(&[]).await?, env.edge(&[]).await?);
    let auth = bearer(&a);
    let shape = "table=notes&log=changes_only";
    let first = get(&one.client, &auth, &format!("{shape}&offset=now")).await?;
    let handle = first.header("electric-handle").context("handle")?.to_owned();
    env.sql_on_stream("UPDATE notes SET body = 'edited' WHERE id <= 3", 3).await?;
    // The client follows on edge one to up-to-date past the update...
    let from = first.header("electric-offset").context("offset")?.to_owned();
    let offset = folio_testkit::eventually("the update in the log", || {
        let (client, auth, from, handle) = (one.client.clone(), auth.clone(), from.clone(), handle.clone());
        async move {
            let res = get(&client, &auth, &format!("{shape}&offset={from}&handle={handle}")).await.ok()?;
            let next = res.header("electric-offset")?.to_owned();
            (next != from && res.header("electric-up-to-date").is_some()).then_some(next)
        }
    })
    .await;
    // ...then asks edge two for a subset: same handle, its own offset, rows as of now.
    let res =
        get(&two.client, &auth, &format!("{shape}&offset={offset}&handle={handle}&subset__where=id%20%3C%3D%205"))
            .await?;
    let answer = subset_answer(&res)?;
    assert_eq!((answer.handle.as_str(), answer.offset.as_str()), (handle.as_str(), offset.as_str()));
    let bodies: BTreeMap<String, String> = answer
        .rows
        .iter()
        .map(|(_, v)| {
            (v["id"].as_str().unwrap_or_default().to_owned(), v["body"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(bodies.len(), 5);
    assert_eq!(bodies["1"], "edited");
    assert_eq!(bodies["5"], "note 5");
    // An offset no edge handed out is refused, as for the log.
    let res =
        get(&two.client, &auth, &format!("{shape}&offset=999999999_0&handle={handle}&subset__where=TRUE")).await?;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());
    one.stop().await?;
    two.stop().await?;
    env.stop().await
}

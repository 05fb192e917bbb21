//! Electric's shape API against a real PostgreSQL, wal-ingest and NATS: snapshot/stream
//! stitching under concurrent writes, resuming on another edge, must-refetch, tenancy, errors.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};
use rand::Rng;
use serde_json::Value;

use crate::helpers::{Cleanup, TestClient, TestEdge, spawn_edge, test_prefix};

const SECRET: &str = "shape-test-secret-shape-test-secret";

/// A sandbox with wal-ingest streaming its slot into the sandbox's JetStream names, and the
/// edge flags that point at them (tests start one or several edges, and restart them).
pub(crate) struct Env {
    sandbox: folio_testkit::Sandbox,
    pub changes_stream: String,
    pub prefix: String,
    pub args: Vec<String>,
    pub nats_url: String,
    _cleanup: Cleanup,
}

/// The sandbox's database (`env.db`) and names read through.
impl std::ops::Deref for Env {
    type Target = folio_testkit::Sandbox;
    fn deref(&self) -> &folio_testkit::Sandbox {
        &self.sandbox
    }
}

impl Env {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(&folio_testkit::nats_url()).await
    }

    /// With wal-ingest and the edges on the NATS server at `nats`.
    pub async fn start_on(nats: &str) -> anyhow::Result<Self> {
        let mut sandbox = folio_testkit::Sandbox::with_nats(nats.to_owned()).await?;
        sandbox.start_wal_ingest(sandbox.wal_ingest_config()).await?;
        let (prefix, cleanup) = test_prefix();
        let (root, changes_stream) = (sandbox.bus.subject_root.clone(), sandbox.bus.changes_stream.clone());
        let args = [
            "--changes-stream",
            &changes_stream,
            "--subject-root",
            &root,
            "--database-url",
            &sandbox.db.url,
            "--shape-tables",
            "*",
            "--jwt-secret",
            SECRET,
            "--shape-chunk-bytes",
            "4096",
            "--shape-long-poll-timeout",
            "2s",
            "--nats-url",
            nats,
        ]
        .map(str::to_owned)
        .to_vec();
        Ok(Env { sandbox, changes_stream, prefix, args, nats_url: nats.to_owned(), _cleanup: cleanup })
    }

    pub async fn edge(&self, extra: &[&str]) -> anyhow::Result<TestEdge> {
        let mut args: Vec<&str> = Vec::new();
        for pair in self.args.chunks(2) {
            // A flag given in `extra` replaces the default.
            if !extra.contains(&pair[0].as_str()) {
                args.extend(pair.iter().map(String::as_str));
            }
        }
        args.push("--shape-auto-publish");
        args.extend_from_slice(extra);
        spawn_edge(&self.prefix, &args).await
    }

    /// Stops wal-ingest, drops its slot (the server has a fixed number of them) and the
    /// streams. (A failed test leaves its slot; scripts/test.sh removes inactive ones.)
    pub async fn stop(self) -> anyhow::Result<()> {
        self.sandbox.stop().await;
        Ok(())
    }

    /// The change stream's last sequence.
    pub async fn stream_sequence(&self) -> anyhow::Result<u64> {
        let js = async_nats::jetstream::new(async_nats::connect(&self.nats_url).await?);
        Ok(js.get_stream_no_info(&self.changes_stream).await?.get_info().await?.state.last_sequence)
    }

    /// Runs `sql` and waits until wal-ingest has published at least `events` more change events.
    pub async fn sql_on_stream(&self, sql: &str, events: u64) -> anyhow::Result<u64> {
        let before = self.stream_sequence().await?;
        self.sql(sql).await?;
        Ok(folio_testkit::eventually("the writes on the change stream", || async {
            self.stream_sequence().await.ok().filter(|last| *last >= before + events)
        })
        .await)
    }

    pub async fn sql(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.db.pool)
            .await
            .with_context(|| sql.to_owned())?;
        Ok(())
    }
}

pub(crate) fn bearer(agency: &str) -> String {
    crate::helpers::bearer(SECRET, agency)
}

/// A strict shape follower (cloned to probe the next response without moving the original): applies messages as Electric's `Shape` does, but refuses an insert
/// of a key it holds (a duplicate) and an update or delete of a key it lacks (a lost change).
#[derive(Clone)]
struct Follower {
    client: TestClient,
    query: String,
    auth: Option<String>,
    handle: Option<String>,
    offset: String,
    cursor: String,
    rows: BTreeMap<String, serde_json::Map<String, Value>>,
    up_to_date: bool,
    responses: usize,
}

impl Follower {
    fn new(client: TestClient, query: &str, auth: Option<String>) -> Self {
        Follower {
            client,
            query: query.to_owned(),
            auth,
            handle: None,
            offset: "-1".into(),
            cursor: String::new(),
            rows: BTreeMap::new(),
            up_to_date: false,
            responses: 0,
        }
    }

    /// One request; returns its status.
    async fn step(&mut self, live: bool) -> anyhow::Result<StatusCode> {
        let mut path = format!("/v1/shape?{}&offset={}", self.query, self.offset);
        if let Some(h) = &self.handle {
            path.push_str(&format!("&handle={h}"));
        }
        if live {
            path.push_str(&format!("&live=true&cursor={}", self.cursor));
        }
        let headers: Vec<(&str, &str)> = self.auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let res = self.client.send(Method::GET, &path, &headers, Bytes::new()).await?;
        self.responses += 1;
        if res.status != StatusCode::OK {
            return Ok(res.status);
        }
        for h in ["electric-handle", "electric-offset"] {
            ensure!(res.header(h).is_some(), "{path}: no {h}");
        }
        ensure!(live == res.header("electric-cursor").is_some(), "{path}: electric-cursor iff live");
        ensure!(live != res.header("electric-schema").is_some(), "{path}: electric-schema iff not live");
        self.handle = res.header("electric-handle").map(str::to_owned);
        self.offset = res.header("electric-offset").unwrap_or_default().to_owned();
        if let Some(c) = res.header("electric-cursor") {
            self.cursor = c.to_owned();
        }
        let messages: Vec<Value> = serde_json::from_slice(&res.body).context("body is a JSON array")?;
        self.up_to_date = res.header("electric-up-to-date").is_some();
        ensure!(
            self.up_to_date == messages.last().is_some_and(|m| m["headers"]["control"] == "up-to-date"),
            "{path}: electric-up-to-date header iff the body ends with up-to-date"
        );
        for m in messages {
            self.apply(&m)?;
        }
        Ok(StatusCode::OK)
    }

    fn apply(&mut self, m: &Value) -> anyhow::Result<()> {
        let headers = &m["headers"];
        if headers.get("control").is_some() {
            return Ok(());
        }
        let key = m["key"].as_str().context("key")?.to_owned();
        let value = m["value"].as_object().context("value")?.clone();
        match headers["operation"].as_str() {
            Some("insert") => {
                if self.rows.insert(key.clone(), value).is_some() {
                    bail!("duplicate insert of {key}: {m}");
                }
            }
            Some("update") => match self.rows.get_mut(&key) {
                Some(row) => row.extend(value),
                None => bail!("update of a row the shape does not hold, {key}: {m}"),
            },
            Some("delete") => {
                if self.rows.remove(&key).is_none() {
                    bail!("delete of a row the shape does not hold, {key}: {m}");
                }
            }
            other => bail!("unknown operation {other:?}"),
        }
        Ok(())
    }

    /// Requests until up to date (catch-up only).
    async fn catch_up(&mut self) -> anyhow::Result<()> {
        for _ in 0..10_000 {
            let status = self.step(false).await?;
            ensure!(status == StatusCode::OK, "catch-up answered {status}");
            if self.up_to_date {
                return Ok(());
            }
        }
        bail!("never up to date")
    }

    /// `id → v` of the rows held.
    fn by_id(&self, column: &str) -> BTreeMap<i64, String> {
        self.rows
            .values()
            .map(|r| {
                (r["id"].as_str().unwrap_or("0").parse().unwrap_or(0), r[column].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }
}

async fn expected(env: &Env, sql: &str) -> anyhow::Result<BTreeMap<i64, String>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned())).fetch_all(&env.db.pool).await?;
    Ok(rows.into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshots_taken_during_concurrent_writes_stitch_to_the_stream_without_gap_or_duplicate() -> anyhow::Result<()>
{
    let env = Env::start().await?;
    env.sql("CREATE TABLE stitch (id int8 PRIMARY KEY, grp int4 NOT NULL, v int8 NOT NULL)").await?;
    env.sql("INSERT INTO stitch SELECT g, g % 10, 0 FROM generate_series(1, 3000) g").await?;
    let edge = env.edge(&[]).await?;
    // The table joins the publication on its first request.
    let mut probe = Follower::new(edge.client.clone(), "table=stitch", Some(bearer(&uuid::Uuid::new_v4().to_string())));
    probe.catch_up().await?;

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let pool = env.db.pool.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut next_id = 10_000i64;
            for i in 0..400 {
                let mut tx = pool.begin().await?;
                let ops = rand::rng().random_range(1..6);
                for _ in 0..ops {
                    let (kind, id, grp) = {
                        let mut r = rand::rng();
                        (r.random_range(0..10), r.random_range(1..3000i64), r.random_range(0..10))
                    };
                    let q = match kind {
                        0..=2 => {
                            next_id += 1;
                            format!("INSERT INTO stitch VALUES ({next_id}, {grp}, {i})")
                        }
                        3..=6 => format!("UPDATE stitch SET v = v + 1, grp = {grp} WHERE id = {id}"),
                        7 => format!("UPDATE stitch SET id = id + 100000 WHERE id = {id}"),
                        _ => format!("DELETE FROM stitch WHERE id = {id}"),
                    };
                    sqlx::query(sqlx::AssertSqlSafe(q)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            done.store(true, Ordering::SeqCst);
            anyhow::Ok(())
        })
    };
    // Clients start at different moments of the write load, each with its own snapshot.
    let mut followers = Vec::new();
    for n in 0..6 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let client = edge.client.clone();
        // Distinct where clauses make distinct shapes, so each takes its own snapshot.
        let query = format!("table=stitch&where=grp%20%3C%20{}", 5 + n % 5);
        let done = Arc::clone(&done);
        followers.push(tokio::spawn(async move {
            let mut f = Follower::new(client, &query, Some(bearer(&uuid::Uuid::new_v4().to_string())));
            f.catch_up().await?;
            while !done.load(Ordering::SeqCst) {
                let status = f.step(true).await?;
                ensure!(status == StatusCode::OK, "live answered {status}");
            }
            anyhow::Ok((5 + n % 5, f))
        }));
    }
    writer.await??;
    ensure!(done.load(Ordering::SeqCst));
    for f in followers {
        let (limit, mut f) = f.await??;
        let want = expected(&env, &format!("SELECT id, v::text FROM stitch WHERE grp < {limit}")).await?;
        // The last commits reach the stream a moment later.
        let mut got = f.by_id("v");
        for _ in 0..50 {
            if got == want {
                break;
            }
            f.step(true).await?;
            got = f.by_id("v");
        }
        ensure!(got.len() > 1000, "shape holds {} rows", got.len());
        assert_eq!(got, want, "shape grp < {limit} differs from the table");
    }
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn a_client_continues_on_another_edge_and_after_a_restart_without_409() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE resume (id int8 PRIMARY KEY, title text NOT NULL)").await?;
    env.sql("INSERT INTO resume SELECT g, 'row ' || g FROM generate_series(1, 200) g").await?;
    let first = env.edge(&[]).await?;
    let auth = Some(bearer(&uuid::Uuid::new_v4().to_string()));
    let mut f = Follower::new(first.client.clone(), "table=resume", auth.clone());
    f.catch_up().await?;
    assert_eq!(f.rows.len(), 200);
    assert!(f.responses > 2, "4 KiB chunks: the 200-row snapshot takes several responses");
    env.sql("INSERT INTO resume VALUES (201, 'after'); UPDATE resume SET title = 'changed' WHERE id = 1; DELETE FROM resume WHERE id = 2").await?;
    // Wait until the first edge has the writes, then stop it: its memory is gone.
    folio_testkit::eventually("the first edge to see the writes", || {
        let mut p = f.clone();
        async move {
            p.step(false)
                .await
                .ok()
                .filter(|_| p.rows.len() == 200 && p.rows.contains_key("\"public\".\"resume\"/\"201\""))
        }
    })
    .await;
    first.stop().await?;
    env.sql_on_stream("INSERT INTO resume VALUES (202, 'while no edge ran')", 1).await?;

    let second = env.edge(&[]).await?;
    f.client = second.client.clone();
    let before = f.responses;
    f.catch_up().await?;
    assert_eq!(f.responses - before, 1, "one catch-up response, no 409");
    let got = f.by_id("title");
    let want = expected(&env, "SELECT id, title FROM resume").await?;
    assert_eq!(got, want);
    // And live changes keep arriving on the new edge.
    let live = {
        let mut f2 = std::mem::replace(&mut f, Follower::new(second.client.clone(), "", None));
        tokio::spawn(async move {
            let status = f2.step(true).await?;
            anyhow::Ok((status, f2))
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.sql("INSERT INTO resume VALUES (203, 'live')").await?;
    let (status, f) = live.await??;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.rows.get("\"public\".\"resume\"/\"203\"").and_then(|r| r["title"].as_str()), Some("live"));
    second.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn truncate_and_schema_change_answer_409_must_refetch_with_a_new_handle() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE gone (id int4 PRIMARY KEY)").await?;
    env.sql("INSERT INTO gone VALUES (1), (2)").await?;
    let edge = env.edge(&[]).await?;
    let auth = Some(bearer(&uuid::Uuid::new_v4().to_string()));
    let mut f = Follower::new(edge.client.clone(), "table=gone", auth.clone());
    f.catch_up().await?;
    let old = f.handle.clone().context("handle")?;
    env.sql("TRUNCATE gone; INSERT INTO gone VALUES (3)").await?;
    let status = folio_testkit::eventually("409 after TRUNCATE", || {
        let mut g = f.clone();
        async move { g.step(false).await.ok().filter(|s| *s == StatusCode::CONFLICT) }
    })
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let path = format!("/v1/shape?table=gone&offset={}&handle={old}", f.offset);
    let res =
        edge.client.send(Method::GET, &path, &[("authorization", auth.as_deref().unwrap_or(""))], Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.json(), serde_json::json!([{"headers": {"control": "must-refetch"}}]));
    let new = res.header("electric-handle").context("409 names the new handle")?.to_owned();
    assert_ne!(new, old);
    // Starting over gives the table as it is now.
    let mut again = Follower::new(edge.client.clone(), "table=gone", auth.clone());
    again.catch_up().await?;
    assert_ne!(again.handle.as_deref(), Some(old.as_str()));
    assert_eq!(again.by_id("id").keys().copied().collect::<Vec<_>>(), vec![3]);
    // A schema change ends that log too.
    env.sql("ALTER TABLE gone ADD COLUMN note text; INSERT INTO gone VALUES (4, 'x')").await?;
    folio_testkit::eventually("409 after ALTER TABLE", || {
        let mut g = again.clone();
        async move { g.step(false).await.ok().filter(|s| *s == StatusCode::CONFLICT) }
    })
    .await;
    let mut fresh = Follower::new(edge.client.clone(), "table=gone", auth.clone());
    fresh.catch_up().await?;
    assert_eq!(fresh.rows.get("\"public\".\"gone\"/\"4\"").and_then(|r| r["note"].as_str()), Some("x"));
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn every_shape_is_pinned_to_the_callers_agency_and_needs_a_token() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    env.sql(&format!(
        "INSERT INTO agencies (id, name) VALUES ('{a}', 'A'), ('{b}', 'B');
         INSERT INTO clients (id, agency_id, name, email) VALUES
           (gen_random_uuid(), '{a}', 'a1', 'a1@x.test'), (gen_random_uuid(), '{b}', 'b1', 'b1@x.test')"
    ))
    .await?;
    let edge = env.edge(&[]).await?;
    let res = edge.client.send(Method::GET, "/v1/shape?table=clients&offset=-1", &[], Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    assert!(res.json()["message"].as_str().is_some());

    let mut mine = Follower::new(edge.client.clone(), "table=clients", Some(bearer(&a)));
    mine.catch_up().await?;
    assert_eq!(mine.rows.len(), 1);
    assert!(mine.rows.values().all(|r| r["agency_id"] == a.as_str()));
    // Asking for the other agency's rows explicitly yields nothing.
    let q = format!("table=clients&where=agency_id%20%3D%20%27{b}%27");
    let mut sneaky = Follower::new(edge.client.clone(), &q, Some(bearer(&a)));
    sneaky.catch_up().await?;
    assert!(sneaky.rows.is_empty(), "{:?}", sneaky.rows);
    // The pin is ANDed to the whole clause: OR cannot escape it.
    let q = format!("table=clients&where=agency_id%20%3D%20%27{b}%27%20OR%20true");
    let mut sneaky = Follower::new(edge.client.clone(), &q, Some(bearer(&a)));
    sneaky.catch_up().await?;
    assert_eq!(sneaky.rows.len(), 1);
    assert!(sneaky.rows.values().all(|r| r["agency_id"] == a.as_str()), "{:?}", sneaky.rows);
    // A live insert for B never reaches A.
    env.sql(&format!("INSERT INTO clients (id, agency_id, name, email) VALUES (gen_random_uuid(), '{b}', 'b2', 'b2@x.test'), (gen_random_uuid(), '{a}', 'a2', 'a2@x.test')")).await?;
    let status = mine.step(true).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine.rows.len(), 2);
    assert!(mine.rows.values().all(|r| r["agency_id"] == a.as_str()));
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn bad_requests_get_400_naming_the_parameter_and_tables_outside_the_allow_list_403() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE things (id int4 PRIMARY KEY, title text)").await?;
    let edge = env.edge(&[]).await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let h = [("authorization", auth.as_str())];
    let get = async |path: &str| edge.client.send(Method::GET, path, &h, Bytes::new()).await;
    let res = get("/v1/shape?table=things&offset=-1&where=1%20x%201").await?;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        res.json(),
        serde_json::json!({"message": "Invalid request", "errors": {"where": ["At location 17: syntax error at or near \"x\""]}})
    );
    for (path, field) in [
        ("/v1/shape?offset=-1", "table"),
        ("/v1/shape?table=things", "offset"),
        ("/v1/shape?table=things&offset=abc", "offset"),
        ("/v1/shape?table=things&offset=5_0", "handle"),
        ("/v1/shape?table=nope&offset=-1", "table"),
        ("/v1/shape?table=things&offset=-1&columns=title", "columns"),
        ("/v1/shape?table=things&offset=-1&where=title%20%3D%20%241", "where"),
        ("/v1/shape?table=things&offset=-1&where=(SELECT%201)", "where"),
    ] {
        let res = get(path).await?;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{path}: {}", res.text());
        assert!(res.json()["errors"][field].is_array(), "{path}: {}", res.text());
    }
    // Valid to the parser, refused by Postgres on the stored data: still the client's 400.
    env.sql("INSERT INTO things VALUES (1, 'not a number')").await?;
    let res = get("/v1/shape?table=things&offset=-1&where=title%3A%3Aint4%20%3D%201").await?;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text());
    assert!(
        res.json()["errors"]["where"][0].as_str().unwrap_or_default().contains("invalid input syntax"),
        "{}",
        res.text()
    );
    // A handle this server never issued is a 409 to start over, not a 5xx to retry.
    for handle in ["nonsense", "0123456789abcdef-a%20b", "0123456789abcdef-*"] {
        let res = get(&format!("/v1/shape?table=things&offset=5_0&handle={handle}")).await?;
        assert_eq!(res.status, StatusCode::CONFLICT, "{handle}: {}", res.text());
        assert!(res.header("electric-handle").is_some());
    }
    let res = get("/v1/health").await?;
    assert_eq!(res.json(), serde_json::json!({"status": "active"}));
    let res = edge.client.send(Method::DELETE, "/v1/shape?table=things", &h, Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    edge.stop().await?;

    let strict = env.edge(&["--shape-tables", "public.proposals"]).await?;
    let res = strict.client.send(Method::GET, "/v1/shape?table=things&offset=-1", &h, Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.text());
    strict.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn a_truncate_no_edge_watched_still_ends_the_log_on_the_next_edge() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE unwatched (id int4 PRIMARY KEY)").await?;
    env.sql("INSERT INTO unwatched VALUES (1), (2)").await?;
    let first = env.edge(&[]).await?;
    let auth = Some(bearer(&uuid::Uuid::new_v4().to_string()));
    let mut f = Follower::new(first.client.clone(), "table=unwatched", auth.clone());
    f.catch_up().await?;
    first.stop().await?;
    let after = env.sql_on_stream("TRUNCATE unwatched; INSERT INTO unwatched VALUES (3)", 2).await?;
    let second = env.edge(&[]).await?;
    // First (while this edge knows nothing of the handle), a client at an offset past the
    // truncate (offsets between entries are valid): only the handle's own check against the
    // table's last truncate can tell.
    let mut ahead = f.clone();
    ahead.client = second.client.clone();
    ahead.offset = format!("{after}_0");
    assert_eq!(ahead.step(false).await?, StatusCode::CONFLICT, "the handle's snapshot predates the truncate");
    // And at the client's own offset (the KV record is gone by now; before, the history it
    // missed held the truncate).
    let mut behind = f.clone();
    behind.client = second.client.clone();
    assert_eq!(behind.step(false).await?, StatusCode::CONFLICT, "the handle is stale at any offset");
    second.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn delete_drops_a_shape_when_enabled_and_its_followers_start_over() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE doomed (id int4 PRIMARY KEY)").await?;
    env.sql("INSERT INTO doomed VALUES (1)").await?;
    let edge = env.edge(&["--shape-enable-delete"]).await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let h = [("authorization", auth.as_str())];
    let mut f = Follower::new(edge.client.clone(), "table=doomed", Some(auth.clone()));
    f.catch_up().await?;
    let handle = f.handle.clone().context("handle")?;
    let res = edge.client.send(Method::DELETE, &format!("/v1/shape?handle={handle}"), &h, Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::ACCEPTED, "{}", res.text());
    assert_eq!(f.step(false).await?, StatusCode::CONFLICT);
    let res = edge.client.send(Method::DELETE, &format!("/v1/shape?handle={handle}"), &h, Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
    assert_eq!(res.json(), serde_json::json!({"message": "No existing shape found"}));
    // By table: every shape of it.
    let mut g = Follower::new(edge.client.clone(), "table=doomed", Some(auth.clone()));
    g.catch_up().await?;
    let res = edge.client.send(Method::DELETE, "/v1/shape?table=doomed", &h, Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::ACCEPTED);
    assert_eq!(g.step(false).await?, StatusCode::CONFLICT);
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn snapshots_beyond_the_memory_budget_are_dropped_least_recently_used_first() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE budget (id int4 PRIMARY KEY, title text NOT NULL)").await?;
    env.sql("INSERT INTO budget SELECT g, 'row ' || g FROM generate_series(1, 300) g").await?;
    // One byte: every new snapshot evicts the others.
    let edge = env.edge(&["--shape-snapshot-memory", "1"]).await?;
    let auth = Some(bearer(&uuid::Uuid::new_v4().to_string()));
    let mut past = Follower::new(edge.client.clone(), "table=budget", auth.clone());
    past.catch_up().await?;
    let mut midway = Follower::new(edge.client.clone(), "table=budget&where=id%20%3E%200", auth.clone());
    assert_eq!(midway.step(false).await?, StatusCode::OK, "first chunk");
    assert!(!midway.up_to_date);
    let mut other = Follower::new(edge.client.clone(), "table=budget&where=id%20%3E%2010", auth.clone());
    other.catch_up().await?;
    // `midway`'s snapshot was dropped for `other`'s: its next chunk is a 409 to start over.
    assert_eq!(midway.step(false).await?, StatusCode::CONFLICT);
    // A client past its snapshot does not need it and continues.
    env.sql("INSERT INTO budget VALUES (301, 'new')").await?;
    let status = past.step(true).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(past.rows.contains_key("\"public\".\"budget\"/\"301\""));
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn a_client_holding_the_last_snapshot_chunk_continues_on_another_edge() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE lastchunk (id int4 PRIMARY KEY, title text NOT NULL)").await?;
    env.sql("INSERT INTO lastchunk SELECT g, 'row ' || g FROM generate_series(1, 150) g").await?;
    let first = env.edge(&[]).await?;
    let auth = Some(bearer(&uuid::Uuid::new_v4().to_string()));
    let mut f = Follower::new(first.client.clone(), "table=lastchunk", auth.clone());
    while f.rows.len() < 150 {
        assert_eq!(f.step(false).await?, StatusCode::OK);
    }
    assert!(!f.up_to_date && f.offset.starts_with("0_"), "at the last chunk: {}", f.offset);
    first.stop().await?;
    env.sql_on_stream("INSERT INTO lastchunk VALUES (151, 'after')", 1).await?;
    let second = env.edge(&[]).await?;
    f.client = second.client.clone();
    f.catch_up().await?;
    assert_eq!(f.rows.len(), 151, "no 409: the log continues on the edge without the snapshot");
    // A client in the middle of the snapshot cannot: its next chunk exists only on the first edge.
    let mut mid = Follower::new(second.client.clone(), "table=lastchunk&where=id%20%3E%200", auth.clone());
    assert_eq!(mid.step(false).await?, StatusCode::OK);
    let third = env.edge(&[]).await?;
    mid.client = third.client.clone();
    assert_eq!(mid.step(false).await?, StatusCode::CONFLICT);
    second.stop().await?;
    third.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn caching_headers_etag_304_cors_and_the_insecure_mode() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    env.sql(&format!("INSERT INTO agencies (id, name) VALUES ('{a}', 'A'), ('{b}', 'B')")).await?;
    let edge = env.edge(&[]).await?;
    let auth = bearer(&a);
    let h = [("authorization", auth.as_str()), ("origin", "https://app.example")];
    let first = edge.client.send(Method::GET, "/v1/shape?table=agencies&offset=-1", &h, Bytes::new()).await?;
    assert_eq!(first.status, StatusCode::OK);
    // Electric's values, made private: the response is this token's agency's.
    assert_eq!(first.header("cache-control"), Some("private, max-age=604800, stale-while-revalidate=2629746"));
    // Per token and, since the allowed origin is echoed, per origin.
    assert_eq!(first.header("vary"), Some("authorization, origin"));
    assert_eq!(first.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(first.header("access-control-expose-headers").unwrap_or_default().contains("electric-handle"));
    let handle = first.header("electric-handle").context("handle")?.to_owned();
    let etag = first.header("etag").context("etag")?.to_owned();
    assert_eq!(etag, format!("\"{handle}:-1:0_0\""));
    let again = edge
        .client
        .send(
            Method::GET,
            "/v1/shape?table=agencies&offset=-1",
            &[h[0], ("if-none-match", etag.as_str())],
            Bytes::new(),
        )
        .await?;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header("electric-handle"), Some(handle.as_str()));
    // Only the caller's own agency row, by its id.
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&first.body)?;
    assert_eq!(rows.iter().filter(|m| m.get("key").is_some()).count(), 1);
    let live = edge
        .client
        .send(
            Method::GET,
            &format!("/v1/shape?table=agencies&offset=0_inf&handle={handle}&live=true&cursor="),
            &h,
            Bytes::new(),
        )
        .await?;
    assert_eq!(live.status, StatusCode::OK, "{}", live.text());
    assert_eq!(live.header("cache-control"), Some("private, max-age=5, stale-while-revalidate=5"));
    assert!(live.header("electric-cursor").is_some() && live.header("electric-schema").is_none());
    let preflight =
        edge.client.send(Method::OPTIONS, "/v1/shape", &[("origin", "https://app.example")], Bytes::new()).await?;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert!(preflight.header("access-control-allow-headers").unwrap_or_default().contains("authorization"));
    edge.stop().await?;

    // Insecure: no token needed and no pin, for local development only.
    let open = env.edge(&["--shape-insecure"]).await?;
    let res = open.client.send(Method::GET, "/v1/shape?table=agencies&offset=-1", &[], Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        res.header("cache-control"),
        Some("public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&res.body)?;
    assert_eq!(rows.iter().filter(|m| m.get("key").is_some()).count(), 2);
    open.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn concurrent_first_requests_publish_a_table_once() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE raced (id int4 PRIMARY KEY, n int4 NOT NULL)").await?;
    let edge = env.edge(&[]).await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    // Distinct where clauses: distinct shapes, each resolving the unpublished table at once.
    let requests = (0..8).map(|n| {
        let (client, auth) = (edge.client.clone(), auth.clone());
        async move {
            let path = format!("/v1/shape?table=raced&offset=-1&where=n%20%3E%20{n}");
            client.send(Method::GET, &path, &[("authorization", auth.as_str())], Bytes::new()).await
        }
    });
    for res in futures::future::join_all(requests).await {
        let res = res?;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    }
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn insecure_mode_never_reads_authorization_but_secure_mode_requires_folio_tokens() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE notes (id int4 PRIMARY KEY, body text NOT NULL); INSERT INTO notes VALUES (1, 'a')").await?;
    let foreign = [("authorization", "Bearer an-app-token-the-edge-does-not-know")];
    let open = env.edge(&["--shape-insecure"]).await?;
    let res = open.client.send(Method::GET, "/v1/shape?table=notes&offset=-1", &foreign, Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::OK, "insecure mode served a forwarded app token: {}", res.text());
    open.stop().await?;
    let secure = env.edge(&[]).await?;
    let res = secure.client.send(Method::GET, "/v1/shape?table=notes&offset=-1", &foreign, Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    let res = secure.client.send(Method::GET, "/v1/shape?table=notes&offset=-1", &[], Bytes::new()).await?;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{}", res.text());
    secure.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn options_advertise_only_served_methods_and_a_dropped_table_is_named_as_the_table() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE dropped (id int4 PRIMARY KEY)").await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let a = [("authorization", auth.as_str())];
    let plain = env.edge(&[]).await?;
    let pre = plain.client.send(Method::OPTIONS, "/v1/shape", &[("origin", "https://x.example")], Bytes::new()).await?;
    assert_eq!(pre.header("access-control-allow-methods"), Some("GET, POST, HEAD, OPTIONS"));
    plain.stop().await?;

    let edge = env.edge(&["--shape-enable-delete"]).await?;
    let pre = edge.client.send(Method::OPTIONS, "/v1/shape", &[("origin", "https://x.example")], Bytes::new()).await?;
    assert_eq!(pre.header("access-control-allow-methods"), Some("GET, POST, HEAD, DELETE, OPTIONS"));
    edge.client.expect(Method::GET, "/v1/shape?table=dropped&offset=-1", &a, "", StatusCode::OK).await;
    edge.client.expect(Method::DELETE, "/v1/shape?table=dropped", &a, "", StatusCode::ACCEPTED).await;
    env.sql("DROP TABLE dropped").await?;
    let gone =
        edge.client.expect(Method::GET, "/v1/shape?table=dropped&offset=-1", &a, "", StatusCode::BAD_REQUEST).await;
    let errors = &gone.json()["errors"];
    assert!(errors.get("where").is_none(), "{}", gone.text());
    assert!(errors["table"][0].as_str().is_some_and(|m| m.contains("does not exist")), "{}", gone.text());
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn auto_publish_creates_a_missing_publication_as_electric_does() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE fresh (id int4 PRIMARY KEY); INSERT INTO fresh VALUES (7)").await?;
    let edge = env.edge(&["--publication", "edge_made"]).await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let res = edge
        .client
        .expect(Method::GET, "/v1/shape?table=fresh&offset=-1", &[("authorization", &auth)], "", StatusCode::OK)
        .await;
    assert!(res.text().contains("\"id\":\"7\""), "{}", res.text());
    let published: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = 'edge_made' AND tablename = 'fresh')",
    )
    .fetch_one(&env.db.pool)
    .await?;
    assert!(published, "the publication was created with the table");
    edge.stop().await?;
    env.stop().await
}

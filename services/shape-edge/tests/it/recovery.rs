//! The cluster is back within seconds of a nats-server restart: live shape clients on two edges
//! (long-poll and SSE) and wal-ingest publishing a steady stream of commits; nats-server is
//! stopped (SIGTERM, then SIGKILL) and back within a second. Every client gets its first change
//! within 2 s of NATS being back, and ends holding every committed row exactly once (the
//! followers refuse a duplicate insert).

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::{
    helpers::{TestClient, sse_resume_offset, take_sse_messages},
    shapes::{Env, bearer},
};

/// What one live client received: row ids, and when each change arrived.
#[derive(Default)]
struct Received {
    ids: BTreeSet<i64>,
    at: Vec<Instant>,
    error: Option<String>,
}

impl Received {
    fn apply(&mut self, m: &Value) {
        if m["headers"]["operation"] != "insert" {
            return;
        }
        let id: i64 = m["value"]["id"].as_str().and_then(|v| v.parse().ok()).unwrap_or(-1);
        if !self.ids.insert(id) {
            self.error.get_or_insert(format!("row {id} delivered twice"));
        }
        self.at.push(Instant::now());
    }
}

async fn initial(client: &TestClient, auth: &str, got: &Mutex<Received>) -> anyhow::Result<(String, String)> {
    let (mut handle, mut offset) = (String::new(), "-1".to_owned());
    loop {
        let mut path = format!("/v1/shape?table=beats&offset={offset}");
        if !handle.is_empty() {
            path.push_str(&format!("&handle={handle}"));
        }
        let res = client.send(Method::GET, &path, &[("authorization", auth)], Bytes::new()).await?;
        ensure!(res.status == StatusCode::OK, "{path}: {}", res.status);
        handle = res.header("electric-handle").context("handle")?.to_owned();
        offset = res.header("electric-offset").context("offset")?.to_owned();
        for m in serde_json::from_slice::<Vec<Value>>(&res.body)? {
            got.lock().unwrap().apply(&m);
        }
        if res.header("electric-up-to-date").is_some() {
            return Ok((handle, offset));
        }
    }
}

/// A live client as the official one behaves: long-poll or SSE, retrying after errors (the
/// edge answers 503 while JetStream is away) from its last offset.
async fn follow(client: TestClient, auth: String, sse: bool, got: Arc<Mutex<Received>>, stop: Arc<AtomicBool>) {
    let (handle, mut offset) = match initial(&client, &auth, &got).await {
        Ok(p) => p,
        Err(e) => {
            got.lock().unwrap().error = Some(format!("initial sync: {e:#}"));
            return;
        }
    };
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    while !stop.load(Ordering::SeqCst) {
        let path = format!(
            "{}/v1/shape?table=beats&offset={offset}&handle={handle}&live=true{}&cursor=",
            client.base(),
            if sse { "&live_sse=true" } else { "" }
        );
        let req = http::Request::builder()
            .uri(path)
            .header("authorization", &auth)
            .body(http_body_util::Full::new(Bytes::new()))
            .expect("request");
        let res = match tokio::time::timeout(Duration::from_secs(30), http.request(req)).await {
            Ok(Ok(r)) if r.status() == StatusCode::OK => r,
            Ok(Ok(r)) if r.status() == StatusCode::CONFLICT => {
                got.lock().unwrap().error = Some("409: the shape was lost".into());
                return;
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let header_offset = res.headers().get("electric-offset").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = res.into_body();
        let mut buf = Vec::new();
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::SeqCst) { return } else { continue }
                }
            };
            let Some(Ok(frame)) = frame else { break };
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            if !sse {
                continue;
            }
            let Ok(messages) = take_sse_messages(&mut buf) else {
                got.lock().unwrap().error = Some("an SSE event that is not JSON".into());
                return;
            };
            for m in messages {
                if let Some(o) = sse_resume_offset(&m) {
                    offset = o;
                }
                got.lock().unwrap().apply(&m);
            }
        }
        if !sse {
            match serde_json::from_slice::<Vec<Value>>(&buf) {
                Ok(messages) => {
                    let mut g = got.lock().unwrap();
                    for m in &messages {
                        g.apply(m);
                    }
                    if let Some(o) = header_offset {
                        offset = o;
                    }
                }
                // Cut off mid-body: ask again from the same offset.
                Err(_) => continue,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_clients_on_two_edges_hear_again_within_two_seconds_of_a_nats_restart() -> anyhow::Result<()> {
    let mut nats = folio_testkit::PrivateNats::start().await?;
    let env = Env::start_on(&nats.url()).await?;
    env.sql("CREATE TABLE beats (id int8 PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())").await?;
    let edges = [env.edge(&["--shape-sse-timeout", "60s"]).await?, env.edge(&["--shape-sse-timeout", "60s"]).await?];
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (e, edge) in edges.iter().enumerate() {
        for sse in [false, true] {
            let got = Arc::new(Mutex::new(Received::default()));
            let task =
                tokio::spawn(follow(edge.client.clone(), auth.clone(), sse, Arc::clone(&got), Arc::clone(&stop)));
            clients.push((format!("edge {e} {}", if sse { "SSE" } else { "long-poll" }), got, task));
        }
    }
    // A commit every 20 ms, as long as the test runs; a failed insert (never while Postgres is
    // up) would be a test bug.
    let next = Arc::new(AtomicI64::new(1));
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (pool, next, writing) = (env.db.pool.clone(), Arc::clone(&next), Arc::clone(&writing));
        tokio::spawn(async move {
            while writing.load(Ordering::SeqCst) {
                let id = next.fetch_add(1, Ordering::SeqCst);
                sqlx::query("INSERT INTO beats (id) VALUES ($1)").bind(id).execute(&pool).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    for how in [folio_testkit::Stop::Term, folio_testkit::Stop::Kill] {
        nats.restart(how, Duration::from_millis(800)).await?;
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(4)).await;
        for (name, got, _) in &clients {
            let g = got.lock().unwrap();
            let first = g.at.iter().find(|t| **t >= back).map(|t| t.duration_since(back));
            println!("{how:?}: {name}: first change {first:?} after NATS was back");
            ensure!(
                first.is_some_and(|d| d <= Duration::from_secs(2)),
                "{how:?}: {name} heard nothing within 2 s of NATS being back (first after {first:?})"
            );
        }
    }

    writing.store(false, Ordering::SeqCst);
    writer.await??;
    let written = next.load(Ordering::SeqCst) - 1;
    let expected: BTreeSet<i64> = (1..=written).collect();
    for (name, got, _) in &clients {
        folio_testkit::eventually(&format!("{name} to hold every row"), || async {
            let g = got.lock().unwrap();
            (g.ids.len() as i64 >= written || g.error.is_some()).then_some(())
        })
        .await;
        let g = got.lock().unwrap();
        ensure!(g.error.is_none(), "{name}: {}", g.error.as_deref().unwrap_or_default());
        ensure!(g.ids == expected, "{name}: rows differ from the {written} committed");
    }
    stop.store(true, Ordering::SeqCst);
    for edge in edges {
        edge.stop().await?;
    }
    env.stop().await
}

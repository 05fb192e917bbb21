//! Shapes with bounded cost (issue 13, findings 4 and 5): per-agency caps, where clauses whose
//! evaluation is bounded and kept off the request threads, and the tenant pin checked before
//! the caller's clause, in the snapshot query and on live changes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::{
    helpers::{TestClient, TestResponse},
    shapes::{Env, bearer},
};

async fn get(client: &TestClient, path: &str, auth: &str) -> anyhow::Result<TestResponse> {
    client.send(Method::GET, path, &[("authorization", auth)], Bytes::new()).await
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Requests `where` from the start until the snapshot ends; returns the last response.
async fn snapshot(client: &TestClient, table: &str, where_clause: &str, auth: &str) -> anyhow::Result<TestResponse> {
    let mut path = format!("/v1/shape?table={table}&where={}&offset=-1", encode(where_clause));
    let base = format!("/v1/shape?table={table}&where={}", encode(where_clause));
    loop {
        let res = get(client, &path, auth).await?;
        if res.status != StatusCode::OK || res.header("electric-up-to-date").is_some() {
            return Ok(res);
        }
        let (handle, offset) =
            (res.header("electric-handle").unwrap_or(""), res.header("electric-offset").unwrap_or(""));
        path = format!("{base}&handle={handle}&offset={offset}");
    }
}

#[tokio::test]
async fn an_agency_over_its_live_shape_cap_gets_429_with_retry_after() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE capped (id int8 PRIMARY KEY, agency_id uuid NOT NULL, title text)").await?;
    let edge = env.edge(&["--shape-max-live-shapes-per-agency", "2"]).await?;
    let (a, b) = (bearer(&uuid::Uuid::new_v4().to_string()), bearer(&uuid::Uuid::new_v4().to_string()));
    for n in 0..2 {
        let res = snapshot(&edge.client, "capped", &format!("id > {n}"), &a).await?;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    }
    // The same definitions again are the shapes already held: no new place needed.
    assert_eq!(snapshot(&edge.client, "capped", "id > 0", &a).await?.status, StatusCode::OK);
    let over = snapshot(&edge.client, "capped", "id > 2", &a).await?;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS, "{}", over.text());
    let retry: u64 = over.header("retry-after").expect("retry-after").parse()?;
    assert!(retry >= 1, "{retry}");
    assert_eq!(over.header("ratelimit-policy"), Some("\"live-shapes\";q=2"));
    assert_eq!(over.header("ratelimit"), Some(format!("\"live-shapes\";r=0;t={retry}").as_str()));
    assert_eq!(over.json()["code"], "too_many_shapes");
    assert!(over.json()["message"].as_str().is_some_and(|m| m.contains("live shapes")), "{}", over.text());
    // Another agency is not affected.
    assert_eq!(snapshot(&edge.client, "capped", "id > 2", &b).await?.status, StatusCode::OK);
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn another_agencys_where_clause_never_runs_on_our_rows() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let (a, b) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    env.sql(&format!(
        "CREATE TABLE memos (id int8 PRIMARY KEY, agency_id uuid NOT NULL, title text);
         INSERT INTO memos VALUES (1, '{a}', 'Alpha secret plan'), (2, '{b}', '42')"
    ))
    .await?;
    let edge = env.edge(&[]).await?;
    // A cast that fails on agency A's title: agency B's snapshot must neither fail on it nor
    // quote it.
    let clause = "title::int4 > 0";
    let res = snapshot(&edge.client, "memos", clause, &bearer(&b)).await?;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert!(!res.text().contains("Alpha"), "{}", res.text());
    let (handle, offset) =
        (res.header("electric-handle").unwrap().to_owned(), res.header("electric-offset").unwrap().to_owned());
    let first =
        get(&edge.client, &format!("/v1/shape?table=memos&where={}&offset=-1", encode(clause)), &bearer(&b)).await?;
    assert!(first.text().contains("\"42\""), "{}", first.text());
    // Live: A's new row is never looked at by B's clause; B's is delivered.
    env.sql_on_stream(&format!("INSERT INTO memos VALUES (3, '{a}', 'Beta secret'), (4, '{b}', '7')"), 2).await?;
    let live = format!("/v1/shape?table=memos&where={}&handle={handle}&offset={offset}&live=true", encode(clause));
    let res = get(&edge.client, &live, &bearer(&b)).await?;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert!(res.text().contains("\"7\"") && !res.text().contains("Beta"), "{}", res.text());
    // Agency A asking the same clause hits its own row: its own error, its own value.
    let mine = snapshot(&edge.client, "memos", clause, &bearer(&a)).await?;
    assert_eq!(mine.status, StatusCode::BAD_REQUEST, "{}", mine.text());
    assert!(!mine.text().contains("\"42\""), "{}", mine.text());
    edge.stop().await?;
    env.stop().await
}

#[tokio::test]
async fn a_pathological_like_pattern_does_not_stall_health_checks() -> anyhow::Result<()> {
    // One runtime thread for the test and the edge: anything evaluated on the threads that
    // answer requests stalls /v1/health.
    let env = Env::start().await?;
    let agency = uuid::Uuid::new_v4().to_string();
    env.sql("CREATE TABLE pages (id int8 PRIMARY KEY, agency_id uuid NOT NULL, body text)").await?;
    // The attack's pattern (3,000 characters) is allowed here so that it reaches live changes.
    let edge = env.edge(&["--shape-max-like-pattern", "4000"]).await?;
    let auth = bearer(&agency);
    let clause = format!("body LIKE '%{}b'", "a".repeat(2_998));
    let res = snapshot(&edge.client, "pages", &clause, &auth).await?;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let (handle, offset) =
        (res.header("electric-handle").unwrap().to_owned(), res.header("electric-offset").unwrap().to_owned());
    // With the default limits the pattern is refused when asked for.
    let default_edge = env.edge(&[]).await?;
    let refused = snapshot(&default_edge.client, "pages", &clause, &auth).await?;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text());
    assert!(refused.text().contains("LIKE pattern is longer than 256"), "{}", refused.text());
    default_edge.stop().await?;

    let content = "a".repeat(40_000);
    let rows: Vec<String> = (1..=4).map(|i| format!("({i}, '{agency}', '{content}')")).collect();
    let live = format!("/v1/shape?table=pages&where={}&handle={handle}&offset={offset}&live=true", encode(&clause));
    let client = edge.client.clone();
    let auth2 = auth.clone();
    let follower = tokio::spawn(async move { get(&client, &live, &auth2).await });
    env.sql(&format!("INSERT INTO pages VALUES {}", rows.join(","))).await?;
    let mut latencies = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let started = Instant::now();
        let res = edge.client.send(Method::GET, "/v1/health", &[], Bytes::new()).await?;
        assert_eq!(res.status, StatusCode::OK);
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    println!("/v1/health p99 {p99:?} over {} checks (max {:?})", latencies.len(), latencies.last());
    assert!(p99 < Duration::from_millis(500), "health p99 {p99:?}");
    // Over its budget the shape ends visibly: its followers start over, and the definition is
    // refused with a reason.
    let res = follower.await??;
    assert_eq!(res.status, StatusCode::CONFLICT, "{}", res.text());
    let again = snapshot(&edge.client, "pages", &clause, &auth).await?;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.text());
    assert!(again.text().contains("evaluation budget"), "{}", again.text());
    edge.stop().await?;
    env.stop().await
}

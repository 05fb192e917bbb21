//! Limits per agency and per token on the streams API, shared by every edge through NATS
//! (folio-quota): streams and stored bytes per agency, appends a second per agency and token.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::{Method, StatusCode};

use crate::helpers::{Agency, TEXT, TestClient, TestResponse, spawn_edge, test_prefix};

/// A 429 of folio-quota inside this API's `{"error": …}`.
fn assert_exhausted(res: &TestResponse) {
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text());
    assert_eq!(res.json()["error"]["code"], "resource_exhausted", "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn an_agency_over_its_stream_quota_gets_429_and_deleting_one_frees_a_place() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge = spawn_edge(&prefix, &["--ds-max-streams-per-agency", "2"]).await?;
    let (a, b) = (Agency::new(), Agency::new());
    let c = edge.client.with_auth(&a.admin);
    c.expect(Method::PUT, &a.path("one"), TEXT, "", StatusCode::CREATED).await;
    c.expect(
        Method::PUT,
        &a.path("short"),
        &[("content-type", "text/plain"), ("stream-ttl", "1")],
        "",
        StatusCode::CREATED,
    )
    .await;
    // Re-creating a stream it holds is no new stream.
    c.expect(Method::PUT, &a.path("one"), TEXT, "", StatusCode::OK).await;
    let over = c.send(Method::PUT, &a.path("three"), TEXT, "").await?;
    assert_exhausted(&over);
    assert!(over.json()["error"]["message"].as_str().is_some_and(|m| m.contains("ds-streams")), "{}", over.text());
    c.expect(Method::GET, &a.path("three"), &[], "", StatusCode::NOT_FOUND).await;
    // Another agency has places of its own.
    edge.client.with_auth(&b.admin).expect(Method::PUT, &b.path("one"), TEXT, "", StatusCode::CREATED).await;

    c.expect(Method::DELETE, &a.path("one"), &[], "", StatusCode::NO_CONTENT).await;
    c.expect(Method::PUT, &a.path("three"), TEXT, "", StatusCode::CREATED).await;
    assert_exhausted(&c.send(Method::PUT, &a.path("four"), TEXT, "").await?);

    // An expired stream gives its place back too (here expired by the request that finds it).
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    c.expect(Method::GET, &a.path("short"), &[], "", StatusCode::NOT_FOUND).await;
    c.expect(Method::PUT, &a.path("four"), TEXT, "", StatusCode::CREATED).await;
    edge.stop().await
}

#[tokio::test]
async fn stored_bytes_over_quota_are_refused_and_freed_by_delete() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge = spawn_edge(&prefix, &["--ds-max-bytes-per-agency", "100"]).await?;
    let a = Agency::new();
    let c = edge.client.with_auth(&a.admin);
    let (one, two) = (a.path("one"), a.path("two"));
    c.expect(Method::PUT, &one, TEXT, "x".repeat(60), StatusCode::CREATED).await;
    c.expect(Method::POST, &one, TEXT, "y".repeat(30), StatusCode::NO_CONTENT).await;
    let over = c.send(Method::POST, &one, TEXT, "z".repeat(20)).await?;
    assert_exhausted(&over);
    assert!(over.json()["error"]["message"].as_str().is_some_and(|m| m.contains("ds-bytes")), "{}", over.text());
    // The refused append stored nothing.
    assert_eq!(c.expect(Method::GET, &one, &[], "", StatusCode::OK).await.text().len(), 90);
    // A create's initial data counts as well; an empty stream costs no bytes.
    assert_exhausted(&c.send(Method::PUT, &two, TEXT, "w".repeat(20)).await?);
    c.expect(Method::PUT, &two, TEXT, "", StatusCode::CREATED).await;
    c.expect(Method::POST, &two, TEXT, "v".repeat(10), StatusCode::NO_CONTENT).await;
    assert_exhausted(&c.send(Method::POST, &two, TEXT, "v").await?);

    // Deleting gives back the bytes its metadata recorded (60 + 30).
    c.expect(Method::DELETE, &one, &[], "", StatusCode::NO_CONTENT).await;
    c.expect(Method::POST, &two, TEXT, "u".repeat(90), StatusCode::NO_CONTENT).await;
    assert_exhausted(&c.send(Method::POST, &two, TEXT, "u").await?);
    edge.stop().await
}

#[tokio::test]
async fn an_agency_flooding_appends_gets_429_with_retry_after_while_another_agency_appends() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge = spawn_edge(&prefix, &["--ds-agency-appends-per-sec", "5", "--ds-token-appends-per-sec", "1000"]).await?;
    let (a, b) = (Agency::new(), Agency::new());
    let (ca, cb) = (edge.client.with_auth(&a.editor), edge.client.with_auth(&b.editor));
    ca.expect(Method::PUT, &a.path("flood"), TEXT, "", StatusCode::CREATED).await;
    cb.expect(Method::PUT, &b.path("calm"), TEXT, "", StatusCode::CREATED).await;

    let mut refused = None;
    let mut admitted = 0;
    for _ in 0..40 {
        let res = ca.send(Method::POST, &a.path("flood"), TEXT, "x").await?;
        match res.status {
            StatusCode::NO_CONTENT => {
                admitted += 1;
                assert_eq!(res.header("ratelimit-policy"), Some("\"agency-appends\";q=10;w=2"));
            }
            _ => {
                assert_exhausted(&res);
                refused = Some(res);
            }
        }
    }
    // A burst of 10, plus what refilled at 5/s while the flood ran.
    assert!((10..=20).contains(&admitted), "{admitted} of 40 admitted");
    let refused = refused.expect("the flood was refused");
    let retry: u64 = refused.header("retry-after").expect("retry-after").parse()?;
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(refused.header("ratelimit-policy"), Some("\"agency-appends\";q=10;w=2"));
    assert!(refused.header("ratelimit").is_some_and(|v| v.starts_with("\"agency-appends\";r=0;t=")));
    assert!(refused.json()["error"]["retry_after_ms"].as_u64().is_some_and(|ms| ms <= 1_000), "{}", refused.text());

    // The other agency's budget is its own.
    for _ in 0..5 {
        cb.expect(Method::POST, &b.path("calm"), TEXT, "y", StatusCode::NO_CONTENT).await;
    }
    // And the flooding agency is admitted again once a token is due.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    ca.expect(Method::POST, &a.path("flood"), TEXT, "x", StatusCode::NO_CONTENT).await;
    edge.stop().await
}

#[tokio::test]
async fn one_user_over_its_append_rate_leaves_its_agencys_other_users_appending() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge = spawn_edge(&prefix, &["--ds-token-appends-per-sec", "2"]).await?;
    let a = Agency::new();
    let (noisy, quiet) = (edge.client.with_auth(&a.editor), edge.client.with_auth(&a.admin));
    noisy.expect(Method::PUT, &a.path("s"), TEXT, "", StatusCode::CREATED).await;
    let mut last = None;
    for _ in 0..10 {
        last = Some(noisy.send(Method::POST, &a.path("s"), TEXT, "x").await?);
    }
    let last = last.expect("sent");
    assert_exhausted(&last);
    assert_eq!(last.header("ratelimit-policy"), Some("\"token-appends\";q=4;w=2"));
    quiet.expect(Method::POST, &a.path("s"), TEXT, "y", StatusCode::NO_CONTENT).await;
    edge.stop().await
}

/// Appends to `path` from `tasks` concurrent requesters until `until`; counts the admitted.
fn flood(client: TestClient, path: String, until: Instant, admitted: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while Instant::now() < until {
            match client.send(Method::POST, &path, TEXT, "x").await {
                Ok(res) if res.status == StatusCode::NO_CONTENT => {
                    admitted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(res) => assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{}", res.text()),
                Err(e) => panic!("append failed: {e}"),
            }
        }
    })
}

#[tokio::test]
async fn two_edges_share_one_agencys_append_rate() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    const RATE: u64 = 20;
    let flags = ["--ds-agency-appends-per-sec", "20", "--ds-token-appends-per-sec", "1000"];
    let (one, two) = (spawn_edge(&prefix, &flags).await?, spawn_edge(&prefix, &flags).await?);
    let a = Agency::new();
    let clients = [one.client.with_auth(&a.editor), two.client.with_auth(&a.editor)];
    for n in 0..4 {
        clients[0].expect(Method::PUT, &a.path(&format!("s{n}")), TEXT, "", StatusCode::CREATED).await;
    }
    let window = Duration::from_secs(3);
    let until = Instant::now() + window;
    let counts = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut floods = Vec::new();
    for n in 0..4 {
        let edge = n % 2;
        floods.push(flood(clients[edge].clone(), a.path(&format!("s{n}")), until, counts[edge].clone()));
    }
    for f in floods {
        f.await?;
    }
    let (by_one, by_two) = (counts[0].load(Ordering::Relaxed), counts[1].load(Ordering::Relaxed));
    let admitted = by_one + by_two;
    // burst + rate x T, within folio-quota's stated error: 1.5 x N x (rate x lease) for N = 2
    // edges and the 100 ms lease (6), plus a lease's worth for the window's ragged ends.
    let expected = 2 * RATE + RATE * window.as_secs();
    let bound = 6 + 2;
    assert!(
        admitted.abs_diff(expected) <= bound,
        "admitted {by_one} + {by_two} = {admitted}, expected {expected} ± {bound}"
    );
    assert!(by_one > 0 && by_two > 0, "both edges admit: {by_one} + {by_two}");
    one.stop().await?;
    two.stop().await
}

#[tokio::test]
async fn two_edges_spending_one_agencys_stored_bytes_never_store_more_than_its_limit() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    // Leased in chunks of 1 MiB (at most half of what is left under the limit).
    const LIMIT: usize = 3 << 20;
    const BODY: usize = 16 << 10;
    let limit = LIMIT.to_string();
    let flags = [
        "--ds-max-bytes-per-agency",
        &limit,
        "--ds-agency-appends-per-sec",
        "100000",
        "--ds-token-appends-per-sec",
        "100000",
    ];
    let (one, two) = (spawn_edge(&prefix, &flags).await?, spawn_edge(&prefix, &flags).await?);
    let a = Agency::new();
    let clients = [one.client.with_auth(&a.editor), two.client.with_auth(&a.editor)];
    let paths: Vec<String> = (0..4).map(|n| a.path(&format!("s{n}"))).collect();
    for path in &paths {
        clients[0].expect(Method::PUT, path, TEXT, "", StatusCode::CREATED).await;
    }
    // Appends to `path` through `client` until the quota refuses twice in a row; the bytes stored.
    let fill = |client: TestClient, path: String| {
        tokio::spawn(async move {
            let (mut refusals, mut stored) = (0, 0);
            while refusals < 2 {
                let res = client.send(Method::POST, &path, TEXT, "b".repeat(BODY)).await.expect("append");
                if res.status == StatusCode::NO_CONTENT {
                    refusals = 0;
                    stored += BODY;
                } else {
                    assert_exhausted(&res);
                    refusals += 1;
                }
            }
            stored
        })
    };
    let fills: Vec<_> = paths.iter().enumerate().map(|(n, p)| fill(clients[n % 2].clone(), p.clone())).collect();
    let mut per_stream = Vec::new();
    for f in fills {
        per_stream.push(f.await?);
    }
    let racing: usize = per_stream.iter().sum();
    assert!(racing <= LIMIT, "{racing} bytes stored of {LIMIT} by two edges at once");

    // Idle past the lease TTL (1 s), each edge gives back what it leased and did not spend: the
    // rest of the budget can be filled from either edge, and no more.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let full = racing + fill(clients[1].clone(), paths[0].clone()).await?;
    assert!((LIMIT - BODY..=LIMIT).contains(&full), "{full} bytes stored of {LIMIT} once leases were given back");

    // A delete gives back exactly the bytes of the stream, to be stored again through either edge.
    let freed = per_stream[1];
    assert!(freed > 0, "every stream stored something: {per_stream:?}");
    one.client.with_auth(&a.admin).expect(Method::DELETE, &paths[1], &[], "", StatusCode::NO_CONTENT).await;
    let after = full - freed + fill(clients[0].clone(), paths[2].clone()).await?;
    assert!((LIMIT - BODY..=LIMIT).contains(&after), "{after} bytes stored of {LIMIT} after freeing {freed}");
    one.stop().await?;
    two.stop().await
}

#[tokio::test]
async fn bytes_appended_on_one_edge_come_back_when_another_deletes_the_stream_before_they_are_recorded()
-> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    const LIMIT: usize = 1_000;
    let limit = LIMIT.to_string();
    let flags = ["--ds-max-bytes-per-agency", &limit];
    let (one, two) = (spawn_edge(&prefix, &flags).await?, spawn_edge(&prefix, &flags).await?);
    let a = Agency::new();
    let (admin, writer) = (one.client.with_auth(&a.admin), two.client.with_auth(&a.editor));
    let (early, drained, rest) = (a.path("early"), a.path("drained"), a.path("rest"));
    for path in [&early, &drained, &rest] {
        admin.expect(Method::PUT, path, TEXT, "", StatusCode::CREATED).await;
    }
    // Edge two records appended bytes in the metadata about once a second: `early` is deleted
    // through edge one before that, so edge two gives its bytes back itself.
    writer.expect(Method::POST, &early, TEXT, "e".repeat(300), StatusCode::NO_CONTENT).await;
    admin.expect(Method::DELETE, &early, &[], "", StatusCode::NO_CONTENT).await;
    // Edge two records what it holds when it drains; deleting `drained` afterwards frees it.
    writer.expect(Method::POST, &drained, TEXT, "d".repeat(300), StatusCode::NO_CONTENT).await;
    two.stop().await?;
    admin.expect(Method::DELETE, &drained, &[], "", StatusCode::NO_CONTENT).await;

    // The whole budget is back, and no more than it.
    let mut stored = 0;
    loop {
        let res = admin.send(Method::POST, &rest, TEXT, "r".repeat(100)).await?;
        if res.status != StatusCode::NO_CONTENT {
            assert_exhausted(&res);
            break;
        }
        stored += 100;
        assert!(stored <= LIMIT, "{stored} bytes stored of {LIMIT}");
    }
    assert_eq!(stored, LIMIT, "the deleted streams' bytes were given back");
    one.stop().await
}

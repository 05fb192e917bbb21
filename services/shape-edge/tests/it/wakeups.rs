//! No lost wake-ups: a live reader at the tail gets the next change within a second, whatever
//! the moment it lands — right after the reader is connected, while it reads its starting
//! position, or between that read and its wait. Hundreds of rounds per kind of reader, with
//! the write placed at a random point (0–3 ms after the reader is ready); live timeouts are
//! long, so a missed wake-up shows as a slow delivery, not as a timely timeout.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use folio_proto::events::v1::Operation;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use rand::Rng;

use crate::{
    activity::change,
    helpers::{Agency, TEXT, TestClient, changes_stream, spawn_edge, test_prefix},
    shapes::{Env, bearer},
};

const SLOW: Duration = Duration::from_secs(1);
/// Rounds of each kind; at least hundreds, as the lost wake-up showed in ~4 % of tries.
const ROUNDS: usize = 200;

/// Delivery latencies of one kind of reader.
struct Latencies(&'static str, Vec<Duration>);

impl Latencies {
    fn check(mut self) -> anyhow::Result<()> {
        self.1.sort();
        let n = self.1.len();
        let pct = |p: usize| self.1[(n * p / 100).min(n - 1)];
        let slow = self.1.iter().filter(|d| **d >= SLOW).count();
        println!(
            "{}: {n} rounds, p50 {:?}, p99 {:?}, max {:?}, {slow} slower than {SLOW:?}",
            self.0,
            pct(50),
            pct(99),
            self.1[n - 1]
        );
        anyhow::ensure!(
            slow == 0,
            "{}: {slow} of {n} deliveries took longer than {SLOW:?} (max {:?})",
            self.0,
            self.1[n - 1]
        );
        Ok(())
    }
}

async fn jitter() {
    let micros = rand::rng().random_range(0..3000);
    if micros < 300 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }
}

/// Opens a GET with the response body as a stream of frames.
async fn open(client: &TestClient, path: &str, auth: Option<&str>) -> anyhow::Result<hyper::body::Incoming> {
    let mut req = http::Request::builder().uri(format!("{}{path}", client.base()));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let res = http.request(req.body(http_body_util::Full::new(Bytes::new()))?).await?;
    anyhow::ensure!(res.status() == StatusCode::OK, "{path}: {}", res.status());
    Ok(res.into_body())
}

/// Reads the body until `done` holds for what was received (or 5 s pass).
async fn read_until(body: &mut hyper::body::Incoming, received: &mut String, done: impl Fn(&str) -> bool) -> bool {
    read_until_within(body, received, done, Duration::from_secs(5)).await
}

/// [`read_until`], for at most `within`.
async fn read_until_within(
    body: &mut hyper::body::Incoming,
    received: &mut String,
    done: impl Fn(&str) -> bool,
    within: Duration,
) -> bool {
    let read = async {
        while !done(received) {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        received.push_str(&String::from_utf8_lossy(&d));
                    }
                }
                _ => return false,
            }
        }
        true
    };
    tokio::time::timeout(within, read).await.unwrap_or(false)
}

/// The live SSE request of the shape at `shape` (a `/v1/shape?…` URL), from its current end.
async fn live_sse_path(c: &TestClient, auth: &str, shape: &str) -> String {
    let first =
        c.expect(Method::GET, &format!("{shape}&offset=-1"), &[("authorization", auth)], "", StatusCode::OK).await;
    format!(
        "{shape}&offset={}&handle={}&live=true&live_sse=true&cursor=",
        first.header("electric-offset").unwrap_or_default(),
        first.header("electric-handle").unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_stream_readers_at_the_tail_get_the_next_append_within_a_second() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    // 400 appends as fast as the wakes go: over one user's append rate, which is not what
    // this test measures.
    let edge = spawn_edge(&prefix, &["--ds-long-poll-timeout", "20s", "--ds-quotas", "off"]).await?;
    let agency = Agency::new();
    let c = &edge.client.with_auth(&agency.editor);
    let path = &agency.path("wake");
    c.expect(Method::PUT, path, &[("content-type", "text/plain")], "", StatusCode::CREATED).await;

    let mut sse = Latencies("durable stream, SSE from offset=now", Vec::new());
    for round in 0..ROUNDS {
        let mut body = open(c, &format!("{path}?offset=now&live=sse"), Some(&agency.viewer)).await?;
        let mut got = String::new();
        anyhow::ensure!(read_until(&mut body, &mut got, |s| s.contains("event: control")).await, "never connected");
        jitter().await;
        let marker = format!("sse-{round}");
        let started = Instant::now();
        c.expect(Method::POST, path, &[("content-type", "text/plain")], marker.clone(), StatusCode::NO_CONTENT).await;
        let seen = read_until(&mut body, &mut got, |s| s.contains(&marker)).await;
        sse.1.push(if seen { started.elapsed() } else { Duration::from_secs(5) });
    }

    let mut long_poll = Latencies("durable stream, long-poll from the tail", Vec::new());
    for round in 0..ROUNDS {
        let tail = c.expect(Method::GET, &format!("{path}?offset=now"), &[], "", StatusCode::OK).await.next_offset();
        let (client, p) = (c.clone(), path.clone());
        let poll = tokio::spawn(async move {
            client.send(Method::GET, &format!("{p}?offset={tail}&live=long-poll"), &[], Bytes::new()).await
        });
        jitter().await;
        let started = Instant::now();
        c.expect(Method::POST, path, &[("content-type", "text/plain")], format!("lp-{round}"), StatusCode::NO_CONTENT)
            .await;
        let res = tokio::time::timeout(Duration::from_secs(5), poll).await;
        long_poll.1.push(match res {
            Ok(Ok(Ok(r))) if r.status == StatusCode::OK => started.elapsed(),
            _ => Duration::from_secs(5),
        });
    }
    edge.stop().await?;
    sse.check()?;
    long_poll.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposal_activity_readers_at_the_tail_get_the_next_change_within_a_second() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let js = jetstream::new(folio_testkit::nats().await?);
    let (changes_stream, subjects) = changes_stream(&js, &prefix).await?;
    const SECRET: &str = "wakeup-test-secret-wakeup-test-secret";
    let edge = spawn_edge(
        &prefix,
        &[
            "--changes-stream",
            &changes_stream,
            "--subject-root",
            &prefix,
            "--jwt-secret",
            SECRET,
            "--ds-long-poll-timeout",
            "20s",
        ],
    )
    .await?;
    let c = &edge.client;
    let agency = uuid::Uuid::new_v4().to_string();
    let proposal = uuid::Uuid::new_v4().to_string();
    let auth = crate::helpers::bearer(SECRET, &agency);
    let subject = subjects.row("public", "proposals", Some(&agency));
    let path = format!("/v1/stream/proposals/{proposal}/activity");
    let mut lsn = 0x1000;
    // Another agency's traffic on the same stream, as in a real deployment.
    let noise_subject = subjects.row("public", "proposals", Some(&uuid::Uuid::new_v4().to_string()));

    let mut sse = Latencies("proposal activity, SSE from offset=now", Vec::new());
    for round in 0..ROUNDS {
        let mut body = open(c, &format!("{path}?offset=now&live=sse"), Some(&auth)).await?;
        let mut got = String::new();
        anyhow::ensure!(read_until(&mut body, &mut got, |s| s.contains("event: control")).await, "never connected");
        jitter().await;
        let title = format!("sse-{round}");
        lsn += 16;
        if round % 2 == 0 {
            js.publish(
                noise_subject.clone(),
                change(lsn, &agency, "00000000-0000-0000-0000-000000000000", Operation::Update, "x"),
            )
            .await?;
        }
        let started = Instant::now();
        js.publish(subject.clone(), change(lsn + 8, &agency, &proposal, Operation::Update, &title)).await?.await?;
        let seen = read_until(&mut body, &mut got, |s| s.contains(&title)).await;
        sse.1.push(if seen { started.elapsed() } else { Duration::from_secs(5) });
    }

    let mut long_poll = Latencies("proposal activity, long-poll from the tail", Vec::new());
    for round in 0..ROUNDS {
        let tail = c
            .expect(Method::GET, &format!("{path}?offset=now"), &[("authorization", &auth)], "", StatusCode::OK)
            .await
            .next_offset();
        let (client, auth2, p) = (c.clone(), auth.clone(), path.clone());
        let poll = tokio::spawn(async move {
            client
                .send(
                    Method::GET,
                    &format!("{p}?offset={tail}&live=long-poll"),
                    &[("authorization", &auth2)],
                    Bytes::new(),
                )
                .await
        });
        jitter().await;
        lsn += 16;
        let started = Instant::now();
        js.publish(subject.clone(), change(lsn, &agency, &proposal, Operation::Update, &format!("lp-{round}")))
            .await?
            .await?;
        let res = tokio::time::timeout(Duration::from_secs(5), poll).await;
        long_poll.1.push(match res {
            Ok(Ok(Ok(r))) if r.status == StatusCode::OK && r.text().contains(&format!("lp-{round}")) => {
                started.elapsed()
            }
            _ => Duration::from_secs(5),
        });
    }
    edge.stop().await?;
    sse.check()?;
    long_poll.check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shape_clients_at_the_tail_get_the_next_commit_within_a_second() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE pings (id int8 PRIMARY KEY, note text NOT NULL)").await?;
    let edge = env.edge(&["--shape-long-poll-timeout", "20s", "--shape-sse-timeout", "30s"]).await?;
    let c = &edge.client;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let first =
        c.expect(Method::GET, "/v1/shape?table=pings&offset=-1", &[("authorization", &auth)], "", StatusCode::OK).await;
    let handle = first.header("electric-handle").unwrap_or_default().to_owned();
    let mut offset = first.header("electric-offset").unwrap_or_default().to_owned();
    let rounds = ROUNDS / 2;

    let mut long_poll = Latencies("shape, long-poll at the tail", Vec::new());
    for round in 0..rounds {
        let (client, a, h, o) = (c.clone(), auth.clone(), handle.clone(), offset.clone());
        let poll = tokio::spawn(async move {
            let path = format!("/v1/shape?table=pings&offset={o}&handle={h}&live=true&cursor=");
            client.send(Method::GET, &path, &[("authorization", &a)], Bytes::new()).await
        });
        jitter().await;
        let started = Instant::now();
        env.sql(&format!("INSERT INTO pings VALUES ({round}, 'lp-{round}')")).await?;
        let mut latency = Duration::from_secs(5);
        // An empty up-to-date (a change to no row of the shape) would be re-polled.
        if let Ok(Ok(Ok(r))) = tokio::time::timeout(Duration::from_secs(5), poll).await
            && r.status == StatusCode::OK
        {
            offset = r.header("electric-offset").unwrap_or_default().to_owned();
            if r.text().contains(&format!("lp-{round}")) {
                latency = started.elapsed();
            }
        }
        long_poll.1.push(latency);
    }

    let mut sse = Latencies("shape, SSE at the tail", Vec::new());
    for round in 0..rounds {
        let id = 10_000 + round;
        let path = format!("/v1/shape?table=pings&offset={offset}&handle={handle}&live=true&live_sse=true&cursor=");
        let mut body = open(c, &path, Some(&auth)).await?;
        jitter().await;
        let started = Instant::now();
        env.sql(&format!("INSERT INTO pings VALUES ({id}, 'sse-{round}')")).await?;
        let mut got = String::new();
        let seen =
            read_until(&mut body, &mut got, |s| s.contains(&format!("sse-{round}")) && s.contains("up-to-date")).await;
        sse.1.push(if seen { started.elapsed() } else { Duration::from_secs(5) });
        if let Some((_, tail)) = got.rsplit_once("\"global_last_seen_lsn\":\"")
            && let Some(lsn) = tail.split('"').next()
        {
            offset = format!("{lsn}_0");
        }
    }
    edge.stop().await?;
    env.stop().await?;
    long_poll.check()?;
    sse.check()
}

/// Reads `body` to its end; whether it ended within `within` (an error ends it too).
async fn ends_within(body: &mut hyper::body::Incoming, within: Duration) -> bool {
    let read = async { while let Some(Ok(_)) = body.frame().await {} };
    tokio::time::timeout(within, read).await.is_ok()
}

/// Inserts a row into `table` every 50 ms for about `for_how_long`: a busy shape.
async fn keep_busy(env: &Env, table: &str, first_id: u32, for_how_long: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut id = first_id;
    while started.elapsed() < for_how_long {
        env.sql(&format!("INSERT INTO {table} VALUES ({id}, 'busy')")).await?;
        id += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// An SSE response ends at its lifetime, and as soon as the edge drains, whether its shape is
/// quiet (the stream waits on timers it does not poll per wake-up) or busy (it never waits on
/// them). A stream that missed either would stay open: until its 60 s lifetime, or holding
/// the edge's shutdown.
#[tokio::test]
async fn shape_sse_streams_end_at_their_lifetime_and_when_the_edge_drains() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE beats (id int8 PRIMARY KEY, note text NOT NULL)").await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    // Rows noted 'busy' (kept coming) or 'quiet' (none ever).
    let sse_path = |c: TestClient, note: &'static str| {
        let auth = auth.clone();
        async move {
            let shape = format!("/v1/shape?table=beats&where=note%20%3D%20%27{note}%27");
            let path = live_sse_path(&c, &auth, &shape).await;
            // At the head: nothing is sent until a change, and the stream waits on its timers.
            open(&c, &path, Some(&auth)).await
        }
    };

    // Lifetime 2 s: a quiet stream and a busy one both end after it.
    let edge = env.edge(&["--shape-sse-timeout", "2s"]).await?;
    let opened = Instant::now();
    let mut quiet = sse_path(edge.client.clone(), "quiet").await?;
    let mut busy = sse_path(edge.client.clone(), "busy").await?;
    let (quiet_ended, busy_ended, writes) = tokio::join!(
        ends_within(&mut quiet, Duration::from_secs(5)),
        ends_within(&mut busy, Duration::from_secs(5)),
        keep_busy(&env, "beats", 0, Duration::from_secs(3)),
    );
    writes?;
    let lived = opened.elapsed();
    assert!(quiet_ended && busy_ended, "quiet ended: {quiet_ended}, busy ended: {busy_ended}");
    assert!(lived >= Duration::from_millis(1900), "the streams ended after {lived:?}, before their lifetime");
    edge.stop().await?;

    // Lifetime 60 s: draining ends both at once, and the edge stops within seconds.
    let edge = env.edge(&["--shape-sse-timeout", "60s"]).await?;
    let mut quiet = sse_path(edge.client.clone(), "quiet").await?;
    let mut busy = sse_path(edge.client.clone(), "busy").await?;
    let stopping = Instant::now();
    let (stopped, quiet_ended, busy_ended, writes) = tokio::join!(
        async {
            // Some changes flow first, so the busy stream is mid-delivery when the drain starts.
            tokio::time::sleep(Duration::from_millis(500)).await;
            edge.stop().await
        },
        ends_within(&mut quiet, Duration::from_secs(5)),
        ends_within(&mut busy, Duration::from_secs(5)),
        keep_busy(&env, "beats", 10_000, Duration::from_secs(2)),
    );
    writes?;
    stopped?;
    let took = stopping.elapsed();
    assert!(quiet_ended && busy_ended, "after the drain: quiet ended: {quiet_ended}, busy ended: {busy_ended}");
    assert!(took < Duration::from_secs(4), "draining took {took:?}");
    env.stop().await
}

/// A quiet SSE response gets a keep-alive comment 21 s after its last frame (proxies close
/// silent responses), though the stream polls its timers only when one is due: here over
/// HTTP/2 (where h2 also wakes the stream for send capacity), after a busy second, so the
/// keep-alive armed at the start fires early, must re-arm itself for 21 s after the last
/// frame, and must still be woken then.
#[tokio::test]
async fn a_shape_sse_stream_gets_its_keep_alive_21_s_after_its_last_frame() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.sql("CREATE TABLE hushed (id int8 PRIMARY KEY)").await?;
    let edge = env.edge(&["--shape-sse-timeout", "40s"]).await?;
    let auth = bearer(&uuid::Uuid::new_v4().to_string());
    let c = &edge.client;
    let path = live_sse_path(c, &auth, "/v1/shape?table=hushed").await;
    let mut body = c.with_auth(&auth).open_h2(&path).await?;
    let mut got = String::new();
    for id in 0..10 {
        env.sql(&format!("INSERT INTO hushed VALUES ({id})")).await?;
        anyhow::ensure!(
            read_until(&mut body, &mut got, |s| s.contains(&format!("\"id\":\"{id}\""))).await,
            "row {id} did not arrive: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_frame = Instant::now();
    got.clear();
    let kept_alive =
        read_until_within(&mut body, &mut got, |s| s.contains(": keep-alive"), Duration::from_secs(25)).await;
    let after = last_frame.elapsed();
    assert!(kept_alive, "no keep-alive within 25 s of the last frame (received {got:?})");
    assert!(after >= Duration::from_secs(20), "the keep-alive came {after:?} after the last frame, early");
    drop(body);
    edge.stop().await?;
    env.stop().await
}

/// A Durable Streams SSE reader ends at its maximum age and as soon as the edge drains, with
/// the clean end of its response, whether its stream is quiet (it waits on its timers) or busy
/// (it finds more data after each event), and a quiet one gets its keep-alive control events.
#[tokio::test]
async fn stream_sse_readers_end_at_their_max_age_and_when_the_edge_drains() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let agency = Agency::new();
    // One quiet stream, one that gets an append every 50 ms for `for_how_long`, each read over
    // HTTP/2.
    let readers = |edge: &crate::helpers::TestEdge| {
        let c = edge.client.with_auth(&agency.editor);
        let (quiet, busy) = (agency.path("quiet"), agency.path("busy"));
        async move {
            let mut bodies = Vec::new();
            for path in [&quiet, &busy] {
                c.send(Method::PUT, path, TEXT, Bytes::new()).await?;
                bodies.push(c.open_h2(&format!("{path}?offset=now&live=sse")).await?);
            }
            let busy_body = bodies.pop().expect("two");
            anyhow::Ok((c, busy, bodies.pop().expect("two"), busy_body))
        }
    };
    let keep_appending = |c: TestClient, path: String, for_how_long: Duration| async move {
        let started = Instant::now();
        while started.elapsed() < for_how_long {
            c.expect(Method::POST, &path, TEXT, "beat", StatusCode::NO_CONTENT).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // Max age 2 s, keep-alives every second: both end after 2 s, the quiet one with keep-alives.
    let edge = spawn_edge(&prefix, &["--ds-sse-max-age", "2s", "--ds-long-poll-timeout", "1s"]).await?;
    let opened = Instant::now();
    let (c, busy_path, mut quiet, mut busy) = readers(&edge).await?;
    let (quiet_read, busy_ended, ()) = tokio::join!(
        async {
            let mut controls = 0;
            let read = async {
                while let Some(Ok(frame)) = quiet.frame().await {
                    if let Ok(data) = frame.into_data() {
                        controls += String::from_utf8_lossy(&data).matches("event: control").count();
                    }
                }
            };
            (tokio::time::timeout(Duration::from_secs(5), read).await.is_ok(), controls)
        },
        ends_within(&mut busy, Duration::from_secs(5)),
        keep_appending(c.clone(), busy_path.clone(), Duration::from_secs(3)),
    );
    let lived = opened.elapsed();
    let (quiet_ended, quiet_controls) = quiet_read;
    assert!(quiet_ended && busy_ended, "quiet ended: {quiet_ended}, busy ended: {busy_ended}");
    assert!(lived >= Duration::from_millis(1900), "the readers ended after {lived:?}, before their max age");
    // The first control event at connect, then one keep-alive a second.
    assert!(quiet_controls >= 2, "the quiet reader got {quiet_controls} control events in 2 s");
    edge.stop().await?;

    // Max age 60 s: draining ends both at once, each response with its clean end (not cut off
    // when the edge gives up on open connections after its grace period), and the edge stops
    // within a second of the drain starting.
    let edge = spawn_edge(&prefix, &["--ds-sse-max-age", "60s", "--shutdown-grace", "10s"]).await?;
    let (c, busy_path, mut quiet, mut busy) = readers(&edge).await?;
    let stopping = Instant::now();
    let (stopped, quiet_ended, busy_ended, ()) = tokio::join!(
        async {
            // Some appends flow first, so the busy reader is mid-delivery when the drain starts.
            tokio::time::sleep(Duration::from_millis(500)).await;
            edge.stop().await
        },
        ends_cleanly_within(&mut quiet, Duration::from_secs(5)),
        ends_cleanly_within(&mut busy, Duration::from_secs(5)),
        keep_appending(c, busy_path, Duration::from_millis(400)),
    );
    stopped?;
    let took = stopping.elapsed();
    assert!(quiet_ended && busy_ended, "after the drain: quiet ended: {quiet_ended}, busy ended: {busy_ended}");
    assert!(took < Duration::from_millis(1500), "draining took {took:?}");
    Ok(())
}

/// Reads `body` to its end; whether it ended within `within` with the end of the response (not
/// an error, not a cut connection).
async fn ends_cleanly_within(body: &mut hyper::body::Incoming, within: Duration) -> bool {
    let read = async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
                None => return true,
            }
        }
    };
    tokio::time::timeout(within, read).await.unwrap_or(false)
}

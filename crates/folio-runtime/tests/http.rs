//! Issue 13, finding 7: 800 connections holding partial headers stayed open for 90 s+ on every
//! listener. `folio_runtime::http::serve` is the loop every listener runs; these tests hold it
//! to its limits with real sockets.

use std::time::{Duration, Instant};

use axum::{Router, routing::get};
use folio_runtime::http::{ConnectionLimits, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

const LIMITS: ConnectionLimits = ConnectionLimits {
    header_read_timeout: Duration::from_millis(300),
    idle_timeout: Duration::from_millis(500),
    max_connections: 4,
    write_coalesce: Some(Duration::from_millis(10)),
};

async fn start(limits: ConnectionLimits) -> (std::net::SocketAddr, CancellationToken) {
    let app = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            // Longer than the idle timeout: a long-poll.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "late"
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve("test", listener, app, limits, shutdown.clone()));
    (addr, shutdown)
}

/// Waits until the server closes `stream` (EOF or reset); how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn connections_holding_half_a_request_head_are_closed_after_the_header_timeout() {
    let (addr, _shutdown) = start(LIMITS).await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
        holders.push(stream);
    }
    for stream in &mut holders {
        let took = closed_within(stream, Duration::from_secs(3)).await;
        assert!(took.is_some(), "a connection holding half a head was still open after 3 s");
    }
    // And the slots they held are free again.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_when_idle() {
    let (addr, _shutdown) = start(LIMITS).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await.is_some());
}

#[tokio::test]
async fn a_request_in_flight_longer_than_the_idle_timeout_is_not_cut() {
    let (addr, _shutdown) = start(LIMITS).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200") && response.ends_with("late"), "{response}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_on_arrival_while_admitted_ones_are_served() {
    let (addr, _shutdown) = start(ConnectionLimits { idle_timeout: Duration::from_secs(30), ..LIMITS }).await;
    let mut admitted = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // One complete request each, so the header timeout does not free them.
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        admitted.push(stream);
    }
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut fifth, Duration::from_secs(2)).await;
    assert!(took.is_some_and(|t| t < Duration::from_millis(500)), "the fifth connection was not refused: {took:?}");
    // The admitted ones keep working.
    let stream = &mut admitted[0];
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

/// Many streamed responses on one HTTP/2 connection, in small frames and one large body: every
/// byte arrives, in order, while the connection's writes are gathered and held back
/// (`write_coalesce`) — nothing is left in a buffer without a flush.
#[tokio::test]
async fn http2_streams_receive_every_frame_while_writes_are_gathered() {
    use http_body_util::BodyExt;

    const STREAMS: usize = 40;
    const EVENTS: usize = 30;
    fn event(i: usize) -> String {
        // Over h2's 256-byte chaining threshold, like an SSE event with a row.
        format!("data: {i:04} {}\n\n", "x".repeat(300))
    }
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                let events = futures::stream::unfold(0usize, |i| async move {
                    if i == EVENTS {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(event(i))), i + 1))
                });
                axum::body::Body::from_stream(events)
            }),
        )
        .route("/large", get(|| async { vec![7u8; 300 * 1024] }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(
        "test",
        listener,
        app,
        ConnectionLimits { idle_timeout: Duration::from_secs(30), ..LIMITS },
        shutdown.clone(),
    ));

    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |path: &'static str| {
        let mut send = send.clone();
        async move {
            let req = axum::http::Request::get(format!("http://{addr}{path}"))
                .body(http_body_util::Empty::<axum::body::Bytes>::new())
                .unwrap();
            let res = send.send_request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            res.into_body().collect().await.unwrap().to_bytes()
        }
    };
    let expected: String = (0..EVENTS).map(event).collect();
    let (events, large) = tokio::time::timeout(Duration::from_secs(20), async {
        futures::join!(futures::future::join_all((0..STREAMS).map(|_| get("/events"))), get("/large"))
    })
    .await
    .expect("the responses did not complete");
    for body in events {
        assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
    }
    assert_eq!(large.len(), 300 * 1024);
    assert!(large.iter().all(|b| *b == 7));
    shutdown.cancel();
}

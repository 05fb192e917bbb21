//! Long-poll and SSE, including wake-ups across two edges sharing one JetStream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use crate::helpers::{Agency, TEXT, spawn_edge, test_prefix};

#[tokio::test]
async fn long_poll_wakes_on_an_append_made_through_another_edge() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    // A long timeout so only a wake-up (not the timeout) can answer in time.
    let reader = spawn_edge(&prefix, &["--ds-long-poll-timeout", "20s"]).await?;
    let writer = spawn_edge(&prefix, &[]).await?;
    let agency = Agency::new();
    let (reader_client, writer_client) =
        (reader.client.with_auth(&agency.viewer), writer.client.with_auth(&agency.editor));
    let path = &agency.path("live");
    let tail = writer_client.expect(Method::PUT, path, TEXT, "", StatusCode::CREATED).await.next_offset();

    let client = reader_client.clone();
    let poll_path = format!("{path}?offset={tail}&live=long-poll");
    let started = Instant::now();
    let poll = tokio::spawn(async move { client.send(Method::GET, &poll_path, &[], Bytes::new()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer_client.expect(Method::POST, path, TEXT, "ping", StatusCode::NO_CONTENT).await;
    let res = poll.await??;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.text(), "ping");
    assert!(res.header("stream-cursor").is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit())));
    assert!(started.elapsed() < Duration::from_secs(10), "woken by the append, not the timeout");

    // At the tail with nothing new: 204 after the (short) timeout of the second edge.
    let at_tail = writer_client
        .expect(
            Method::GET,
            &format!("{path}?offset={}&live=long-poll", res.next_offset()),
            &[],
            "",
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(at_tail.header("stream-up-to-date"), Some("true"));

    // Closing ends waiting readers at once with the EOF signal.
    writer_client.expect(Method::POST, path, &[("stream-closed", "true")], "", StatusCode::NO_CONTENT).await;
    let eof = reader_client
        .expect(
            Method::GET,
            &format!("{path}?offset={}&live=long-poll", res.next_offset()),
            &[],
            "",
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(eof.header("stream-closed"), Some("true"));
    reader.stop().await?;
    writer.stop().await?;
    Ok(())
}

#[tokio::test]
async fn sse_sends_catch_up_then_live_events_each_followed_by_control() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge = spawn_edge(&prefix, &[]).await?;
    let agency = Agency::new();
    let c = edge.client.with_auth(&agency.editor);
    let path = &agency.path("sse");
    c.expect(Method::PUT, path, &[("content-type", "application/json")], r#"[{"n":1}]"#, StatusCode::CREATED).await;

    let (status, headers, body) = c.open(&format!("{path}?offset=-1&live=sse")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let mut frames = body.into_data_stream();
    let mut received = String::new();
    read_until(&mut frames, &mut received, |r| r.contains("upToDate")).await?;
    c.expect(Method::POST, path, &[("content-type", "application/json")], r#"{"n":2}"#, StatusCode::NO_CONTENT).await;
    read_until(&mut frames, &mut received, |r| {
        r.contains(r#"{"n":2}"#) && r.ends_with("\n\n") && r.matches("event: control").count() >= 2
    })
    .await?;
    let events: Vec<&str> = received.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events[0].starts_with("event: data\ndata:[{\"n\":1}]"), "{received}");
    assert!(events[1].starts_with("event: control\n") && events[1].contains("\"upToDate\":true"), "{received}");
    assert!(events[2].starts_with("event: data\ndata:[{\"n\":2}]"), "{received}");
    assert!(events[3].starts_with("event: control\n"), "{received}");
    edge.stop().await?;
    Ok(())
}

#[tokio::test]
async fn many_sse_subscribers_each_receive_every_append() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge = spawn_edge(&prefix, &[]).await?;
    let agency = Agency::new();
    let c = edge.client.with_auth(&agency.editor);
    let path = &agency.path("fanout");
    c.expect(Method::PUT, path, TEXT, "", StatusCode::CREATED).await;
    let mut readers = Vec::new();
    for _ in 0..20 {
        readers.push(sse_reader_at_tail(&c, &format!("{path}?offset=now&live=sse")).await?);
    }
    // Readers woken by the same append share one metadata, tail and page read.
    for msg in ["one", "two", "three"] {
        c.expect(Method::POST, path, TEXT, msg, StatusCode::NO_CONTENT).await;
    }
    // A reader woken late gets the appends batched into one data event: compare the data.
    let data = |r: &str| -> String {
        r.split("\n\n")
            .filter(|e| e.starts_with("event: data"))
            .map(|e| e.trim_start_matches("event: data\ndata:"))
            .collect()
    };
    for (frames, received) in &mut readers {
        read_until(frames, received, |r| data(r).len() >= "onetwothree".len()).await?;
        assert_eq!(data(received), "onetwothree", "{received}");
    }
    edge.stop().await?;
    Ok(())
}

#[tokio::test]
async fn sse_readers_of_one_page_share_its_events_unless_their_cursors_differ() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let edge = spawn_edge(&prefix, &[]).await?;
    let agency = Agency::new();
    let c = edge.client.with_auth(&agency.editor);
    let path = &agency.path("cursors");
    c.expect(Method::PUT, path, TEXT, "", StatusCode::CREATED).await;
    // Two readers without a cursor, and one that echoes a cursor ahead of the current interval:
    // its control events must move past its own cursor, whoever encoded the page first.
    let echoed: u64 = 999_999_999_999;
    let mut readers = Vec::new();
    for query in ["", "", &format!("&cursor={echoed}")] {
        readers.push(sse_reader_at_tail(&c, &format!("{path}?offset=now&live=sse{query}")).await?);
    }
    c.expect(Method::POST, path, TEXT, "hello", StatusCode::NO_CONTENT).await;
    // The data event and the control event after it, as one reader received them.
    let page_events = |r: &str| -> Option<String> {
        let events: Vec<&str> = r.split("\n\n").collect();
        let at = events.iter().position(|e| e.starts_with("event: data") && e.contains("hello"))?;
        let control = events.get(at + 1).filter(|e| e.starts_with("event: control") && r.ends_with("\n\n"))?;
        Some(format!("{}\n\n{control}\n\n", events[at]))
    };
    let mut pages = Vec::new();
    for (frames, received) in &mut readers {
        read_until(frames, received, |r| page_events(r).is_some()).await?;
        pages.push(page_events(received).expect("read until present"));
    }
    assert_eq!(pages[0], pages[1], "readers that connected alike send the same events");
    let cursor = |page: &str| -> u64 {
        let at = page.find("\"streamCursor\":\"").expect("a cursor") + "\"streamCursor\":\"".len();
        page[at..].split('"').next().and_then(|c| c.parse().ok()).expect("a numeric cursor")
    };
    assert!(cursor(&pages[0]) < echoed, "{}", pages[0]);
    assert!(cursor(&pages[2]) > echoed, "the echoing reader got another's cursor: {}", pages[2]);
    edge.stop().await?;
    Ok(())
}

/// An SSE response opened at `url` and read up to its first up-to-date control event: its frames
/// and what was received so far.
async fn sse_reader_at_tail(
    c: &crate::helpers::TestClient,
    url: &str,
) -> anyhow::Result<(http_body_util::BodyDataStream<hyper::body::Incoming>, String)> {
    let (status, _, body) = c.open(url).await?;
    assert_eq!(status, StatusCode::OK);
    let mut frames = body.into_data_stream();
    let mut received = String::new();
    read_until(&mut frames, &mut received, |r| r.contains("upToDate")).await?;
    Ok((frames, received))
}

async fn read_until(
    frames: &mut (impl futures::Stream<Item = Result<Bytes, hyper::Error>> + Unpin),
    received: &mut String,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    // One deadline for the whole wait: keep-alive control events must not extend it.
    let read = async {
        while !done(received) {
            let chunk = frames.next().await.expect("stream open")?;
            received.push_str(std::str::from_utf8(&chunk)?);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| anyhow::anyhow!("timed out; received so far: {received}"))?
}

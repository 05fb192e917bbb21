//! Proposal activity: wal-ingest's change events for one proposal, read as a durable stream.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use folio_proto::events::v1::{ChangeEvent, ColumnValue, Operation, column_value};
use http::{Method, StatusCode};
use prost::Message;

use crate::helpers::{changes_stream, spawn_edge, test_prefix};

const SECRET: &str = "activity-test-secret-activity-test-secret";

fn bearer(agency: &str) -> String {
    crate::helpers::bearer(SECRET, agency)
}

fn text(name: &str, v: &str) -> ColumnValue {
    ColumnValue { name: name.into(), value: Some(column_value::Value::Text(v.into())) }
}

pub(crate) fn change(lsn: u64, agency: &str, proposal: &str, op: Operation, title: &str) -> Bytes {
    ChangeEvent {
        commit_lsn: lsn,
        commit_end_lsn: lsn + 8,
        xid: 700 + lsn as u32,
        position: 0,
        last_in_transaction: true,
        commit_time: Some(prost_types::Timestamp { seconds: 1_790_000_000, nanos: 0 }),
        schema: "public".into(),
        table: "proposals".into(),
        operation: op as i32,
        tenant: agency.into(),
        primary_key: vec![text("id", proposal)],
        new_row: vec![text("id", proposal), text("agency_id", agency), text("title", title)],
        old_row: vec![],
        column_types: vec![],
    }
    .encode_to_vec()
    .into()
}

#[tokio::test]
async fn reads_one_proposals_change_events_with_changes_stream_offsets() -> anyhow::Result<()> {
    let (prefix, _cleanup) = test_prefix();
    let js = jetstream::new(folio_testkit::nats().await?);
    let (_, subjects) = changes_stream(&js, &prefix).await?;
    let agency = uuid::Uuid::new_v4().to_string();
    let mine = uuid::Uuid::new_v4().to_string();
    let other = uuid::Uuid::new_v4().to_string();
    let subject = subjects.row("public", "proposals", Some(&agency));
    let publish = async |payload: Bytes| -> anyhow::Result<u64> {
        Ok(js.publish(subject.clone(), payload).await?.await?.sequence)
    };
    let s1 = publish(change(0x100, &agency, &mine, Operation::Insert, "Draft")).await?;
    publish(change(0x200, &agency, &other, Operation::Insert, "Someone else's")).await?;
    let s3 = publish(change(0x300, &agency, &mine, Operation::Update, "Sent")).await?;

    let changes_stream = format!("{prefix}_CHANGES");
    let edge =
        spawn_edge(&prefix, &["--changes-stream", &changes_stream, "--subject-root", &prefix, "--jwt-secret", SECRET])
            .await?;
    let c = edge.client.clone();
    let path = format!("/v1/stream/proposals/{mine}/activity");
    let token = bearer(&agency);
    let auth = [("authorization", token.as_str())];

    // No token, no data; another agency's token reads nothing of this agency's proposal.
    c.expect(Method::GET, &format!("{path}?offset=-1"), &[], "", StatusCode::UNAUTHORIZED).await;
    let stranger = bearer(&uuid::Uuid::new_v4().to_string());
    let theirs =
        c.expect(Method::GET, &format!("{path}?offset=-1"), &[("authorization", &stranger)], "", StatusCode::OK).await;
    assert_eq!(theirs.json().as_array().map(Vec::len), Some(0), "another agency sees no events");

    let all = c.expect(Method::GET, &format!("{path}?offset=-1"), &auth, "", StatusCode::OK).await;
    assert_eq!(all.header("content-type"), Some("application/json"));
    assert_eq!(all.header("stream-up-to-date"), Some("true"));
    let events = all.json();
    let events = events.as_array().expect("array");
    assert_eq!(events.len(), 2, "only this proposal's events: {events:?}");
    assert_eq!(events[0]["operation"], "insert");
    assert_eq!(events[0]["commit_lsn"], "0/100");
    assert_eq!(events[1]["new_row"]["title"], "Sent");
    assert_eq!(events[0]["offset"], format!("0000000000000000_{s1:016}"));
    assert_eq!(all.next_offset(), format!("0000000000000000_{s3:016}"));

    // Resuming from the first event's offset returns only what followed it.
    let rest =
        c.expect(Method::GET, &format!("{path}?offset=0000000000000000_{s1:016}"), &auth, "", StatusCode::OK).await;
    assert_eq!(rest.json().as_array().map(Vec::len), Some(1));

    // A long-poll at the tail is answered by the next event for this proposal only.
    let tail = all.next_offset();
    let client = c.clone();
    let poll_path = format!("{path}?offset={tail}&live=long-poll");
    let poll_token = token.clone();
    let poll = tokio::spawn(async move {
        client.send(Method::GET, &poll_path, &[("authorization", poll_token.as_str())], Bytes::new()).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    publish(change(0x400, &agency, &other, Operation::Update, "noise")).await?;
    let s5 = publish(change(0x500, &agency, &mine, Operation::Update, "Accepted")).await?;
    let live = poll.await??;
    assert_eq!(live.status, StatusCode::OK, "{}", live.text());
    assert_eq!(live.json()[0]["new_row"]["title"], "Accepted");
    assert_eq!(live.next_offset(), format!("0000000000000000_{s5:016}"));

    // Read-only: writes are refused.
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let res = c
            .expect(
                method,
                &path,
                &[("content-type", "application/json"), ("authorization", &token)],
                "{}",
                StatusCode::METHOD_NOT_ALLOWED,
            )
            .await;
        assert_eq!(res.header("allow"), Some("GET, HEAD, OPTIONS"));
    }
    c.expect(Method::GET, "/v1/stream/proposals/not-a-uuid/activity", &[], "", StatusCode::NOT_FOUND).await;
    edge.stop().await?;
    Ok(())
}

/// The unmodified npm `@durable-streams/client` follows a proposal live. Needs Node and the
/// client package (`scripts/ds-conformance.sh` installs it); `scripts/ds-conformance-ci.sh` runs
/// this test with DS_CLIENT_MODULE set.
#[tokio::test]
#[ignore = "needs node and @durable-streams/client (DS_CLIENT_MODULE); run by scripts/ds-conformance-ci.sh"]
async fn npm_client_follows_a_proposal_live() -> anyhow::Result<()> {
    let module = std::env::var("DS_CLIENT_MODULE")
        .map_err(|_| anyhow::anyhow!("set DS_CLIENT_MODULE to @durable-streams/client's dist/index.js"))?;
    let (prefix, _cleanup) = test_prefix();
    let js = jetstream::new(folio_testkit::nats().await?);
    let (changes_stream, subjects) = changes_stream(&js, &prefix).await?;
    let agency = uuid::Uuid::new_v4().to_string();
    let proposal = uuid::Uuid::new_v4().to_string();
    let subject = subjects.row("public", "proposals", Some(&agency));
    js.publish(subject.clone(), change(0x10, &agency, &proposal, Operation::Insert, "Draft")).await?.await?;

    let edge =
        spawn_edge(&prefix, &["--changes-stream", &changes_stream, "--subject-root", &prefix, "--jwt-secret", SECRET])
            .await?;
    let ready = std::env::temp_dir().join(format!("{prefix}.ready"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/activity_client.mjs");
    let child = tokio::process::Command::new("node")
        .arg(script)
        .env("DS_CLIENT_MODULE", module)
        .env("ACTIVITY_URL", format!("{}/v1/stream/proposals/{proposal}/activity", edge.client.base()))
        .env("EXPECT_TITLES", "Draft,Sent")
        .env("AUTHORIZATION", bearer(&agency))
        .env("READY_FILE", &ready)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    folio_testkit::eventually("the client to catch up", || async { ready.exists().then_some(()) }).await;
    js.publish(subject, change(0x20, &agency, &proposal, Operation::Update, "Sent")).await?.await?;
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await??;
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    assert_eq!(events[1]["operation"], "update");
    let _ = std::fs::remove_file(&ready);
    edge.stop().await?;
    Ok(())
}

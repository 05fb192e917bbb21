//! The Yjs route over real NATS JetStream, each test on its own JetStream prefix, requests
//! served in process by the router (what shape-edge mounts). Two `Edge`s on one prefix are two
//! edges of one cluster; dropping one and starting another is a restart.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode},
};
use clap::Parser;
use folio_durable_streams::Streams;
use folio_yjs::{Outcome, Yjs, path::DocAddress};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use yrs::{
    Doc, ReadTxn, StateVector, Text, Transact, Update,
    encoding::{read::Cursor, read::Read, write::Write},
    updates::decoder::Decode,
};

mod common;
use common::{Args, text};

struct Edge {
    yjs: Arc<Yjs>,
    router: Router,
    shutdown: CancellationToken,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn edge(prefix: &str, threshold: u64) -> Edge {
    edge_with(prefix, &["--ds-open", "--yjs-compaction-threshold", &threshold.to_string()]).await
}

async fn edge_with(prefix: &str, flags: &[&str]) -> Edge {
    let url = folio_testkit::nats_url();
    let mut argv = vec!["edge", "--ds-prefix", prefix, "--ds-quotas", "off", "--nats-url", &url];
    argv.extend_from_slice(flags);
    let args = Args::parse_from(argv);
    let (options, reconnects) = folio_live::Reconnects::options("folio-yjs-test");
    let nats = options.connect(&args.bus.nats_url).await.expect("NATS (FOLIO_NATS_URL) is reachable");
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let streams =
        Streams::start(nats, args.streams, None, &args.bus, reconnects, shutdown.clone(), tasks.clone()).await.unwrap();
    let yjs = Yjs::start(streams, args.yjs, prefix, shutdown.clone(), tasks).await.unwrap();
    Edge { router: folio_yjs::router(yjs.clone()), yjs, shutdown }
}

fn prefix() -> String {
    format!("yjs_{}", folio_testkit::unique_suffix())
}

/// Deletes what a test's prefix created on the shared NATS server.
async fn cleanup(prefix: &str) {
    let js = async_nats::jetstream::new(folio_testkit::nats().await.unwrap());
    for stream in [format!("{prefix}_streams"), format!("KV_{prefix}_meta"), format!("OBJ_{prefix}_yjs_snapshots")] {
        let _ = js.delete_stream(stream).await;
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
    }
}

impl Edge {
    async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self.router.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec();
        Answer { status, headers, body }
    }

    async fn put_doc(&self, doc: &str) -> Answer {
        self.send(Method::PUT, &format!("/v1/yjs/test/docs/{doc}"), &[], Vec::new()).await
    }

    async fn post(&self, doc: &str, body: Vec<u8>, producer: Option<(&str, u64, u64)>) -> Answer {
        let (epoch, seq) = producer.map(|(_, e, s)| (e.to_string(), s.to_string())).unwrap_or_default();
        let mut headers = vec![("content-type", "application/octet-stream")];
        if let Some((id, _, _)) = producer {
            headers.extend([("producer-id", id), ("producer-epoch", epoch.as_str()), ("producer-seq", seq.as_str())]);
        }
        self.send(Method::POST, &format!("/v1/yjs/test/docs/{doc}"), &headers, body).await
    }

    /// What the reference provider does on connect: discovery, the snapshot if there is one,
    /// then the updates from the offset it gives (`Stream-Next-Offset`, or -1).
    async fn load(&self, doc: &str) -> (Doc, Option<String>) {
        let url = format!("/v1/yjs/test/docs/{doc}");
        let found = self.send(Method::GET, &format!("{url}?offset=snapshot"), &[], Vec::new()).await;
        assert_eq!(found.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(found.header("cache-control"), "private, max-age=5");
        let location = found.header("location").to_owned();
        let offset = location.split("offset=").nth(1).unwrap().split('&').next().unwrap().to_owned();
        let ydoc = Doc::new();
        let (start, label) = match offset.strip_suffix("_snapshot") {
            Some(label) => {
                let snap = self.send(Method::GET, &location, &[], Vec::new()).await;
                assert_eq!(snap.status, StatusCode::OK, "snapshot {label}");
                ydoc.transact_mut().apply_update(Update::decode_v1(&snap.body).unwrap()).unwrap();
                (snap.header("stream-next-offset").to_owned(), Some(label.to_owned()))
            }
            None => (offset, None),
        };
        let mut offset = start;
        loop {
            let page = self.send(Method::GET, &format!("{url}?offset={offset}"), &[], Vec::new()).await;
            assert_eq!(page.status, StatusCode::OK);
            apply_frames(&ydoc, &page.body);
            offset = page.header("stream-next-offset").to_owned();
            if page.headers.contains_key("stream-up-to-date") {
                break;
            }
        }
        (ydoc, label)
    }
}

fn apply_frames(doc: &Doc, body: &[u8]) {
    let mut cursor = Cursor::new(body);
    let mut txn = doc.transact_mut();
    while cursor.has_content() {
        let frame = cursor.read_buf().unwrap();
        txn.apply_update(Update::decode_v1(frame).unwrap()).unwrap();
    }
}

/// A writer's edits, each lib0-framed as the provider POSTs it.
struct Writer {
    doc: Doc,
}

impl Writer {
    fn new(client: u64) -> Self {
        Writer { doc: Doc::with_client_id(client) }
    }

    fn type_text(&self, s: &str) -> Vec<u8> {
        let text = self.doc.get_or_insert_text("content");
        let before = self.doc.transact().state_vector();
        {
            let mut txn = self.doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, s);
        }
        let update = self.doc.transact().encode_state_as_update_v1(&before);
        let mut framed = Vec::new();
        framed.write_buf(&update);
        framed
    }

    fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }
}

/// `incrementOffset` of the reference client: the label's second field plus one, same width.
fn reference_increment(label: &str) -> String {
    let (epoch, seq) = label.split_once('_').unwrap();
    format!("{epoch}_{:0width$}", seq.parse::<u64>().unwrap() + 1, width = seq.len())
}

#[tokio::test]
async fn compaction_leaves_the_document_state_identical() {
    let prefix = prefix();
    let edge = edge(&prefix, 1000).await;
    assert_eq!(edge.put_doc("report/body").await.status, StatusCode::CREATED);
    let writer = Writer::new(11);
    for i in 0..40 {
        let res = edge.post("report/body", writer.type_text(&format!("sentence {i} of the proposal. ")), None).await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    // The appends passed the threshold: a compaction runs in the background.
    let label = folio_testkit::eventually("a snapshot", || async { edge.load("report/body").await.1 }).await;
    let (loaded, _) = edge.load("report/body").await;
    assert_eq!(loaded.transact().state_vector(), writer.state_vector());
    assert_eq!(text(&loaded), text(&writer.doc));
    // Updates are never deleted: the whole log still gives the same state.
    let replayed = Doc::new();
    let all = edge.send(Method::GET, "/v1/yjs/test/docs/report/body?offset=-1", &[], Vec::new()).await;
    apply_frames(&replayed, &all.body);
    assert_eq!(replayed.transact().state_vector(), writer.state_vector());
    // A second cycle replaces the snapshot and deletes the first one.
    for i in 0..40 {
        edge.post("report/body", writer.type_text(&format!("more {i}. ")), None).await;
    }
    let second = folio_testkit::eventually("a second snapshot", || async {
        edge.load("report/body").await.1.filter(|l| *l != label)
    })
    .await;
    let old = edge
        .send(Method::GET, &format!("/v1/yjs/test/docs/report/body?offset={label}_snapshot"), &[], Vec::new())
        .await;
    assert_eq!(old.status, StatusCode::NOT_FOUND);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&old.body).unwrap()["error"]["code"], "SNAPSHOT_NOT_FOUND");
    let (loaded, now) = edge.load("report/body").await;
    assert!(now.is_some_and(|l| l >= second));
    assert_eq!(loaded.transact().state_vector(), writer.state_vector());
    assert_eq!(text(&loaded), text(&writer.doc));
    cleanup(&prefix).await;
}

#[tokio::test]
async fn an_update_right_after_the_snapshot_is_not_skipped() {
    // §4.3: the reference client resumes at label + 1. The update stored next after the
    // compacted tail T has sequence T + 1 and must be read by a client loading the snapshot.
    let prefix = prefix();
    // Two edges of one cluster: one never compacts on its own, one compacts from 1 byte on.
    let edge = edge(&prefix, u64::MAX / 2).await;
    let compactor = self::edge(&prefix, 1).await;
    let doc = DocAddress::parse("/v1/yjs/test/docs/resume").unwrap();
    edge.put_doc("resume").await;
    let writer = Writer::new(12);
    for word in ["alpha ", "beta ", "gamma "] {
        edge.post("resume", writer.type_text(word), None).await;
    }
    let head = edge.send(Method::HEAD, "/v1/yjs/test/docs/resume", &[], Vec::new()).await;
    let tail = head.header("stream-next-offset").to_owned();
    assert!(matches!(edge.yjs.compact_document(&doc).await.unwrap(), Outcome::BelowThreshold { .. }));
    let Outcome::Compacted { label, next, .. } = compactor.yjs.compact_document(&doc).await.unwrap() else {
        panic!("expected a compaction")
    };
    assert_eq!(folio_durable_streams::offset::Offset::at_seq(next).to_string(), tail);
    let after = edge.post("resume", writer.type_text("delta"), None).await;
    // The update after the snapshot took the very next sequence, T + 1.
    assert_eq!(after.header("stream-next-offset"), reference_increment(&tail));
    let url = format!("/v1/yjs/test/docs/resume?offset={label}_snapshot");
    let snap = edge.send(Method::GET, &url, &[], Vec::new()).await;
    assert_eq!(snap.header("stream-next-offset"), reference_increment(&label), "the reference client's arithmetic");
    assert_eq!(snap.header("stream-next-offset"), tail);
    let (loaded, _) = edge.load("resume").await;
    assert_eq!(text(&loaded), "alpha beta gamma delta");
    assert_eq!(loaded.transact().state_vector(), writer.state_vector());
    cleanup(&prefix).await;
}

#[tokio::test]
async fn one_edge_compacts_a_document_at_a_time() {
    let prefix = prefix();
    // A takes the writes (its threshold is never reached); B and C compact when asked.
    let a = edge(&prefix, u64::MAX / 2).await;
    let (b, c) = (edge(&prefix, 1).await, edge(&prefix, 1).await);
    let doc = DocAddress::parse("/v1/yjs/test/docs/shared").unwrap();
    a.put_doc("shared").await;
    let writer = Writer::new(13);
    a.post("shared", writer.type_text("one "), None).await;
    // While edge A holds the lease, edge B does not compact.
    let lease = a.yjs.try_lease(&doc).await.unwrap().expect("a free lease");
    assert!(a.yjs.try_lease(&doc).await.unwrap().is_none(), "a held lease is not handed out twice");
    assert_eq!(b.yjs.compact_document(&doc).await.unwrap(), Outcome::Busy);
    assert_eq!(b.load("shared").await.1, None, "no snapshot was written");
    a.yjs.release(lease).await.unwrap();
    assert!(matches!(b.yjs.compact_document(&doc).await.unwrap(), Outcome::Compacted { .. }));
    // Many at once across both edges: exactly one writes the next snapshot.
    a.post("shared", writer.type_text("two"), None).await;
    let attempts = (0..6).map(|i| {
        let yjs = if i % 2 == 0 { b.yjs.clone() } else { c.yjs.clone() };
        let doc = doc.clone();
        async move { yjs.compact_document(&doc).await.unwrap() }
    });
    let outcomes = futures_join_all(attempts).await;
    let compacted = outcomes.iter().filter(|o| matches!(o, Outcome::Compacted { .. })).count();
    assert_eq!(compacted, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Compacted { .. } | Outcome::Busy | Outcome::NothingNew)));
    let (loaded, label) = a.load("shared").await;
    assert!(label.is_some());
    assert_eq!(text(&loaded), "one two");
    cleanup(&prefix).await;
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_restarted_edge_finds_the_snapshot() {
    let prefix = prefix();
    let doc = DocAddress::parse("/v1/yjs/test/docs/restart/me").unwrap();
    let writer = Writer::new(14);
    // Writes go through an edge whose threshold is never reached; its peer compacts on request.
    let label = {
        let (first, compactor) = (edge(&prefix, u64::MAX / 2).await, edge(&prefix, 1).await);
        first.put_doc("restart/me").await;
        first.post("restart/me", writer.type_text("before the restart"), None).await;
        let Outcome::Compacted { label, .. } = compactor.yjs.compact_document(&doc).await.unwrap() else {
            panic!("expected a compaction")
        };
        label
    };
    let (second, compactor) = (edge(&prefix, u64::MAX / 2).await, edge(&prefix, 1).await);
    let (loaded, found) = second.load("restart/me").await;
    assert_eq!(found.as_deref(), Some(label.as_str()));
    assert_eq!(text(&loaded), "before the restart");
    // It compacts on from the stored pointer, and deletes the old snapshot.
    second.post("restart/me", writer.type_text(", and after"), None).await;
    let Outcome::Compacted { label: newer, .. } = compactor.yjs.compact_document(&doc).await.unwrap() else {
        panic!("expected a compaction")
    };
    assert_ne!(newer, label);
    let old = second
        .send(Method::GET, &format!("/v1/yjs/test/docs/restart/me?offset={label}_snapshot"), &[], Vec::new())
        .await;
    assert_eq!(old.status, StatusCode::NOT_FOUND);
    assert_eq!(text(&second.load("restart/me").await.0), "before the restart, and after");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn a_reconnect_reusing_producer_ids_keeps_its_edits() {
    // §3.2: the provider starts a new producer (same id, epoch 0, seq 0) on every connect().
    let prefix = prefix();
    let edge = edge(&prefix, u64::MAX / 2).await;
    edge.put_doc("reconnect").await;
    let writer = Writer::new(15);
    let first = edge.post("reconnect", writer.type_text("A"), Some(("reconnect-15", 0, 0))).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("producer-seq"), "0");
    // disconnect(); connect(): the same producer tuple again, with a new edit.
    let second = edge.post("reconnect", writer.type_text("B"), Some(("reconnect-15", 0, 0))).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("producer-epoch"), "0");
    let (fresh, _) = edge.load("reconnect").await;
    assert_eq!(text(&fresh), "AB");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn deleting_a_document_removes_its_snapshot_and_awareness_streams() {
    let prefix = prefix();
    let (edge, compactor) = (edge(&prefix, u64::MAX / 2).await, self::edge(&prefix, 1).await);
    let doc = DocAddress::parse("/v1/yjs/test/docs/gone").unwrap();
    edge.put_doc("gone").await;
    let url = "/v1/yjs/test/docs/gone";
    // Created by POST (auto-create), not only by PUT: the cascade must know it too.
    let cursors = edge.send(Method::POST, &format!("{url}?awareness=cursors"), &[], vec![1, 2, 3]).await;
    assert_eq!(cursors.status, StatusCode::NO_CONTENT);
    let writer = Writer::new(16);
    edge.post("gone", writer.type_text("text"), None).await;
    let Outcome::Compacted { label, .. } = compactor.yjs.compact_document(&doc).await.unwrap() else {
        panic!("expected a compaction")
    };
    assert_eq!(edge.send(Method::DELETE, url, &[], Vec::new()).await.status, StatusCode::NO_CONTENT);
    for (method, uri) in [
        (Method::HEAD, format!("{url}?awareness=cursors")),
        (Method::HEAD, format!("{url}?awareness=default")),
        (Method::GET, format!("{url}?offset={label}_snapshot")),
        (Method::GET, format!("{url}?offset=snapshot")),
        (Method::POST, format!("{url}?awareness=cursors")),
        (Method::DELETE, url.to_owned()),
    ] {
        assert_eq!(edge.send(method.clone(), &uri, &[], vec![1]).await.status, StatusCode::NOT_FOUND, "{method} {uri}");
    }
    // A new document at the path starts empty, never with the old snapshot.
    assert_eq!(edge.put_doc("gone").await.status, StatusCode::CREATED);
    let (fresh, label) = edge.load("gone").await;
    assert_eq!((text(&fresh).as_str(), label), ("", None));
    cleanup(&prefix).await;
}

#[tokio::test]
async fn an_awareness_stream_keeps_only_its_recent_messages() {
    let prefix = prefix();
    let edge = edge(&prefix, u64::MAX / 2).await;
    edge.put_doc("busy").await;
    let url = "/v1/yjs/test/docs/busy?awareness=default";
    let read_all = || async {
        let all = edge.send(Method::GET, &format!("{url}&offset=-1"), &[], Vec::new()).await;
        assert_eq!(all.status, StatusCode::OK);
        all.body.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect::<Vec<u32>>()
    };
    // Heartbeats of a document open for a long while: 300 presence messages.
    for i in 0..300u32 {
        let posted = edge.send(Method::POST, url, &[], i.to_be_bytes().to_vec()).await;
        assert_eq!(posted.status, StatusCode::NO_CONTENT);
    }
    // Trimmed in the background to the last 64 at every 64th append: at most 64 + 63 are left,
    // the newest always, in order.
    let kept = folio_testkit::eventually("the awareness stream trimmed", || async {
        Some(read_all().await).filter(|kept| kept.len() <= 127)
    })
    .await;
    assert_eq!(kept.last(), Some(&299));
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
    // A reader from `now` (as the provider reads presence) still receives what comes next.
    let now = edge.send(Method::GET, &format!("{url}&offset=now"), &[], Vec::new()).await;
    let tail = now.header("stream-next-offset").to_owned();
    assert_eq!(edge.send(Method::POST, url, &[], 300u32.to_be_bytes().to_vec()).await.status, StatusCode::NO_CONTENT);
    let next = edge.send(Method::GET, &format!("{url}&offset={tail}"), &[], Vec::new()).await;
    assert_eq!(next.body, 300u32.to_be_bytes());
    cleanup(&prefix).await;
}

#[tokio::test]
async fn the_protocol_errors_are_json_and_checked_before_lookups() {
    let prefix = prefix();
    let edge = edge(&prefix, 1).await;
    let patch = edge.send(Method::PATCH, "/v1/yjs/test/docs/never-created", &[], Vec::new()).await;
    assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = serde_json::from_slice(&patch.body).unwrap();
    assert_eq!(body, serde_json::json!({"error": {"code": "INVALID_REQUEST", "message": "Method not allowed"}}));
    for uri in ["/v1/yjs/test/docs/foo%2F..%2Fbar?offset=snapshot", "/v1/yjs/test/docs/a?awareness=..%2F.updates"] {
        assert_eq!(edge.send(Method::GET, uri, &[], Vec::new()).await.status, StatusCode::BAD_REQUEST, "{uri}");
    }
    let missing = edge.post("never-created", vec![1, 2, 3], None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    edge.put_doc("framed").await;
    assert_eq!(edge.post("framed", vec![1, 2, 3], None).await.status, StatusCode::BAD_REQUEST, "not whole frames");
    cleanup(&prefix).await;
}

const SECRET: &str = "yjs-access-test-secret-yjs-access-test";

fn bearer(agency: folio_domain::AgencyId, role: folio_auth::Role) -> String {
    let caller = folio_auth::Caller { user_id: folio_domain::UserId::new(), agency_id: agency, role };
    let token = folio_auth::Authenticator::new(SECRET.as_bytes()).issue(&caller, std::time::Duration::from_secs(600));
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_closed_edge_serves_an_agencys_documents_to_its_members_only() {
    use folio_auth::Role;
    let prefix = prefix();
    let edge = edge_with(&prefix, &["--jwt-secret", SECRET]).await;
    let (own, other) = (folio_domain::AgencyId::new(), folio_domain::AgencyId::new());
    let doc = format!("/v1/yjs/{own}/docs/proposal-1/body");
    let as_ =
        |token: &str| vec![("authorization", token.to_owned()), ("content-type", "application/octet-stream".into())];
    let send = |method: Method, uri: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let edge = &edge;
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            edge.send(method, &uri, &headers, body).await.status
        }
    };
    let (editor, viewer, admin) = (bearer(own, Role::Editor), bearer(own, Role::Viewer), bearer(own, Role::Admin));
    let stranger = bearer(other, Role::Admin);
    let writer = Writer::new(17);
    // Refused before any lookup: the answer does not say whether the document exists.
    assert_eq!(
        send(Method::GET, format!("{doc}?offset=snapshot"), as_(&stranger), vec![]).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(send(Method::PUT, doc.clone(), vec![], vec![]).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Method::PUT, doc.clone(), as_(&viewer), vec![]).await, StatusCode::FORBIDDEN);
    assert_eq!(send(Method::PUT, doc.clone(), as_(&editor), vec![]).await, StatusCode::CREATED);
    assert_eq!(send(Method::POST, doc.clone(), as_(&editor), writer.type_text("hello")).await, StatusCode::NO_CONTENT);
    assert_eq!(send(Method::POST, doc.clone(), as_(&viewer), writer.type_text("!")).await, StatusCode::FORBIDDEN);
    assert_eq!(send(Method::POST, doc.clone(), as_(&stranger), writer.type_text("!")).await, StatusCode::FORBIDDEN);
    assert_eq!(send(Method::GET, format!("{doc}?offset=-1"), as_(&viewer), vec![]).await, StatusCode::OK);
    assert_eq!(send(Method::GET, format!("{doc}?offset=-1"), as_(&stranger), vec![]).await, StatusCode::FORBIDDEN);
    assert_eq!(
        send(Method::POST, format!("{doc}?awareness=default"), as_(&stranger), vec![1]).await,
        StatusCode::FORBIDDEN
    );
    // A service name that is not an agency id is no agency's namespace: only an open edge serves it.
    let outside = "/v1/yjs/test/docs/proposal-1/body".to_owned();
    assert_eq!(send(Method::PUT, outside, as_(&admin), vec![]).await, StatusCode::FORBIDDEN);
    // Deleting takes an admin, as for streams.
    assert_eq!(send(Method::DELETE, doc.clone(), as_(&editor), vec![]).await, StatusCode::FORBIDDEN);
    assert_eq!(send(Method::DELETE, doc.clone(), as_(&stranger), vec![]).await, StatusCode::FORBIDDEN);
    assert_eq!(send(Method::DELETE, doc.clone(), as_(&admin), vec![]).await, StatusCode::NO_CONTENT);
    cleanup(&prefix).await;
}

//! `spawn_edge()` on port 0 with a unique prefix, agencies with tokens for every role, and a
//! small HTTP client that keeps tests terse.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use shape_edge::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestEdge {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shape_edge::Error>>,
    pub client: TestClient,
}

/// The edges' JWT secret unless a test gives its own `--jwt-secret`.
pub const SECRET: &str = "edge-test-secret-edge-test-secret-0123";

/// A service token for tests that start the edge with `--ds-service-token SERVICE_TOKEN`.
/// Headers of a plain-text Durable Streams request.
pub const TEXT: &[(&str, &str)] = &[("content-type", "text/plain")];
pub const SERVICE_TOKEN: &str = "edge-test-service-token-0123456789abcdef";

pub fn config(prefix: &str, extra: &[&str]) -> Config {
    let nats = folio_testkit::nats_url();
    let defaults = [
        ("--ds-long-poll-timeout", "700ms"),
        ("--ds-max-append-bytes", "65536"),
        ("--ds-max-read-bytes", "4096"),
        ("--jwt-secret", SECRET),
        // Required outside development; tests follow links by their path.
        ("--public-url", "http://edge.test"),
    ];
    // Port 0 for both listeners: tests run side by side.
    let mut args =
        vec!["shape-edge", "--ds-prefix", prefix, "--listen-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"];
    if !extra.contains(&"--nats-url") {
        args.extend(["--nats-url", &nats]);
    }
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    // Each test's limits in buckets of its own, deleted with its prefix.
    let (rates, counts) = (format!("{prefix}_rates"), format!("{prefix}_quotas"));
    for (flag, value) in [("--quota-rate-bucket", &rates), ("--quota-count-bucket", &counts)] {
        if !extra.contains(&flag) {
            args.extend([flag, value.as_str()]);
        }
    }
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("test config parses")
}

/// A unique JetStream prefix for one test, and a guard that deletes what the test created
/// under it when dropped (also when the test fails).
pub fn test_prefix() -> (String, Cleanup) {
    let prefix = format!("edge_it_{}", folio_testkit::unique_suffix());
    (prefix.clone(), Cleanup(prefix))
}

pub struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Drop cannot await and may run inside the test's runtime: clean up from a fresh one.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(cleanup(&prefix));
            }
        })
        .join();
    }
}

pub async fn spawn_edge(prefix: &str, extra: &[&str]) -> anyhow::Result<TestEdge> {
    let bound = shape_edge::bind(config(prefix, extra)).await?;
    let addr = bound.http_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(bound.run(shutdown.clone()));
    let client = TestClient::new(addr);
    // Ready once the streams API answers (JetStream set-up happens before serving).
    folio_testkit::eventually("edge to serve", || async {
        client
            .send(Method::OPTIONS, "/v1/stream/ready", &[], Bytes::new())
            .await
            .ok()
            .filter(|r| r.status == StatusCode::NO_CONTENT)
    })
    .await;
    Ok(TestEdge { shutdown, task, client })
}

impl TestEdge {
    /// Stops the edge (as SIGTERM would) and waits for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await.context("edge did not stop")???;
        Ok(())
    }
}

/// `Bearer <token>` of a viewer of `agency`, as proposals-api issues them.
pub fn bearer(secret: &str, agency: &str) -> String {
    token(secret, folio_domain::AgencyId::parse(agency).expect("uuid"), folio_auth::Role::Viewer)
}

/// `Bearer <token>` of a user of `agency` with `role`, signed with `secret`.
pub fn token(secret: &str, agency: folio_domain::AgencyId, role: folio_auth::Role) -> String {
    let caller = folio_auth::Caller { user_id: folio_domain::UserId::new(), agency_id: agency, role };
    format!("Bearer {}", folio_auth::Authenticator::new(secret.as_bytes()).issue(&caller, Duration::from_secs(600)))
}

/// A fresh agency: its namespace and a token for each role (signed with [`SECRET`]).
pub struct Agency {
    pub id: folio_domain::AgencyId,
    pub viewer: String,
    pub editor: String,
    pub admin: String,
}

impl Agency {
    pub fn new() -> Self {
        use folio_auth::Role;
        let id = folio_domain::AgencyId::new();
        Agency {
            id,
            viewer: token(SECRET, id, Role::Viewer),
            editor: token(SECRET, id, Role::Editor),
            admin: token(SECRET, id, Role::Admin),
        }
    }

    /// `agencies/<id>/<name>`: a stream path in this agency's namespace.
    pub fn name(&self, name: &str) -> String {
        format!("agencies/{}/{name}", self.id)
    }

    /// `/v1/stream/agencies/<id>/<name>`.
    pub fn path(&self, name: &str) -> String {
        format!("/v1/stream/{}", self.name(name))
    }
}

/// A change stream as wal-ingest declares it, with the test's prefix as the subject root: its
/// name and subjects, for tests that publish change events themselves.
pub async fn changes_stream(
    js: &async_nats::jetstream::Context,
    prefix: &str,
) -> anyhow::Result<(String, folio_bus::Subjects)> {
    let (name, subjects) = (format!("{prefix}_CHANGES"), folio_bus::Subjects::new(prefix));
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subjects.changes_filter()],
        allow_direct: true,
        ..Default::default()
    })
    .await?;
    Ok((name, subjects))
}

/// Takes the complete SSE events off the front of `buf` and returns their `data:` payloads
/// parsed as JSON (Electric's shape messages); a partial event stays in `buf`.
pub fn take_sse_messages(buf: &mut Vec<u8>) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let event: Vec<u8> = buf.drain(..end + 2).collect();
        for line in String::from_utf8_lossy(&event).lines() {
            if let Some(json) = line.strip_prefix("data: ") {
                out.push(serde_json::from_str(json)?);
            }
        }
    }
    Ok(out)
}

/// The offset an SSE client resumes from after this message (`<global_last_seen_lsn>_0` after an
/// up-to-date), if it moves it.
pub fn sse_resume_offset(m: &serde_json::Value) -> Option<String> {
    m["headers"]["global_last_seen_lsn"].as_str().map(|lsn| format!("{lsn}_0"))
}

/// Deletes what a test's prefix created on the shared NATS server.
async fn cleanup(prefix: &str) {
    if let Ok(nats) = folio_testkit::nats().await {
        let js = async_nats::jetstream::new(nats);
        let _ = js.delete_stream(format!("{prefix}_streams")).await;
        let _ = js.delete_stream(format!("KV_{prefix}_meta")).await;
        let _ = js.delete_stream(format!("KV_{prefix}_shapes")).await;
        let _ = js.delete_stream(format!("{prefix}_CHANGES")).await;
        let _ = js.delete_stream(format!("KV_{prefix}_rates")).await;
        let _ = js.delete_stream(format!("KV_{prefix}_quotas")).await;
    }
}

#[derive(Clone)]
pub struct TestClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// `Authorization` sent with every request that does not give its own.
    auth: Option<String>,
}

#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn next_offset(&self) -> String {
        self.header("stream-next-offset").expect("stream-next-offset header").to_owned()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

impl TestClient {
    pub fn new(addr: SocketAddr) -> Self {
        TestClient {
            base: format!("http://{addr}"),
            http: Client::builder(TokioExecutor::new()).build_http(),
            auth: None,
        }
    }

    /// This client, sending `authorization` (`Bearer …`) with every request.
    pub fn with_auth(&self, authorization: &str) -> TestClient {
        TestClient { auth: Some(authorization.to_owned()), ..self.clone() }
    }

    /// This client without a default `Authorization`.
    pub fn anonymous(&self) -> TestClient {
        TestClient { auth: None, ..self.clone() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<TestResponse> {
        let mut req = Request::builder().method(method).uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(auth) = &self.auth
            && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req = req.header("authorization", auth);
        }
        let res = self.http.request(req.body(Full::new(body.into()))?).await?;
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await?.to_bytes();
        Ok(TestResponse { status, headers, body })
    }

    /// Sends and asserts the status, so a test reads as the protocol exchange it checks.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
        status: StatusCode,
    ) -> TestResponse {
        let res = self.send(method.clone(), path, headers, body).await.expect("request succeeds");
        assert_eq!(res.status, status, "{method} {path}: {}", res.text());
        res
    }

    /// Opens a streaming GET over HTTP/2 (prior knowledge, a connection of its own), where hyper
    /// polls each response body in a task of its own; the response must be a 200.
    pub async fn open_h2(&self, path: &str) -> anyhow::Result<hyper::body::Incoming> {
        let h2 = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<Bytes>>();
        let mut req = Request::builder().uri(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        }
        let res = h2.request(req.body(Full::new(Bytes::new()))?).await?;
        anyhow::ensure!(res.status() == StatusCode::OK && res.version() == http::Version::HTTP_2, "{res:?}");
        Ok(res.into_body())
    }

    /// Opens a streaming GET and returns the response head plus the body as it arrives.
    pub async fn open(&self, path: &str) -> anyhow::Result<(StatusCode, HeaderMap, hyper::body::Incoming)> {
        let mut req = Request::builder().uri(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        }
        let req = req.body(Full::new(Bytes::new()))?;
        let res = self.http.request(req).await?;
        let (parts, body) = res.into_parts();
        Ok((parts.status, parts.headers, body))
    }
}

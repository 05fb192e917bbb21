//! One trace from click to email, across the WAL (issue 18). proposals-api, wal-ingest, the
//! notifier, pdf-render and shape-edge each run in a process of their own (`traced-service`), exporting
//! OTLP/gRPC to a trace receiver this test serves. A "click" (a `traceparent` the test makes, as
//! a browser's instrumentation would) sends a proposal and requests its PDF; every span of that
//! trace is then found at the receiver, each one's parent the hop before it:
//!
//! ```text
//! click ─► proposals-api grpc (TransitionProposal) ─► wal-ingest transaction ─┬► notifier change_event ─► notifier delivery (email)
//!       │                                                                    └► shape-edge live_change (a live shape client's update)
//!       └► proposals-api grpc (RequestPdf)         ─► wal-ingest transaction ─► pdf-render pdf_job
//! ```

use std::{
    collections::HashSet,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use folio_proto::api::v1 as pb;
use folio_testkit::Sandbox;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

#[tokio::test]
async fn one_trace_runs_from_the_api_call_through_the_wal_to_the_email_and_the_pdf() {
    let receiver = Receiver::start().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let sandbox = Sandbox::new().await.unwrap();
    let pool = sandbox.db.pool.clone();
    let agency = proposals_api::tenancy::create_agency(&pool, "Northwind Studio", "#0b6e4f").await.unwrap();
    let editor =
        proposals_api::tenancy::create_user(&pool, agency, "ed@northwind.test", "Ed Itor", proposals_api::Role::Editor)
            .await
            .unwrap();

    // wal-ingest first: a write made before its slot exists never reaches the stream.
    let wal = Service::start("wal-ingest", &sandbox, &receiver, &smtp).await.unwrap();
    let (api, notifier, pdf, edge) = tokio::try_join!(
        Service::start("proposals-api", &sandbox, &receiver, &smtp),
        Service::start("notifier", &sandbox, &receiver, &smtp),
        Service::start("pdf-render", &sandbox, &receiver, &smtp),
        Service::start("shape-edge", &sandbox, &receiver, &smtp),
    )
    .unwrap();
    let token =
        sandbox.token(&proposals_api::Caller { user_id: editor, agency_id: agency, role: proposals_api::Role::Editor });
    let mut client = folio_e2e::proposals_client(api.addr.parse().unwrap(), &token).unwrap();
    let draft = folio_e2e::draft_proposal(&mut client, &pool, agency, "Traced", 100_000).await.unwrap();

    // A browser tab following the agency's proposals live, in sync before the click.
    let edge_addr: std::net::SocketAddr = edge.addr.parse().unwrap();
    let initial = shape_get(edge_addr, &token, "/v1/shape?table=proposals&offset=-1").await.unwrap();
    assert_eq!(initial.status, 200, "{}", initial.body);
    let handle = initial.header("electric-handle").unwrap().to_owned();
    let offset = initial.header("electric-offset").unwrap().to_owned();

    // The click: one trace id, one span id, sent on both calls as a browser's would be.
    let trace_id = random_hex(16);
    let click = random_hex(8);
    let traceparent = format!("00-{trace_id}-{click}-01");
    client
        .transition_proposal(traced(
            &traceparent,
            pb::TransitionProposalRequest {
                id: draft.id.clone(),
                to: pb::ProposalStatus::Sent as i32,
                expected_version: draft.version,
            },
        ))
        .await
        .unwrap();
    // The tab's next live request brings the send.
    let live = folio_testkit::eventually("the send at the live shape client", || async {
        let path = format!("/v1/shape?table=proposals&live=true&handle={handle}&offset={offset}");
        let answer = shape_get(edge_addr, &token, &path).await?;
        (answer.status == 200 && answer.body.contains("\"sent\"")).then_some(answer)
    })
    .await;
    assert!(live.body.contains(&draft.id), "{}", live.body);
    let requested = client
        .request_pdf(traced(&traceparent, pb::RequestPdfRequest { proposal_id: draft.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    folio_e2e::rendered_pdf(&client, &requested.rendition_id).await.unwrap();
    let delivered: i64 = folio_testkit::eventually("the proposal.sent email to be delivered", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar(
                "SELECT count(*) FROM notification_deliveries \
                  WHERE event_type = 'proposal.sent' AND channel = 'email' AND status = 'delivered'",
            )
            .fetch_one(&pool)
            .await
            .ok()
            .filter(|n: &i64| *n > 0)
        }
    })
    .await;
    assert!(smtp.received() >= delivered as usize, "the SMTP server took the email");

    // Stopping flushes each service's spans.
    for service in [api, notifier, pdf, edge, wal] {
        service.stop().await.unwrap();
    }
    let spans = receiver.spans();
    let trace: Vec<&Received> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let services: HashSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    assert!(
        ["proposals-api", "wal-ingest", "notifier", "pdf-render", "shape-edge"].iter().all(|s| services.contains(s)),
        "one trace across five services, got {services:?} in {trace:#?}"
    );

    let one = |service: &str, name: &str, parent: &str, what: &str| -> &Received {
        let found: Vec<&&Received> =
            trace.iter().filter(|s| s.service == service && s.name == name && s.parent_span_id == parent).collect();
        assert_eq!(found.len(), 1, "{what}: one {service} {name} span, child of {parent}, in {trace:#?}");
        found[0]
    };
    let rpc = |s: &Received| s.attribute("rpc").unwrap_or_default().to_owned();
    let api_calls: Vec<&&Received> =
        trace.iter().filter(|s| s.service == "proposals-api" && s.name == "grpc").collect();
    assert_eq!(api_calls.len(), 2, "the two calls of the click, in {trace:#?}");
    assert!(api_calls.iter().all(|s| s.parent_span_id == click), "each a child of the click");
    let send = api_calls.iter().find(|s| rpc(s).ends_with("/TransitionProposal")).expect("the send");
    let render = api_calls.iter().find(|s| rpc(s).ends_with("/RequestPdf")).expect("the PDF request");

    // Send → its transaction, published by wal-ingest → the notifier's event → the email.
    let sent_txn = one("wal-ingest", "transaction", &send.span_id, "the send's transaction");
    let event = one("notifier", "change_event", &sent_txn.span_id, "the notifier's event");
    let email = trace
        .iter()
        .find(|s| {
            s.service == "notifier"
                && s.name == "delivery"
                && s.parent_span_id == event.span_id
                && s.attribute("event_type") == Some("proposal.sent")
                && s.attribute("channel") == Some("email")
        })
        .unwrap_or_else(|| panic!("the email's attempt, child of the event, in {trace:#?}"));
    assert_eq!(email.attribute("outcome"), Some("delivered"));
    // Send → its transaction → the edge applying it for the live tab.
    one("shape-edge", "live_change", &sent_txn.span_id, "the edge's live update");

    // RequestPdf → its transaction → the render job.
    let pdf_txn = one("wal-ingest", "transaction", &render.span_id, "the PDF request's transaction");
    // A job that arrives before its rows are visible to pdf-render's connection (the WAL can
    // be read a moment before a commit is visible) is delivered again: one span per delivery,
    // each a child of the transaction.
    let jobs: Vec<&&Received> = trace.iter().filter(|s| s.service == "pdf-render" && s.name == "pdf_job").collect();
    assert!(
        !jobs.is_empty() && jobs.iter().all(|s| s.parent_span_id == pdf_txn.span_id),
        "the render job: pdf-render pdf_job spans, children of {}, in {trace:#?}",
        pdf_txn.span_id
    );
    let deliveries: HashSet<&str> = jobs.iter().filter_map(|s| s.attribute("delivered")).collect();
    let messages: HashSet<&str> = jobs.iter().filter_map(|s| s.attribute("stream_seq")).collect();
    assert_eq!(
        (deliveries.len(), messages.len()),
        (jobs.len(), 1),
        "one span per delivery of one job message, in {jobs:#?}"
    );
    assert!(jobs.iter().all(|s| s.attribute("rendition_id") == Some(requested.rendition_id.as_str())));

    // Nothing of the trace is orphaned: every parent is the click or a span of the trace.
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    for span in &trace {
        assert!(
            span.parent_span_id == click || ids.contains(span.parent_span_id.as_str()),
            "{} {} has a parent outside the trace",
            span.service,
            span.name
        );
    }
    sandbox.clean_up().await;
}

/// A call made under the click's span.
fn traced<T>(traceparent: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("traceparent", traceparent.parse().expect("a traceparent is ASCII"));
    request
}

/// One service in its own process (`traced-service`), stopped by closing its standard input.
struct Service {
    name: &'static str,
    child: Child,
    /// Its gRPC or HTTP address, `-` when it serves none.
    addr: String,
}

impl Service {
    async fn start(
        name: &'static str,
        sandbox: &Sandbox,
        receiver: &Receiver,
        smtp: &SmtpSink,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_traced-service"))
            .args([name, "--database-url", &sandbox.db.url, "--nats-url", &sandbox.bus.nats_url])
            .args(["--suffix", &sandbox.suffix, "--otlp-endpoint", &receiver.endpoint, "--smtp-url", &smtp.url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start {name}"))?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("READY ") {
                    return Ok(addr.to_owned());
                }
                println!("{name}: {line}");
            }
            anyhow::bail!("{name} exited before it was ready")
        })
        .await
        .with_context(|| format!("{name} was not ready within 60 s"))??;
        // Its log, shown with the test's output when it fails; a full pipe would stall it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{name}: {line}");
            }
        });
        Ok(Self { name, child, addr })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .with_context(|| format!("{} did not stop within 30 s", self.name))??;
        anyhow::ensure!(status.success(), "{} stopped with {status}", self.name);
        Ok(())
    }
}

/// A span as the receiver got it, ids in lower-case hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// An OTLP/gRPC trace receiver: the collector's `TraceService`, keeping every span it is sent.
#[derive(Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
    endpoint: String,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let receiver = Self { spans: Arc::default(), endpoint };
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        Ok(receiver)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let service = resource
                .iter()
                .find(|a| a.key == "service.name")
                .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .into_iter()
                        .filter_map(|a| Some((a.key, text(a.value?.value.as_ref()?)?)))
                        .collect(),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn text(value: &any_value::Value) -> Option<String> {
    match value {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` random bytes in hex (the random leading digits of v4 UUIDs).
fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        out.push_str(&folio_testkit::unique_suffix());
    }
    out.truncate(bytes * 2);
    out
}

/// An SMTP server that takes every message (and keeps none): where the notifier's emails go.
struct SmtpSink {
    url: String,
    received: Arc<std::sync::atomic::AtomicUsize>,
}

impl SmtpSink {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("smtp://{}", listener.local_addr()?);
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = received.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(smtp_session(socket, count.clone()));
            }
        });
        Ok(Self { url, received })
    }

    fn received(&self) -> usize {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn smtp_session(socket: tokio::net::TcpStream, received: Arc<std::sync::atomic::AtomicUsize>) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
    let mut in_data = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let reply: &[u8] = if in_data {
            if line != "." {
                continue;
            }
            in_data = false;
            received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            b"250 queued\r\n"
        } else {
            match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                Some("DATA") => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                Some("QUIT") => {
                    let _ = write.write_all(b"221 bye\r\n").await;
                    return;
                }
                _ => b"250 ok\r\n",
            }
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}

/// `GET path` with the caller's token, as a browser's shape client sends it.
async fn shape_get(addr: std::net::SocketAddr, token: &str, path: &str) -> Option<folio_testkit::http::HttpAnswer> {
    folio_testkit::http::get_with(addr, path, &[("Authorization", &format!("Bearer {token}"))]).await
}

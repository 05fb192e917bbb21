//! The core journey against the five service images, configured from the production manifests:
//! a proposal is created over gRPC and sent, its PDF renders and downloads, a live shape shows
//! the change and a webhook is delivered. Then wal-ingest and the notifier are killed (SIGKILL),
//! more proposals are sent while they are down, and after they restart every change arrives
//! exactly once.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use axum::{Router, extract::State, http::HeaderMap, routing::post};
use bytes::Bytes;
use folio_container_test::{Manifests, ServiceSpec, build_images};
use folio_proto::api::v1 as pb;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use proposals_api::{Caller, Role};
use serde_json::Value;
use testcontainers::{
    ContainerAsync, GenericImage, ImageExt,
    core::{IntoContainerPort, Mount, WaitFor, logs::LogFrame},
    runners::AsyncRunner,
};

const TAG: &str = "test";
const SERVICES: [&str; 5] = ["proposals-api", "wal-ingest", "shape-edge", "pdf-render", "notifier"];
// What Kubernetes Secrets would hold; never used outside this test.
const JWT_SECRET: &str = "container-test-jwt-secret-0123456789abcdef";
const UNSUBSCRIBE_SECRET: &str = "container-test-unsubscribe-secret-0123456789";
const CLIENT_LINK_SECRET: &str = "container-test-client-link-secret-0123456789";
const APP_PASSWORD: &str = "container-test-app-password";
const WAL_PASSWORD: &str = "container-test-wal-password";

/// Webhook deliveries received, by `webhook-id`, in arrival order.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Value)>>>);

impl Receiver {
    fn sent_events_of(&self, proposal: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, body)| body["type"] == "proposal.sent" && body["data"]["id"] == proposal)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> &'static str {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    receiver.0.lock().unwrap().push((id, body));
    "ok"
}

struct Stack {
    network: String,
    services: BTreeMap<&'static str, ContainerAsync<GenericImage>>,
    infra: Vec<ContainerAsync<GenericImage>>,
    db_port: u16,
}

impl Stack {
    async fn port(&self, service: &str, container_port: u16) -> anyhow::Result<u16> {
        Ok(self.services[service].get_host_port_ipv4(container_port.tcp()).await?)
    }

    /// Host port of `container_port` of the PostgreSQL (0) or a NATS node's (1..=3) container.
    async fn infra_port(&self, index: usize, container_port: u16) -> anyhow::Result<u16> {
        Ok(self.infra[index].get_host_port_ipv4(container_port.tcp()).await?)
    }
}

/// The proposal ids of every `draft -> sent` update on the agency's proposals subject, one per
/// event stored (a repeated publish would appear twice), after checking no message id repeats.
async fn sent_transitions(nats_port: u16, agency: &str) -> anyhow::Result<Vec<String>> {
    use folio_proto::events::v1::{ChangeEvent, column_value::Value as Column};
    use prost::Message as _;
    let nats = async_nats::connect(format!("nats://127.0.0.1:{nats_port}")).await?;
    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream("FOLIO_CHANGES").await.context("the changes stream")?;
    let last = stream.info().await?.state.last_sequence;
    let subject = format!("folio.changes.proposals.{agency}");
    let (mut msg_ids, mut sent) = (std::collections::BTreeSet::new(), Vec::new());
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else { continue };
        if let Some(id) = message.headers.get(folio_bus::headers::MSG_ID) {
            anyhow::ensure!(msg_ids.insert(id.as_str().to_owned()), "message id {} stored twice", id.as_str());
        }
        if message.subject.as_str() != subject {
            continue;
        }
        let event = ChangeEvent::decode(message.payload.as_ref())?;
        let text = |row: &[folio_proto::events::v1::ColumnValue], name: &str| {
            row.iter().find(|c| c.name == name).and_then(|c| match &c.value {
                Some(Column::Text(t)) => Some(t.clone()),
                _ => None,
            })
        };
        if text(&event.old_row, "status").as_deref() == Some("draft")
            && text(&event.new_row, "status").as_deref() == Some("sent")
        {
            sent.push(text(&event.new_row, "id").context("id")?);
        }
    }
    Ok(sent)
}

fn secret(name: &str, key: &str) -> Option<String> {
    {
        let value = match (name, key) {
            ("folio-db-app", "uri") => format!("postgres://folio:{APP_PASSWORD}@folio-db-rw:5432/folio"),
            ("folio-db-wal", "password") => WAL_PASSWORD.to_owned(),
            ("folio-db-wal", "username") => "folio_wal".to_owned(),
            ("folio-secrets", "jwt-secret") => JWT_SECRET.to_owned(),
            ("folio-secrets", "unsubscribe-secret") => UNSUBSCRIBE_SECRET.to_owned(),
            ("folio-secrets", "client-link-secret") => CLIENT_LINK_SECRET.to_owned(),
            // Nothing listens there: mail is not what this journey checks (the notifier tests do).
            ("folio-secrets", "smtp-url") => "smtp://host.docker.internal:25".to_owned(),
            _ => return None,
        };
        Some(value)
    }
}

/// Starts one service container from its Deployment and waits for its startup probe.
async fn start_service(
    spec: &ServiceSpec,
    manifests: &Manifests,
    network: &str,
) -> anyhow::Result<ContainerAsync<GenericImage>> {
    let (name, tag) = spec.image_with_tag(TAG);
    let mut image = GenericImage::new(name, tag).with_wait_for(WaitFor::Nothing);
    for port in spec.ports.values() {
        image = image.with_exposed_port(port.tcp());
    }
    let mut request = image
        .with_container_name(&spec.name)
        .with_network(network)
        .with_user(spec.run_as_user.to_string())
        .with_readonly_rootfs(spec.read_only_root)
        .with_cap_drop("ALL")
        .with_security_opt("no-new-privileges")
        .with_host("host.docker.internal", testcontainers::core::Host::HostGateway)
        .with_log_consumer(move |frame: &LogFrame| {
            if std::env::var_os("FOLIO_CONTAINER_LOGS").is_some() {
                eprint!("{}", String::from_utf8_lossy(frame.bytes()));
            }
        });
    for dir in &spec.scratch_dirs {
        request = request.with_mount(Mount::tmpfs_mount(dir.clone()));
    }
    for (var, value) in spec.environment(manifests, secret)? {
        request = request.with_env_var(var, value);
    }
    if spec.name == "notifier" {
        // The one setting that is not production's: the webhook receiver is this test, on the
        // engine's bridge (a private address the SSRF policy refuses by default).
        request = request.with_env_var("FOLIO_WEBHOOK_ALLOWED_SUBNETS", "172.16.0.0/12,192.168.0.0/16,10.0.0.0/8");
    }
    if !spec.command.is_empty() {
        bail!("{}: a command override would bypass the image's entrypoint", spec.name);
    }
    if !spec.args.is_empty() {
        request = request.with_cmd(spec.args.clone());
    }
    let container = request.start().await.with_context(|| format!("start {}", spec.name))?;
    wait_for_probe(&container, spec).await?;
    Ok(container)
}

async fn http_get(url: &str, token: Option<&str>) -> anyhow::Result<(http::StatusCode, HeaderMap, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = http::Request::get(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = client.request(req.body(Empty::new())?).await?;
    let (parts, body) = res.into_parts();
    Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
}

async fn wait_for_probe(container: &ContainerAsync<GenericImage>, spec: &ServiceSpec) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(port) = container.get_host_port_ipv4(spec.startup.port.tcp()).await
            && let Ok((status, _, _)) = http_get(&format!("http://127.0.0.1:{port}{}", spec.startup.path), None).await
            && status.is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline || !container.is_running().await.unwrap_or(false) {
            let logs = container.stdout_to_vec().await.unwrap_or_default();
            let errs = container.stderr_to_vec().await.unwrap_or_default();
            bail!(
                "{} did not pass its startup probe {}:\n{}{}",
                spec.name,
                spec.startup.path,
                String::from_utf8_lossy(&logs),
                String::from_utf8_lossy(&errs)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn start_stack(manifests: &Manifests) -> anyhow::Result<Stack> {
    let network = format!("folio-ct-{}", std::process::id());
    // Names are the Kubernetes Service names the manifests' URLs use; leftovers of an earlier
    // run that was killed would hold them.
    let mut names = vec!["folio-db-rw", "nats", "nats-1", "nats-2"];
    names.extend(SERVICES);
    let _ = std::process::Command::new("docker").arg("rm").arg("-f").args(&names).output();

    let init = format!(
        "CREATE ROLE folio LOGIN PASSWORD '{APP_PASSWORD}';\n\
         CREATE DATABASE folio OWNER folio;\n\
         CREATE ROLE folio_wal LOGIN REPLICATION PASSWORD '{WAL_PASSWORD}';\n"
    );
    let postgres = GenericImage::new("localhost/folio/postgres", "15")
        .with_exposed_port(5432.tcp())
        .with_wait_for(WaitFor::message_on_either_std("database system is ready to accept connections"))
        .with_container_name("folio-db-rw")
        .with_network(&network)
        .with_env_var("POSTGRES_PASSWORD", "container-test-superuser")
        .with_copy_to("/docker-entrypoint-initdb.d/roles.sql", init.into_bytes())
        .with_cmd(["postgres", "-c", "fsync=off"])
        .start()
        .await
        .context("start PostgreSQL")?;
    let db_port = postgres.get_host_port_ipv4(5432.tcp()).await?;
    // The entrypoint's temporary server prints the same line: wait for connections to the real one.
    let db_url = format!("postgres://postgres:container-test-superuser@127.0.0.1:{db_port}/postgres");
    folio_testkit::eventually("PostgreSQL accepting connections", || {
        let url = db_url.clone();
        async move { sqlx::PgPool::connect(&url).await.ok() }
    })
    .await;

    // A three-node JetStream cluster, as the StatefulSet runs (production declares every stream
    // with three replicas).
    let routes = "nats://nats:6222,nats://nats-1:6222,nats://nats-2:6222";
    let mut infra = vec![postgres];
    for node in ["nats", "nats-1", "nats-2"] {
        let nats = GenericImage::new("localhost/folio/nats", "2.15.1")
            .with_exposed_port(4222.tcp())
            .with_exposed_port(8222.tcp())
            .with_wait_for(WaitFor::message_on_either_std("Server is ready"))
            .with_container_name(node)
            .with_network(&network)
            .with_cmd([
                "--jetstream",
                "--store_dir",
                "/data",
                "--http_port",
                "8222",
                "--server_name",
                node,
                "--cluster_name",
                "folio",
                "--cluster",
                "nats://0.0.0.0:6222",
                "--routes",
                routes,
            ])
            .start()
            .await
            .with_context(|| format!("start {node}"))?;
        infra.push(nats);
    }
    for nats in &infra[1..] {
        let port = nats.get_host_port_ipv4(8222.tcp()).await?;
        folio_testkit::eventually("the JetStream cluster to be healthy", || async move {
            let (status, _, _) = http_get(&format!("http://127.0.0.1:{port}/healthz"), None).await.ok()?;
            status.is_success().then_some(())
        })
        .await;
    }

    let mut services = BTreeMap::new();
    for name in SERVICES {
        let spec = manifests.service(name)?;
        services.insert(name, start_service(&spec, manifests, &network).await?);
    }
    Ok(Stack { network, services, infra, db_port })
}

/// Reads the proposals shape from the start, then follows it live until `done` holds for a
/// proposal row; returns that row.
async fn shape_until(edge: u16, token: &str, proposal: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let base = format!("http://127.0.0.1:{edge}/v1/shape?table=proposals");
    let (mut offset, mut handle, mut live) = ("-1".to_owned(), None::<String>, false);
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let mut url = format!("{base}&offset={offset}");
        if let Some(h) = &handle {
            url.push_str(&format!("&handle={h}"));
        }
        if live {
            url.push_str("&live=true");
        }
        let (status, headers, body) = http_get(&url, Some(token)).await?;
        if !status.is_success() {
            bail!("shape request {url}: {status} {}", String::from_utf8_lossy(&body));
        }
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        handle = header("electric-handle").or(handle);
        offset = header("electric-offset").context("electric-offset")?;
        live |= headers.contains_key("electric-up-to-date");
        let messages: Vec<Value> = serde_json::from_slice(&body)?;
        if let Some(row) = messages.iter().map(|m| &m["value"]).find(|v| v["id"] == proposal && done(v)).cloned() {
            return Ok(row);
        }
    }
    bail!("proposal {proposal} never reached the state looked for in the live shape")
}

async fn send(api: &mut folio_e2e::Proposals, id: &str) -> anyhow::Result<()> {
    api.transition_proposal(pb::TransitionProposalRequest {
        id: id.to_owned(),
        to: pb::ProposalStatus::Sent as i32,
        expected_version: 0,
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_core_journey_runs_on_the_images_as_the_production_manifests_configure_them() -> anyhow::Result<()> {
    let images = build_images(TAG)?;
    let manifests = Manifests::render("production")?;

    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let webhook_port = listener.local_addr()?.port();
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let stack = start_stack(&manifests).await?;
    let boot = started.elapsed();

    // An agency, its editor and its webhook endpoint, as an admin would create them.
    let pool =
        sqlx::PgPool::connect(&format!("postgres://folio:{APP_PASSWORD}@127.0.0.1:{}/folio", stack.db_port)).await?;
    let agency = proposals_api::tenancy::create_agency(&pool, "Container Studio", "#123456").await?;
    let editor = proposals_api::tenancy::create_user(&pool, agency, "ed@container.test", "Ed", Role::Editor).await?;
    let hook = format!("http://host.docker.internal:{webhook_port}/hook");
    sqlx::query("INSERT INTO webhook_endpoints (id, agency_id, url, event_types, secret) VALUES ($1, $2, $3, '{proposal.sent}', $4)")
        .bind(uuid::Uuid::now_v7())
        .bind(agency.as_uuid())
        .bind(&hook)
        .bind("whsec_Y29udGFpbmVyLXRlc3Qtd2ViaG9vay1zZWNyZXQ=")
        .execute(&pool)
        .await?;
    let token = folio_auth::Authenticator::new(JWT_SECRET.as_bytes())
        .issue(&Caller { user_id: editor, agency_id: agency, role: Role::Editor }, Duration::from_secs(3600));
    let api_addr: SocketAddr = format!("127.0.0.1:{}", stack.port("proposals-api", 50051).await?).parse()?;
    let mut api = folio_e2e::proposals_client(api_addr, &token)?;
    let edge = stack.port("shape-edge", 3000).await?;

    // The journey.
    let journey = Instant::now();
    let first = folio_e2e::draft_proposal(&mut api, &pool, agency, "Launch plan", 420_000).await?;
    send(&mut api, &first.id).await?;
    let requested = api.request_pdf(pb::RequestPdfRequest { proposal_id: first.id.clone() }).await?.into_inner();
    let (rendition, pdf) = folio_e2e::rendered_pdf(&api, &requested.rendition_id).await?;
    assert!(rendition.page_count >= 1 && pdf.starts_with(b"%PDF-"));
    let row = shape_until(edge, &token, &first.id, |v| v["status"] == "sent").await?;
    assert_eq!(row["title"], "Launch plan");
    folio_testkit::eventually("the proposal.sent webhook", || {
        let r = receiver.clone();
        let id = first.id.clone();
        async move { (!r.sent_events_of(&id).is_empty()).then_some(()) }
    })
    .await;
    let journey_took = journey.elapsed();

    // SIGKILL wal-ingest and the notifier; send three proposals while they are down.
    let outage = Instant::now();
    for name in ["wal-ingest", "notifier"] {
        let killed = std::process::Command::new("docker").args(["kill", "--signal", "KILL", name]).output()?;
        if !killed.status.success() {
            bail!("docker kill {name}: {}", String::from_utf8_lossy(&killed.stderr));
        }
    }
    let mut later = Vec::new();
    for n in 0..3 {
        let p = folio_e2e::draft_proposal(&mut api, &pool, agency, &format!("While down {n}"), 10_000 + n).await?;
        send(&mut api, &p.id).await?;
        later.push(p.id);
    }
    for name in ["wal-ingest", "notifier"] {
        stack.services[name].start().await.with_context(|| format!("restart {name}"))?;
        wait_for_probe(&stack.services[name], &manifests.service(name)?).await?;
    }
    for id in &later {
        shape_until(edge, &token, id, |v| v["status"] == "sent").await?;
        folio_testkit::eventually("the webhook of a proposal sent while the notifier was down", || {
            let r = receiver.clone();
            let id = id.clone();
            async move { (!r.sent_events_of(&id).is_empty()).then_some(()) }
        })
        .await;
    }
    let recovered = outage.elapsed();
    // Let redeliveries that would double an effect arrive before counting.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for id in std::iter::once(&first.id).chain(&later) {
        let deliveries = receiver.sent_events_of(id);
        assert_eq!(deliveries.len(), 1, "proposal {id}: one proposal.sent webhook, got {deliveries:?}");
    }
    // wal-ingest restarted from its slot: every send is on the change stream exactly once.
    let nats_port = stack.infra_port(1, 4222).await?;
    let sends = sent_transitions(nats_port, &agency.to_string()).await?;
    for id in std::iter::once(&first.id).chain(&later) {
        assert_eq!(
            sends.iter().filter(|p| *p == id).count(),
            1,
            "proposal {id}: one draft -> sent change, got {sends:?}"
        );
    }
    let ids: Vec<String> = receiver.0.lock().unwrap().iter().map(|(id, _)| id.clone()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no webhook-id delivered twice: {ids:?}");

    // Straight to stderr, past the test harness's capture: the timings belong in the test log.
    use std::io::Write as _;
    writeln!(
        std::io::stderr(),
        "container journey: images {:.1} s, stack up {:.1} s, journey {:.1} s, kill + restart of wal-ingest and notifier with 3 sends in between: all delivered once in {:.1} s",
        images.as_secs_f64(),
        boot.as_secs_f64(),
        journey_took.as_secs_f64(),
        recovered.as_secs_f64()
    )?;
    drop(stack.services);
    let _ = std::process::Command::new("docker").args(["network", "rm", &stack.network]).output();
    Ok(())
}

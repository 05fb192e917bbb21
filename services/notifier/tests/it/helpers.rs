//! One isolated world per test: a fresh database with an agency, its team and a client; a
//! JetStream stream and consumer with unique names; a real SMTP server (aiosmtpd writing a
//! Maildir) and a real webhook receiver verifying signatures with the `standardwebhooks`
//! package; the notifier in-process or as a process a test can kill.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use async_nats::jetstream;
use folio_domain::{AgencyId, ClientId, LineItemAmounts, ProposalId, ProposalStatus, UserId};
use folio_proto::events::v1::{ChangeEvent, ColumnValue, Operation, column_value};
use folio_runtime::Spawned;
use folio_testkit::Sandbox;
use notifier::Config;
use proposals_api::{
    Role,
    store::{clients, proposals},
    tenancy,
};
use prost::Message as _;
use serde::Deserialize;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::OnceCell,
};
use uuid::Uuid;

pub use folio_testkit::sandbox::JWT_SECRET;
/// Fast enough for a test to watch a whole retry sequence; production keeps Svix's.
pub const FAST_SCHEDULE: &str = "300ms,300ms,300ms,300ms,300ms,300ms,300ms";

/// The venv with aiosmtpd and standardwebhooks, installed once by the project's script.
pub async fn python() -> &'static str {
    static PYTHON: OnceCell<String> = OnceCell::const_new();
    PYTHON
        .get_or_init(|| async {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/notifier-test-deps.sh");
            let out = Command::new(&script).output().await.expect("run scripts/notifier-test-deps.sh");
            assert!(out.status.success(), "notifier-test-deps.sh failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        })
        .await
}

fn support(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support").join(file)
}

/// A Python helper process that prints `PORT <n>` once it listens.
pub struct Sidecar {
    _child: Child,
    pub port: u16,
}

async fn sidecar(args: &[&str]) -> anyhow::Result<Sidecar> {
    let mut child = Command::new(python().await)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {args:?}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("sidecar did not start within 30 s")??
        .context("sidecar exited before listening")?;
    let port = line.strip_prefix("PORT ").context("sidecar printed no port")?.parse()?;
    Ok(Sidecar { _child: child, port })
}

/// aiosmtpd writing a Maildir.
pub struct SmtpSink {
    _sidecar: Sidecar,
    pub url: String,
    pub maildir: PathBuf,
}

/// One email as the SMTP server stored it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
    headers: Vec<(String, String)>,
}

impl Mail {
    fn parse(raw: String) -> Self {
        let head = raw.split("\r\n\r\n").next().unwrap_or("").split("\n\n").next().unwrap_or("").to_owned();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push_str(line.trim_start());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        Self { raw, headers }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn to(&self) -> String {
        let to = self.header("to").unwrap_or_default();
        match (to.find('<'), to.find('>')) {
            (Some(a), Some(b)) => to[a + 1..b].to_owned(),
            _ => to.to_owned(),
        }
    }

    pub fn event(&self) -> &str {
        self.header("x-folio-event").unwrap_or_default()
    }

    /// The body with quoted-printable soft breaks and `=3D` undone, enough to find links.
    pub fn text(&self) -> String {
        self.raw.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=")
    }
}

impl SmtpSink {
    pub async fn start(fail_first: u32) -> anyhow::Result<Self> {
        let maildir = std::env::temp_dir().join(format!("folio-notifier-mail-{}", folio_testkit::unique_suffix()));
        let script = support("smtp_sink.py");
        let sidecar =
            sidecar(&[script.to_str().unwrap(), maildir.to_str().unwrap(), "--fail-first", &fail_first.to_string()])
                .await?;
        Ok(Self { url: format!("smtp://127.0.0.1:{}", sidecar.port), _sidecar: sidecar, maildir })
    }

    pub fn messages(&self) -> Vec<Mail> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(dir) = std::fs::read_dir(self.maildir.join(sub)) else { continue };
            for entry in dir.flatten() {
                if let Ok(raw) = std::fs::read_to_string(entry.path()) {
                    out.push(Mail::parse(raw));
                }
            }
        }
        out
    }

    pub fn to(&self, address: &str) -> Vec<Mail> {
        self.messages().into_iter().filter(|m| m.to() == address).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

/// The verifying webhook receiver.
pub struct Receiver {
    _sidecar: Sidecar,
    pub base: String,
    http: reqwest::Client,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hook {
    pub path: String,
    pub webhook_id: Option<String>,
    pub outcome: String,
    pub status: Option<u16>,
    pub payload: Option<Value>,
    pub error: Option<String>,
    pub n: u32,
}

impl Hook {
    pub fn event_type(&self) -> &str {
        self.payload.as_ref().and_then(|p| p["type"].as_str()).unwrap_or_default()
    }
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        let script = support("webhook_receiver.py");
        let sidecar = sidecar(&[script.to_str().unwrap()]).await?;
        Ok(Self { base: format!("http://127.0.0.1:{}", sidecar.port), _sidecar: sidecar, http: reqwest::Client::new() })
    }

    pub async fn configure(&self, path: &str, config: Value) {
        let status = self
            .http
            .post(format!("{}/_endpoints", self.base))
            .json(&serde_json::json!({ path: config }))
            .send()
            .await
            .expect("configure receiver")
            .status();
        assert_eq!(status.as_u16(), 204);
    }

    pub async fn log(&self) -> Vec<Hook> {
        self.http.get(format!("{}/_log", self.base)).send().await.expect("receiver log").json().await.expect("log json")
    }

    pub async fn at(&self, path: &str) -> Vec<Hook> {
        self.log().await.into_iter().filter(|h| h.path == path).collect()
    }

    pub async fn accepted(&self, path: &str) -> Vec<Hook> {
        self.at(path).await.into_iter().filter(|h| h.outcome == "accepted").collect()
    }
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: UserId,
    pub email: String,
}

/// A [`Sandbox`] (its fields read through) with an agency, its team, a client, a mail sink and
/// a webhook receiver.
pub struct World {
    pub sandbox: Sandbox,
    pub stream: String,
    pub consumer: String,
    pub agency: AgencyId,
    pub owner: Person,
    pub editor: Person,
    pub viewer: Person,
    pub client: ClientId,
    pub client_email: String,
    pub smtp: SmtpSink,
    pub receiver: Receiver,
}

impl std::ops::Deref for World {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

/// A running in-process notifier.
pub struct Running {
    pub service: Spawned<notifier::Error>,
    pub http: SocketAddr,
    /// `/metrics` lives here.
    pub admin: SocketAddr,
}

impl Running {
    pub async fn stop(self) {
        self.service.stop().await.expect("notifier stops cleanly within 30 s");
    }
}

/// Fake commit LSNs for hand-published events; ids only need to be unique per stream.
static NEXT_LSN: AtomicU64 = AtomicU64::new(0x1_0000_0000);

impl World {
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_smtp(SmtpSink::start(0).await?).await
    }

    pub async fn with_smtp(smtp: SmtpSink) -> anyhow::Result<Self> {
        let sandbox = Sandbox::new().await?;
        let suffix = sandbox.suffix.clone();
        let stream = sandbox.changes_stream().to_owned();
        let consumer = sandbox.notifier_config().consumer;
        // What wal-ingest declares, with a short duplicate window so a test can publish the
        // same event id twice and see JetStream redeliver "the same" event.
        sandbox
            .js
            .create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![sandbox.subjects().changes_filter()],
                duplicate_window: Duration::from_millis(500),
                ..Default::default()
            })
            .await
            .context("create the test stream")?;
        let pool = &sandbox.db.pool;
        let agency = tenancy::create_agency(pool, "Acme Studio", "#1f4e79").await?;
        let person = |name: &str| Person { id: UserId::new(), email: format!("{name}.{suffix}@agency.test") };
        let mut owner = person("owner");
        let mut editor = person("editor");
        let mut viewer = person("viewer");
        owner.id = tenancy::create_user(pool, agency, &owner.email, "Olivia Owner", Role::Admin).await?;
        editor.id = tenancy::create_user(pool, agency, &editor.email, "Eddie Editor", Role::Editor).await?;
        viewer.id = tenancy::create_user(pool, agency, &viewer.email, "Vera Viewer", Role::Viewer).await?;
        let client_email = format!("buyer.{suffix}@client.test");
        let client = clients::create(
            pool,
            agency,
            clients::ClientFields {
                name: "Carla Client".into(),
                email: client_email.clone(),
                company: "Client Co".into(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("create client: {e:?}"))?;
        Ok(Self {
            sandbox,
            stream,
            consumer,
            agency,
            owner,
            editor,
            viewer,
            client: ClientId::from(client.id),
            client_email,
            smtp,
            receiver: Receiver::start().await?,
        })
    }

    pub fn config(&self) -> Config {
        let mut c = self.sandbox.notifier_config();
        c.smtp_url = self.smtp.url.clone();
        c.webhook_allowed_subnets = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        c.retry_schedule = FAST_SCHEDULE.split(',').map(|d| humantime::parse_duration(d).unwrap()).collect();
        c.scheduler_poll = Duration::from_millis(100);
        c.webhook_timeout = Duration::from_secs(5);
        c.smtp_timeout = Duration::from_secs(5);
        c.delivery_lease = Duration::from_secs(6);
        c
    }

    pub async fn spawn_with(&self, config: Config) -> Running {
        let app = notifier::bind(config).await.expect("bind the notifier");
        let (http, admin) = (app.http_addr(), app.admin_addr());
        Running { service: app.spawn(), http, admin }
    }

    pub async fn spawn(&self) -> Running {
        self.spawn_with(self.config()).await
    }

    /// The real binary, so a test can SIGKILL it mid-delivery.
    pub fn spawn_process(&self) -> anyhow::Result<Child> {
        let c = self.config();
        let schedule: Vec<String> =
            c.retry_schedule.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
        Command::new(env!("CARGO_BIN_EXE_notifier"))
            .env("FOLIO_DATABASE_URL", &self.db.url)
            .env("FOLIO_NATS_URL", &self.bus.nats_url)
            .env("FOLIO_SUBJECT_ROOT", &self.bus.subject_root)
            .env("FOLIO_CHANGES_STREAM", &self.stream)
            .env("FOLIO_NOTIFIER_CONSUMER", &self.consumer)
            .env("FOLIO_NOTIFIER_DELIVER_FROM", "all")
            .env("FOLIO_NOTIFIER_HTTP_ADDR", "127.0.0.1:0")
            .env("FOLIO_ADMIN_ADDR", "127.0.0.1:0")
            .env("FOLIO_SMTP_URL", &self.smtp.url)
            .env("FOLIO_WEBHOOK_ALLOWED_SUBNETS", "127.0.0.0/8,::1/128")
            .env("FOLIO_RETRY_SCHEDULE", schedule.join(","))
            .env("FOLIO_SCHEDULER_POLL", "100ms")
            .env("FOLIO_WEBHOOK_TIMEOUT", "5s")
            .env("FOLIO_SMTP_TIMEOUT", "5s")
            .env("FOLIO_DELIVERY_LEASE", "6s")
            // An event held by a killed replica comes back to the other within this.
            .env("FOLIO_NOTIFIER_ACK_WAIT", "3s")
            .env("FOLIO_JWT_SECRET", JWT_SECRET)
            .env("FOLIO_UNSUBSCRIBE_SECRET", folio_testkit::sandbox::UNSUBSCRIBE_SECRET)
            .env("FOLIO_CLIENT_LINK_SECRET", folio_auth::client_link::TEST_CLIENT_LINK_SECRET)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .context("spawn the notifier binary")
    }

    /// Registers a webhook endpoint at `path` on the receiver, which verifies with `secret`.
    pub async fn add_endpoint(&self, path: &str, event_types: &[&str], receiver: Value) -> Uuid {
        let secret = notifier::webhook::sign::Secret::generate();
        let mut cfg = receiver;
        cfg["secret"] = Value::String(secret.clone());
        self.receiver.configure(path, cfg).await;
        self.insert_endpoint(&format!("{}{path}", self.receiver.base), event_types, &secret).await
    }

    pub async fn insert_endpoint(&self, url: &str, event_types: &[&str], secret: &str) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, agency_id, url, event_types, secret) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(self.agency.as_uuid())
        .bind(url)
        .bind(event_types.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .bind(secret)
        .execute(&self.db.pool)
        .await
        .expect("insert endpoint");
        id
    }

    /// A draft proposal with one line item (100.00 EUR + 21 % tax).
    pub async fn new_proposal(&self, title: &str, valid_until: Option<time::Date>) -> ProposalId {
        let record = proposals::create(
            &self.db.pool,
            self.agency,
            self.owner.id,
            proposals::NewProposal {
                client_id: self.client,
                template_id: None,
                title: title.into(),
                currency: "EUR".into(),
                valid_until,
                content: "Scope".into(),
                terms: "Net 30".into(),
                line_items: vec![proposals::NewLineItem {
                    description: "Design".into(),
                    amounts: LineItemAmounts::parse(1000, 10_000, 210_000).unwrap(),
                }],
            },
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .expect("create proposal");
        ProposalId::from(record.proposal.id)
    }

    /// The proposal's row in Postgres text format, as wal-ingest would carry it.
    pub async fn row(&self, id: ProposalId) -> Vec<ColumnValue> {
        const COLUMNS: [&str; 23] = [
            "id",
            "agency_id",
            "client_id",
            "owner_id",
            "template_id",
            "title",
            "status",
            "currency",
            "valid_until",
            "version",
            "content",
            "terms",
            "subtotal_minor",
            "tax_minor",
            "total_minor",
            "created_at",
            "updated_at",
            "sent_at",
            "viewed_at",
            "accepted_at",
            "declined_at",
            "withdrawn_at",
            "archived_at",
        ];
        let select = COLUMNS.iter().map(|c| format!("{c}::text")).collect::<Vec<_>>().join(", ");
        let values: Vec<Option<String>> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT ARRAY[{select}] FROM proposals WHERE id = $1")))
                .bind(id.as_uuid())
                .fetch_one(&self.db.pool)
                .await
                .expect("read proposal row");
        COLUMNS
            .iter()
            .zip(values)
            .map(|(name, v)| ColumnValue {
                name: (*name).into(),
                value: Some(match v {
                    Some(t) => column_value::Value::Text(t),
                    None => column_value::Value::IsNull(true),
                }),
            })
            .collect()
    }

    /// A change event of `proposals` with a fresh message id, as wal-ingest publishes it.
    pub fn event(&self, op: Operation, old: Vec<ColumnValue>, new: Vec<ColumnValue>) -> (String, ChangeEvent) {
        let lsn = NEXT_LSN.fetch_add(1, Ordering::Relaxed);
        let event = ChangeEvent {
            commit_lsn: lsn,
            commit_end_lsn: lsn + 1,
            xid: 1,
            position: 0,
            last_in_transaction: true,
            commit_time: Some(prost_types::Timestamp {
                seconds: time::OffsetDateTime::now_utc().unix_timestamp(),
                nanos: 0,
            }),
            schema: "public".into(),
            table: "proposals".into(),
            operation: op as i32,
            tenant: self.agency.to_string(),
            primary_key: new.iter().chain(old.iter()).filter(|c| c.name == "id").take(1).cloned().collect(),
            new_row: new,
            old_row: old,
            column_types: Vec::new(),
        };
        let id = folio_bus::MsgKey::new(folio_domain::Lsn(lsn), 0, folio_bus::Part::Change(0));
        (id.to_string(), event)
    }

    pub async fn publish(&self, msg_id: &str, event: &ChangeEvent) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(folio_bus::headers::MSG_ID, msg_id);
        let subject = self.subjects().row("public", "proposals", Some(&self.agency.to_string()));
        self.js
            .publish_with_headers(subject, headers, event.encode_to_vec().into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }

    /// Inserted: publishes the created event; returns the id.
    pub async fn created(&self, title: &str, valid_until: Option<time::Date>) -> ProposalId {
        let id = self.new_proposal(title, valid_until).await;
        let (msg_id, event) = self.event(Operation::Insert, Vec::new(), self.row(id).await);
        self.publish(&msg_id, &event).await;
        id
    }

    /// Moves the proposal to `to` through the API's store and publishes the change event.
    pub async fn transition(&self, id: ProposalId, to: ProposalStatus) -> String {
        let old = self.row(id).await;
        proposals::transition(&self.db.pool, self.agency, id, to, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .expect("transition");
        let (msg_id, event) = self.event(Operation::Update, old, self.row(id).await);
        self.publish(&msg_id, &event).await;
        msg_id
    }

    pub async fn deliveries(&self, event_type: &str) -> Vec<DeliveryRow> {
        sqlx::query_as(
            "SELECT id, event_id, channel, recipient, status, attempts, last_error FROM notification_deliveries \
              WHERE event_type = $1 ORDER BY channel, recipient",
        )
        .bind(event_type)
        .fetch_all(&self.db.pool)
        .await
        .expect("read deliveries")
    }

    /// Waits until no delivery is pending or in flight.
    pub async fn settled(&self) {
        let pool = self.db.pool.clone();
        folio_testkit::eventually("every delivery settled", || {
            let pool = pool.clone();
            async move {
                let open: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM notification_deliveries WHERE status IN ('pending', 'delivering') \
                      AND (next_attempt_at IS NULL OR next_attempt_at < now() + interval '1 hour')",
                )
                .fetch_one(&pool)
                .await
                .ok()?;
                (open == 0).then_some(())
            }
        })
        .await;
    }

    pub fn token(&self, user: &Person, role: Role) -> String {
        proposals_api::Authenticator::new(JWT_SECRET.as_bytes())
            .issue(&proposals_api::Caller { user_id: user.id, agency_id: self.agency, role }, Duration::from_secs(600))
    }

    /// The sandbox's streams (the world's changes stream among them) and slot, if any.
    pub async fn cleanup(&self) {
        self.sandbox.clean_up().await;
        let _ = self.js.delete_stream(self.dead_letter_stream()).await;
    }

    /// The notifier's dead-letter stream, named after the changes stream (as documented).
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_NOTIFIER_DEAD", self.bus.changes_stream)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: Uuid,
    pub event_id: String,
    pub channel: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub succeeded: bool,
    pub response_code: Option<i32>,
    pub latency_ms: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub attempted_at: time::OffsetDateTime,
}

pub async fn attempts(pool: &sqlx::PgPool, delivery: Uuid) -> Vec<AttemptRow> {
    sqlx::query_as(
        "SELECT succeeded, response_code, latency_ms, response_body, error, attempted_at FROM delivery_attempts \
          WHERE delivery_id = $1 ORDER BY attempted_at, id",
    )
    .bind(delivery)
    .fetch_all(pool)
    .await
    .expect("read attempts")
}

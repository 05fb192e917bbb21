//! A fresh database, unique JetStream names and a demo proposal per test.

use std::time::Duration;

use async_nats::jetstream;
use folio_domain::{AgencyId, LineItemAmounts, ProposalId, TemplateId, UserId};
use folio_proto::jobs::v1::RenderPdfJob;
use folio_testkit::Sandbox;
use futures::StreamExt as _;
use pdf_render::Config;
use proposals_api::{Role, store, tenancy};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A [`Sandbox`] (its database and names read through) with pdf-render's configuration for it,
/// a jobs stream, and an agency with a client to write proposals for.
pub struct Env {
    pub sandbox: Sandbox,
    pub config: Config,
    pub agency: AgencyId,
    pub owner: UserId,
    pub client: Uuid,
}

impl std::ops::Deref for Env {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

pub async fn env() -> Env {
    let sandbox = Sandbox::new().await.expect("sandbox");
    let mut config = sandbox.pdf_render_config();
    config.ack_wait = Duration::from_secs(2);
    config.retry_backoff = Duration::from_millis(100);
    config.max_deliver = 3;
    config.concurrency = 2;
    config.common.shutdown_grace = Duration::from_secs(5);
    // Declared as wal-ingest declares its jobs stream: a file-backed work queue.
    sandbox
        .js
        .create_stream(jetstream::stream::Config {
            name: config.bus.jobs_stream.clone(),
            subjects: vec![config.bus.subjects().jobs_filter()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("jobs stream");

    let pool = &sandbox.db.pool;
    let agency = tenancy::create_agency(pool, "Northwind Studio", "#0b6e4f").await.unwrap();
    let owner =
        tenancy::create_user(pool, agency, "maria@northwind.example", "María Álvarez", Role::Admin).await.unwrap();
    let client = store::clients::create(
        pool,
        agency,
        store::clients::ClientFields {
            name: "Jordan Reyes".into(),
            email: "jordan@acme.example".into(),
            company: "Acme Robotics".into(),
        },
    )
    .await
    .unwrap();
    Env { sandbox, config, agency, owner, client: client.id }
}

impl Env {
    /// A proposal with `items` line items (optionally on a custom template) and its render job.
    pub async fn proposal(&self, title: &str, items: usize, template: Option<&str>) -> RenderPdfJob {
        let (proposal, template_id) = self.proposal_without_rendition(title, items, template).await;
        let pool = &self.db.pool;
        let requeue = store::renditions::DEFAULT_REQUEUE_AFTER;
        let r =
            store::renditions::request(pool, self.agency, self.owner, proposal, String::new(), requeue).await.unwrap();
        self.job(r.rendition_id, proposal, r.proposal_version, template_id)
    }

    /// A proposal with `items` line items (optionally on a custom template), no rendition yet.
    pub async fn proposal_without_rendition(
        &self,
        title: &str,
        items: usize,
        template: Option<&str>,
    ) -> (ProposalId, Option<TemplateId>) {
        let pool = &self.db.pool;
        let template_id = match template {
            Some(body) => {
                Some(store::templates::create(pool, self.agency, "custom".into(), body.into()).await.unwrap().id.into())
            }
            None => None,
        };
        let line_items = (1..=items)
            .map(|n| store::proposals::NewLineItem {
                description: format!("Work package {n:02}"),
                amounts: LineItemAmounts::parse(1_000 + (n as i64 % 4) * 500, 12_500 * n as i64, 190_000).unwrap(),
            })
            .collect();
        let new = store::proposals::NewProposal {
            client_id: self.client.into(),
            template_id,
            title: title.into(),
            currency: "EUR".into(),
            valid_until: Some(time::macros::date!(2027 - 03 - 31)),
            content: "Thank you for the opportunity.\n\nThis proposal covers the work below.".into(),
            terms: "50 % on acceptance, 50 % on delivery.".into(),
            line_items,
        };
        let p = store::proposals::create(pool, self.agency, self.owner, new, None).await.unwrap();
        (ProposalId::from(p.proposal.id), template_id)
    }

    /// The job RequestPdf writes for a rendition.
    pub fn job(
        &self,
        rendition: Uuid,
        proposal: ProposalId,
        version: i64,
        template: Option<TemplateId>,
    ) -> RenderPdfJob {
        RenderPdfJob {
            rendition_id: rendition.to_string(),
            agency_id: self.agency.to_string(),
            proposal_id: proposal.to_string(),
            proposal_version: version,
            template_id: template.map(|t| t.to_string()).unwrap_or_default(),
            requested_by: self.owner.to_string(),
            requested_at: None,
            traceparent: String::new(),
            signed_response_id: String::new(),
        }
    }

    /// Writes what RequestPdf writes for a new rendition of `job` (the row with the built-in
    /// template's key, and the job in the WAL) in `tx`, which the caller commits.
    pub async fn write_rendition(&self, tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, job: &RenderPdfJob) {
        let template_sha = store::templates::body_sha256(store::renditions::BUILTIN_TEMPLATE_KEY);
        sqlx::query(
            "INSERT INTO pdf_renditions (id, agency_id, proposal_id, proposal_version, template_sha256, requested_by) \
             VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5, $6::uuid)",
        )
        .bind(&job.rendition_id)
        .bind(&job.agency_id)
        .bind(&job.proposal_id)
        .bind(job.proposal_version)
        .bind(template_sha)
        .bind(&job.requested_by)
        .execute(&mut **tx)
        .await
        .unwrap();
        folio_db::emit_job(tx, "pdf", &job.encode_to_vec()).await.unwrap();
    }

    /// Publishes `job` as wal-ingest publishes a job it decoded from `tx` (subject, payload and
    /// headers: the message id `<commit lsn>:<position>`, commit LSN and xid). `tx` is still open:
    /// this is the job reaching the queue before its commit is visible to other sessions.
    pub async fn publish_from_wal(&self, tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, job: &RenderPdfJob) {
        let (lsn, xid): (i64, i64) = sqlx::query_as(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint, pg_current_xact_id()::text::bigint % 4294967296",
        )
        .fetch_one(&mut **tx)
        .await
        .unwrap();
        let lsn = folio_domain::Lsn(lsn as u64);
        // The row's insert is change 0 of the transaction, the job message change 1.
        let id = folio_bus::MsgKey::new(lsn, 1, folio_bus::Part::Change(0));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(folio_bus::headers::MSG_ID, id.to_string().as_str());
        headers.insert(folio_bus::headers::COMMIT_LSN, lsn.to_string().as_str());
        headers.insert(folio_bus::headers::XID, xid.to_string().as_str());
        let subject = self.config.bus.subjects().jobs("pdf");
        self.js.publish_with_headers(subject, headers, job.encode_to_vec().into()).await.unwrap().await.unwrap();
    }

    /// The jobs consumer's state, once pdf-render has declared it (a worker just started may
    /// not have yet).
    pub async fn consumer_info(&self) -> jetstream::consumer::Info {
        let stream = self.js.get_stream(&self.config.bus.jobs_stream).await.unwrap();
        let name = self.config.consumer.clone();
        folio_testkit::eventually("pdf-render's consumer", || {
            let (stream, name) = (stream.clone(), name.clone());
            async move {
                let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(&name).await.ok()?;
                consumer.info().await.ok().cloned()
            }
        })
        .await
    }

    /// Names of the objects in the PDF bucket.
    pub async fn stored_pdfs(&self) -> Vec<String> {
        let bucket = self.js.get_object_store(&self.config.bus.pdf_bucket).await.unwrap();
        let mut list = bucket.list().await.unwrap();
        let mut names = Vec::new();
        while let Some(object) = list.next().await {
            names.push(object.unwrap().name);
        }
        names
    }

    /// Puts a job on the queue exactly where wal-ingest would.
    pub async fn publish(&self, payload: Vec<u8>) {
        let subject = self.config.bus.subjects().jobs("pdf");
        self.js.publish(subject, payload.into()).await.unwrap().await.unwrap();
    }

    pub async fn publish_job(&self, job: &RenderPdfJob) {
        self.publish(job.encode_to_vec()).await;
    }

    pub async fn start_worker(&self) -> CancellationToken {
        let token = CancellationToken::new();
        let worker = pdf_render::bind(self.config.clone()).await.expect("bind pdf-render");
        tokio::spawn(worker.run(token.clone()));
        token
    }

    pub async fn wait_status(&self, rendition: &str, wanted: &str) -> Rendition {
        let id = Uuid::parse_str(rendition).unwrap();
        folio_testkit::eventually(&format!("rendition {rendition} to be {wanted}"), || async move {
            let row: Rendition = sqlx::query_as(
                "SELECT status, failure_reason, pdf_sha256, size_bytes, page_count, rendered_at FROM pdf_renditions WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            (row.status == wanted).then_some(row)
        })
        .await
    }

    pub async fn pdf(&self, sha256: &str) -> Vec<u8> {
        let bucket = self.js.get_object_store(&self.config.bus.pdf_bucket).await.unwrap();
        let mut object = bucket.get(sha256).await.unwrap();
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes).await.unwrap();
        bytes
    }

    /// Messages in the dead-letter stream, with their Folio-Error header.
    pub async fn dead_letters(&self) -> Vec<(Vec<u8>, String)> {
        let stream = self.js.get_stream(&self.config.dead_letter_stream).await.unwrap();
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch =
            consumer.fetch().max_messages(100).expires(Duration::from_millis(500)).messages().await.unwrap();
        let mut out = Vec::new();
        while let Some(Ok(m)) = batch.next().await {
            let error = m
                .headers
                .as_ref()
                .and_then(|h| h.get(folio_bus::headers::ERROR))
                .map(|v| v.to_string())
                .unwrap_or_default();
            out.push((m.payload.to_vec(), error));
        }
        out
    }

    /// Waits until the consumer has nothing pending or unacknowledged.
    pub async fn wait_queue_drained(&self) {
        let stream = self.js.get_stream(&self.config.bus.jobs_stream).await.unwrap();
        let name = self.config.consumer.clone();
        folio_testkit::eventually("the job queue to drain", || {
            let stream = stream.clone();
            let name = name.clone();
            async move {
                let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(&name).await.ok()?;
                let info = consumer.info().await.ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            }
        })
        .await
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct Rendition {
    pub status: String,
    pub failure_reason: Option<String>,
    pub pdf_sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub page_count: Option<i32>,
    pub rendered_at: Option<time::OffsetDateTime>,
}

fn poppler(tool: &str, args: &[&str], pdf: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("folio-pdf-{}", folio_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("doc.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = std::process::Command::new(tool)
        .args(args)
        .arg(&path)
        .args(if tool == "pdftotext" { &["-"][..] } else { &[][..] })
        .output()
        .unwrap_or_else(|e| panic!("{tool} is needed (Debian's poppler-utils): {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{tool} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

pub fn pdftotext(pdf: &[u8]) -> String {
    poppler("pdftotext", &["-layout"], pdf)
}

pub fn pdfinfo_pages(pdf: &[u8]) -> usize {
    let info = poppler("pdfinfo", &[], pdf);
    info.lines()
        .find_map(|l| l.strip_prefix("Pages:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no page count in {info}"))
}

//! The pull-consumer loop on `<root>.jobs.pdf`: bounded concurrency, explicit acks, progress
//! heartbeats during long renders, retries with backoff for transient errors, and the
//! dead-letter stream for jobs that cannot be rendered.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use folio_proto::jobs::v1::RenderPdfJob;
use futures::StreamExt as _;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    Shared,
    document::{self, LoadError, SignedCopyError},
    render::{self, DEFAULT_TEMPLATE, SIGNED_COPY_TEMPLATE},
    sandbox::{SandboxError, protocol::RenderRequest},
    store::{self, RenditionLock, Target},
};

/// How long one pull waits on the server for a job before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How a job ended, when it ended well.
enum Outcome {
    Rendered,
    /// Already ready: a duplicate job renders nothing.
    AlreadyReady,
    /// Another worker holds the rendition right now.
    Busy,
}

/// Why a job did not end well. How it is retried follows from the cause ([`JobError::retry`]);
/// the whole chain is the reason recorded on the rendition and in the dead letter.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("payload is not a RenderPdfJob")]
    Payload(#[source] prost::DecodeError),
    #[error("rendition_id {0:?} is not a UUID")]
    RenditionId(String),
    #[error("signed_response_id {0:?} is not a UUID")]
    ResponseId(String),
    #[error("{0} does not exist (yet)")]
    NotVisible(Target),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    SignedCopy(#[from] SignedCopyError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Render(#[from] SandboxError),
}

/// What another delivery of a failed job can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Nothing: bad payload, bad template, proposal moved to another version.
    Never,
    /// The database or NATS misbehaved: worth another delivery.
    Transient,
    /// A row the job names is not visible (yet). The WAL carries a commit slightly before other
    /// sessions see it, so a job can outrun its own rows: retried like `Transient`, and only
    /// when the retry budget is spent does the job fail.
    NotVisible,
}

impl JobError {
    fn retry(&self) -> Retry {
        match self {
            JobError::Payload(_) | JobError::RenditionId(_) | JobError::ResponseId(_) => Retry::Never,
            // Over a limit or a template error: the same template fails the same way again.
            JobError::Render(e) if e.is_permanent() => Retry::Never,
            JobError::Render(_) => Retry::Transient,
            JobError::NotVisible(_) | JobError::SignedCopy(SignedCopyError::NotVisible(_)) => Retry::NotVisible,
            JobError::Load(e) if e.is_not_visible() => Retry::NotVisible,
            JobError::Load(e) if e.is_permanent() => Retry::Never,
            JobError::SignedCopy(SignedCopyError::NotAnAcceptance(_) | SignedCopyError::UnknownPdf(_)) => Retry::Never,
            JobError::Store(e) if e.is_permanent() => Retry::Never,
            JobError::Load(_) | JobError::SignedCopy(_) | JobError::Store(_) => Retry::Transient,
        }
    }

    fn reason(&self) -> String {
        folio_runtime::error_chain(self)
    }
}

/// The kind of job this worker does: `<root>.jobs.pdf`, dead letters on `<root>.dead.pdf`.
pub(crate) const JOB_KIND: &str = "pdf";

pub(crate) fn jobs_subject(shared: &Shared) -> String {
    shared.config.bus.subjects().jobs(JOB_KIND)
}

pub(crate) fn dead_subject(shared: &Shared) -> String {
    shared.config.bus.subjects().dead_letters(JOB_KIND)
}

/// Consumes jobs until `shutdown`, then lets in-flight renders finish within the grace period.
pub async fn run(shared: Arc<Shared>, shutdown: CancellationToken) -> Result<(), crate::Error> {
    let config = &shared.config;
    let stream = loop {
        match shared.js.get_stream(&config.bus.jobs_stream).await {
            Ok(stream) => break stream,
            Err(e) => {
                // wal-ingest declares the jobs stream; wait for it rather than declaring a rival.
                tracing::warn!(stream = %config.bus.jobs_stream, "waiting for the jobs stream: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let concurrency = config.concurrency();
    let consumer = stream
        .get_or_create_consumer(
            &config.consumer,
            pull::Config {
                durable_name: Some(config.consumer.clone()),
                description: Some("pdf-render workers".into()),
                filter_subject: jobs_subject(&shared),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver,
                max_ack_pending: (concurrency * 4) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| crate::Error::CreateConsumer { consumer: config.consumer.clone(), source })?;
    let retry_budget = config.retry_budget();
    tracing::info!(stream = %config.bus.jobs_stream, consumer = %config.consumer, concurrency, ?retry_budget, "pdf-render consuming");

    let permits = Arc::new(Semaphore::new(concurrency));
    let tasks = TaskTracker::new();
    loop {
        // A permit first, then a pull for exactly one job: a job's ack_wait starts only when a
        // slot is free to work on it, so nothing waits in a client buffer while its clock runs.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
        };
        let pulled = async {
            let mut batch = consumer.fetch().max_messages(1).expires(PULL_EXPIRES).messages().await?;
            batch.next().await.transpose()
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = pulled => next,
        };
        match next {
            Ok(Some(message)) => {
                let shared = shared.clone();
                tasks.spawn(async move {
                    handle(&shared, message).await;
                    drop(permit);
                });
            }
            // The pull expired with nothing queued: ask again.
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("failed to pull a job: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    tasks.close();
    if tokio::time::timeout(config.common.shutdown_grace, tasks.wait()).await.is_err() {
        tracing::warn!("renders still running after the grace period; JetStream will redeliver them");
    }
    Ok(())
}

async fn handle(shared: &Shared, message: jetstream::Message) {
    let (seq, delivered) = match message.info() {
        Ok(info) => (info.stream_sequence, info.delivered),
        Err(e) => {
            tracing::error!("job without JetStream metadata: {e}");
            return;
        }
    };
    let span = tracing::info_span!(
        "pdf_job",
        stream_seq = seq,
        delivered,
        rendition_id = tracing::field::Empty,
        response_id = tracing::field::Empty,
        proposal_id = tracing::field::Empty
    );
    // Decoded before the span is entered: entering starts it, and a started span keeps the
    // parent it has. An undecodable job is reported by `process`.
    let job = RenderPdfJob::decode(message.payload.as_ref());
    let traceparent = job.as_ref().map(|j| j.traceparent.as_str()).unwrap_or_default();
    folio_bus::trace_context::set_parent_from_job(&span, message.headers.as_ref(), traceparent);
    async {
        let started = std::time::Instant::now();
        let result = process(shared, &message, job).await;
        let config = &shared.config;
        let (ack, outcome) = match result {
            Ok(Outcome::Rendered) => (AckKind::Ack, "rendered"),
            Ok(Outcome::AlreadyReady) => (AckKind::Ack, "duplicate"),
            // Another worker is rendering this rendition; look again once it has had time to finish.
            Ok(Outcome::Busy) => (AckKind::Nak(Some(config.ack_wait)), "busy"),
            Err(e) => {
                let reason = e.reason();
                match e.retry() {
                    Retry::Never => {
                        tracing::warn!(%reason, "job cannot be rendered");
                        (dead_letter(shared, &message.payload, &reason, delivered).await, "failed")
                    }
                    Retry::Transient | Retry::NotVisible
                        if config.max_deliver > 0 && delivered >= config.max_deliver =>
                    {
                        let reason = format!("gave up after {delivered} attempts: {reason}");
                        tracing::error!(%reason, "job exhausted its deliveries");
                        let ack = dead_letter(shared, &message.payload, &reason, delivered).await;
                        fail_rendition(shared, &message.payload, &reason).await;
                        (ack, "failed")
                    }
                    Retry::Transient => {
                        let delay = backoff(config.retry_backoff, delivered);
                        tracing::warn!(%reason, ?delay, "transient failure, retrying");
                        (AckKind::Nak(Some(delay)), "retry")
                    }
                    Retry::NotVisible => {
                        let delay = backoff(config.retry_backoff, delivered);
                        tracing::info!(%reason, ?delay, "the job's rows are not visible yet, retrying");
                        (AckKind::Nak(Some(delay)), "not_visible")
                    }
                }
            }
        };
        metrics::counter!("folio_pdf_jobs_total", "outcome" => outcome).increment(1);
        metrics::histogram!("folio_pdf_job_seconds").record(started.elapsed().as_secs_f64());
        // Ack only after the rendition row and the object are durable (or the job is dead-lettered).
        if let Err(e) = message.ack_with(ack).await {
            tracing::warn!("failed to acknowledge the job: {e}");
        }
    }
    .instrument(span)
    .await
}

/// The delay before delivery `delivered + 1` after a transient failure of delivery `delivered`.
pub(crate) fn backoff(first: Duration, delivered: i64) -> Duration {
    let factor = 2u32.saturating_pow(delivered.saturating_sub(1).clamp(0, 16) as u32);
    first.saturating_mul(factor).min(Duration::from_secs(300))
}

/// What `job` asks to render.
fn target_of(job: &RenderPdfJob) -> Result<Target, JobError> {
    if job.signed_response_id.is_empty() {
        Uuid::parse_str(&job.rendition_id)
            .map(Target::Rendition)
            .map_err(|_| JobError::RenditionId(job.rendition_id.clone()))
    } else {
        Uuid::parse_str(&job.signed_response_id)
            .map(Target::SignedCopy)
            .map_err(|_| JobError::ResponseId(job.signed_response_id.clone()))
    }
}

async fn process(
    shared: &Shared,
    message: &jetstream::Message,
    job: Result<RenderPdfJob, prost::DecodeError>,
) -> Result<Outcome, JobError> {
    let job = job.map_err(JobError::Payload)?;
    let span = tracing::Span::current();
    span.record("rendition_id", job.rendition_id.as_str());
    span.record("proposal_id", job.proposal_id.as_str());
    if !job.signed_response_id.is_empty() {
        span.record("response_id", job.signed_response_id.as_str());
    }
    let target = target_of(&job)?;

    let Some(mut lock) = RenditionLock::try_acquire(&shared.pool, target.id()).await? else {
        return Ok(Outcome::Busy);
    };
    let outcome = process_locked(shared, message, target, &mut lock).await;
    lock.release().await;
    outcome
}

/// The job's work while this worker holds its target's lock.
async fn process_locked(
    shared: &Shared,
    message: &jetstream::Message,
    target: Target,
    lock: &mut RenditionLock,
) -> Result<Outcome, JobError> {
    match store::current_status(lock.conn(), target).await? {
        // Not committed yet as far as this session can see; the row and its job commit together.
        None => return Err(JobError::NotVisible(target)),
        Some(status) if status == "ready" => return Ok(Outcome::AlreadyReady),
        Some(_) => {}
    }
    let request = match render_request(shared, target).await {
        Ok(request) => request,
        Err(err) => {
            if err.retry() == Retry::Never {
                store::mark_failed(&shared.pool, target, &err.reason()).await?;
            }
            return Err(err);
        }
    };
    store::mark_rendering(lock.conn(), target).await?;

    let rendered = render_with_heartbeat(shared, message, &request).await;
    let pdf = match rendered {
        Ok(pdf) => pdf,
        Err(failure) => {
            let err = JobError::Render(failure);
            if err.retry() == Retry::Never {
                store::mark_failed(&shared.pool, target, &err.reason()).await?;
            }
            return Err(err);
        }
    };
    store::put_pdf(&shared.bucket, &pdf).await?;
    store::mark_ready(lock.conn(), target, &pdf).await?;
    tracing::info!(pages = pdf.pages, bytes = pdf.bytes.len(), sha256 = %pdf.sha256, "rendered");
    Ok(Outcome::Rendered)
}

/// What the sandbox is asked to render for `target`.
async fn render_request(shared: &Shared, target: Target) -> Result<RenderRequest, JobError> {
    match target {
        Target::Rendition(rendition) => {
            let context = document::load(&shared.pool, rendition).await?;
            Ok(RenderRequest {
                template: context.template_body.unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned()),
                data: context.data,
                logo_svg: context.logo_svg,
                date: context.date,
                ident: format!("folio/{}/{}", context.proposal_id, context.proposal_version),
                original_pdf: None,
            })
        }
        Target::SignedCopy(response) => {
            let context = document::load_signed_copy(&shared.pool, response).await?;
            let original = store::get_pdf(&shared.bucket, &context.original_sha256).await?;
            Ok(signed_copy_request(context, original))
        }
    }
}

/// The signed copy's render: the same inputs always give the same bytes.
pub fn signed_copy_request(context: document::SignedCopyContext, original: Vec<u8>) -> RenderRequest {
    RenderRequest {
        template: SIGNED_COPY_TEMPLATE.to_owned(),
        data: context.data,
        logo_svg: None,
        date: context.date,
        ident: format!("folio/{}/{}/signed/{}", context.proposal_id, context.proposal_version, context.response_id),
        original_pdf: Some(original),
    }
}

/// Renders in a sandboxed worker (which enforces the time and memory limits) while telling
/// JetStream the job is still alive, so a long render is not redelivered to another worker.
async fn render_with_heartbeat(
    shared: &Shared,
    message: &jetstream::Message,
    request: &RenderRequest,
) -> Result<render::RenderedPdf, SandboxError> {
    let started = std::time::Instant::now();
    let render = shared.renderers.render(request);
    tokio::pin!(render);
    let beat = (shared.config.ack_wait / 3).max(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            done = &mut render => break done,
            _ = tokio::time::sleep(beat) => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::warn!("failed to send a progress heartbeat: {e}");
                }
            }
        }
    };
    metrics::histogram!("folio_pdf_render_seconds").record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!("folio_pdf_render_failures_total", "reason" => failure_kind(e)).increment(1);
    }
    result
}

fn failure_kind(e: &SandboxError) -> &'static str {
    match e {
        SandboxError::MemoryLimit(_) => "memory",
        SandboxError::TimeLimit(_) => "time",
        SandboxError::Render(_) => "template",
        SandboxError::Crashed(_) | SandboxError::Lost(_) => "crashed",
        SandboxError::Start { .. } => "start",
    }
}

/// Copies the job to the dead-letter stream with the error, then the job is acked. If the copy
/// fails the job is retried instead, so it is never lost.
async fn dead_letter(shared: &Shared, payload: &[u8], reason: &str, delivered: i64) -> AckKind {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(folio_bus::headers::ERROR, header_safe(reason).as_str());
    headers.insert(folio_bus::headers::DELIVERIES, delivered.to_string().as_str());
    let published = shared.js.publish_with_headers(dead_subject(shared), headers, payload.to_vec().into()).await;
    match published {
        Ok(ack) => match ack.await {
            Ok(_) => {
                metrics::counter!("folio_pdf_dead_letters_total").increment(1);
                AckKind::Ack
            }
            Err(e) => {
                tracing::error!("dead-letter stream refused the job: {e}");
                AckKind::Nak(Some(Duration::from_secs(5)))
            }
        },
        Err(e) => {
            tracing::error!("failed to publish to the dead-letter stream: {e}");
            AckKind::Nak(Some(Duration::from_secs(5)))
        }
    }
}

/// Marks the job's rendition (or signed copy) failed, unless a worker is rendering it right now
/// (it holds the lock; its own outcome will be recorded) or it is already ready.
async fn fail_rendition(shared: &Shared, payload: &[u8], reason: &str) {
    let Some(target) = RenderPdfJob::decode(payload).ok().and_then(|j| target_of(&j).ok()) else {
        return;
    };
    match RenditionLock::try_acquire(&shared.pool, target.id()).await {
        Ok(Some(lock)) => {
            if let Err(e) = store::mark_failed(&shared.pool, target, reason).await {
                tracing::error!("failed to mark the {target} failed: {e}");
            }
            lock.release().await;
        }
        Ok(None) => {
            tracing::info!(%target, "being rendered elsewhere; its status is left to that worker")
        }
        Err(e) => tracing::error!("failed to mark the {target} failed: {e}"),
    }
}

/// NATS header values are single-line.
fn header_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(4_000).collect()
}

/// JetStream stops delivering a job after `max_deliver` without telling anyone but this
/// advisory: it happens when every attempt crashed or hung (e.g. a template that exhausts the
/// worker's memory). The job is moved to the dead-letter stream and its rendition marked failed.
pub async fn watch_exhausted_jobs(shared: Arc<Shared>, shutdown: CancellationToken) {
    let config = &shared.config;
    let subject = folio_bus::Subjects::max_deliveries_advisory(&config.bus.jobs_stream, &config.consumer);
    let mut advisories = match shared.nats.queue_subscribe(subject.clone(), "pdf-render".into()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%subject, "failed to watch for exhausted jobs: {e}");
            return;
        }
    };
    loop {
        let advisory = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = advisories.next() => match a { Some(a) => a, None => return },
        };
        #[derive(serde::Deserialize)]
        struct MaxDeliveries {
            stream_seq: u64,
            deliveries: i64,
        }
        let Ok(event) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else { continue };
        let stream = match shared.js.get_stream(&config.bus.jobs_stream).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("failed to open the jobs stream: {e}");
                continue;
            }
        };
        let Ok(job) = stream.get_raw_message(event.stream_seq).await else { continue };
        let reason =
            format!("the render did not finish after {} deliveries (worker crashed or timed out)", event.deliveries);
        tracing::error!(stream_seq = event.stream_seq, %reason, "dead-lettering an exhausted job");
        if matches!(dead_letter(&shared, &job.payload, &reason, event.deliveries).await, AckKind::Ack) {
            fail_rendition(&shared, &job.payload, &reason).await;
            let _ = stream.delete_message(event.stream_seq).await;
        }
    }
}

/// How often the consumer's lag and the dead letters are measured for `/metrics`.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Exports the job consumer's lag (`folio_pdf_consumer_pending`, `…_ack_pending`) and the
/// dead-letter stream's depth (`folio_pdf_dead_letter_messages`) until `shutdown`. Every
/// replica reports the same shared numbers: dashboards take the max over replicas.
pub async fn report_backlog(shared: Arc<Shared>, shutdown: CancellationToken) {
    // The counters alerts watch exist from the start at 0: `increase()` over a series that
    // first appears at 1 misses that first event.
    metrics::counter!("folio_pdf_dead_letters_total").increment(0);
    let config = &shared.config;
    let mut every = tokio::time::interval(BACKLOG_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match folio_bus::backlog::measure(
            &shared.js,
            &config.bus.jobs_stream,
            &config.consumer,
            &config.dead_letter_stream,
        )
        .await
        {
            Ok(backlog) => {
                metrics::gauge!("folio_pdf_consumer_pending").set(backlog.pending as f64);
                metrics::gauge!("folio_pdf_consumer_ack_pending").set(backlog.ack_pending as f64);
                metrics::gauge!("folio_pdf_dead_letter_messages").set(backlog.dead_letters as f64);
            }
            // Before the worker has made its consumer, or while NATS is away: the gauges keep
            // their last value and the worker's own logs say what is wrong.
            Err(e) => tracing::debug!("failed to measure the consumer's backlog: {e}"),
        }
    }
}

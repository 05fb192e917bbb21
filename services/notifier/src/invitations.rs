//! Invitation emails: the pull-consumer loop on `<root>.jobs.invitation`, which proposals-api's
//! InviteMember emits in the invitation's transaction. The job carries the link's clear token,
//! which no table and no change event holds, so the email is sent straight from the job (no
//! `notification_deliveries` row, which is published): acked once the SMTP server took it,
//! redelivered by JetStream after a failure, dropped once the invitation has expired.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use folio_proto::jobs::v1::InvitationEmailJob;
use futures::StreamExt;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
};
use prost::Message as _;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{Ctx, email::escape_html};

/// The job kind InviteMember emits (proposals-api's `store::members::INVITATION_JOB`).
pub const JOB_KIND: &str = "invitation";
/// A failed send is tried again after this long, up to [`MAX_DELIVER`] times.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const MAX_DELIVER: i64 = 20;
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// The SMTP side of invitation emails.
pub struct InvitationMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    message_id_domain: String,
    public_base_url: String,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("the invitee's address {0:?} is invalid")]
    Address(String),
    #[error("failed to build the message")]
    Build(#[from] lettre::error::Error),
    #[error("the SMTP server refused or failed")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

impl InvitationMailer {
    pub fn new(config: &crate::Config) -> Result<Self, crate::Error> {
        let from: Mailbox = config.mail_from.parse().map_err(|_| crate::Error::MailFrom(config.mail_from.clone()))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
            .map_err(crate::Error::Smtp)?
            .timeout(Some(config.smtp_timeout))
            .build();
        Ok(Self {
            message_id_domain: from.email.domain().to_owned(),
            from,
            transport,
            public_base_url: config.public_base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// `<public base>/invite/<token>`.
    pub fn link(&self, token: &str) -> String {
        format!("{}/invite/{token}", self.public_base_url)
    }

    fn message(&self, job: &InvitationEmailJob, expires: &str) -> Result<Message, SendError> {
        let to: Mailbox = job.email.parse().map_err(|_| SendError::Address(job.email.clone()))?;
        let link = self.link(&job.token);
        let (agency, by, role) = (&job.agency_name, &job.invited_by_name, &job.role);
        let subject = format!("{by} invited you to {agency} on Folio");
        let text = format!(
            "{by} invited you to join {agency} on Folio as {role}.\n\nAccept the invitation: {link}\n\n\
             The link works once, until {expires}. If you did not expect it, ignore this email.\n"
        );
        let html = format!(
            "<p>{} invited you to join <b>{}</b> on Folio as {}.</p><p><a href=\"{}\">Accept the invitation</a></p>\
             <p>The link works once, until {}. If you did not expect it, ignore this email.</p>",
            escape_html(by),
            escape_html(agency),
            escape_html(role),
            escape_html(&link),
            escape_html(expires),
        );
        Ok(Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            // The same id on every retry, so a mail system can drop a repeat.
            .message_id(Some(format!("<invitation-{}@{}>", job.invitation_id, self.message_id_domain)))
            .multipart(MultiPart::alternative_plain_html(text, html))?)
    }

    async fn send(&self, job: &InvitationEmailJob, expires: &str) -> Result<(), SendError> {
        let message = self.message(job, expires)?;
        self.transport.send(message).await?;
        Ok(())
    }
}

/// Consumes invitation jobs until `shutdown`; the job in hand is finished first.
pub async fn run(ctx: Arc<Ctx>, nats: async_nats::Client, shutdown: CancellationToken) {
    let js = jetstream::new(nats);
    let config = &ctx.config;
    let stream = loop {
        match js.get_stream(&config.bus.jobs_stream).await {
            Ok(stream) => break stream,
            Err(e) => {
                // wal-ingest declares the jobs stream; wait for it rather than declaring a rival.
                tracing::debug!(stream = %config.bus.jobs_stream, "waiting for the jobs stream: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let name = format!("{}_invitations", config.consumer);
    let consumer = loop {
        let created = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some("notifier: invitation emails".into()),
                    filter_subject: config.bus.subjects().jobs(JOB_KIND),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: config.smtp_timeout + Duration::from_secs(30),
                    max_deliver: MAX_DELIVER,
                    ..Default::default()
                },
            )
            .await;
        match created {
            Ok(consumer) => break consumer,
            Err(e) => {
                tracing::warn!(consumer = %name, "failed to create the invitation consumer: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    tracing::info!(consumer = %name, "notifier consuming invitation jobs");
    loop {
        let pulled = async {
            let mut batch = consumer.fetch().max_messages(1).expires(PULL_EXPIRES).messages().await?;
            batch.next().await.transpose()
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = pulled => next,
        };
        match next {
            Ok(Some(message)) => handle(&ctx, message).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("failed to pull an invitation job: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn handle(ctx: &Ctx, message: jetstream::Message) {
    let delivered = message.info().map(|i| i.delivered).unwrap_or_default();
    let job = match InvitationEmailJob::decode(message.payload.as_ref()) {
        Ok(job) => job,
        Err(e) => {
            // Nothing to retry: an unreadable job stays unreadable.
            tracing::error!("unreadable invitation job, dropped: {e}");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("invitation_job", invitation_id = %job.invitation_id, agency_id = %job.agency_id, delivered);
    folio_bus::trace_context::set_parent_from_job(&span, message.headers.as_ref(), &job.traceparent);
    async {
        let expires_at = job
            .expires_at
            .as_ref()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        if expires_at <= OffsetDateTime::now_utc() {
            tracing::info!("invitation expired before its email went out; dropped");
            let _ = message.ack().await;
            return;
        }
        let expires = crate::fanout::rfc3339(expires_at);
        let ack = match ctx.invitations.send(&job, &expires).await {
            Ok(()) => {
                tracing::info!("invitation email sent");
                AckKind::Ack
            }
            Err(e) if delivered >= MAX_DELIVER => {
                tracing::error!(error = %crate::chain(&e), "invitation email failed for the last time");
                AckKind::Term
            }
            Err(e) => {
                tracing::warn!(error = %crate::chain(&e), "invitation email failed; retrying");
                AckKind::Nak(Some(RETRY_AFTER))
            }
        };
        if let Err(e) = message.ack_with(ack).await {
            tracing::warn!("failed to acknowledge the invitation job: {e}");
        }
    }
    .instrument(span)
    .await
}

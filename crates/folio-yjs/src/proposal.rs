//! One document per proposal: `/v1/yjs/<agency id>/docs/proposals/<proposal id>`, the
//! proposal's content (`Y.Text` [`CONTENT_TEXT`]) edited together, and written back into the
//! proposal in PostgreSQL through proposals-api.
//!
//! - **Who.** The agency's namespace decides as for every document (another agency is refused
//!   before any lookup); the proposal must be the agency's. Every member may open the document
//!   (PUT), read it and show presence; editors and admins write updates; only admins delete.
//! - **Drafts only.** An update is accepted only while the proposal is a draft and not archived
//!   (checked in the database on every POST); otherwise 423 `DOCUMENT_READ_ONLY`.
//! - **Created from the proposal.** A document is created holding the proposal's stored content
//!   (one update by the edge, stored atomically with the creation), so a document lost to
//!   retention, or deleted, starts again from the database.
//! - **Persisted through the API.** Once a document has been quiet for
//!   `--yjs-persist-debounce`, the edge that accepted its last update replays it with `yrs` and
//!   calls `UpdateProposal(content, expected_version)` on proposals-api, the API's own path: its
//!   checks (role, agency, draft only, size), the version bump and the WAL. The call carries a
//!   short-lived token of the member who wrote last (role editor), signed with the secret every
//!   service already shares: the API needs no second kind of credential, and its audit sees who
//!   edited. Why the edge and not a worker: only the edge sees updates arrive (a worker would
//!   follow every document's log for nothing), it already holds the document's lease and can
//!   replay it, and the debounce needs no queue; an edge that dies in the debounce window is
//!   covered by the next open (every PUT reconciles too), which clients do at once on another
//!   edge.
//! - **Never disagreeing.** The record keeps the hash of the content both last agreed on. If the
//!   proposal's content has moved away from it (someone edited it through the API), or the
//!   proposal is no longer a draft (sent while an update was in flight), or the API refuses the
//!   text, the document follows the proposal instead: the edge appends the smallest edit that
//!   makes the text equal to the proposal's. One edge at a time (the document's lease).

use std::{sync::Arc, time::Duration};

use axum::http::Method;
use folio_auth::{Authenticator, Caller, Role};
use folio_domain::{AgencyId, ProposalId, ProposalStatus, UserId};
use folio_durable_streams::{StorageError, StreamError, access::Principal, meta::StreamMeta};
use folio_proto::api::v1::{self as pb, proposal_service_client::ProposalServiceClient};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::time::Instant;
use tonic::{Code, transport::Channel};
use tracing::Instrument as _;
use yrs::encoding::write::Write as _;

use super::{
    Yjs, YjsConfig, compact,
    compactor::CompactError,
    path::DocAddress,
    record::{Change, DocRecord, Stale},
    routes::{octet_headers, stream_request},
};

/// The shared type holding a proposal's content: `doc.getText("content")` in a client.
pub const CONTENT_TEXT: &str = "content";

/// Lifetime of the token a persist calls the API with.
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// Reads and writes per persist when the proposal's version keeps moving under it.
const MAX_ATTEMPTS: u32 = 5;
/// Times a persist that failed or found the document busy is tried again, after 0.5, 1, 2, 4
/// and then 8 s: about a minute in all, longer than the lease of an edge that died holding it.
const MAX_RETRIES: u32 = 10;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LONGEST_RETRY: Duration = Duration::from_secs(8);

/// Where proposal documents are checked and persisted: the database (read) and the API (write).
#[derive(Clone)]
pub struct Proposals {
    pool: PgPool,
    api: ProposalServiceClient<Channel>,
    issuer: Authenticator,
}

impl Proposals {
    /// `pool`: Folio's database; `issuer`: the JWT secret shared with the API. The API is
    /// connected on first use.
    pub fn new(pool: PgPool, config: &YjsConfig, issuer: Authenticator) -> Result<Self, tonic::transport::Error> {
        let endpoint = tonic::transport::Endpoint::from_shared(config.proposals_api.clone())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15));
        Ok(Proposals { pool, api: ProposalServiceClient::new(endpoint.connect_lazy()), issuer })
    }

    pub(crate) async fn load(&self, agency: AgencyId, id: ProposalId) -> Result<Option<ProposalRow>, sqlx::Error> {
        let row: Option<(String, bool, String, i64, uuid::Uuid)> = sqlx::query_as(
            "SELECT status, archived_at IS NOT NULL, content, version, owner_id FROM proposals \
             WHERE id = $1 AND agency_id = $2",
        )
        .bind(id.as_uuid())
        .bind(agency.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(status, archived, content, version, owner)| ProposalRow {
            // The column's CHECK allows only the domain's statuses.
            status: status.parse().ok(),
            archived,
            content,
            version,
            owner: UserId::from(owner),
        }))
    }

    /// `UpdateProposal(content)` as `user`, an editor of `agency`; the new version.
    async fn write(
        &self,
        agency: AgencyId,
        user: UserId,
        id: ProposalId,
        expected_version: i64,
        content: String,
    ) -> Result<i64, tonic::Status> {
        let token = self.issuer.issue(&Caller { user_id: user, agency_id: agency, role: Role::Editor }, TOKEN_TTL);
        let mut request = tonic::Request::new(pb::UpdateProposalRequest {
            id: id.to_string(),
            expected_version,
            content: Some(content),
            ..Default::default()
        });
        let bearer = format!("Bearer {token}").parse().map_err(|_| tonic::Status::internal("unusable token"))?;
        request.metadata_mut().insert("authorization", bearer);
        let response = self.api.clone().update_proposal(request).await?;
        Ok(response.into_inner().proposal.map(|p| p.version).unwrap_or_default())
    }
}

/// What a proposal document needs of its proposal.
pub(crate) struct ProposalRow {
    status: Option<ProposalStatus>,
    archived: bool,
    pub content: String,
    version: i64,
    owner: UserId,
}

impl ProposalRow {
    pub fn accepts_updates(&self) -> bool {
        !self.archived && self.status.is_some_and(ProposalStatus::is_editable)
    }

    /// Why updates are refused, for the 423 body.
    pub fn read_only_reason(&self, id: ProposalId) -> String {
        match (self.archived, self.status) {
            (true, _) => format!("proposal {id} is archived: its document is read-only"),
            (false, Some(status)) => {
                format!("proposal {id} is {status}: only a draft's document accepts updates")
            }
            (false, None) => format!("proposal {id} has an unknown status: its document is read-only"),
        }
    }
}

/// Which way a persist may bring a document and its proposal into agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The document's text is written into the proposal, unless the proposal moved, left
    /// draft or refuses it (then the document follows). `writer`: who wrote last, if known.
    Reconcile { writer: Option<UserId> },
    /// The document follows the proposal if the proposal moved; nothing is ever written into
    /// the proposal.
    Follow,
}

fn count(outcome: &Result<Persisted, PersistError>) {
    let label = match outcome {
        Ok(Persisted::Unchanged) => "unchanged",
        Ok(Persisted::Written { .. }) => "written",
        Ok(Persisted::Restored) => "restored",
        Ok(Persisted::Busy) => "busy",
        Ok(Persisted::Gone) => "gone",
        Err(_) => "failed",
    };
    metrics::counter!("folio_edge_yjs_persists_total", "outcome" => label).increment(1);
}

fn retry_delay(retries: u32) -> Duration {
    (FIRST_RETRY * 2u32.saturating_pow(retries)).min(LONGEST_RETRY)
}

/// A persist waiting for its document to be quiet.
pub(crate) struct Scheduled {
    due: Instant,
    writer: Option<UserId>,
    retries: u32,
}

/// What one persist did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persisted {
    /// The document's text already was the proposal's content.
    Unchanged,
    /// The text was written into the proposal (its new version).
    Written { version: i64 },
    /// The document was made to hold the proposal's content.
    Restored,
    /// Another persist or a compaction holds the document.
    Busy,
    /// The document or its proposal does not exist (any more).
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("this edge serves no proposal documents")]
    Unconfigured,
    #[error("failed to read the document")]
    Document(#[from] CompactError),
    #[error("failed to append to the document")]
    Append(#[from] StreamError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("failed to read the proposal")]
    Database(#[from] sqlx::Error),
    #[error("proposals-api failed: {0}")]
    Api(tonic::Status),
    #[error("the proposal's version kept moving under the persist")]
    Contended,
}

pub(crate) fn digest(content: &str) -> String {
    Sha256::digest(content.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The edge acting in `agency` as an editor: its own appends to a proposal's document (the
/// creation's content, the proposal's content restored).
pub(crate) fn editor_of(agency: AgencyId, user: UserId) -> Principal {
    Principal::Member(Caller { user_id: user, agency_id: agency, role: Role::Editor })
}

/// One lib0 frame holding `update`, as clients POST it.
fn framed(update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(update.len() + 5);
    out.write_buf(update);
    out
}

impl Yjs {
    pub(crate) fn proposals(&self) -> Option<&Proposals> {
        self.proposals.as_ref()
    }

    /// The body of the PUT creating a proposal's document: its stored content, framed.
    pub(crate) fn creation_body(row: &ProposalRow) -> Vec<u8> {
        if row.content.is_empty() { Vec::new() } else { framed(&compact::seed(CONTENT_TEXT, &row.content)) }
    }

    /// After a proposal's document was created from `content`: they agree on it.
    pub(crate) async fn created(&self, doc: &DocAddress, content: &str) {
        let updates = doc.updates();
        let result = match self.live_meta(&updates).await {
            Ok(Some(meta)) => self.agree(&meta, content).await,
            Ok(None) => Ok(()),
            Err(e) => Err(PersistError::Append(e)),
        };
        if let Err(e) = result {
            // The next persist then treats the document as the newer side, which it is not
            // yet: it holds exactly the content, so nothing is written.
            tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to record a new proposal document");
        }
    }

    async fn agree(&self, meta: &StreamMeta, content: &str) -> Result<(), PersistError> {
        let hash = digest(content);
        // `Replace`: a document just created has no record yet, and `meta` was seen live.
        let modified = self
            .records
            .modify(&meta.path, &meta.incarnation, Stale::Replace, |r: &mut DocRecord| {
                if r.persisted.as_deref() == Some(hash.as_str()) {
                    return Change::Keep;
                }
                r.persisted = Some(hash.clone());
                Change::Write
            })
            .await?;
        self.delete_orphan(modified.orphaned_object).await;
        Ok(())
    }

    /// Persists `doc` once it has been quiet for the debounce (`writer`: who wrote last, when
    /// an update is the reason). Never blocks the request.
    pub(crate) fn schedule_persist(self: &Arc<Self>, doc: &DocAddress, writer: Option<UserId>) {
        self.schedule_after(doc.clone(), writer, self.config.persist_debounce, 0);
    }

    /// Makes `doc` follow its proposal's content now, never the other way round: what an edit
    /// through the API, seen on the change stream, asks for. Not merged with a debounced persist
    /// waiting on this edge, which would hold it back for as long as someone types; a busy
    /// lease or a failure is retried as a persist's is.
    pub(crate) fn follow_proposal(self: &Arc<Self>, doc: &DocAddress) {
        let this = Arc::clone(self);
        let doc = doc.clone();
        let span = tracing::info_span!("yjs_follow_proposal", doc = %doc.updates().as_str());
        self.tasks.spawn(
            async move {
                for retries in 0.. {
                    let outcome = this.persist(&doc, Mode::Follow).await;
                    count(&outcome);
                    if !this.retry_later(&outcome, retries) {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(retry_delay(retries)) => {}
                        _ = this.shutdown.cancelled() => return,
                    }
                }
            }
            .instrument(span),
        );
    }

    fn schedule_after(self: &Arc<Self>, doc: DocAddress, writer: Option<UserId>, delay: Duration, retries: u32) {
        let key = doc.updates().as_str().to_owned();
        let due = Instant::now() + delay;
        {
            let mut persists = self.persists.lock();
            if let Some(s) = persists.get_mut(&key) {
                s.due = s.due.max(due);
                s.writer = writer.or(s.writer);
                return;
            }
            persists.insert(key.clone(), Scheduled { due, writer, retries });
        }
        let this = Arc::clone(self);
        let span = tracing::info_span!("yjs_persist", doc = %key);
        self.tasks.spawn(
            async move {
                let (writer, retries) = loop {
                    let Some(due) = this.persists.lock().get(&key).map(|s| s.due) else { return };
                    // On shutdown the persist runs at once, inside the shutdown grace.
                    let stopping = tokio::select! {
                        _ = tokio::time::sleep_until(due) => false,
                        _ = this.shutdown.cancelled() => true,
                    };
                    let mut persists = this.persists.lock();
                    match persists.get(&key) {
                        Some(s) if stopping || s.due <= Instant::now() => {
                            let s = persists.remove(&key).expect("just seen");
                            break (s.writer, s.retries);
                        }
                        Some(_) => continue,
                        None => return,
                    }
                };
                let outcome = this.persist(&doc, Mode::Reconcile { writer }).await;
                count(&outcome);
                if this.retry_later(&outcome, retries) {
                    this.schedule_after(doc, writer, retry_delay(retries), retries + 1);
                }
            }
            .instrument(span),
        );
    }

    /// Whether `outcome` (of the `retries`th retry) is worth another try; logs it.
    fn retry_later(&self, outcome: &Result<Persisted, PersistError>, retries: u32) -> bool {
        match outcome {
            Ok(Persisted::Busy) | Err(_) if retries < MAX_RETRIES && !self.shutdown.is_cancelled() => {
                if let Err(e) = outcome {
                    tracing::warn!(error = %folio_runtime::error_chain(e), retries, "persist failed; trying again");
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %folio_runtime::error_chain(e), "persist failed; giving up");
                false
            }
            Ok(Persisted::Busy) => {
                tracing::error!("the document stayed leased; persist given up");
                false
            }
            Ok(outcome) => {
                tracing::debug!(?outcome, "persisted");
                false
            }
        }
    }

    /// Brings a proposal's document and its proposal into agreement now (what the debounced
    /// persist runs): the document's text is written into the proposal, or the document
    /// follows the proposal (see the module's comment).
    pub async fn persist_document(&self, doc: &DocAddress) -> Result<Persisted, PersistError> {
        self.persist(doc, Mode::Reconcile { writer: None }).await
    }

    async fn persist(&self, doc: &DocAddress, mode: Mode) -> Result<Persisted, PersistError> {
        let proposals = self.proposals.as_ref().ok_or(PersistError::Unconfigured)?;
        let Some((agency, id)) = doc.proposal() else { return Ok(Persisted::Gone) };
        let updates = doc.updates();
        let Some(meta) = self.live_meta(&updates).await? else { return Ok(Persisted::Gone) };
        let Some((lease, record)) = self.lease(updates.as_str(), &meta).await? else { return Ok(Persisted::Busy) };
        let outcome = self.persist_leased(proposals, doc, &meta, &record, (agency, id), mode).await;
        if let Err(e) = self.release(lease).await {
            tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to release a document lease");
        }
        outcome
    }

    async fn persist_leased(
        &self,
        proposals: &Proposals,
        doc: &DocAddress,
        meta: &StreamMeta,
        record: &DocRecord,
        (agency, id): (AgencyId, ProposalId),
        mode: Mode,
    ) -> Result<Persisted, PersistError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(row) = proposals.load(agency, id).await? else { return Ok(Persisted::Gone) };
            let agreed = record.persisted.as_deref();
            // Following only: a proposal still holding what both agreed on has nothing to give
            // (checked before any replay: every edge sees the edit, one restores), and with no
            // agreement on record yet the next open or update decides.
            if mode == Mode::Follow && agreed.is_none_or(|h| h == digest(&row.content)) {
                return Ok(Persisted::Unchanged);
            }
            let stored = self.read_stored(meta, record).await?;
            let target = row.content.clone();
            // The text, and the edit that would make it the proposal's, from one replay.
            let (text, restore) = tokio::task::spawn_blocking(move || {
                let replayed = compact::replay(stored.previous.as_deref(), &stored.messages)?;
                let text = compact::text(&replayed.doc, CONTENT_TEXT);
                let restore = compact::set_text(&replayed.doc, CONTENT_TEXT, &target);
                Ok::<_, compact::CorruptSnapshot>((text, restore))
            })
            .await
            .map_err(CompactError::Panicked)?
            .map_err(CompactError::from)?;
            let Some(restore) = restore else {
                self.agree(meta, &row.content).await?;
                return Ok(Persisted::Unchanged);
            };
            let moved = agreed.is_some_and(|h| h != digest(&row.content));
            let writer = match mode {
                Mode::Reconcile { writer } if !moved && row.accepts_updates() => writer,
                _ => return self.restore(doc, meta, &row, agency, restore).await,
            };
            let user = writer.unwrap_or(row.owner);
            match proposals.write(agency, user, id, row.version, text.clone()).await {
                Ok(version) => {
                    self.agree(meta, &text).await?;
                    return Ok(Persisted::Written { version });
                }
                // A stale version, or the proposal left draft meanwhile: read again.
                Err(status) if matches!(status.code(), Code::Aborted | Code::FailedPrecondition) => continue,
                // The API's rules refuse this text (e.g. its length): the proposal stays as it
                // is, and the document follows it.
                Err(status) if status.code() == Code::InvalidArgument => {
                    tracing::warn!(%id, reason = %status.message(), "the API refused the document's text; restoring the proposal's");
                    return self.restore(doc, meta, &row, agency, restore).await;
                }
                Err(status) => return Err(PersistError::Api(status)),
            }
        }
        Err(PersistError::Contended)
    }

    /// Appends `update` (the edit making the text the proposal's) and records the agreement.
    async fn restore(
        &self,
        doc: &DocAddress,
        meta: &StreamMeta,
        row: &ProposalRow,
        agency: AgencyId,
        update: Vec<u8>,
    ) -> Result<Persisted, PersistError> {
        let body = framed(&update);
        let bytes = body.len() as u64;
        let req = stream_request(Method::POST, octet_headers(), None, body.into());
        self.streams.serve(&editor_of(agency, row.owner), &doc.updates(), req).await?;
        tracing::debug!(bytes, "restored the proposal's content into its document");
        self.agree(meta, &row.content).await?;
        Ok(Persisted::Restored)
    }
}

//! ProposalService: proposals, line items and PDF requests.

use folio_domain::{ClientId, LineItemAmounts, LineItemId, MoneyError, ProposalId, ProposalStatus, TemplateId, UserId};
use folio_proto::api::v1::{self as pb, proposal_service_server::ProposalService};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{
    convert,
    fields::{self, Invalid, Parsed, all},
};
use crate::{
    AppState,
    auth::caller,
    error::ApiError,
    store::{self, proposals as db},
};

const MAX_TITLE: usize = 300;
const MAX_CONTENT: usize = 100_000;
const MAX_TERMS: usize = 20_000;
const MAX_DESCRIPTION: usize = 2_000;
const MAX_LINE_ITEMS_ON_CREATE: usize = 500;
const MAX_IDEMPOTENCY_KEY: usize = 128;

#[derive(Clone)]
pub struct ProposalApi {
    pub state: AppState,
}

fn proposal_id(field: &str, raw: &str) -> Parsed<ProposalId> {
    fields::id(field, raw, ProposalId::parse)
}

fn line_item_id(raw: &str) -> Parsed<LineItemId> {
    fields::id("line_item_id", raw, LineItemId::parse)
}

/// Chunk size of DownloadPdf: well under the default 4 MiB message limit of gRPC clients.
const PDF_CHUNK_BYTES: usize = 64 * 1024;

fn rendition_id(field: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| Invalid::new(field, format!("is not a UUID: {raw:?}")).into())
}

/// The version a write expects, when it names one (0 means any).
fn optional_version(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
}

fn line_item(field: &str, input: pb::LineItemInput) -> Parsed<db::NewLineItem> {
    let amounts =
        LineItemAmounts::parse(input.quantity_milli, input.unit_price_minor, input.tax_rate_ppm).map_err(|e| {
            let leaf = match e {
                MoneyError::Quantity(_) => "quantity_milli",
                MoneyError::UnitPrice(_) => "unit_price_minor",
                _ => "tax_rate_ppm",
            };
            Invalid::new(format!("{field}.{leaf}"), e.to_string())
        });
    let description = fields::text(&format!("{field}.description"), input.description, 1, MAX_DESCRIPTION);
    let (description, amounts) = all((description, amounts))?;
    Ok(db::NewLineItem { description, amounts })
}

fn line_items_on_create(items: Vec<pb::LineItemInput>) -> Parsed<Vec<db::NewLineItem>> {
    let count = items.len();
    let (_, items) = all((
        fields::check(count <= MAX_LINE_ITEMS_ON_CREATE, "line_items", || {
            format!("at most {MAX_LINE_ITEMS_ON_CREATE} line items on create, got {count}")
        }),
        fields::each(items.into_iter().enumerate().map(|(i, item)| line_item(&format!("line_items[{i}]"), item))),
    ))?;
    Ok(items)
}

/// A CreateProposal request: the proposal, and the key that makes retrying it safe.
struct ProposalDraft {
    new: db::NewProposal,
    idempotency: Option<db::IdempotencyKey>,
}

impl TryFrom<pb::CreateProposalRequest> for ProposalDraft {
    type Error = Invalid;

    fn try_from(req: pb::CreateProposalRequest) -> Parsed<Self> {
        // Of the request as sent, so a key reused for a different request is recognised.
        let fingerprint = (!req.idempotency_key.is_empty())
            .then(|| Sha256::digest(req.encode_to_vec()).iter().map(|b| format!("{b:02x}")).collect::<String>());
        let (key, client_id, template_id, title, currency, valid_until, content, terms, line_items) = all((
            fields::text("idempotency_key", req.idempotency_key, 0, MAX_IDEMPOTENCY_KEY),
            fields::id("client_id", &req.client_id, ClientId::parse),
            fields::optional_id("template_id", &req.template_id, TemplateId::parse),
            fields::text("title", req.title, 1, MAX_TITLE),
            fields::currency(req.currency),
            fields::date("valid_until", &req.valid_until),
            fields::text("content", req.content, 0, MAX_CONTENT),
            fields::text("terms", req.terms, 0, MAX_TERMS),
            line_items_on_create(req.line_items),
        ))?;
        Ok(ProposalDraft {
            new: db::NewProposal { client_id, template_id, title, currency, valid_until, content, terms, line_items },
            idempotency: fingerprint.map(|fingerprint| db::IdempotencyKey { key, fingerprint }),
        })
    }
}

impl TryFrom<&pb::ListProposalsRequest> for db::ProposalFilter {
    type Error = Invalid;

    fn try_from(req: &pb::ListProposalsRequest) -> Parsed<Self> {
        let (status, client_id, owner_id) = all((
            pb::ProposalStatus::try_from(req.status)
                .map(convert::status_from_pb)
                .map_err(|_| Invalid::new("status", format!("unknown status {}", req.status))),
            fields::optional_id("client_id", &req.client_id, ClientId::parse),
            fields::optional_id("owner_id", &req.owner_id, UserId::parse),
        ))?;
        Ok(db::ProposalFilter { status, client_id, owner_id, include_archived: req.include_archived })
    }
}

/// An UpdateProposal request: the proposal, the version read, and the fields it sets.
struct ProposalUpdate {
    id: ProposalId,
    expected_version: i64,
    changes: db::ProposalChanges,
}

impl TryFrom<pb::UpdateProposalRequest> for ProposalUpdate {
    type Error = Invalid;

    fn try_from(req: pb::UpdateProposalRequest) -> Parsed<Self> {
        let expected_version = req.expected_version;
        let (id, (), title, currency, content, terms, client_id, valid_until, template_id) = all((
            proposal_id("id", &req.id),
            fields::check(expected_version > 0, "expected_version", || "is required (the version you read)".into()),
            req.title.map(|title| fields::text("title", title, 1, MAX_TITLE)).transpose(),
            req.currency.map(fields::currency).transpose(),
            req.content.map(|content| fields::text("content", content, 0, MAX_CONTENT)).transpose(),
            req.terms.map(|terms| fields::text("terms", terms, 0, MAX_TERMS)).transpose(),
            req.client_id.map(|c| fields::id("client_id", &c, ClientId::parse)).transpose(),
            req.valid_until.map(|d| fields::date("valid_until", &d)).transpose(),
            req.template_id.map(|t| fields::optional_id("template_id", &t, TemplateId::parse)).transpose(),
        ))?;
        let changes = db::ProposalChanges { title, client_id, currency, valid_until, content, terms, template_id };
        Ok(ProposalUpdate { id, expected_version, changes })
    }
}

/// A TransitionProposal request.
struct Transition {
    id: ProposalId,
    to: ProposalStatus,
    expected_version: Option<i64>,
}

impl TryFrom<&pb::TransitionProposalRequest> for Transition {
    type Error = Invalid;

    fn try_from(req: &pb::TransitionProposalRequest) -> Parsed<Self> {
        let to = pb::ProposalStatus::try_from(req.to).ok().and_then(convert::status_from_pb).ok_or_else(|| {
            Invalid::new("to", format!("must be a proposal status other than unspecified, got {}", req.to))
        });
        let (id, to) = all((proposal_id("id", &req.id), to))?;
        Ok(Transition { id, to, expected_version: optional_version(req.expected_version) })
    }
}

/// An AddLineItem request.
struct LineItemDraft {
    proposal: ProposalId,
    item: db::NewLineItem,
    expected_version: Option<i64>,
}

impl TryFrom<pb::AddLineItemRequest> for LineItemDraft {
    type Error = Invalid;

    fn try_from(req: pb::AddLineItemRequest) -> Parsed<Self> {
        let item = match req.line_item {
            Some(input) => line_item("line_item", input),
            None => Err(Invalid::new("line_item", "is required")),
        };
        let (proposal, item) = all((proposal_id("proposal_id", &req.proposal_id), item))?;
        Ok(LineItemDraft { proposal, item, expected_version: optional_version(req.expected_version) })
    }
}

/// An UpdateLineItem request: amounts are checked against the stored item they complete.
struct LineItemUpdate {
    proposal: ProposalId,
    item: LineItemId,
    expected_version: Option<i64>,
    changes: db::LineItemChanges,
}

impl TryFrom<pb::UpdateLineItemRequest> for LineItemUpdate {
    type Error = Invalid;

    fn try_from(req: pb::UpdateLineItemRequest) -> Parsed<Self> {
        let (proposal, item, description) = all((
            proposal_id("proposal_id", &req.proposal_id),
            line_item_id(&req.line_item_id),
            req.description.map(|d| fields::text("description", d, 1, MAX_DESCRIPTION)).transpose(),
        ))?;
        let changes = db::LineItemChanges {
            description,
            quantity_milli: req.quantity_milli,
            unit_price_minor: req.unit_price_minor,
            tax_rate_ppm: req.tax_rate_ppm,
        };
        Ok(LineItemUpdate { proposal, item, expected_version: optional_version(req.expected_version), changes })
    }
}

/// A RemoveLineItem request.
struct LineItemRemoval {
    proposal: ProposalId,
    item: LineItemId,
    expected_version: Option<i64>,
}

impl TryFrom<&pb::RemoveLineItemRequest> for LineItemRemoval {
    type Error = Invalid;

    fn try_from(req: &pb::RemoveLineItemRequest) -> Parsed<Self> {
        let (proposal, item) = all((proposal_id("proposal_id", &req.proposal_id), line_item_id(&req.line_item_id)))?;
        Ok(LineItemRemoval { proposal, item, expected_version: optional_version(req.expected_version) })
    }
}

fn reply(record: &db::ProposalRecord) -> pb::Proposal {
    let span = tracing::Span::current();
    span.record("proposal_id", tracing::field::display(record.proposal.id));
    convert::proposal(record)
}

#[tonic::async_trait]
impl ProposalService for ProposalApi {
    async fn create_proposal(
        &self,
        request: Request<pb::CreateProposalRequest>,
    ) -> Result<Response<pb::CreateProposalResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let ProposalDraft { new, idempotency } = ProposalDraft::try_from(request.into_inner())?;
        let record = db::create(&self.state.pool, caller.agency_id, caller.user_id, new, idempotency).await?;
        Ok(Response::new(pb::CreateProposalResponse { proposal: Some(reply(&record)), txid: record.txid.0 }))
    }

    async fn get_proposal(
        &self,
        request: Request<pb::GetProposalRequest>,
    ) -> Result<Response<pb::GetProposalResponse>, Status> {
        let caller = caller(&request)?;
        let id = proposal_id("id", &request.get_ref().id)?;
        let record = db::get(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::GetProposalResponse { proposal: Some(reply(&record)) }))
    }

    async fn list_proposals(
        &self,
        request: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ListProposalsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let filter = db::ProposalFilter::try_from(&req)?;
        let limit = store::page_size(req.page_size)?;
        let after = store::decode_cursor(&req.page_token)?;
        let (records, next) = db::list(&self.state.pool, caller.agency_id, &filter, after, limit).await?;
        Ok(Response::new(pb::ListProposalsResponse {
            proposals: records.iter().map(convert::proposal).collect(),
            next_page_token: next.map(store::encode_cursor).unwrap_or_default(),
        }))
    }

    async fn update_proposal(
        &self,
        request: Request<pb::UpdateProposalRequest>,
    ) -> Result<Response<pb::UpdateProposalResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let ProposalUpdate { id, expected_version, changes } = ProposalUpdate::try_from(request.into_inner())?;
        let record = db::update(&self.state.pool, caller.agency_id, id, expected_version, changes).await?;
        Ok(Response::new(pb::UpdateProposalResponse { proposal: Some(reply(&record)), txid: record.txid.0 }))
    }

    async fn transition_proposal(
        &self,
        request: Request<pb::TransitionProposalRequest>,
    ) -> Result<Response<pb::TransitionProposalResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let Transition { id, to, expected_version } = Transition::try_from(request.get_ref())?;
        let record = crate::store::client_links::transition(
            &self.state.pool,
            &self.state.client.issuer(),
            caller.agency_id,
            id,
            to,
            expected_version,
        )
        .await?;
        Ok(Response::new(pb::TransitionProposalResponse { proposal: Some(reply(&record)), txid: record.txid.0 }))
    }

    async fn archive_proposal(
        &self,
        request: Request<pb::ArchiveProposalRequest>,
    ) -> Result<Response<pb::ArchiveProposalResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let id = proposal_id("id", &req.id)?;
        let record =
            db::archive(&self.state.pool, caller.agency_id, id, optional_version(req.expected_version)).await?;
        Ok(Response::new(pb::ArchiveProposalResponse { proposal: Some(reply(&record)), txid: record.txid.0 }))
    }

    async fn add_line_item(
        &self,
        request: Request<pb::AddLineItemRequest>,
    ) -> Result<Response<pb::AddLineItemResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let LineItemDraft { proposal, item, expected_version } = LineItemDraft::try_from(request.into_inner())?;
        let committed = db::add_line_item(&self.state.pool, caller.agency_id, proposal, expected_version, item).await?;
        let ((record, item_id), txid) = (committed.value, committed.txid);
        Ok(Response::new(pb::AddLineItemResponse {
            proposal: Some(reply(&record)),
            line_item_id: item_id.to_string(),
            txid: txid.0,
        }))
    }

    async fn update_line_item(
        &self,
        request: Request<pb::UpdateLineItemRequest>,
    ) -> Result<Response<pb::UpdateLineItemResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let LineItemUpdate { proposal, item, expected_version, changes } =
            LineItemUpdate::try_from(request.into_inner())?;
        let pool = &self.state.pool;
        let record = db::update_line_item(pool, caller.agency_id, proposal, item, expected_version, changes).await?;
        Ok(Response::new(pb::UpdateLineItemResponse { proposal: Some(reply(&record)), txid: record.txid.0 }))
    }

    async fn remove_line_item(
        &self,
        request: Request<pb::RemoveLineItemRequest>,
    ) -> Result<Response<pb::RemoveLineItemResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let LineItemRemoval { proposal, item, expected_version } = LineItemRemoval::try_from(request.get_ref())?;
        let record = db::remove_line_item(&self.state.pool, caller.agency_id, proposal, item, expected_version).await?;
        Ok(Response::new(pb::RemoveLineItemResponse { proposal: Some(reply(&record)), txid: record.txid.0 }))
    }

    async fn request_pdf(
        &self,
        request: Request<pb::RequestPdfRequest>,
    ) -> Result<Response<pb::RequestPdfResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let id = proposal_id("proposal_id", &request.get_ref().proposal_id)?;
        tracing::Span::current().record("proposal_id", tracing::field::display(id));
        let traceparent = folio_bus::trace_context::current_traceparent();
        let (pool, requeue_after) = (&self.state.pool, self.state.pdf_requeue_after);
        let r =
            store::renditions::request(pool, caller.agency_id, caller.user_id, id, traceparent, requeue_after).await?;
        Ok(Response::new(pb::RequestPdfResponse {
            rendition_id: r.rendition_id.to_string(),
            proposal_version: r.proposal_version,
            status: convert::rendition_status(&r.status) as i32,
            txid: r.txid.0,
        }))
    }

    async fn get_rendition(
        &self,
        request: Request<pb::GetRenditionRequest>,
    ) -> Result<Response<pb::GetRenditionResponse>, Status> {
        let caller = caller(&request)?;
        let id = rendition_id("id", &request.get_ref().id)?;
        let row = store::renditions::get(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::GetRenditionResponse { rendition: Some(convert::rendition(row)) }))
    }

    type DownloadPdfStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::DownloadPdfResponse, Status>> + Send>>;

    async fn download_pdf(
        &self,
        request: Request<pb::DownloadPdfRequest>,
    ) -> Result<Response<Self::DownloadPdfStream>, Status> {
        use futures::StreamExt as _;
        let caller = caller(&request)?;
        let id = rendition_id("rendition_id", &request.get_ref().rendition_id)?;
        let (row, sha) = crate::pdfs::ready_rendition(&self.state, caller.agency_id, id).await?;
        let object = crate::pdfs::pdf_store(&self.state)?.open(&sha).await?;
        let mut first = Some(convert::rendition(row));
        let chunks =
            tokio_util::io::ReaderStream::with_capacity(object, PDF_CHUNK_BYTES).map(move |chunk| match chunk {
                Ok(bytes) => Ok(pb::DownloadPdfResponse { rendition: first.take(), chunk: bytes.to_vec() }),
                Err(e) => Err(Status::unavailable(format!("failed to read the PDF: {e}"))),
            });
        Ok(Response::new(Box::pin(chunks)))
    }
}

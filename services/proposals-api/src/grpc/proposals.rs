//! ProposalService: proposals, line items and PDF requests.

use folio_domain::{ClientId, Currency, LineItemAmounts, LineItemId, ProposalId, TemplateId, UserId};
use folio_proto::api::v1::{self as pb, proposal_service_server::ProposalService};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::{convert, parse_date};
use crate::{
    AppState,
    auth::caller,
    error::{ApiError, Violations},
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

fn line_item_input(v: &mut Violations, field: &str, input: &pb::LineItemInput) -> Option<db::NewLineItem> {
    v.text(&format!("{field}.description"), &input.description, 1, MAX_DESCRIPTION);
    match LineItemAmounts::parse(input.quantity_milli, input.unit_price_minor, input.tax_rate_ppm) {
        Ok(amounts) => Some(db::NewLineItem { description: input.description.clone(), amounts }),
        Err(e) => {
            let leaf = match e {
                folio_domain::MoneyError::Quantity(_) => "quantity_milli",
                folio_domain::MoneyError::UnitPrice(_) => "unit_price_minor",
                _ => "tax_rate_ppm",
            };
            v.add(format!("{field}.{leaf}"), e.to_string());
            None
        }
    }
}

fn check_currency(v: &mut Violations, raw: &str) {
    if let Err(e) = Currency::parse(raw) {
        v.add("currency", e.to_string());
    }
}

fn proposal_id(field: &str, raw: &str) -> Result<ProposalId, ApiError> {
    let mut v = Violations::default();
    let id = v.id(field, raw, ProposalId::parse);
    v.into_result()?;
    Ok(id.expect("a valid id when there is no violation"))
}

/// Chunk size of DownloadPdf: well under the default 4 MiB message limit of gRPC clients.
const PDF_CHUNK_BYTES: usize = 64 * 1024;

fn rendition_id(field: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| {
        ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new(field, format!("is not a UUID: {raw:?}"))])
    })
}

fn optional_version(v: i64) -> Option<i64> {
    (v != 0).then_some(v)
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
        let req = request.into_inner();
        let mut v = Violations::default();
        v.text("idempotency_key", &req.idempotency_key, 0, MAX_IDEMPOTENCY_KEY);
        let client_id = v.id("client_id", &req.client_id, ClientId::parse);
        let template_id = v.optional_id("template_id", &req.template_id, TemplateId::parse);
        v.text("title", &req.title, 1, MAX_TITLE);
        check_currency(&mut v, &req.currency);
        let valid_until = parse_date(&mut v, "valid_until", &req.valid_until);
        v.text("content", &req.content, 0, MAX_CONTENT);
        v.text("terms", &req.terms, 0, MAX_TERMS);
        v.check(req.line_items.len() <= MAX_LINE_ITEMS_ON_CREATE, "line_items", || {
            format!("at most {MAX_LINE_ITEMS_ON_CREATE} line items on create, got {}", req.line_items.len())
        });
        let line_items: Vec<_> = req
            .line_items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| line_item_input(&mut v, &format!("line_items[{i}]"), item))
            .collect();
        v.into_result()?;
        let idempotency = (!req.idempotency_key.is_empty()).then(|| db::IdempotencyKey {
            key: req.idempotency_key.clone(),
            fingerprint: Sha256::digest(req.encode_to_vec()).iter().map(|b| format!("{b:02x}")).collect(),
        });
        let new = db::NewProposal {
            client_id: client_id.expect("validated"),
            template_id,
            title: req.title,
            currency: req.currency,
            valid_until,
            content: req.content,
            terms: req.terms,
            line_items,
        };
        let record = db::create(&self.state.pool, caller.agency_id, caller.user_id, new, idempotency).await?;
        Ok(Response::new(pb::CreateProposalResponse { proposal: Some(reply(&record)) }))
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
        let mut v = Violations::default();
        let status = pb::ProposalStatus::try_from(req.status).ok();
        v.check(status.is_some(), "status", || format!("unknown status {}", req.status));
        let client_id = v.optional_id("client_id", &req.client_id, ClientId::parse);
        let owner_id = v.optional_id("owner_id", &req.owner_id, UserId::parse);
        v.into_result()?;
        let limit = store::page_size(req.page_size)?;
        let after = store::decode_cursor(&req.page_token)?;
        let filter = db::ProposalFilter {
            status: status.and_then(convert::status_from_pb),
            client_id,
            owner_id,
            include_archived: req.include_archived,
        };
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
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.id("id", &req.id, ProposalId::parse);
        v.check(req.expected_version > 0, "expected_version", || "is required (the version you read)".into());
        if let Some(title) = &req.title {
            v.text("title", title, 1, MAX_TITLE);
        }
        if let Some(currency) = &req.currency {
            check_currency(&mut v, currency);
        }
        if let Some(content) = &req.content {
            v.text("content", content, 0, MAX_CONTENT);
        }
        if let Some(terms) = &req.terms {
            v.text("terms", terms, 0, MAX_TERMS);
        }
        let changes = db::ProposalChanges {
            client_id: req.client_id.as_deref().and_then(|c| v.id("client_id", c, ClientId::parse)),
            valid_until: req.valid_until.as_deref().map(|d| parse_date(&mut v, "valid_until", d)),
            template_id: req.template_id.as_deref().map(|t| v.optional_id("template_id", t, TemplateId::parse)),
            title: req.title,
            currency: req.currency,
            content: req.content,
            terms: req.terms,
        };
        v.into_result()?;
        let id = id.expect("validated");
        let record = db::update(&self.state.pool, caller.agency_id, id, req.expected_version, changes).await?;
        Ok(Response::new(pb::UpdateProposalResponse { proposal: Some(reply(&record)) }))
    }

    async fn transition_proposal(
        &self,
        request: Request<pb::TransitionProposalRequest>,
    ) -> Result<Response<pb::TransitionProposalResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.id("id", &req.id, ProposalId::parse);
        let to = pb::ProposalStatus::try_from(req.to).ok().and_then(convert::status_from_pb);
        v.check(to.is_some(), "to", || format!("must be a proposal status other than unspecified, got {}", req.to));
        v.into_result()?;
        let (id, to) = (id.expect("validated"), to.expect("validated"));
        let record =
            db::transition(&self.state.pool, caller.agency_id, id, to, optional_version(req.expected_version)).await?;
        Ok(Response::new(pb::TransitionProposalResponse { proposal: Some(reply(&record)) }))
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
        Ok(Response::new(pb::ArchiveProposalResponse { proposal: Some(reply(&record)) }))
    }

    async fn add_line_item(
        &self,
        request: Request<pb::AddLineItemRequest>,
    ) -> Result<Response<pb::AddLineItemResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.id("proposal_id", &req.proposal_id, ProposalId::parse);
        let item = match &req.line_item {
            Some(input) => line_item_input(&mut v, "line_item", input),
            None => {
                v.add("line_item", "is required");
                None
            }
        };
        v.into_result()?;
        let (record, item_id) = db::add_line_item(
            &self.state.pool,
            caller.agency_id,
            id.expect("validated"),
            optional_version(req.expected_version),
            item.expect("validated"),
        )
        .await?;
        Ok(Response::new(pb::AddLineItemResponse { proposal: Some(reply(&record)), line_item_id: item_id.to_string() }))
    }

    async fn update_line_item(
        &self,
        request: Request<pb::UpdateLineItemRequest>,
    ) -> Result<Response<pb::UpdateLineItemResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.id("proposal_id", &req.proposal_id, ProposalId::parse);
        let item_id = v.id("line_item_id", &req.line_item_id, LineItemId::parse);
        if let Some(description) = &req.description {
            v.text("description", description, 1, MAX_DESCRIPTION);
        }
        v.into_result()?;
        let changes = db::LineItemChanges {
            description: req.description,
            quantity_milli: req.quantity_milli,
            unit_price_minor: req.unit_price_minor,
            tax_rate_ppm: req.tax_rate_ppm,
        };
        let record = db::update_line_item(
            &self.state.pool,
            caller.agency_id,
            id.expect("validated"),
            item_id.expect("validated"),
            optional_version(req.expected_version),
            changes,
        )
        .await?;
        Ok(Response::new(pb::UpdateLineItemResponse { proposal: Some(reply(&record)) }))
    }

    async fn remove_line_item(
        &self,
        request: Request<pb::RemoveLineItemRequest>,
    ) -> Result<Response<pb::RemoveLineItemResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.id("proposal_id", &req.proposal_id, ProposalId::parse);
        let item_id = v.id("line_item_id", &req.line_item_id, LineItemId::parse);
        v.into_result()?;
        let record = db::remove_line_item(
            &self.state.pool,
            caller.agency_id,
            id.expect("validated"),
            item_id.expect("validated"),
            optional_version(req.expected_version),
        )
        .await?;
        Ok(Response::new(pb::RemoveLineItemResponse { proposal: Some(reply(&record)) }))
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

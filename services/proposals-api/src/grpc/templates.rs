//! TemplateService: an agency's typst templates.

use folio_domain::TemplateId;
use folio_proto::api::v1::{self as pb, template_service_server::TemplateService};
use tonic::{Request, Response, Status};

use super::{
    convert,
    fields::{self, Invalid, Parsed, all},
};
use crate::{
    AppState,
    auth::caller,
    store::{self, templates as db},
};

const MAX_NAME: usize = 200;
/// Templates are untrusted input to the renderer: bounded here, before they are stored.
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct TemplateApi {
    pub state: AppState,
}

fn template_id(raw: &str) -> Parsed<TemplateId> {
    fields::id("id", raw, TemplateId::parse)
}

fn body(body: String) -> Parsed<String> {
    all((
        fields::check(!body.trim().is_empty(), "body", || "is required".into()),
        fields::no_nul("body", &body),
        fields::check(body.len() <= MAX_BODY_BYTES, "body", || {
            format!("must be at most {MAX_BODY_BYTES} bytes, got {}", body.len())
        }),
    ))?;
    Ok(body)
}

/// A CreateTemplate request.
struct NewTemplate {
    name: String,
    body: String,
}

impl TryFrom<pb::CreateTemplateRequest> for NewTemplate {
    type Error = Invalid;

    fn try_from(req: pb::CreateTemplateRequest) -> Parsed<Self> {
        let (name, body) = all((fields::text("name", req.name, 1, MAX_NAME), body(req.body)))?;
        Ok(NewTemplate { name, body })
    }
}

/// An UpdateTemplate request: `None` leaves a field as it is.
struct TemplateUpdate {
    id: TemplateId,
    name: Option<String>,
    body: Option<String>,
}

impl TryFrom<pb::UpdateTemplateRequest> for TemplateUpdate {
    type Error = Invalid;

    fn try_from(req: pb::UpdateTemplateRequest) -> Parsed<Self> {
        let (id, name, body) = all((
            template_id(&req.id),
            req.name.map(|name| fields::text("name", name, 1, MAX_NAME)).transpose(),
            req.body.map(body).transpose(),
        ))?;
        Ok(TemplateUpdate { id, name, body })
    }
}

#[tonic::async_trait]
impl TemplateService for TemplateApi {
    async fn create_template(
        &self,
        request: Request<pb::CreateTemplateRequest>,
    ) -> Result<Response<pb::CreateTemplateResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let NewTemplate { name, body } = NewTemplate::try_from(request.into_inner())?;
        let row = db::create(&self.state.pool, caller.agency_id, name, body).await?;
        Ok(Response::new(pb::CreateTemplateResponse { txid: row.txid.0, template: Some(convert::template(row.value)) }))
    }

    async fn get_template(
        &self,
        request: Request<pb::GetTemplateRequest>,
    ) -> Result<Response<pb::GetTemplateResponse>, Status> {
        let caller = caller(&request)?;
        let id = template_id(&request.get_ref().id)?;
        let row = db::get(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::GetTemplateResponse { template: Some(convert::template(row)) }))
    }

    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let limit = store::page_size(req.page_size)?;
        let after = store::decode_cursor(&req.page_token)?;
        let (rows, next) = db::list(&self.state.pool, caller.agency_id, after, limit).await?;
        Ok(Response::new(pb::ListTemplatesResponse {
            templates: rows.into_iter().map(convert::template).collect(),
            next_page_token: next.map(store::encode_cursor).unwrap_or_default(),
        }))
    }

    async fn update_template(
        &self,
        request: Request<pb::UpdateTemplateRequest>,
    ) -> Result<Response<pb::UpdateTemplateResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let TemplateUpdate { id, name, body } = TemplateUpdate::try_from(request.into_inner())?;
        let row = db::update(&self.state.pool, caller.agency_id, id, name, body).await?;
        Ok(Response::new(pb::UpdateTemplateResponse { txid: row.txid.0, template: Some(convert::template(row.value)) }))
    }

    async fn delete_template(
        &self,
        request: Request<pb::DeleteTemplateRequest>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let id = template_id(&request.get_ref().id)?;
        let deleted = db::delete(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::DeleteTemplateResponse { txid: deleted.txid.0 }))
    }
}

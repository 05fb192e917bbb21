//! TemplateService: an agency's typst templates.

use folio_domain::TemplateId;
use folio_proto::api::v1::{self as pb, template_service_server::TemplateService};
use tonic::{Request, Response, Status};

use super::convert;
use crate::{
    AppState,
    auth::caller,
    error::Violations,
    store::{self, templates as db},
};

const MAX_NAME: usize = 200;
/// Templates are untrusted input to the renderer: bounded here, before they are stored.
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct TemplateApi {
    pub state: AppState,
}

fn template_id(raw: &str) -> Result<TemplateId, Status> {
    let mut v = Violations::default();
    let id = v.id("id", raw, TemplateId::parse);
    v.into_result()?;
    Ok(id.expect("validated"))
}

fn check_body(v: &mut Violations, body: &str) {
    v.check(!body.trim().is_empty(), "body", || "is required".into());
    v.check(body.len() <= MAX_BODY_BYTES, "body", || {
        format!("must be at most {MAX_BODY_BYTES} bytes, got {}", body.len())
    });
}

#[tonic::async_trait]
impl TemplateService for TemplateApi {
    async fn create_template(
        &self,
        request: Request<pb::CreateTemplateRequest>,
    ) -> Result<Response<pb::CreateTemplateResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.text("name", &req.name, 1, MAX_NAME);
        check_body(&mut v, &req.body);
        v.into_result()?;
        let row = db::create(&self.state.pool, caller.agency_id, req.name, req.body).await?;
        Ok(Response::new(pb::CreateTemplateResponse { template: Some(convert::template(row)) }))
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
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.id("id", &req.id, TemplateId::parse);
        if let Some(name) = &req.name {
            v.text("name", name, 1, MAX_NAME);
        }
        if let Some(body) = &req.body {
            check_body(&mut v, body);
        }
        v.into_result()?;
        let row = db::update(&self.state.pool, caller.agency_id, id.expect("validated"), req.name, req.body).await?;
        Ok(Response::new(pb::UpdateTemplateResponse { template: Some(convert::template(row)) }))
    }

    async fn delete_template(
        &self,
        request: Request<pb::DeleteTemplateRequest>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let id = template_id(&request.get_ref().id)?;
        db::delete(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::DeleteTemplateResponse {}))
    }
}

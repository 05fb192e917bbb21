//! ClientService: an agency's clients.

use folio_domain::ClientId;
use folio_proto::api::v1::{self as pb, client_service_server::ClientService};
use tonic::{Request, Response, Status};

use super::{check_email, convert};
use crate::{
    AppState,
    auth::caller,
    error::Violations,
    store::{self, clients as db},
};

const MAX_NAME: usize = 200;

#[derive(Clone)]
pub struct ClientApi {
    pub state: AppState,
}

fn client_id(raw: &str) -> Result<ClientId, Status> {
    let mut v = Violations::default();
    let id = v.id("id", raw, ClientId::parse);
    v.into_result()?;
    Ok(id.expect("validated"))
}

#[tonic::async_trait]
impl ClientService for ClientApi {
    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        v.text("name", &req.name, 1, MAX_NAME);
        check_email(&mut v, "email", &req.email);
        v.text("company", &req.company, 0, MAX_NAME);
        v.into_result()?;
        let fields = db::ClientFields { name: req.name, email: req.email, company: req.company };
        let row = db::create(&self.state.pool, caller.agency_id, fields).await?;
        Ok(Response::new(pb::CreateClientResponse { client: Some(convert::client(row)) }))
    }

    async fn get_client(
        &self,
        request: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::GetClientResponse>, Status> {
        let caller = caller(&request)?;
        let id = client_id(&request.get_ref().id)?;
        let row = db::get(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::GetClientResponse { client: Some(convert::client(row)) }))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let caller = caller(&request)?;
        let req = request.into_inner();
        let limit = store::page_size(req.page_size)?;
        let after = store::decode_cursor(&req.page_token)?;
        let (rows, next) = db::list(&self.state.pool, caller.agency_id, after, limit).await?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: rows.into_iter().map(convert::client).collect(),
            next_page_token: next.map(store::encode_cursor).unwrap_or_default(),
        }))
    }

    async fn update_client(
        &self,
        request: Request<pb::UpdateClientRequest>,
    ) -> Result<Response<pb::UpdateClientResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let id = v.id("id", &req.id, ClientId::parse);
        if let Some(name) = &req.name {
            v.text("name", name, 1, MAX_NAME);
        }
        if let Some(email) = &req.email {
            check_email(&mut v, "email", email);
        }
        if let Some(company) = &req.company {
            v.text("company", company, 0, MAX_NAME);
        }
        v.into_result()?;
        let changes = db::ClientChanges { name: req.name, email: req.email, company: req.company };
        let row = db::update(&self.state.pool, caller.agency_id, id.expect("validated"), changes).await?;
        Ok(Response::new(pb::UpdateClientResponse { client: Some(convert::client(row)) }))
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let id = client_id(&request.get_ref().id)?;
        db::delete(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::DeleteClientResponse {}))
    }
}

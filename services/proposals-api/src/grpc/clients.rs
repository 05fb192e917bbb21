//! ClientService: an agency's clients.

use folio_domain::ClientId;
use folio_proto::api::v1::{self as pb, client_service_server::ClientService};
use tonic::{Request, Response, Status};

use super::{
    convert,
    fields::{self, Parsed, all},
};
use crate::{
    AppState,
    auth::caller,
    store::{self, clients as db},
};

const MAX_NAME: usize = 200;

#[derive(Clone)]
pub struct ClientApi {
    pub state: AppState,
}

fn client_id(raw: &str) -> Parsed<ClientId> {
    fields::id("id", raw, ClientId::parse)
}

impl TryFrom<pb::CreateClientRequest> for db::ClientFields {
    type Error = fields::Invalid;

    fn try_from(req: pb::CreateClientRequest) -> Parsed<Self> {
        let (name, email, company) = all((
            fields::text("name", req.name, 1, MAX_NAME),
            fields::email("email", req.email),
            fields::text("company", req.company, 0, MAX_NAME),
        ))?;
        Ok(db::ClientFields { name, email, company })
    }
}

/// An UpdateClient request: the client and the fields it sets.
struct ClientUpdate {
    id: ClientId,
    changes: db::ClientChanges,
}

impl TryFrom<pb::UpdateClientRequest> for ClientUpdate {
    type Error = fields::Invalid;

    fn try_from(req: pb::UpdateClientRequest) -> Parsed<Self> {
        let (id, name, email, company) = all((
            client_id(&req.id),
            req.name.map(|name| fields::text("name", name, 1, MAX_NAME)).transpose(),
            req.email.map(|email| fields::email("email", email)).transpose(),
            req.company.map(|company| fields::text("company", company, 0, MAX_NAME)).transpose(),
        ))?;
        Ok(ClientUpdate { id, changes: db::ClientChanges { name, email, company } })
    }
}

#[tonic::async_trait]
impl ClientService for ClientApi {
    async fn create_client(
        &self,
        request: Request<pb::CreateClientRequest>,
    ) -> Result<Response<pb::CreateClientResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let fields = db::ClientFields::try_from(request.into_inner())?;
        let row = db::create(&self.state.pool, caller.agency_id, fields).await?;
        Ok(Response::new(pb::CreateClientResponse { txid: row.txid.0, client: Some(convert::client(row.value)) }))
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
        let ClientUpdate { id, changes } = ClientUpdate::try_from(request.into_inner())?;
        let row = db::update(&self.state.pool, caller.agency_id, id, changes).await?;
        Ok(Response::new(pb::UpdateClientResponse { txid: row.txid.0, client: Some(convert::client(row.value)) }))
    }

    async fn delete_client(
        &self,
        request: Request<pb::DeleteClientRequest>,
    ) -> Result<Response<pb::DeleteClientResponse>, Status> {
        let caller = caller(&request)?;
        crate::auth::require_writer(&caller)?;
        let id = client_id(&request.get_ref().id)?;
        let deleted = db::delete(&self.state.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::DeleteClientResponse { txid: deleted.txid.0 }))
    }
}

//! Cross-service tests run proposals-api, wal-ingest and pdf-render in one process through
//! `folio_testkit::Sandbox`, and follow a change hop by hop:
//! API → Postgres → WAL → wal-ingest → JetStream → worker. `Cluster` adds what they share: an
//! agency, its editor and an authenticated API client.

use std::ops::{Deref, DerefMut};

use anyhow::Context;
use folio_domain::{AgencyId, UserId};
use folio_proto::api::v1::proposal_service_client::ProposalServiceClient;
use folio_testkit::{Role, Sandbox};
use proposals_api::{Caller, Role as UserRole};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

pub type Proposals = ProposalServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub struct Cluster {
    pub sandbox: Sandbox,
    pub agency: AgencyId,
    pub editor: UserId,
    pub proposals: Proposals,
}

impl Deref for Cluster {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Self> {
        let sandbox = Sandbox::start(&[Role::WalIngest, Role::PdfRender, Role::Api]).await?;
        let pool = &sandbox.db.pool;
        let agency = proposals_api::tenancy::create_agency(pool, "Northwind Studio", "#0b6e4f").await?;
        let editor =
            proposals_api::tenancy::create_user(pool, agency, "ed@northwind.test", "Ed Itor", UserRole::Editor).await?;
        let token = sandbox.token(&Caller { user_id: editor, agency_id: agency, role: UserRole::Editor });
        let addr = sandbox.addrs.api.context("the API's address")?;
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
        let proposals = ProposalServiceClient::with_interceptor(
            channel,
            Bearer(format!("Bearer {token}").parse().context("token")?),
        );
        Ok(Self { sandbox, agency, editor, proposals })
    }

    /// Stops every service and removes the slot and streams.
    pub async fn stop(self) {
        self.sandbox.stop().await;
    }
}

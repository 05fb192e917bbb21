//! Cross-service tests run proposals-api, wal-ingest and pdf-render in one process through
//! `folio_testkit::Sandbox`, and follow a change hop by hop:
//! API → Postgres → WAL → wal-ingest → JetStream → worker. `Cluster` adds what they share: an
//! agency, its editor and an authenticated API client.

use std::ops::{Deref, DerefMut};

use anyhow::Context;
use folio_domain::{AgencyId, UserId};
use folio_proto::api::v1::{self as pb, proposal_service_client::ProposalServiceClient};
use folio_testkit::{Role, Sandbox};
use proposals_api::{Caller, Role as UserRole};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

pub type Proposals = ProposalServiceClient<InterceptedService<Channel, Bearer>>;

pub use folio_testkit::Bearer;

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
        let proposals = proposals_client(sandbox.addrs.api.context("the API's address")?, &token)?;
        Ok(Self { sandbox, agency, editor, proposals })
    }

    /// Stops every service and removes the slot and streams.
    pub async fn stop(self) {
        self.sandbox.stop().await;
    }
}

/// A ProposalService client for `addr` sending `token` on every call.
pub fn proposals_client(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<Proposals> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    Ok(ProposalServiceClient::with_interceptor(channel, Bearer::new(token)?))
}

/// A client of `agency` (written to the database: clients are not what these tests are about)
/// and a draft proposal for it with one line item, created through the API.
pub async fn draft_proposal(
    api: &mut Proposals,
    pool: &sqlx::PgPool,
    agency: AgencyId,
    title: &str,
    unit_price_minor: i64,
) -> anyhow::Result<pb::Proposal> {
    let suffix = folio_testkit::unique_suffix();
    let client = proposals_api::store::clients::create(
        pool,
        agency,
        proposals_api::store::clients::ClientFields {
            name: "Jordan Reyes".into(),
            email: format!("jordan.{suffix}@acme.example"),
            company: "Acme Robotics".into(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("create client: {e:?}"))?;
    let created = api
        .create_proposal(pb::CreateProposalRequest {
            client_id: client.id.to_string(),
            title: title.into(),
            currency: "EUR".into(),
            line_items: vec![pb::LineItemInput {
                description: "Everything".into(),
                quantity_milli: 1_000,
                unit_price_minor,
                tax_rate_ppm: 190_000,
            }],
            ..Default::default()
        })
        .await?
        .into_inner();
    created.proposal.context("CreateProposal answered no proposal")
}

/// Waits until the rendition is ready (failing at once if it failed) and downloads its PDF
/// through the API; checks the download is whole.
pub async fn rendered_pdf(api: &Proposals, rendition_id: &str) -> anyhow::Result<(pb::Rendition, Vec<u8>)> {
    let rendition = folio_testkit::eventually("the rendition to be ready", || {
        let mut api = api.clone();
        let id = rendition_id.to_owned();
        async move {
            let r = api.get_rendition(pb::GetRenditionRequest { id }).await.ok()?.into_inner().rendition?;
            assert_ne!(r.status(), pb::RenditionStatus::Failed, "render failed: {}", r.failure_reason);
            (r.status() == pb::RenditionStatus::Ready).then_some(r)
        }
    })
    .await;
    let mut download =
        api.clone().download_pdf(pb::DownloadPdfRequest { rendition_id: rendition.id.clone() }).await?.into_inner();
    let mut pdf = Vec::new();
    while let Some(message) = download.message().await? {
        pdf.extend_from_slice(&message.chunk);
    }
    anyhow::ensure!(
        pdf.len() as i64 == rendition.size_bytes,
        "the download is {} bytes, not {}",
        pdf.len(),
        rendition.size_bytes
    );
    anyhow::ensure!(pdf.starts_with(b"%PDF-"), "not a PDF");
    Ok((rendition, pdf))
}

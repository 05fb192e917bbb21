//! A sandbox that runs proposals-api, wal-ingest and pdf-render in one process, on port-0
//! listeners, against one real PostgreSQL (a fresh database) and one real NATS server (unique
//! subject root, stream names and slot), so a test can follow a change hop by hop:
//! API → Postgres → WAL → wal-ingest → JetStream → worker.

use std::time::Duration;

use anyhow::Context;
use folio_domain::{AgencyId, UserId};
use folio_proto::api::v1::proposal_service_client::ProposalServiceClient;
use folio_testkit::TestDb;
use proposals_api::{Authenticator, Caller, Role};
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

const SECRET: &str = "e2e-secret-e2e-secret-e2e-secret-e2e";

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
    pub db: TestDb,
    pub js: async_nats::jetstream::Context,
    pub subject_root: String,
    pub changes_stream: String,
    pub agency: AgencyId,
    pub editor: UserId,
    pub proposals: Proposals,
    slot: String,
    wal: wal_ingest::InProcess,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Self> {
        let db = TestDb::new().await?;
        let nats_url = folio_testkit::nats_url();
        let suffix = folio_testkit::unique_suffix();
        let (root, prefix, slot) = (format!("e{suffix}"), format!("E{suffix}"), format!("e2e_{suffix}"));
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let wal = wal_ingest::Config::for_names(&db.url, &nats_url, &slot, &root, &prefix);
        let changes_stream = wal.changes_stream.clone();
        let jobs_stream = wal.jobs_stream.clone();
        let wal = wal_ingest::InProcess::spawn(wal);
        // Writes made before the slot exists would never reach the stream.
        wal.streaming(Duration::from_secs(30)).await.map_err(anyhow::Error::msg)?;

        let mut pdf = pdf_render::Config::new(db.url.clone(), nats_url.clone());
        pdf.subject_root = root.clone();
        pdf.jobs_stream = jobs_stream;
        pdf.consumer = format!("pdf_{suffix}");
        pdf.dead_letter_stream = format!("{prefix}_DEAD");
        pdf.bucket = format!("pdfs_{suffix}");
        let bucket = pdf.bucket.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = pdf_render::run(pdf, token).await {
                panic!("pdf-render failed: {e}");
            }
        }));

        let mut api = proposals_api::Config::new(db.url.clone(), SECRET);
        api.nats_url = Some(nats_url.clone());
        api.pdf_bucket = bucket;
        api.migrate = false;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = proposals_api::serve(api, listener, token).await {
                panic!("proposals-api failed: {e}");
            }
        }));

        let agency = proposals_api::tenancy::create_agency(&db.pool, "Northwind Studio", "#0b6e4f").await?;
        let editor =
            proposals_api::tenancy::create_user(&db.pool, agency, "ed@northwind.test", "Ed Itor", Role::Editor).await?;
        let caller = Caller { user_id: editor, agency_id: agency, role: Role::Editor };
        let token = Authenticator::new(SECRET.as_bytes()).issue(&caller, Duration::from_secs(600));
        let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
        let proposals = ProposalServiceClient::with_interceptor(
            channel,
            Bearer(format!("Bearer {token}").parse().context("token")?),
        );
        let js = async_nats::jetstream::new(folio_testkit::nats().await?);
        Ok(Self { db, js, subject_root: root, changes_stream, agency, editor, proposals, slot, wal, shutdown, tasks })
    }

    /// Stops every service, then drops the replication slot so it does not pin WAL.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let _ = self.wal.stop().await;
        let _ =
            sqlx::query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1")
                .bind(&self.slot)
                .execute(&self.db.pool)
                .await;
    }
}

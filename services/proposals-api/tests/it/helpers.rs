//! `spawn_app`: the real server on port 0 over a fresh database, with typed clients per role.

use std::time::Duration;

use folio_proto::api::v1::{
    self as pb, client_service_client::ClientServiceClient, proposal_service_client::ProposalServiceClient,
    template_service_client::TemplateServiceClient,
};
use folio_testkit::TestDb;
use proposals_api::{Authenticator, Caller, Config, Role, tenancy};
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, service::interceptor::InterceptedService, transport::Channel};

pub const SECRET: &str = "test-secret-test-secret-test-secret";

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

pub type Proposals = ProposalServiceClient<InterceptedService<Channel, Bearer>>;
pub type Clients = ClientServiceClient<InterceptedService<Channel, Bearer>>;
pub type Templates = TemplateServiceClient<InterceptedService<Channel, Bearer>>;

/// One user's view of the API.
#[derive(Clone)]
pub struct Session {
    pub caller: Caller,
    pub proposals: Proposals,
    pub clients: Clients,
    pub templates: Templates,
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: std::net::SocketAddr,
    pub db: TestDb,
    auth: Authenticator,
    pub channel: Channel,
    pub editor: Session,
    pub viewer: Session,
    /// An editor of a different agency.
    pub outsider: Session,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    pub fn session_token(&self, caller: Caller) -> String {
        self.auth.issue(&caller, Duration::from_secs(600))
    }

    /// `authorization: Bearer <a session token of caller>` on every call of a client.
    pub fn bearer(&self, caller: Caller) -> Bearer {
        Bearer(Some(format!("Bearer {}", self.session_token(caller)).parse().expect("ascii header")))
    }

    /// A session sending `authorization` verbatim (or nothing), for authentication tests.
    pub fn session_with(&self, caller: Caller, authorization: Option<String>) -> Session {
        make_session(&self.channel, caller, authorization)
    }
}

fn make_session(channel: &Channel, caller: Caller, authorization: Option<String>) -> Session {
    let bearer = Bearer(authorization.map(|a| a.parse().expect("ascii header")));
    Session {
        caller,
        proposals: ProposalServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        clients: ClientServiceClient::with_interceptor(channel.clone(), bearer.clone()),
        templates: TemplateServiceClient::with_interceptor(channel.clone(), bearer),
    }
}

fn signed_session(channel: &Channel, auth: &Authenticator, caller: Caller) -> Session {
    let token = auth.issue(&caller, Duration::from_secs(600));
    make_session(channel, caller, Some(format!("Bearer {token}")))
}

pub async fn spawn_app() -> TestApp {
    let db = TestDb::new().await.expect("test database");
    let mut config = Config::new(db.url.clone(), SECRET);
    config.common.shutdown_grace = Duration::from_secs(1);
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    let api = proposals_api::bind(config).await.expect("bind the API");
    let addr = api.addr();
    let admin_addr = api.admin_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(api.run(shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();

    let pool = &db.pool;
    let agency = tenancy::create_agency(pool, "Northwind Studio", "#0b6e4f").await.unwrap();
    let editor = tenancy::create_user(pool, agency, "ed@northwind.test", "Ed Itor", Role::Editor).await.unwrap();
    let viewer = tenancy::create_user(pool, agency, "vi@northwind.test", "Vi Ewer", Role::Viewer).await.unwrap();
    let other_agency = tenancy::create_agency(pool, "Contoso", "#aa3300").await.unwrap();
    let outsider =
        tenancy::create_user(pool, other_agency, "out@contoso.test", "Out Sider", Role::Editor).await.unwrap();

    let auth = Authenticator::new(SECRET.as_bytes());
    let session = |user_id, agency_id, role| signed_session(&channel, &auth, Caller { user_id, agency_id, role });
    let app = TestApp {
        editor: session(editor, agency, Role::Editor),
        viewer: session(viewer, agency, Role::Viewer),
        outsider: session(outsider, other_agency, Role::Editor),
        addr,
        admin_addr,
        db,
        auth: auth.clone(),
        channel: channel.clone(),
        shutdown,
    };
    wait_until_serving(&app).await;
    app
}

async fn wait_until_serving(app: &TestApp) {
    let mut clients = app.editor.clients.clone();
    folio_testkit::eventually("the API to serve", || {
        let mut clients = clients.clone();
        async move { clients.list_clients(pb::ListClientsRequest::default()).await.ok().map(|_| ()) }
    })
    .await;
    clients.list_clients(pb::ListClientsRequest::default()).await.expect("serving");
}

pub async fn create_client(session: &Session, name: &str) -> pb::Client {
    session
        .clients
        .clone()
        .create_client(pb::CreateClientRequest {
            name: name.into(),
            email: format!("{}@client.test", name.to_lowercase().replace(' ', ".")),
            company: format!("{name} Ltd"),
        })
        .await
        .expect("create client")
        .into_inner()
        .client
        .unwrap()
}

pub fn item(description: &str, quantity_milli: i64, unit_price_minor: i64, tax_rate_ppm: i64) -> pb::LineItemInput {
    pb::LineItemInput { description: description.into(), quantity_milli, unit_price_minor, tax_rate_ppm }
}

pub async fn create_proposal(
    session: &Session,
    client: &pb::Client,
    title: &str,
    items: Vec<pb::LineItemInput>,
) -> pb::Proposal {
    session
        .proposals
        .clone()
        .create_proposal(pb::CreateProposalRequest {
            client_id: client.id.clone(),
            title: title.into(),
            currency: "EUR".into(),
            valid_until: "2027-01-31".into(),
            content: "We will redesign your website.".into(),
            terms: "50 % upfront.".into(),
            line_items: items,
            ..Default::default()
        })
        .await
        .expect("create proposal")
        .into_inner()
        .proposal
        .unwrap()
}

/// A private logical replication slot on the test database: it sees exactly what wal-ingest
/// will see, here the render jobs `RequestPdf` writes into the WAL.
pub struct JobSlot {
    name: String,
    pool: sqlx::PgPool,
}

impl JobSlot {
    pub async fn create(pool: &sqlx::PgPool) -> Self {
        let name = format!("t_{}", folio_testkit::unique_suffix());
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&name)
            .execute(pool)
            .await
            .unwrap();
        Self { name, pool: pool.clone() }
    }

    /// Every PDF job committed since the slot was created, in commit order.
    pub async fn pdf_jobs(&self) -> Vec<folio_proto::jobs::v1::RenderPdfJob> {
        let messages: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', \
             'publication_names', 'folio_changes', 'messages', 'true')",
        )
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        // pgoutput message 'M': flags, lsn, prefix\0, length, content.
        messages
            .iter()
            .filter(|m| m.first() == Some(&b'M'))
            .filter_map(|m| {
                let rest = &m[1 + 1 + 8..];
                let nul = rest.iter().position(|b| *b == 0)?;
                let (prefix, rest) = (std::str::from_utf8(&rest[..nul]).ok()?, &rest[nul + 1..]);
                (prefix == folio_bus::subjects::job_message_prefix("pdf"))
                    .then(|| prost::Message::decode(&rest[4..]).expect("a RenderPdfJob"))
            })
            .collect()
    }

    pub async fn drop(self) {
        sqlx::query("SELECT pg_drop_replication_slot($1)").bind(&self.name).execute(&self.pool).await.unwrap();
    }
}

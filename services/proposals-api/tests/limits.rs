//! The API's rate limits against a real PostgreSQL and a real NATS, through a real gRPC client.

use std::time::{Duration, Instant};

use folio_domain::{AgencyId, UserId};
use folio_proto::api::v1::{self as pb, client_service_client::ClientServiceClient};
use folio_testkit::TestDb;
use proposals_api::{Authenticator, Caller, Config, Role, tenancy};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const SECRET: &str = "test-secret-test-secret-test-secret";

struct App {
    db: TestDb,
    channel: Channel,
    auth: Authenticator,
    bucket: String,
    shutdown: CancellationToken,
}

impl App {
    /// The API with limits on, over a rate bucket of its own.
    async fn spawn(agency_writes_per_sec: u32, user_writes_per_sec: u32) -> Self {
        let db = TestDb::new().await.expect("test database");
        let mut config = Config::new(db.url.clone(), SECRET);
        config.listen_addr = "127.0.0.1:0".parse().unwrap();
        config.common.shutdown_grace = Duration::from_secs(1);
        config.bus.nats_url = folio_testkit::nats_url();
        config.limits.rate_limits = true;
        config.limits.agency_writes_per_sec = agency_writes_per_sec;
        config.limits.user_writes_per_sec = user_writes_per_sec;
        let bucket = format!("test-rates-{}", folio_testkit::unique_suffix());
        config.limits.quota.rate_bucket = bucket.clone();
        let api = proposals_api::bind(config).await.expect("bind the API");
        let channel = Channel::from_shared(format!("http://{}", api.addr())).unwrap().connect_lazy();
        let shutdown = CancellationToken::new();
        tokio::spawn(api.run(shutdown.clone()));
        Self { db, channel, auth: Authenticator::new(SECRET.as_bytes()), bucket, shutdown }
    }

    async fn agency(&self, name: &str) -> AgencyId {
        tenancy::create_agency(&self.db.pool, name, "#000000").await.unwrap()
    }

    async fn editor(&self, agency: AgencyId) -> Caller {
        let email = format!("{}@agency.test", folio_testkit::unique_suffix());
        let user: UserId = tenancy::create_user(&self.db.pool, agency, &email, "Ed", Role::Editor).await.unwrap();
        Caller { user_id: user, agency_id: agency, role: Role::Editor }
    }

    fn request<T>(&self, caller: &Caller, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let token = self.auth.issue(caller, Duration::from_secs(600));
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    async fn write(&self, caller: &Caller) -> Result<(), tonic::Status> {
        let request = self.request(
            caller,
            pb::CreateClientRequest {
                name: "Flood".into(),
                email: format!("{}@client.test", folio_testkit::unique_suffix()),
                company: String::new(),
            },
        );
        ClientServiceClient::new(self.channel.clone()).create_client(request).await.map(|_| ())
    }

    async fn read(&self, caller: &Caller) -> Result<(), tonic::Status> {
        let request = self.request(caller, pb::ListClientsRequest::default());
        ClientServiceClient::new(self.channel.clone()).list_clients(request).await.map(|_| ())
    }

    /// Writes from each of `callers` (two tasks each) for `duration`: (admitted, refusals).
    async fn flood(&self, callers: &[Caller], duration: Duration) -> (u32, Vec<tonic::Status>) {
        let until = Instant::now() + duration;
        let tasks = callers.iter().flat_map(|c| [c, c]).map(|caller| async move {
            let (mut admitted, mut refused) = (0, Vec::new());
            while Instant::now() < until {
                match self.write(caller).await {
                    Ok(()) => admitted += 1,
                    Err(status) => refused.push(status),
                }
            }
            (admitted, refused)
        });
        let mut total = (0, Vec::new());
        for (admitted, refused) in futures::future::join_all(tasks).await {
            total.0 += admitted;
            total.1.extend(refused);
        }
        total
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let js = async_nats::jetstream::new(folio_testkit::nats().await.unwrap());
        let _ = js.delete_key_value(&self.bucket).await;
    }
}

fn assert_refused_by(status: &tonic::Status, subject: &str) {
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let delay = details.retry_info().and_then(|r| r.retry_delay).expect("RetryInfo with a delay");
    assert!(delay > Duration::ZERO && delay <= Duration::from_secs(1), "retry in {delay:?}");
    let violations = &details.quota_failure().expect("QuotaFailure").violations;
    assert_eq!(violations[0].subject, subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agency_flooding_writes_gets_resource_exhausted_with_retry_info() {
    // 5 writes/s per agency (bursts of 10); the users' own limits are far above it.
    let app = App::spawn(5, 1_000).await;
    let flooding = app.agency("Flooding").await;
    let (ed, al) = (app.editor(flooding).await, app.editor(flooding).await);
    let other_agency = app.agency("Quiet").await;
    let quiet = app.editor(other_agency).await;

    let window = Duration::from_millis(1_500);
    let flooders = [ed, al];
    let flood = app.flood(&flooders, window);
    // While the flood is on: the other agency writes, the flooding agency still reads.
    let others = async {
        let mut results = Vec::new();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            results.push((app.write(&quiet).await, app.read(&flooders[0]).await));
        }
        results
    };
    let ((admitted, refused), others) = tokio::join!(flood, others);
    app.stop().await;

    assert!(!refused.is_empty(), "the flood was never refused ({admitted} admitted)");
    // Burst 10 + 5/s over 1.5 s, plus the stated error (1.5 leases of 1 token each).
    assert!(admitted <= 10 + 8 + 2, "{admitted} writes admitted");
    for status in &refused {
        assert_refused_by(status, &format!("agency:{flooding}:api-writes"));
    }
    for (write, read) in others {
        write.expect("another agency's writes are unaffected");
        read.expect("the flooding agency's reads have their own budget");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_own_write_limit_leaves_its_colleagues_writing() {
    let app = App::spawn(1_000, 5).await;
    let agency = app.agency("Shared").await;
    let (noisy, colleague) = (app.editor(agency).await, app.editor(agency).await);

    let (admitted, refused) = app.flood(std::slice::from_ref(&noisy), Duration::from_millis(1_000)).await;
    let colleague_wrote = app.write(&colleague).await;
    app.stop().await;

    assert!(admitted <= 10 + 5 + 2, "{admitted} writes admitted");
    assert!(!refused.is_empty());
    for status in &refused {
        assert_refused_by(status, &format!("token:{}:api-writes", noisy.user_id));
    }
    colleague_wrote.expect("a colleague has a budget of their own");
}

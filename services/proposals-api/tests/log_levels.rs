//! Issue 13, finding 10: a stranger's calls — no token, a made-up method, an id that does not
//! exist — were each logged at ERROR with the full path, so anyone could flood the error log
//! and bury a real fault. Callers' mistakes are now DEBUG; ERROR is for the server's own.
//! One test in its own binary: it installs the process's global subscriber.

use std::sync::{Arc, Mutex};

use folio_domain::{AgencyId, UserId};
use folio_proto::api::v1::{self as pb, client_service_client::ClientServiceClient};
use folio_testkit::TestDb;
use proposals_api::{Authenticator, Caller, Config, Role};
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, transport::Channel};
use tracing_subscriber::{Layer, layer::SubscriberExt};

const SECRET: &str = "test-secret-test-secret-test-secret";

/// Every ERROR event of the process, as its target and fields.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> Layer<S> for Errors {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            let mut fields = String::new();
            event.record(&mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                fields.push_str(&format!("{}={value:?} ", field.name()));
            });
            self.0.lock().unwrap().push(format!("{}: {fields}", event.metadata().target()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_calls_without_a_token_or_to_missing_things_are_not_logged_as_errors() {
    let errors = Errors::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(errors.clone())).unwrap();

    let db = TestDb::new().await.expect("test database");
    let mut config = Config::new(db.url.clone(), SECRET);
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    let api = proposals_api::bind(config).await.expect("bind the API");
    let channel = Channel::from_shared(format!("http://{}", api.addr())).unwrap().connect_lazy();
    let shutdown = CancellationToken::new();
    tokio::spawn(api.run(shutdown.clone()));

    let mut anonymous = ClientServiceClient::new(channel.clone());
    let token = Authenticator::new(SECRET.as_bytes()).issue(
        &Caller { user_id: UserId::new(), agency_id: AgencyId::new(), role: Role::Editor },
        std::time::Duration::from_secs(60),
    );
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let mut signed = ClientServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", bearer.clone());
        Ok(request)
    });
    folio_testkit::eventually("the API to answer", || {
        let mut anonymous = anonymous.clone();
        async move { anonymous.list_clients(pb::ListClientsRequest::default()).await.err().map(|_| ()) }
    })
    .await;

    for _ in 0..20 {
        let status = anonymous.list_clients(pb::ListClientsRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let missing = pb::GetClientRequest { id: folio_domain::ClientId::new().to_string() };
        let status = signed.get_client(missing).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        let status = signed.get_client(pb::GetClientRequest { id: "not-an-id".into() }).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
    shutdown.cancel();
    let logged = errors.0.lock().unwrap().clone();
    assert!(logged.is_empty(), "callers' mistakes were logged at ERROR: {logged:#?}");
}

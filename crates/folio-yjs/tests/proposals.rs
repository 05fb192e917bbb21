//! Proposal documents (issue 17) against the real proposals-api and PostgreSQL (a sandbox:
//! fresh database, the API on port 0) and real JetStream, the Yjs route served in process as
//! shape-edge mounts it: created from the proposal, edited by editors only, persisted into the
//! proposal through the API after the debounce, following the proposal when it changed through
//! the API or was sent, read-only once sent.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use clap::Parser;
use folio_auth::{Caller, Role};
use folio_domain::AgencyId;
use folio_durable_streams::Streams;
use folio_proto::api::v1::{
    self as pb, client_service_client::ClientServiceClient, proposal_service_client::ProposalServiceClient,
};
use folio_testkit::{
    Bearer,
    sandbox::{JWT_SECRET, Sandbox},
};
use folio_yjs::{
    Yjs,
    path::DocAddress,
    proposal::{Persisted, Proposals},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::{service::interceptor::InterceptedService, transport::Channel};
use tower::ServiceExt;
use yrs::{
    Doc, ReadTxn, Text, Transact, Update,
    encoding::{read::Cursor, read::Read, write::Write},
    updates::decoder::Decode,
};

mod common;
use common::{Args, text};

struct Cluster {
    sandbox: Sandbox,
    yjs: Arc<Yjs>,
    router: Router,
    prefix: String,
    shutdown: CancellationToken,
    api: Channel,
    agency: AgencyId,
    editor: Caller,
    viewer: Caller,
    admin: Caller,
    outsider: Caller,
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("JSON body: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

impl Cluster {
    async fn start(debounce: &str) -> Cluster {
        Self::start_with(debounce, false).await
    }

    /// `changes`: wal-ingest publishes the sandbox's changes, and the edge follows proposals.
    async fn start_with(debounce: &str, changes: bool) -> Cluster {
        let mut sandbox = Sandbox::new().await.unwrap();
        if changes {
            sandbox.start_wal_ingest(sandbox.wal_ingest_config()).await.unwrap();
        }
        let addr = sandbox.start_api(sandbox.api_config()).await.unwrap();
        let pool = sandbox.db.pool.clone();
        let agency = proposals_api::tenancy::create_agency(&pool, "Northwind", "#0b6e4f").await.unwrap();
        let other = proposals_api::tenancy::create_agency(&pool, "Contoso", "#aa3300").await.unwrap();
        let user = |agency, email: &'static str, role| {
            let pool = pool.clone();
            async move {
                let id = proposals_api::tenancy::create_user(&pool, agency, email, email, role).await.unwrap();
                Caller { user_id: id, agency_id: agency, role }
            }
        };
        let editor = user(agency, "ed@northwind.test", Role::Editor).await;
        let viewer = user(agency, "vi@northwind.test", Role::Viewer).await;
        let admin = user(agency, "ad@northwind.test", Role::Admin).await;
        let outsider = user(other, "out@contoso.test", Role::Admin).await;

        let prefix = format!("yjsp_{}", sandbox.suffix);
        let url = folio_testkit::nats_url();
        let api_url = format!("http://{addr}");
        let mut args = Args::parse_from([
            "edge",
            "--ds-prefix",
            &prefix,
            "--ds-quotas",
            "off",
            "--nats-url",
            &url,
            "--jwt-secret",
            JWT_SECRET,
            "--yjs-proposals-api",
            &api_url,
            "--yjs-persist-debounce",
            debounce,
            "--ds-long-poll-timeout",
            "5s",
        ]);
        args.bus = sandbox.bus.clone();
        let (options, reconnects) = folio_live::Reconnects::options("folio-yjs-proposals-test");
        let nats = options.connect(&args.bus.nats_url).await.unwrap();
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let streams = Streams::start(
            nats,
            args.streams.clone(),
            None,
            &args.bus,
            reconnects.clone(),
            shutdown.clone(),
            tasks.clone(),
        )
        .await
        .unwrap();
        let proposals = Proposals::new(pool, &args.yjs, args.streams.jwt.authenticator()).unwrap();
        let yjs = Yjs::start_with_proposals(streams, args.yjs, &prefix, Some(proposals), shutdown.clone(), tasks)
            .await
            .unwrap();
        if changes {
            yjs.follow_proposal_edits(&args.bus, &reconnects).await;
        }
        let api = Channel::from_shared(api_url).unwrap().connect_lazy();
        Cluster {
            sandbox,
            router: folio_yjs::router(yjs.clone()),
            yjs,
            prefix,
            shutdown,
            api,
            agency,
            editor,
            viewer,
            admin,
            outsider,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let js = async_nats::jetstream::new(folio_testkit::nats().await.unwrap());
        for stream in [
            format!("{}_streams", self.prefix),
            format!("KV_{}_meta", self.prefix),
            format!("OBJ_{}_yjs_snapshots", self.prefix),
        ] {
            let _ = js.delete_stream(stream).await;
        }
        self.sandbox.stop().await;
    }

    fn proposals(&self, caller: &Caller) -> ProposalServiceClient<InterceptedService<Channel, Bearer>> {
        ProposalServiceClient::with_interceptor(self.api.clone(), Bearer::new(&self.sandbox.token(caller)).unwrap())
    }

    async fn create_proposal(&self, content: &str) -> pb::Proposal {
        let clients = ClientServiceClient::with_interceptor(
            self.api.clone(),
            Bearer::new(&self.sandbox.token(&self.editor)).unwrap(),
        );
        let client = folio_testkit::eventually("the API to serve", || {
            let mut clients = clients.clone();
            async move {
                clients
                    .create_client(pb::CreateClientRequest {
                        name: "Acme".into(),
                        email: "buyer@acme.test".into(),
                        company: "Acme".into(),
                    })
                    .await
                    .ok()
            }
        })
        .await;
        let client = client.into_inner().client.unwrap();
        let created = self
            .proposals(&self.editor)
            .create_proposal(pb::CreateProposalRequest {
                client_id: client.id,
                title: "Website redesign".into(),
                currency: "EUR".into(),
                content: content.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        created.into_inner().proposal.unwrap()
    }

    async fn proposal(&self, id: &str) -> pb::Proposal {
        let got = self.proposals(&self.viewer).get_proposal(pb::GetProposalRequest { id: id.into() }).await.unwrap();
        got.into_inner().proposal.unwrap()
    }

    fn doc_url(&self, proposal: &str) -> String {
        format!("/v1/yjs/{}/docs/proposals/{proposal}", self.agency)
    }

    async fn send(&self, method: Method, uri: &str, caller: Option<&Caller>, body: Vec<u8>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri).header("content-type", "application/octet-stream");
        if let Some(caller) = caller {
            req = req.header("authorization", format!("Bearer {}", self.sandbox.token(caller)));
        }
        let res = self.router.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec();
        Answer { status, headers, body }
    }

    /// The document as a reader sees it: every update from the start.
    async fn load(&self, proposal: &str, caller: &Caller) -> Doc {
        self.load_with_offset(proposal, caller).await.0
    }

    /// As [`Cluster::load`], with the offset a reader continues from.
    async fn load_with_offset(&self, proposal: &str, caller: &Caller) -> (Doc, String) {
        let doc = Doc::new();
        let res = self.send(Method::GET, &format!("{}?offset=-1", self.doc_url(proposal)), Some(caller), vec![]).await;
        assert_eq!(res.status, StatusCode::OK);
        apply_frames(&doc, &res.body);
        (doc, next_offset(&res))
    }
}

impl Cluster {
    /// Rewrites the proposal's content through the API while a reader waits live on its
    /// document from `offset`; the reader's answer (200: the document moved) and the proposal.
    async fn api_edit_while_waiting(
        &self,
        proposal: &str,
        offset: &str,
        expected_version: i64,
        content: &str,
    ) -> (Answer, pb::Proposal) {
        let live = format!("{}?offset={offset}&live=long-poll", self.doc_url(proposal));
        let waiting = folio_testkit::eventually("the API edit at a waiting reader", || {
            let live = &live;
            async move {
                Some(self.send(Method::GET, live, Some(&self.viewer), vec![]).await)
                    .filter(|a| a.status != StatusCode::NO_CONTENT)
            }
        });
        let edit = async {
            let request = pb::UpdateProposalRequest {
                id: proposal.to_owned(),
                expected_version,
                content: Some(content.to_owned()),
                ..Default::default()
            };
            self.proposals(&self.editor).update_proposal(request).await.unwrap().into_inner().proposal.unwrap()
        };
        let (arrived, updated) = tokio::join!(waiting, edit);
        assert_eq!(arrived.status, StatusCode::OK, "the waiting reader is answered with the edit");
        (arrived, updated)
    }
}

fn next_offset(res: &Answer) -> String {
    res.headers["stream-next-offset"].to_str().unwrap().to_owned()
}

/// Applies lib0-framed updates, as a reader receives them.
fn apply_frames(doc: &Doc, body: &[u8]) {
    let mut cursor = Cursor::new(body);
    let mut txn = doc.transact_mut();
    while cursor.has_content() {
        txn.apply_update(Update::decode_v1(cursor.read_buf().unwrap()).unwrap()).unwrap();
    }
}

/// An edit of `doc` appending `s`, lib0-framed as the provider POSTs it.
fn append(doc: &Doc, s: &str) -> Vec<u8> {
    let t = doc.get_or_insert_text("content");
    let before = doc.transact().state_vector();
    {
        let mut txn = doc.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, len, s);
    }
    let mut framed = Vec::new();
    framed.write_buf(doc.transact().encode_state_as_update_v1(&before));
    framed
}

#[tokio::test]
async fn a_proposal_document_is_the_proposals_content_edited_by_its_agencys_editors() {
    let c = Cluster::start("200ms").await;
    let proposal = c.create_proposal("Intro paragraph.").await;
    let url = c.doc_url(&proposal.id);

    // Another agency cannot name it; an unknown or malformed proposal is no document.
    assert_eq!(c.send(Method::PUT, &url, Some(&c.outsider), vec![]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.send(Method::GET, &format!("{url}?offset=-1"), Some(&c.outsider), vec![]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(c.send(Method::PUT, &url, None, vec![]).await.status, StatusCode::UNAUTHORIZED);
    let unknown =
        c.send(Method::PUT, &c.doc_url(&folio_domain::ProposalId::new().to_string()), Some(&c.editor), vec![]).await;
    assert_eq!(
        (unknown.status, unknown.json()["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("PROPOSAL_NOT_FOUND"))
    );
    let malformed = c.send(Method::PUT, &c.doc_url("not-an-id"), Some(&c.editor), vec![]).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);

    // A viewer opens it (the provider PUTs on every connect): created holding the content.
    assert_eq!(c.send(Method::PUT, &url, Some(&c.viewer), vec![]).await.status, StatusCode::CREATED);
    assert_eq!(c.send(Method::PUT, &url, Some(&c.editor), vec![]).await.status, StatusCode::OK);
    let doc = c.load(&proposal.id, &c.editor).await;
    assert_eq!(text(&doc), "Intro paragraph.");

    // Editors write, viewers and strangers do not.
    let edit = append(&doc, " An edited sentence about the launch.");
    let refused = c.send(Method::POST, &url, Some(&c.viewer), edit.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.json()["error"]["message"].as_str().unwrap_or_default().contains("viewer may not write"),
        "{:?}",
        refused.json()
    );
    assert_eq!(c.send(Method::POST, &url, Some(&c.outsider), edit.clone()).await.status, StatusCode::FORBIDDEN);
    assert!(c.send(Method::POST, &url, Some(&c.editor), edit).await.status.is_success());

    // After the debounce the proposal holds the document's text, through the API: a new version.
    let expected = "Intro paragraph. An edited sentence about the launch.";
    let persisted = folio_testkit::eventually("the document's text in the proposal", || {
        let c = &c;
        let id = proposal.id.clone();
        async move { Some(c.proposal(&id).await).filter(|p| p.content == expected) }
    })
    .await;
    assert_eq!(persisted.version, proposal.version + 1);
    assert_eq!(text(&c.load(&proposal.id, &c.viewer).await), expected);
    let doc_address = DocAddress::parse(&url).unwrap();
    assert_eq!(c.yjs.persist_document(&doc_address).await.unwrap(), Persisted::Unchanged);

    // Changed through the API: the document follows the proposal (on the next open).
    let updated = c
        .proposals(&c.editor)
        .update_proposal(pb::UpdateProposalRequest {
            id: proposal.id.clone(),
            expected_version: persisted.version,
            content: Some("Intro paragraph. Rewritten through the API.".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(c.yjs.persist_document(&doc_address).await.unwrap(), Persisted::Restored);
    assert_eq!(text(&c.load(&proposal.id, &c.viewer).await), updated.content);
    assert_eq!(c.proposal(&proposal.id).await.version, updated.version, "restoring writes nothing to the proposal");

    // Deleted (or lost to retention): created again from the database.
    assert_eq!(c.send(Method::DELETE, &url, Some(&c.editor), vec![]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.send(Method::DELETE, &url, Some(&c.admin), vec![]).await.status, StatusCode::NO_CONTENT);
    assert_eq!(c.send(Method::PUT, &url, Some(&c.viewer), vec![]).await.status, StatusCode::CREATED);
    assert_eq!(text(&c.load(&proposal.id, &c.viewer).await), updated.content);
    c.stop().await;
}

#[tokio::test]
async fn an_api_edit_reaches_an_open_document_live() {
    // A long debounce: nothing but the API edit arriving through the change stream may bring the
    // document to the proposal's content within the test's patience.
    let c = Cluster::start_with("1h", true).await;
    let proposal = c.create_proposal("Intro.").await;
    let url = c.doc_url(&proposal.id);
    assert_eq!(c.send(Method::PUT, &url, Some(&c.editor), vec![]).await.status, StatusCode::CREATED);
    let (doc, offset) = c.load_with_offset(&proposal.id, &c.viewer).await;
    assert_eq!(text(&doc), "Intro.");

    // A reader waiting live; then the proposal is rewritten through the API, nobody touches the
    // document.
    let (arrived, updated) =
        c.api_edit_while_waiting(&proposal.id, &offset, proposal.version, "Intro, rewritten.").await;
    apply_frames(&doc, &arrived.body);
    assert_eq!(text(&doc), updated.content, "the reader holds the proposal's new content");
    assert_eq!(c.proposal(&proposal.id).await.version, updated.version, "following writes nothing to the proposal");

    // Someone types, and their persist waits for its debounce (an hour here) when the proposal
    // is rewritten through the API again: the document follows at once, not after the typing's
    // persist, and following writes nothing into the proposal.
    let typed = append(&doc, " Typed in the editor.");
    assert!(c.send(Method::POST, &url, Some(&c.editor), typed).await.status.is_success());
    let (doc, offset) = c.load_with_offset(&proposal.id, &c.viewer).await;
    let (arrived, second) = c.api_edit_while_waiting(&proposal.id, &offset, updated.version, "Rewritten twice.").await;
    apply_frames(&doc, &arrived.body);
    assert_eq!(text(&doc), second.content, "the API's text wins over typing not yet persisted");
    let stored = c.proposal(&proposal.id).await;
    assert_eq!((stored.version, stored.content.as_str()), (second.version, second.content.as_str()));
    c.stop().await;
}

#[tokio::test]
async fn a_sent_proposals_document_is_read_only_and_follows_the_proposal() {
    // A long debounce: the persist below is run by hand, after the send.
    let c = Cluster::start("1h").await;
    let proposal = c.create_proposal("Scope: three pages.").await;
    let url = c.doc_url(&proposal.id);
    assert_eq!(c.send(Method::PUT, &url, Some(&c.editor), vec![]).await.status, StatusCode::CREATED);
    let doc = c.load(&proposal.id, &c.editor).await;
    // An update accepted while a draft, then the proposal is sent before it was persisted.
    assert!(c.send(Method::POST, &url, Some(&c.editor), append(&doc, " Late edit.")).await.status.is_success());
    // A proposal is sent with at least one line item.
    c.proposals(&c.editor)
        .add_line_item(pb::AddLineItemRequest {
            proposal_id: proposal.id.clone(),
            line_item: Some(pb::LineItemInput {
                description: "Design".into(),
                quantity_milli: 1000,
                unit_price_minor: 150_000,
                tax_rate_ppm: 200_000,
            }),
            expected_version: 0,
        })
        .await
        .unwrap();
    let sent = c
        .proposals(&c.editor)
        .transition_proposal(pb::TransitionProposalRequest {
            id: proposal.id.clone(),
            to: pb::ProposalStatus::Sent as i32,
            expected_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    let refused = c.send(Method::POST, &url, Some(&c.editor), append(&doc, " After sending.")).await;
    assert_eq!(refused.status, StatusCode::LOCKED);
    let body = refused.json();
    assert_eq!(body["error"]["code"], "DOCUMENT_READ_ONLY");
    assert!(body["error"]["message"].as_str().unwrap().contains("only a draft"), "{body}");
    // Still readable, and opened by anyone of the agency.
    assert_eq!(c.send(Method::PUT, &url, Some(&c.viewer), vec![]).await.status, StatusCode::OK);

    // The persist finds the proposal sent: the API refuses, the document follows the proposal.
    let doc_address = DocAddress::parse(&url).unwrap();
    assert_eq!(c.yjs.persist_document(&doc_address).await.unwrap(), Persisted::Restored);
    assert_eq!(text(&c.load(&proposal.id, &c.viewer).await), "Scope: three pages.");
    let after = c.proposal(&proposal.id).await;
    assert_eq!((after.content.as_str(), after.version), ("Scope: three pages.", sent.version));
    assert_eq!(c.yjs.persist_document(&doc_address).await.unwrap(), Persisted::Unchanged);
    c.stop().await;
}

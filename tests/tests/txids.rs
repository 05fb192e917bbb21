//! Every write RPC answers the id of the transaction that committed it, and that id arrives in
//! the shape stream's `headers.txids` with the write's rows: the settle signal of an optimistic
//! client (Electric's txid pattern).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use folio_proto::api::v1::{self as pb, client_service_client::ClientServiceClient};
use folio_testkit::{Role, Sandbox};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use proposals_api::{Caller, Role as UserRole};
use serde_json::Value;

/// One live shape, read from the start and followed with live long-polls.
struct Shape {
    url: String,
    token: String,
    handle: Option<String>,
    offset: String,
}

impl Shape {
    fn new(edge: std::net::SocketAddr, table: &str, token: &str) -> Self {
        Self {
            url: format!("http://{edge}/v1/shape?table={table}"),
            token: token.into(),
            handle: None,
            offset: "-1".into(),
        }
    }

    async fn next(&mut self) -> anyhow::Result<Vec<Value>> {
        let mut url = format!("{}&offset={}", self.url, self.offset);
        if let Some(h) = &self.handle {
            url.push_str(&format!("&handle={h}&live=true"));
        }
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let req =
            http::Request::get(&url).header("authorization", format!("Bearer {}", self.token)).body(Empty::new())?;
        let res = client.request(req).await?;
        let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.handle = header("electric-handle").or(self.handle.take());
        self.offset = header("electric-offset").context("electric-offset")?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{url}: {status} {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Follows the shape until a change of row `id` carrying `txid` arrives; fails if the row
    /// changes without it first (the id would not settle the write that made the change).
    async fn settle(&mut self, txid: u32, id: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            for m in self.next().await? {
                if m["value"]["id"] != id && m["key"].as_str().is_none_or(|k| !k.contains(id)) {
                    continue;
                }
                let txids: Vec<u64> = m["headers"]["txids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                if txids.contains(&u64::from(txid)) {
                    return Ok(m);
                }
            }
        }
        bail!("no change of {id} with txid {txid} in {}", self.url)
    }
}

#[tokio::test]
async fn every_write_rpcs_txid_arrives_in_the_shape_stream_with_its_rows() -> anyhow::Result<()> {
    let sandbox = Sandbox::start(&[Role::WalIngest, Role::Api, Role::Edge]).await?;
    let pool = &sandbox.db.pool;
    let agency = proposals_api::tenancy::create_agency(pool, "Txid Studio", "#0b6e4f").await?;
    let editor = proposals_api::tenancy::create_user(pool, agency, "ed@txid.test", "Ed", UserRole::Editor).await?;
    let token = sandbox.token(&Caller { user_id: editor, agency_id: agency, role: UserRole::Editor });
    let api_addr = sandbox.addrs.api.context("api")?;
    let edge = sandbox.addrs.edge.context("edge")?;
    let mut api = folio_e2e::proposals_client(api_addr, &token)?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{api_addr}"))?.connect_lazy();
    let mut clients = ClientServiceClient::with_interceptor(channel, folio_e2e::Bearer::new(&token)?);
    let mut proposals = Shape::new(edge, "proposals", &token);
    let mut client_rows = Shape::new(edge, "clients", &token);
    proposals.next().await?;
    client_rows.next().await?;

    let created = clients
        .create_client(pb::CreateClientRequest {
            name: "Jordan Reyes".into(),
            email: "jordan@acme.example".into(),
            company: "Acme".into(),
        })
        .await?
        .into_inner();
    let client = created.client.context("client")?;
    assert_ne!(created.txid, 0);
    client_rows.settle(created.txid, &client.id).await?;
    let updated = clients
        .update_client(pb::UpdateClientRequest {
            id: client.id.clone(),
            name: Some("Jordan R.".into()),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(client_rows.settle(updated.txid, &client.id).await?["value"]["name"], "Jordan R.");

    let create = pb::CreateProposalRequest {
        idempotency_key: "txid-test-create".into(),
        client_id: client.id.clone(),
        title: "Launch".into(),
        currency: "EUR".into(),
        ..Default::default()
    };
    let first = api.create_proposal(create.clone()).await?.into_inner();
    let id = first.proposal.context("proposal")?.id;
    proposals.settle(first.txid, &id).await?;
    // A repeat of the same create commits nothing: nothing to wait for.
    assert_eq!(api.create_proposal(create).await?.into_inner().txid, 0);

    let item = api
        .add_line_item(pb::AddLineItemRequest {
            proposal_id: id.clone(),
            line_item: Some(pb::LineItemInput {
                description: "Design".into(),
                quantity_milli: 1_000,
                unit_price_minor: 50_000,
                tax_rate_ppm: 0,
            }),
            expected_version: 0,
        })
        .await?
        .into_inner();
    assert_eq!(proposals.settle(item.txid, &id).await?["value"]["total_minor"], "50000");
    let renamed = api
        .update_proposal(pb::UpdateProposalRequest {
            id: id.clone(),
            expected_version: item.proposal.context("proposal")?.version,
            title: Some("Launch plan".into()),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(proposals.settle(renamed.txid, &id).await?["value"]["title"], "Launch plan");
    let item_id = item.line_item_id.clone();
    let doubled = api
        .update_line_item(pb::UpdateLineItemRequest {
            proposal_id: id.clone(),
            line_item_id: item_id,
            quantity_milli: Some(2_000),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(proposals.settle(doubled.txid, &id).await?["value"]["total_minor"], "100000");
    let extra = api
        .add_line_item(pb::AddLineItemRequest {
            proposal_id: id.clone(),
            line_item: Some(pb::LineItemInput {
                description: "Extra".into(),
                quantity_milli: 1_000,
                unit_price_minor: 1,
                tax_rate_ppm: 0,
            }),
            expected_version: 0,
        })
        .await?
        .into_inner();
    let removed = api
        .remove_line_item(pb::RemoveLineItemRequest {
            proposal_id: id.clone(),
            line_item_id: extra.line_item_id,
            expected_version: 0,
        })
        .await?
        .into_inner();
    assert_eq!(proposals.settle(removed.txid, &id).await?["value"]["total_minor"], "100000");
    let sent = api
        .transition_proposal(pb::TransitionProposalRequest {
            id: id.clone(),
            to: pb::ProposalStatus::Sent as i32,
            expected_version: 0,
        })
        .await?
        .into_inner();
    assert_eq!(proposals.settle(sent.txid, &id).await?["value"]["status"], "sent");
    let archived =
        api.archive_proposal(pb::ArchiveProposalRequest { id: id.clone(), expected_version: 0 }).await?.into_inner();
    proposals.settle(archived.txid, &id).await?;
    // Archiving again changes nothing.
    let again = api.archive_proposal(pb::ArchiveProposalRequest { id: id.clone(), expected_version: 0 }).await?;
    assert_eq!(again.into_inner().txid, 0);

    // Distinct writes, distinct transactions.
    let mut txids = vec![
        created.txid,
        updated.txid,
        first.txid,
        item.txid,
        renamed.txid,
        doubled.txid,
        extra.txid,
        removed.txid,
        sent.txid,
        archived.txid,
    ];
    txids.sort_unstable();
    txids.dedup();
    assert_eq!(txids.len(), 10);
    sandbox.stop().await;
    Ok(())
}

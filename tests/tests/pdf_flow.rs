//! A PDF request travels API → Postgres (outbox in the WAL) → wal-ingest → JetStream work
//! queue → pdf-render → object store, and comes back through the API.

use folio_proto::{
    api::v1 as pb,
    events::v1::{ChangeEvent, column_value},
};
use prost::Message as _;

#[tokio::test]
async fn a_pdf_request_travels_through_the_wal_to_a_downloadable_file() {
    let cluster = folio_e2e::Cluster::start().await.expect("cluster");
    let client = proposals_api::store::clients::create(
        &cluster.db.pool,
        cluster.agency,
        proposals_api::store::clients::ClientFields {
            name: "Jordan Reyes".into(),
            email: "jordan@acme.example".into(),
            company: "Acme Robotics".into(),
        },
    )
    .await
    .unwrap();
    let mut api = cluster.proposals.clone();
    let created = api
        .create_proposal(pb::CreateProposalRequest {
            client_id: client.id.to_string(),
            title: "End to end".into(),
            currency: "EUR".into(),
            line_items: vec![pb::LineItemInput {
                description: "Everything".into(),
                quantity_milli: 1_000,
                unit_price_minor: 123_456,
                tax_rate_ppm: 190_000,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    let requested =
        api.request_pdf(pb::RequestPdfRequest { proposal_id: created.id.clone() }).await.unwrap().into_inner();

    let rendition = folio_testkit::eventually("the rendition to be ready", || {
        let mut api = api.clone();
        let id = requested.rendition_id.clone();
        async move {
            let r = api.get_rendition(pb::GetRenditionRequest { id }).await.ok()?.into_inner().rendition?;
            assert_ne!(r.status(), pb::RenditionStatus::Failed, "render failed: {}", r.failure_reason);
            (r.status() == pb::RenditionStatus::Ready).then_some(r)
        }
    })
    .await;
    assert_eq!(rendition.page_count, 1);

    let mut stream =
        api.download_pdf(pb::DownloadPdfRequest { rendition_id: rendition.id.clone() }).await.unwrap().into_inner();
    let mut pdf = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        pdf.extend_from_slice(&message.chunk);
    }
    assert_eq!(pdf.len() as i64, rendition.size_bytes);
    assert!(pdf.starts_with(b"%PDF-"));

    // The proposal's insert went out on the tenant's subject, with its new row.
    let subject = format!("{}.changes.proposals.{}", cluster.subject_root, cluster.agency);
    let stream = cluster.js.get_stream(&cluster.changes_stream).await.unwrap();
    let message = folio_testkit::eventually("an event on the tenant subject", || {
        let (stream, subject) = (stream.clone(), subject.clone());
        async move { stream.get_last_raw_message_by_subject(&subject).await.ok() }
    })
    .await;
    let event = ChangeEvent::decode(message.payload.as_ref()).unwrap();
    assert_eq!((event.table.as_str(), event.tenant.as_str()), ("proposals", cluster.agency.to_string().as_str()));
    assert!(event.new_row.iter().any(|c| c.name == "title"), "the new row is carried");
    assert!(
        event.new_row.iter().any(|c| c.name == "id" && c.value == Some(column_value::Value::Text(created.id.clone()))),
        "the event is this proposal's"
    );

    cluster.stop().await;
}

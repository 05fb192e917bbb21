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
    let mut api = cluster.proposals.clone();
    let created =
        folio_e2e::draft_proposal(&mut api, &cluster.db.pool, cluster.agency, "End to end", 123_456).await.unwrap();
    let requested =
        api.request_pdf(pb::RequestPdfRequest { proposal_id: created.id.clone() }).await.unwrap().into_inner();
    let (rendition, _pdf) = folio_e2e::rendered_pdf(&api, &requested.rendition_id).await.unwrap();
    assert_eq!(rendition.page_count, 1);

    // The proposal's insert went out on the tenant's subject, with its new row.
    let subject = cluster.subjects().row("public", "proposals", Some(&cluster.agency.to_string()));
    let stream = cluster.js.get_stream(cluster.changes_stream()).await.unwrap();
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

/// The issue this guards against: a rendition left `queued` with no job anywhere (its job was
/// dead-lettered, or lost). Past `FOLIO_PDF_REQUEUE_AFTER`, `RequestPdf` queues its job again,
/// through the WAL like the first, and the same rendition ends ready.
#[tokio::test]
async fn a_rendition_stuck_in_queued_is_queued_again_by_request_pdf_and_rendered() {
    let cluster = folio_e2e::Cluster::start().await.expect("cluster");
    let pool = &cluster.db.pool;
    let mut api = cluster.proposals.clone();
    let created =
        folio_e2e::draft_proposal(&mut api, pool, cluster.agency, "Stuck in the queue", 50_000).await.unwrap();
    // The row RequestPdf wrote an hour ago, whose job never made it: no job in the WAL now.
    let key = proposals_api::store::templates::body_sha256(proposals_api::store::renditions::BUILTIN_TEMPLATE_KEY);
    let stuck: String = sqlx::query_scalar(
        "INSERT INTO pdf_renditions (id, agency_id, proposal_id, proposal_version, template_sha256, requested_by, requested_at) \
         VALUES (gen_random_uuid(), $1::uuid, $2::uuid, $3, $4, $5::uuid, now() - interval '1 hour') RETURNING id::text",
    )
    .bind(cluster.agency.to_string())
    .bind(&created.id)
    .bind(created.version)
    .bind(&key)
    .bind(cluster.editor.to_string())
    .fetch_one(pool)
    .await
    .unwrap();

    let requested =
        api.request_pdf(pb::RequestPdfRequest { proposal_id: created.id.clone() }).await.unwrap().into_inner();
    assert_eq!(requested.rendition_id, stuck, "the stuck rendition, not a new one");
    assert_eq!(requested.status(), pb::RenditionStatus::Queued);

    let (rendition, _pdf) = folio_e2e::rendered_pdf(&api, &stuck).await.unwrap();
    assert_eq!(rendition.page_count, 1);
    let renditions: i64 = sqlx::query_scalar("SELECT count(*) FROM pdf_renditions").fetch_one(pool).await.unwrap();
    assert_eq!(renditions, 1);

    cluster.stop().await;
}

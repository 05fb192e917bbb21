//! pdf-render under SIGKILL (issue 18): two replicas share the render queue while one or the
//! other is killed every 700 ms and started again, and renditions are requested through the
//! API's own store all along. Every requested PDF must end ready — none failed, none
//! dead-lettered — stored under its SHA-256 with bytes that hash to it, and a ready rendition is
//! never rendered again.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use folio_domain::{LineItemAmounts, ProposalId};
use folio_faults::{
    cluster::Base,
    pdf_render::{RenderSetup, Renderer},
    wal_ingest::Replica,
};
use proposals_api::{Role, store};
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;

const PROPOSALS: usize = 16;

#[derive(Debug, sqlx::FromRow, PartialEq)]
struct Rendition {
    id: uuid::Uuid,
    status: String,
    pdf_sha256: Option<String>,
    rendered_at: Option<time::OffsetDateTime>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_requested_pdf_is_rendered_while_replicas_are_killed() {
    let base = Base::start(&[]).await.expect("a private PostgreSQL and nats-server");
    let ingest_setup = base.ingest_setup();
    let _ingest = Replica::start(&ingest_setup).await.unwrap();
    let render_setup = RenderSetup::new(&ingest_setup, &base.tag);
    let mut renderers = [Renderer::start(&render_setup).await.unwrap(), Renderer::start(&render_setup).await.unwrap()];

    let pool = &base.pool;
    let common::Studio { agency, member: owner, client } = common::studio(pool, Role::Admin).await;
    let mut proposals = Vec::new();
    for n in 0..PROPOSALS {
        let line_items = (1..=6)
            .map(|i| store::proposals::NewLineItem {
                description: format!("Package {n}.{i}"),
                amounts: LineItemAmounts::parse(1_000 * i, 10_000 * i, 190_000).unwrap(),
            })
            .collect();
        let new = store::proposals::NewProposal {
            client_id: client.id.into(),
            template_id: None,
            title: format!("Under fire {n}"),
            currency: "EUR".into(),
            valid_until: None,
            content: "Rendered while its renderers are being killed.".into(),
            terms: "Net 30.".into(),
            line_items,
        };
        let p = store::proposals::create(pool, agency, owner, new, None).await.unwrap();
        proposals.push(ProposalId::from(p.value.proposal.id));
    }

    // Requests spread over the killing, one replica or the other killed every 700 ms.
    let started = Instant::now();
    let mut kills = 0;
    let mut requested = Vec::new();
    for (i, proposal) in proposals.iter().enumerate() {
        let requeue = store::renditions::DEFAULT_REQUEUE_AFTER;
        let r = store::renditions::request(pool, agency, owner, *proposal, String::new(), requeue).await.unwrap();
        requested.push(r.value.rendition_id);
        if i % 2 == 1 {
            renderers[kills % 2].kill_and_restart().await.unwrap();
            kills += 1;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let last_kill = Instant::now();

    let ready = loop {
        let rows: Vec<Rendition> = sqlx::query_as(
            "SELECT id, status, pdf_sha256, rendered_at FROM pdf_renditions WHERE id = ANY($1) ORDER BY id",
        )
        .bind(&requested)
        .fetch_all(pool)
        .await
        .unwrap();
        let failed: Vec<_> = rows.iter().filter(|r| r.status == "failed").collect();
        assert!(failed.is_empty(), "renditions failed: {failed:?}");
        if rows.len() == PROPOSALS && rows.iter().all(|r| r.status == "ready") {
            break rows;
        }
        assert!(
            last_kill.elapsed() < Duration::from_secs(120),
            "not every PDF was ready 120 s after the last kill: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let recovered = last_kill.elapsed();

    // Each stored under its SHA-256, with bytes that hash to it.
    let js = jetstream::new(async_nats::connect(base.nats.url()).await.unwrap());
    let bucket = js.get_object_store(&render_setup.bucket).await.unwrap();
    for r in &ready {
        let sha = r.pdf_sha256.as_deref().unwrap();
        let mut object = bucket.get(sha).await.unwrap_or_else(|e| panic!("PDF {sha} of {} is not stored: {e}", r.id));
        let mut bytes = Vec::new();
        object.read_to_end(&mut bytes).await.unwrap();
        let actual: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(actual, sha, "the stored PDF of {} does not hash to its name", r.id);
        assert!(bytes.starts_with(b"%PDF-"));
    }
    // Nothing dead-lettered (the stream exists once a replica started).
    let mut dead = js.get_stream(&render_setup.dead_letters).await.unwrap();
    assert_eq!(dead.info().await.unwrap().state.messages, 0, "jobs were dead-lettered");
    // A ready rendition is not rendered again by a late redelivery.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let again: Vec<Rendition> =
        sqlx::query_as("SELECT id, status, pdf_sha256, rendered_at FROM pdf_renditions WHERE id = ANY($1) ORDER BY id")
            .bind(&requested)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(again, ready, "a ready rendition changed after it was ready");
    println!(
        "{PROPOSALS} PDFs requested over {:.1} s with {kills} SIGKILLs of the two pdf-render replicas; \
         all ready {:.1} s after the last kill",
        (last_kill - started).as_secs_f64(),
        recovered.as_secs_f64()
    );
}

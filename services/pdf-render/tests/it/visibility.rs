//! A job can reach the queue before the rows it names are visible: wal-ingest sees a commit in
//! the WAL slightly before other sessions see its rows. Not there yet is transient; never there
//! is the worker's normal failure once its retries are spent.

use std::time::Duration;

use folio_proto::jobs::v1::RenderPdfJob;
use prost::Message as _;
use uuid::Uuid;

use crate::helpers::env;

#[tokio::test]
async fn a_job_that_outruns_its_rendition_row_renders_once_the_row_is_visible() {
    let mut env = env().await;
    // Room for several misses before the retries are spent (100 ms, 200 ms, 400 ms, ...).
    env.config.max_deliver = 8;
    let (proposal, _) = env.proposal_without_rendition("Outrun", 2, None).await;
    let job = env.job(Uuid::now_v7(), proposal, 1, None);
    let worker = env.start_worker().await;

    // RequestPdf's transaction, published to the queue before it commits.
    let mut tx = env.db.pool.begin().await.unwrap();
    env.write_rendition(&mut tx, &job).await;
    env.publish_from_wal(&mut tx, &job).await;
    // The worker has looked for the row and not found it, at least twice.
    folio_testkit::eventually("the worker to miss the row twice", || async {
        let info = env.consumer_info().await;
        let dead = env.dead_letters().await;
        (info.delivered.consumer_sequence >= 2 || !dead.is_empty()).then_some(())
    })
    .await;
    let dead = env.dead_letters().await;
    assert!(dead.is_empty(), "a missing row is not a reason to give up: {:?}", dead[0].1);
    let before = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pdf_renditions WHERE id = $1::uuid")
        .bind(&job.rendition_id)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(before, 0, "the row was not visible while the worker looked");
    tx.commit().await.unwrap();

    let ready = env.wait_status(&job.rendition_id, "ready").await;
    env.wait_queue_drained().await;
    let deliveries = env.consumer_info().await.delivered.consumer_sequence;
    assert!(deliveries >= 3, "rendered on a redelivery after the misses ({deliveries} deliveries)");
    assert!(env.dead_letters().await.is_empty());
    assert_eq!(env.stored_pdfs().await, vec![ready.pdf_sha256.clone().unwrap()], "one PDF stored");
    let again = env.wait_status(&job.rendition_id, "ready").await;
    assert_eq!(again.rendered_at, ready.rendered_at, "rendered once");
    worker.cancel();
}

#[tokio::test]
async fn a_job_whose_rendition_never_appears_is_dead_lettered_once_its_retries_are_spent() {
    let env = env().await;
    let (proposal, _) = env.proposal_without_rendition("Never requested", 1, None).await;
    let job = env.job(Uuid::now_v7(), proposal, 1, None);
    let worker = env.start_worker().await;
    let started = std::time::Instant::now();
    env.publish_job(&job).await;
    let dead = folio_testkit::eventually("a dead letter", || async {
        let dead = env.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    // max_deliver = 3 with 100 ms backoff: two retries, 100 ms and 200 ms apart.
    assert!(started.elapsed() >= Duration::from_millis(300), "retried with backoff first");
    assert_eq!(dead.len(), 1);
    assert_eq!(RenderPdfJob::decode(dead[0].0.as_slice()).unwrap().rendition_id, job.rendition_id);
    let reason = &dead[0].1;
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
    assert!(reason.contains("does not exist"), "{reason}");
    env.wait_queue_drained().await;
    let deliveries = env.consumer_info().await.delivered.consumer_sequence;
    assert_eq!(deliveries, 3, "one job, delivered until its budget was spent");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM pdf_renditions").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(rows, 0, "nothing was invented for it");
    worker.cancel();
}

#[tokio::test]
async fn a_rendition_whose_proposal_version_never_appears_fails_once_its_retries_are_spent() {
    let env = env().await;
    let (proposal, _) = env.proposal_without_rendition("Version from the future", 1, None).await;
    // A rendition of version 2 of a proposal whose only visible version is 1.
    let job = env.job(Uuid::now_v7(), proposal, 2, None);
    let mut tx = env.db.pool.begin().await.unwrap();
    env.write_rendition(&mut tx, &job).await;
    tx.commit().await.unwrap();
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let failed = env.wait_status(&job.rendition_id, "failed").await;
    let reason = failed.failure_reason.unwrap();
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
    assert!(reason.contains("not visible yet"), "{reason}");
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].1.starts_with("gave up after 3 attempts"), "{}", dead[0].1);
    env.wait_queue_drained().await;
    assert!(env.stored_pdfs().await.is_empty());
    worker.cancel();
}

/// `RequestPdf` leaves an overdue rendition alone while a worker holds it: the API probes the
/// lock pdf-render takes (`RenditionLock`), which only works while both use the same key.
#[tokio::test]
async fn request_pdf_does_not_queue_again_what_a_worker_is_rendering() {
    let env = env().await;
    let job = env.proposal("Slow but alive", 1, None).await;
    let rendition = Uuid::parse_str(&job.rendition_id).unwrap();
    let proposal = folio_domain::ProposalId::parse(&job.proposal_id).unwrap();
    let pool = &env.db.pool;
    sqlx::query(
        "UPDATE pdf_renditions SET status = 'rendering', requested_at = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(rendition)
    .execute(pool)
    .await
    .unwrap();
    let requested_at = || async {
        sqlx::query_scalar::<_, time::OffsetDateTime>("SELECT requested_at FROM pdf_renditions WHERE id = $1")
            .bind(rendition)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let overdue = requested_at().await;
    let request = || {
        let requeue = Duration::from_secs(60);
        proposals_api::store::renditions::request(pool, env.agency, env.owner, proposal, String::new(), requeue)
    };

    let lock = pdf_render::store::RenditionLock::try_acquire(pool, rendition).await.unwrap().expect("free");
    let r = request().await.unwrap();
    assert_eq!((r.rendition_id, r.status.as_str()), (rendition, "rendering"), "left to the worker holding it");
    assert_eq!(requested_at().await, overdue, "not queued again");

    lock.release().await;
    let r = request().await.unwrap();
    assert_eq!((r.rendition_id, r.status.as_str()), (rendition, "queued"));
    assert!(requested_at().await > overdue, "queued again once no worker holds it");
}

#[test]
fn the_api_queues_again_only_after_the_workers_retry_budget() {
    let worker = pdf_render::Config::new("postgres://x", "nats://x");
    let budget = worker.retry_budget().expect("bounded by max_deliver");
    assert!(budget > worker.render_timeout * worker.max_deliver as u32, "{budget:?}");
    let api = proposals_api::Config::new("postgres://x", "s");
    assert!(
        api.pdf_requeue_after > budget,
        "FOLIO_PDF_REQUEUE_AFTER ({:?}) must exceed pdf-render's retry budget ({budget:?})",
        api.pdf_requeue_after
    );
}

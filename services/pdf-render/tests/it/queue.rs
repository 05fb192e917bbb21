//! Queue semantics: duplicates, poison, bad templates, killed workers.

use std::time::Duration;

use prost::Message as _;

use crate::helpers::env;

#[tokio::test]
async fn a_duplicate_job_makes_one_rendition() {
    let env = env().await;
    let job = env.proposal("Twice", 2, None).await;
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let first = env.wait_status(&job.rendition_id, "ready").await;
    env.publish_job(&job).await;
    env.wait_queue_drained().await;
    let second = env.wait_status(&job.rendition_id, "ready").await;
    assert_eq!(first.rendered_at, second.rendered_at, "the duplicate did not render again");
    let renditions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pdf_renditions").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(renditions, 1);
    assert!(env.dead_letters().await.is_empty());
    worker.cancel();
}

#[tokio::test]
async fn a_poisoned_job_reaches_the_dead_letter_stream() {
    let env = env().await;
    let worker = env.start_worker().await;
    env.publish(b"\xff\xfenot protobuf".to_vec()).await;
    let dead = folio_testkit::eventually("a dead letter", || async {
        let dead = env.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].0, b"\xff\xfenot protobuf");
    assert!(dead[0].1.contains("not a RenderPdfJob"), "{}", dead[0].1);
    env.wait_queue_drained().await;
    worker.cancel();
}

#[tokio::test]
async fn a_bad_template_fails_with_its_error_not_a_crash_loop() {
    let env = env().await;
    let job =
        env.proposal("Broken", 1, Some("#let data = json(\"data.json\")\n\n#data.proposal.nonexistent_field(\n")).await;
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let r = env.wait_status(&job.rendition_id, "failed").await;
    let reason = r.failure_reason.unwrap();
    assert!(reason.starts_with("template error: 3:"), "the reason points at the template line: {reason}");
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        folio_proto::jobs::v1::RenderPdfJob::decode(dead[0].0.as_slice()).unwrap().rendition_id,
        job.rendition_id
    );
    env.wait_queue_drained().await;
    // One delivery: a template error is not retried.
    let stream = env.js.get_stream(&env.config.bus.jobs_stream).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(&env.config.consumer).await.unwrap();
    assert_eq!(consumer.info().await.unwrap().num_redelivered, 0);
    worker.cancel();
}

/// A template slow enough (seconds) to kill its worker mid-render.
const SLOW_TEMPLATE: &str =
    "#let data = json(\"data.json\")\n= #data.proposal.title\n#for i in range(300) [#lorem(120) ]\n";

#[tokio::test]
async fn a_killed_workers_job_is_redelivered_and_completed() {
    let mut env = env().await;
    // The slow template takes longer than the default time limit in a debug build.
    env.config.render_timeout = Duration::from_secs(120);
    let job = env.proposal("Killed mid-render", 3, Some(SLOW_TEMPLATE)).await;
    let c = &env.config;
    let mut doomed = std::process::Command::new(env!("CARGO_BIN_EXE_pdf-render"))
        .env("FOLIO_DATABASE_URL", &c.db.database_url)
        .env("FOLIO_NATS_URL", &c.bus.nats_url)
        .env("FOLIO_SUBJECT_ROOT", &c.bus.subject_root)
        .env("FOLIO_JOBS_STREAM", &c.bus.jobs_stream)
        .env("FOLIO_PDF_CONSUMER", &c.consumer)
        .env("FOLIO_PDF_DEAD_LETTER_STREAM", &c.dead_letter_stream)
        .env("FOLIO_PDF_BUCKET", &c.bus.pdf_bucket)
        .env("FOLIO_PDF_ACK_WAIT", "2s")
        .env("FOLIO_PDF_RENDER_TIMEOUT", "2m")
        .env("FOLIO_ADMIN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start pdf-render");
    env.publish_job(&job).await;
    env.wait_status(&job.rendition_id, "rendering").await;
    doomed.kill().expect("SIGKILL"); // not a graceful stop: no ack, no nak
    doomed.wait().unwrap();

    let started = std::time::Instant::now();
    let worker = env.start_worker().await;
    let r = env.wait_status(&job.rendition_id, "ready").await;
    assert!(r.page_count.unwrap() > 10, "the slow template really is long");
    assert!(started.elapsed() > Duration::from_secs(1), "redelivered after the ack wait, not before");
    let stream = env.js.get_stream(&env.config.bus.jobs_stream).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer(&env.config.consumer).await.unwrap();
    assert!(consumer.info().await.unwrap().num_redelivered <= 1);
    assert!(env.dead_letters().await.is_empty());
    worker.cancel();
}

#[tokio::test]
async fn a_render_that_runs_too_long_fails_and_frees_the_worker() {
    let mut env = env().await;
    // Below the slow template's compile (seconds in a debug build) and well above the quick
    // one's on a loaded 2-core machine.
    env.config.render_timeout = Duration::from_secs(3);
    let slow = env.proposal("Endless", 3, Some(SLOW_TEMPLATE)).await;
    let quick = env.proposal("Quick", 1, None).await;
    env.config.concurrency = 1;
    let worker = env.start_worker().await;
    env.publish_job(&slow).await;
    env.publish_job(&quick).await;
    let failed = env.wait_status(&slow.rendition_id, "failed").await;
    assert!(failed.failure_reason.unwrap().contains("the template ran longer than 3s"));
    // The single render slot was given back: the next job renders.
    env.wait_status(&quick.rendition_id, "ready").await;
    worker.cancel();
}

#[tokio::test]
async fn a_template_edited_after_the_request_is_not_rendered_under_the_old_key() {
    let env = env().await;
    let job =
        env.proposal("Edited template", 1, Some("#let data = json(\"data.json\")\n= #data.proposal.title\n")).await;
    let template = folio_domain::TemplateId::parse(&job.template_id).unwrap();
    proposals_api::store::templates::update(&env.db.pool, env.agency, template, None, Some("= Changed".into()))
        .await
        .unwrap();
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let failed = env.wait_status(&job.rendition_id, "failed").await;
    assert!(failed.failure_reason.unwrap().contains("template"), "the reason names the template");
    worker.cancel();
}

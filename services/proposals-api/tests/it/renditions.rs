//! `RequestPdf` queues the job of a rendition stuck in `queued` or `rendering` again once it is
//! older than `FOLIO_PDF_REQUEUE_AFTER` (15 min here: the default), and only then, once.

use folio_proto::api::v1 as pb;

use crate::helpers::{JobSlot, TestApp, create_client, create_proposal, item, spawn_app};

async fn request(app: &TestApp, proposal: &str) -> pb::RequestPdfResponse {
    let mut api = app.editor.proposals.clone();
    api.request_pdf(pb::RequestPdfRequest { proposal_id: proposal.into() }).await.unwrap().into_inner()
}

/// Puts the rendition in `status`, as if its job had been queued `age` ago.
async fn age(app: &TestApp, rendition: &str, status: &str, age: &str) {
    sqlx::query("UPDATE pdf_renditions SET status = $2, requested_at = now() - $3::interval WHERE id = $1::uuid")
        .bind(rendition)
        .bind(status)
        .bind(age)
        .execute(&app.db.pool)
        .await
        .unwrap();
}

async fn requested_at(app: &TestApp, rendition: &str) -> time::OffsetDateTime {
    sqlx::query_scalar("SELECT requested_at FROM pdf_renditions WHERE id = $1::uuid")
        .bind(rendition)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn request_pdf_queues_an_overdue_rendition_again_and_a_fresh_one_not() {
    let app = spawn_app().await;
    let slot = JobSlot::create(&app.db.pool).await;
    let client = create_client(&app.editor, "Stuck Co").await;
    let p = create_proposal(&app.editor, &client, "Stuck", vec![item("x", 1_000, 1_000, 0)]).await;

    let first = request(&app, &p.id).await;
    assert_eq!(first.status(), pb::RenditionStatus::Queued);
    assert_eq!(slot.pdf_jobs().await.len(), 1);

    // Queued a while ago, but within the deadline: its job may still be on its way.
    age(&app, &first.rendition_id, "queued", "14 minutes").await;
    let fresh = request(&app, &p.id).await;
    assert_eq!(
        (fresh.rendition_id.as_str(), fresh.status()),
        (first.rendition_id.as_str(), pb::RenditionStatus::Queued)
    );
    assert_eq!(slot.pdf_jobs().await.len(), 1, "a fresh queued rendition is returned without a new job");

    // Past the deadline: the job is queued again for the same rendition.
    age(&app, &first.rendition_id, "queued", "16 minutes").await;
    let overdue = requested_at(&app, &first.rendition_id).await;
    let again = request(&app, &p.id).await;
    assert_eq!(
        (again.rendition_id.as_str(), again.status()),
        (first.rendition_id.as_str(), pb::RenditionStatus::Queued)
    );
    let jobs = slot.pdf_jobs().await;
    assert_eq!(jobs.len(), 2, "the overdue rendition's job is queued again");
    assert_eq!((jobs[1].rendition_id.as_str(), jobs[1].proposal_version), (first.rendition_id.as_str(), 1));
    assert!(requested_at(&app, &first.rendition_id).await > overdue, "the deadline restarts with the new job");

    // ... and the new job restarts the clock: asking again right away queues nothing.
    request(&app, &p.id).await;
    assert_eq!(slot.pdf_jobs().await.len(), 2);

    // A rendering that outlived the deadline (its worker died, the give-up went unrecorded).
    age(&app, &first.rendition_id, "rendering", "1 hour").await;
    let rendering = request(&app, &p.id).await;
    assert_eq!(rendering.status(), pb::RenditionStatus::Queued);
    assert_eq!(slot.pdf_jobs().await.len(), 3);

    // Ready is final, however old.
    age(&app, &first.rendition_id, "ready", "1 day").await;
    let ready = request(&app, &p.id).await;
    assert_eq!(
        (ready.rendition_id.as_str(), ready.status()),
        (first.rendition_id.as_str(), pb::RenditionStatus::Ready)
    );
    assert_eq!(slot.pdf_jobs().await.len(), 3);
    slot.drop().await;
}

#[tokio::test]
async fn concurrent_requests_queue_an_overdue_rendition_once() {
    const CALLERS: usize = 8;
    let app = spawn_app().await;
    let pool = &app.db.pool;
    let slot = JobSlot::create(pool).await;
    let client = create_client(&app.editor, "Crowd Co").await;
    let p = create_proposal(&app.editor, &client, "Crowded", vec![item("x", 1_000, 1_000, 0)]).await;
    let first = request(&app, &p.id).await;
    age(&app, &first.rendition_id, "queued", "1 hour").await;

    // Hold the row until every caller is in flight: all of them start from the same overdue
    // row, and must still queue one job between them.
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM pdf_renditions WHERE id = $1::uuid FOR UPDATE")
        .bind(&first.rendition_id)
        .execute(&mut *hold)
        .await
        .unwrap();
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut api = app.editor.proposals.clone();
            let id = p.id.clone();
            tokio::spawn(async move { api.request_pdf(pb::RequestPdfRequest { proposal_id: id }).await })
        })
        .collect();
    folio_testkit::eventually("every caller to wait for the row", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (waiting as usize >= CALLERS).then_some(())
    })
    .await;
    hold.commit().await.unwrap();

    for call in calls {
        let r = call.await.unwrap().unwrap().into_inner();
        assert_eq!((r.rendition_id.as_str(), r.status()), (first.rendition_id.as_str(), pb::RenditionStatus::Queued));
    }
    let jobs = slot.pdf_jobs().await;
    slot.drop().await;
    assert_eq!(jobs.len(), 2, "the first request's job and one more, not one per caller");
    assert!(jobs.iter().all(|j| j.rendition_id == first.rendition_id));
    let renditions: i64 = sqlx::query_scalar("SELECT count(*) FROM pdf_renditions").fetch_one(pool).await.unwrap();
    assert_eq!(renditions, 1);
}

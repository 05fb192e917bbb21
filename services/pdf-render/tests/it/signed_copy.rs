//! The signed copy of an acceptance (issue 20): the pages the client signed, a signature
//! certificate, and the signed PDF attached byte for byte; the same bytes every time.

use folio_auth::client_link::{ClientLinkKey, TokenHash};
use folio_domain::ProposalStatus;
use folio_proto::jobs::v1::RenderPdfJob;
use proposals_api::store::{self, client_links};
use uuid::Uuid;

use crate::helpers::{Env, env, pdfinfo_pages, pdftotext};

struct Accepted {
    response: Uuid,
    proposal: Uuid,
    version: i64,
    original: Vec<u8>,
    original_sha256: String,
}

/// Sends a proposal (issuing its link), renders the sent version, and accepts it through the
/// link as the client's page does.
async fn accepted(env: &Env, title: &str, signer: &str) -> Accepted {
    let pool = &env.db.pool;
    let key = ClientLinkKey::new(b"signed-copy-test-secret-of-32-bytes!");
    let issuer = client_links::LinkIssuer { key: key.clone(), ttl: std::time::Duration::from_secs(3600) };
    let (proposal, _) = env.proposal_without_rendition(title, 3, None).await;
    let sent = client_links::transition(pool, &issuer, env.agency, proposal, ProposalStatus::Sent, None).await.unwrap();
    let version = sent.value.proposal.version;
    let requeue = store::renditions::DEFAULT_REQUEUE_AFTER;
    let r = store::renditions::request(pool, env.agency, env.owner, proposal, String::new(), requeue).await.unwrap();
    env.publish_job(&env.job(r.rendition_id, proposal, r.proposal_version, None)).await;
    let rendition = env.wait_status(&r.rendition_id.to_string(), "ready").await;
    let original_sha256 = rendition.pdf_sha256.unwrap();
    let link: Uuid = sqlx::query_scalar("SELECT id FROM client_links WHERE proposal_id = $1")
        .bind(proposal.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap();
    let hash = TokenHash::of(&key.token(link)).unwrap();
    let signature = client_links::Signature {
        signer_name: signer.into(),
        proposal_version: version,
        pdf_sha256: original_sha256.clone(),
        ip_address: Some("203.0.113.7".parse().unwrap()),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36".into(),
    };
    client_links::accept(pool, &hash, &signature).await.unwrap();
    let response: Uuid = sqlx::query_scalar("SELECT id FROM proposal_responses WHERE proposal_id = $1")
        .bind(proposal.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap();
    Accepted {
        response,
        proposal: proposal.as_uuid(),
        version,
        original: env.pdf(&original_sha256).await,
        original_sha256,
    }
}

/// The job the acceptance wrote to the WAL, as wal-ingest puts it on the queue.
fn signed_copy_job(env: &Env, a: &Accepted) -> RenderPdfJob {
    RenderPdfJob {
        agency_id: env.agency.to_string(),
        proposal_id: a.proposal.to_string(),
        proposal_version: a.version,
        signed_response_id: a.response.to_string(),
        ..Default::default()
    }
}

#[derive(sqlx::FromRow)]
struct SignedCopyRow {
    status: String,
    pdf_sha256: Option<String>,
    page_count: Option<i32>,
    rendered_at: Option<time::OffsetDateTime>,
}

async fn wait_ready(env: &Env, response: Uuid) -> SignedCopyRow {
    folio_testkit::eventually("the signed copy to be ready", || async {
        let row: SignedCopyRow = sqlx::query_as(
            "SELECT status, pdf_sha256, page_count, rendered_at FROM signed_copies WHERE response_id = $1",
        )
        .bind(response)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        (row.status == "ready").then_some(row)
    })
    .await
}

/// Every file attached to `pdf`, as `pdfdetach -saveall` writes them.
fn attachments(pdf: &[u8]) -> Vec<(String, Vec<u8>)> {
    let dir = std::env::temp_dir().join(format!("folio-detach-{}", folio_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("signed.pdf");
    std::fs::write(&path, pdf).unwrap();
    let out = std::process::Command::new("pdfdetach")
        .arg("-saveall")
        .arg("-o")
        .arg(&dir)
        .arg(&path)
        .output()
        .expect("pdfdetach is needed (Debian's poppler-utils)");
    assert!(out.status.success(), "pdfdetach failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut found: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p != &path)
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    found.sort();
    let _ = std::fs::remove_dir_all(&dir);
    found
}

#[tokio::test]
async fn an_acceptance_gets_a_signed_copy_with_the_signed_pages_a_certificate_and_the_signed_pdf_attached() {
    let env = env().await;
    let worker = env.start_worker().await;
    let a = accepted(&env, "Brand refresh 2027", "Jordan Reyes").await;
    let queued: String = sqlx::query_scalar("SELECT status FROM signed_copies WHERE response_id = $1")
        .bind(a.response)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(queued, "queued", "the acceptance requested its signed copy in its own transaction");

    env.publish_job(&signed_copy_job(&env, &a)).await;
    let ready = wait_ready(&env, a.response).await;
    let signed = env.pdf(ready.pdf_sha256.as_deref().unwrap()).await;

    let original_pages = pdfinfo_pages(&a.original);
    assert_eq!(pdfinfo_pages(&signed), original_pages + 1, "the signed pages and one certificate page");
    assert_eq!(ready.page_count, Some(original_pages as i32 + 1));
    let text = pdftotext(&signed);
    for expected in [
        "Brand refresh 2027",
        "Work package 03",
        "Signature certificate",
        "Jordan Reyes",
        a.original_sha256.as_str(),
        "203.0.113.7",
        &format!("Version signed {}", a.version),
        &a.response.to_string(),
    ] {
        assert!(
            text.split_whitespace().collect::<Vec<_>>().join(" ").contains(expected),
            "{expected:?} missing from the signed copy:\n{text}"
        );
    }
    // The exact bytes signed travel inside, so anyone can check them against the printed hash.
    let attached = attachments(&signed);
    assert_eq!(attached.len(), 1, "{:?}", attached.iter().map(|a| &a.0).collect::<Vec<_>>());
    assert_eq!(attached[0].0, "original.pdf");
    assert!(attached[0].1 == a.original, "the attachment is the signed PDF byte for byte");

    // Made again from the record and the stored PDF, it is the same file.
    let context = pdf_render::document::load_signed_copy(&env.db.pool, a.response).await.unwrap();
    let again = pdf_render::worker::signed_copy_request(context, a.original.clone());
    let rerendered = pdf_render::render::render(&again.input()).unwrap();
    assert_eq!(rerendered.sha256, ready.pdf_sha256.clone().unwrap(), "a re-render gives the same bytes");

    // A redelivered job renders nothing new.
    env.publish_job(&signed_copy_job(&env, &a)).await;
    env.wait_queue_drained().await;
    let after = wait_ready(&env, a.response).await;
    assert_eq!(after.rendered_at, ready.rendered_at);
    assert!(env.dead_letters().await.is_empty());
    worker.cancel();
}

#[tokio::test]
async fn a_signed_copy_job_for_a_decline_fails_without_retrying() {
    let env = env().await;
    let worker = env.start_worker().await;
    let a = accepted(&env, "Declined later", "Sam Ortiz").await;
    // A job naming an acceptance whose record is not an acceptance (corrupted or hand-written):
    // the copy is marked failed and the job dead-lettered at once, never rendered.
    sqlx::query(
        "UPDATE proposal_responses SET decision = 'declined', signer_name = NULL, consent = false WHERE id = $1",
    )
    .bind(a.response)
    .execute(&env.db.pool)
    .await
    .unwrap();
    env.publish_job(&signed_copy_job(&env, &a)).await;
    let dead = folio_testkit::eventually("a dead letter", || async {
        let dead = env.dead_letters().await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert!(dead[0].1.contains("is a decline"), "{}", dead[0].1);
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, failure_reason FROM signed_copies WHERE response_id = $1")
            .bind(a.response)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(reason.unwrap_or_default().contains("nothing signed"));
    worker.cancel();
}

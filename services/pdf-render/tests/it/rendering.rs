//! What the document says, how it paginates, and that it is reproducible.

use folio_domain::{Currency, LineItemAmounts, compute_totals};

use crate::helpers::{env, pdfinfo_pages, pdftotext};

fn expected_totals(items: usize) -> (String, String, String) {
    let amounts: Vec<_> = (1..=items)
        .map(|n| LineItemAmounts::parse(1_000 + (n as i64 % 4) * 500, 12_500 * n as i64, 190_000).unwrap())
        .collect();
    let t = compute_totals(&amounts).unwrap();
    let eur = Currency::parse("EUR").unwrap();
    (eur.format_minor(t.subtotal_minor), eur.format_minor(t.tax_minor), eur.format_minor(t.total_minor))
}

#[tokio::test]
async fn a_rendered_proposal_says_what_the_proposal_says() {
    let env = env().await;
    let job = env.proposal("Brand refresh and website", 3, None).await;
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let r = env.wait_status(&job.rendition_id, "ready").await;
    let pdf = env.pdf(r.pdf_sha256.as_deref().unwrap()).await;
    assert_eq!(r.size_bytes, Some(pdf.len() as i64));
    assert!(pdf.starts_with(b"%PDF-"));

    let text = pdftotext(&pdf);
    for expected in [
        "Brand refresh and website",
        "Jordan Reyes",
        "Acme Robotics",
        "jordan@acme.example",
        "María Álvarez",
        "Northwind Studio",
        "Work package 01",
        "Work package 02",
        "Work package 03",
        "31 March 2027",
        "50 % on acceptance",
        "Page 1 of 1",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
    let (subtotal, tax, total) = expected_totals(3);
    for figure in [&subtotal, &tax, &total] {
        assert!(text.contains(figure.as_str()), "{figure} missing from:\n{text}");
    }
    assert_eq!(pdfinfo_pages(&pdf), 1);
    assert_eq!(r.page_count, Some(1));
    worker.cancel();
}

#[tokio::test]
async fn sixty_items_break_cleanly_across_pages() {
    let env = env().await;
    let job = env.proposal("Annual retainer", 60, None).await;
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let r = env.wait_status(&job.rendition_id, "ready").await;
    let pdf = env.pdf(r.pdf_sha256.as_deref().unwrap()).await;
    let pages = pdfinfo_pages(&pdf);
    assert_eq!(pages, 3, "60 line items take three A4 pages with this template");
    assert_eq!(r.page_count, Some(pages as i32));
    let text = pdftotext(&pdf);
    for n in 1..=60 {
        assert_eq!(text.matches(&format!("Work package {n:02}")).count(), 1, "item {n} exactly once");
    }
    let header_rows = text.matches("Description").count();
    assert!(header_rows >= 2, "the table header repeats on continued pages ({header_rows})");
    for p in 1..=pages {
        assert!(text.contains(&format!("Page {p} of {pages}")), "page {p} numbered");
    }
    let (_, _, total) = expected_totals(60);
    assert!(text.contains(&total), "{total} missing");
    worker.cancel();
}

#[tokio::test]
async fn the_same_version_renders_to_the_same_bytes() {
    let env = env().await;
    let job = env.proposal("Reproducible", 5, None).await;
    let rendition = uuid::Uuid::parse_str(&job.rendition_id).unwrap();
    // A version dated long before today, so the file's date cannot come from the clock.
    sqlx::query("UPDATE proposals SET updated_at = '2025-03-04 15:16:17+00' WHERE id = $1::uuid")
        .bind(&job.proposal_id)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let context = pdf_render::document::load(&env.db.pool, rendition).await.unwrap();
    assert_eq!(context.date, time::macros::date!(2025 - 03 - 04));
    let input = pdf_render::render::RenderInput {
        template: pdf_render::render::DEFAULT_TEMPLATE,
        data: &context.data,
        logo_svg: None,
        date: context.date,
        ident: format!("folio/{}/{}", context.proposal_id, context.proposal_version),
        original_pdf: None,
    };
    let first = pdf_render::render::render(&input).unwrap();
    comemo::evict(0);
    let second = pdf_render::render::render(&input).unwrap();
    assert_eq!(first.sha256, second.sha256);
    assert!(first.bytes == second.bytes, "byte-identical re-render");
    let text = String::from_utf8_lossy(&first.bytes);
    // The creation date is the proposal version's date at midnight, never the render's clock.
    let stamp = "CreationDate(D:20250304000000Z)";
    assert!(text.contains(stamp), "{stamp} in the file");
    assert_eq!(text.matches("CreationDate(").count(), 1, "one creation date, the fixed one");
}

#[tokio::test]
async fn a_custom_template_with_a_logo_renders() {
    let env = env().await;
    sqlx::query("UPDATE agencies SET logo_svg = $2 WHERE id = $1")
        .bind(env.agency.as_uuid())
        .bind(r##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" fill="#0b6e4f"/></svg>"##)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let template = "#let data = json(\"data.json\")\n#image(\"logo.svg\", width: 3cm)\n= #data.proposal.title\nTotal: #data.totals.total #data.proposal.currency\n";
    let job = env.proposal("Custom look", 2, Some(template)).await;
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let r = env.wait_status(&job.rendition_id, "ready").await;
    let text = pdftotext(&env.pdf(r.pdf_sha256.as_deref().unwrap()).await);
    let (_, _, total) = expected_totals(2);
    assert!(text.contains("Custom look") && text.contains(&format!("Total: {total} EUR")), "{text}");
    worker.cancel();
}

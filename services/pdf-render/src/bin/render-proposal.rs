//! Renders proposals straight from PostgreSQL to PDF files, outside the queue: for looking at
//! templates and for the benchmark. Writes nothing to the database.
//!
//!   cargo run -p pdf-render --bin render-proposal -- --all --out-dir docs/examples
//!
//! With `--signed-copy <acceptance id>`, makes the signed copy of a client's acceptance again
//! from its record and the signed PDF in the bucket (NATS), e.g. to check that the copy an
//! email carried is the one the record gives, byte for byte.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pdf_render::render::{DEFAULT_TEMPLATE, RenderInput, render};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    db: folio_db::DbArgs,
    /// Proposal ids to render; with --all, every proposal in the database.
    proposals: Vec<uuid::Uuid>,
    #[arg(long)]
    all: bool,
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
    /// Acceptances (`proposal_responses` ids) whose signed copies to make.
    #[arg(long = "signed-copy")]
    signed_copies: Vec<uuid::Uuid>,
    #[command(flatten)]
    bus: folio_bus::BusArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = folio_db::connect(&args.db.database_url, 2).await?;
    let ids: Vec<(uuid::Uuid, Option<uuid::Uuid>)> = if args.all {
        sqlx::query_as("SELECT id, template_id FROM proposals ORDER BY created_at").fetch_all(&pool).await?
    } else {
        sqlx::query_as("SELECT id, template_id FROM proposals WHERE id = ANY($1)")
            .bind(&args.proposals)
            .fetch_all(&pool)
            .await?
    };
    std::fs::create_dir_all(&args.out_dir)?;
    if !args.signed_copies.is_empty() {
        let nats = async_nats::connect(&args.bus.nats_url).await?;
        let bucket = async_nats::jetstream::new(nats).get_object_store(&args.bus.pdf_bucket).await?;
        for response in &args.signed_copies {
            let context = pdf_render::document::load_signed_copy(&pool, *response).await?;
            let original = pdf_render::store::get_pdf(&bucket, &context.original_sha256).await?;
            let request = pdf_render::worker::signed_copy_request(context, original);
            let pdf = render(&request.input()).with_context(|| format!("signed copy of {response}"))?;
            let path = args.out_dir.join(format!("signed-{response}.pdf"));
            std::fs::write(&path, &pdf.bytes)?;
            println!("{} ({} pages, {} bytes, sha256 {})", path.display(), pdf.pages, pdf.bytes.len(), pdf.sha256);
        }
    }
    for (id, template) in ids {
        let doc = pdf_render::document::proposal_document(&pool, id, template).await?;
        let input = RenderInput {
            template: doc.template_body.as_deref().unwrap_or(DEFAULT_TEMPLATE),
            data: &doc.data,
            logo_svg: doc.logo_svg.as_deref(),
            date: doc.date,
            ident: format!("folio/{id}/{}", doc.proposal_version),
            original_pdf: None,
        };
        let started = std::time::Instant::now();
        let pdf = render(&input).with_context(|| format!("render {id}"))?;
        let title = doc.data["proposal"]["title"].as_str().unwrap_or("proposal");
        let slug: String =
            title.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        let path = args.out_dir.join(format!("{slug}.pdf"));
        std::fs::write(&path, &pdf.bytes)?;
        println!("{} ({} pages, {} bytes, {:?})", path.display(), pdf.pages, pdf.bytes.len(), started.elapsed());
    }
    Ok(())
}

//! Renders proposals straight from PostgreSQL to PDF files, outside the queue: for looking at
//! templates and for the benchmark. Writes nothing to the database.
//!
//!   cargo run -p pdf-render --bin render-proposal -- --all --out-dir docs/examples

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
    for (id, template) in ids {
        let doc = pdf_render::document::proposal_document(&pool, id, template).await?;
        let input = RenderInput {
            template: doc.template_body.as_deref().unwrap_or(DEFAULT_TEMPLATE),
            data: &doc.data,
            logo_svg: doc.logo_svg.as_deref(),
            date: doc.date,
            ident: format!("folio/{id}/{}", doc.proposal_version),
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

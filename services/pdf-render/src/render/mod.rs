//! Typst as a library: template + data in, PDF bytes out, deterministically.

mod world;

use sha2::{Digest, Sha256};
use typst::{
    WorldExt as _,
    diag::{Severity, SourceDiagnostic},
    foundations::{Datetime, Smart},
};
use typst_layout::PagedDocument;

pub use world::ProposalWorld;

/// The built-in template, used when a proposal names none.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../templates/default.typ");

/// The signed copy of an acceptance (issue 20): the signed PDF's pages, a signature certificate
/// page, and the signed PDF itself attached. Ours, never an agency's.
pub const SIGNED_COPY_TEMPLATE: &str = include_str!("../../templates/signed-copy.typ");

/// Untrusted input is bounded before it reaches the compiler, which cannot be cancelled.
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;
pub const MAX_DATA_BYTES: usize = 2 * 1024 * 1024;
pub const MAX_LOGO_BYTES: usize = 512 * 1024;
/// A signed PDF is one this service rendered, so within what it renders.
pub const MAX_ORIGINAL_PDF_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template does not compile against the data: permanent, retrying cannot help.
    #[error("template error: {0}")]
    Template(String),
    #[error("{what} is {size} bytes, more than the {limit} allowed")]
    TooLarge { what: &'static str, size: usize, limit: usize },
    #[error("failed to encode the document data")]
    Data(#[from] serde_json::Error),
}

pub struct RenderInput<'a> {
    pub template: &'a str,
    pub data: &'a serde_json::Value,
    pub logo_svg: Option<&'a str>,
    /// Date of the proposal version: used for `today` and the PDF's creation date.
    pub date: time::Date,
    /// Stable document identifier (e.g. proposal id and version).
    pub ident: String,
    /// The signed PDF a signed copy shows and attaches, as `/original.pdf`.
    pub original_pdf: Option<&'a [u8]>,
}

#[derive(Debug, Clone)]
pub struct RenderedPdf {
    pub bytes: Vec<u8>,
    pub pages: usize,
    /// Lowercase hex SHA-256 of `bytes`: the object's name in the store.
    pub sha256: String,
}

fn bounded(what: &'static str, size: usize, limit: usize) -> Result<(), RenderError> {
    if size > limit { Err(RenderError::TooLarge { what, size, limit }) } else { Ok(()) }
}

/// Compiles and exports one document. CPU-bound: call from `spawn_blocking`.
pub fn render(input: &RenderInput<'_>) -> Result<RenderedPdf, RenderError> {
    bounded("the template", input.template.len(), MAX_TEMPLATE_BYTES)?;
    let data = serde_json::to_vec(input.data)?;
    bounded("the document data", data.len(), MAX_DATA_BYTES)?;
    if let Some(logo) = input.logo_svg {
        bounded("the logo", logo.len(), MAX_LOGO_BYTES)?;
    }
    let date = input.date;
    let today = Datetime::from_ymd(date.year(), date.month() as u8, date.day()).expect("a valid calendar date");
    if let Some(original) = input.original_pdf {
        bounded("the signed PDF", original.len(), MAX_ORIGINAL_PDF_BYTES)?;
    }
    let world = ProposalWorld::new(input.template, data, input.logo_svg.map(|l| l.as_bytes().to_vec()), today)
        .with_original_pdf(input.original_pdf.map(<[u8]>::to_vec));

    let document: PagedDocument =
        typst::compile(&world).output.map_err(|errors| describe(&world, input.template, &errors))?;
    let midnight = Datetime::from_ymd_hms(date.year(), date.month() as u8, date.day(), 0, 0, 0).expect("a valid time");
    let options = typst_pdf::PdfOptions {
        ident: Smart::Custom(input.ident.clone()),
        timestamp: Some(typst_pdf::Timestamp::new_utc(midnight)),
        ..Default::default()
    };
    let bytes = typst_pdf::pdf(&document, &options).map_err(|errors| describe(&world, input.template, &errors))?;
    let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    Ok(RenderedPdf { pages: document.pages().len(), bytes, sha256 })
}

/// `line:column: message` for each error, as an agency editing its template needs it.
fn describe(world: &ProposalWorld, template: &str, diagnostics: &[SourceDiagnostic]) -> RenderError {
    let text = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| {
            let in_template = d.span.id() == Some(typst::World::main(world));
            let at = world.range(d.span).filter(|r| in_template && r.start <= template.len()).map(|r| {
                let before = &template[..r.start];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("{line}:{column}: ")
            });
            format!("{}{}", at.unwrap_or_default(), d.message)
        })
        .collect::<Vec<_>>()
        .join("; ");
    RenderError::Template(if text.is_empty() { "the template failed without a message".into() } else { text })
}

//! What the renderer and its worker processes say to each other over the worker's stdin and
//! stdout: length-prefixed frames (u32, little endian), JSON for requests and replies, the PDF
//! as raw bytes after a `Rendered` reply.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::render::{RenderInput, RenderedPdf};

/// One render, owned so it can cross the process boundary.
#[derive(Debug, Serialize, Deserialize)]
pub struct RenderRequest {
    pub template: String,
    pub data: serde_json::Value,
    pub logo_svg: Option<String>,
    pub date: time::Date,
    pub ident: String,
    /// The signed PDF of a signed copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_pdf: Option<Vec<u8>>,
}

impl RenderRequest {
    pub fn input(&self) -> RenderInput<'_> {
        RenderInput {
            template: &self.template,
            data: &self.data,
            logo_svg: self.logo_svg.as_deref(),
            date: self.date,
            ident: self.ident.clone(),
            original_pdf: self.original_pdf.as_deref(),
        }
    }
}

/// The first frame a worker writes, once its fonts are loaded and its sandbox is installed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    /// What the worker could install, for the start-up log.
    pub sandbox: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The PDF follows in the next frame.
    Rendered {
        pages: usize,
        sha256: String,
        /// Most heap the render used above the worker's own, in bytes.
        heap_peak: u64,
    },
    /// The template did not render; the message is the reason recorded on the rendition.
    Failed { reason: String },
}

/// Exit status of a worker whose template allocated past the memory limit.
pub const EXIT_OVER_MEMORY: i32 = 86;
/// Exit status of a worker that could not start (its reason is on its stderr).
pub const EXIT_START_FAILED: i32 = 70;

pub fn write_frame(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| io::Error::other("frame larger than 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)?;
    out.flush()
}

/// `None` at end of input (the renderer closed the pipe: time to exit).
pub fn read_frame(input: &mut impl Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::other(format!("frame of {len} bytes, more than the {limit} allowed")));
    }
    let mut bytes = vec![0; len];
    input.read_exact(&mut bytes)?;
    Ok(Some(bytes))
}

pub fn write_rendered(out: &mut impl Write, pdf: &RenderedPdf, heap_peak: u64) -> io::Result<()> {
    let reply = Reply::Rendered { pages: pdf.pages, sha256: pdf.sha256.clone(), heap_peak };
    write_frame(out, &serde_json::to_vec(&reply).map_err(io::Error::other)?)?;
    write_frame(out, &pdf.bytes)
}

//! One integration binary for folio-shapes (see STYLE.md §12).

mod common;
mod eval;
mod hostile;
mod parse;
mod postgres;

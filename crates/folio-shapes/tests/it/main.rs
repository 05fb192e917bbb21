//! One integration binary for folio-shapes (see STYLE.md §12).

mod common;
mod eval;
mod hostile;
mod limits;
mod parse;
mod pg_properties;
mod postgres;
mod properties;
mod subqueries;

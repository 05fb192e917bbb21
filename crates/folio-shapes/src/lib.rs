//! Shape `where` clauses as ElectricSQL accepts them: parsed once per shape, evaluated against
//! every change event of the table (rows in Postgres text format, as wal-ingest publishes
//! them), and rendered as parameterised SQL for the shape's snapshot query. Both paths run
//! off one typed tree, so the snapshot and the live stream select the same rows.
//!
//! ```
//! use folio_shapes::{ParamSink, TableSchema, WhereClause};
//!
//! let schema = TableSchema::new([("id", "int8"), ("title", "text"), ("agency_id", "uuid")]);
//! let clause = WhereClause::parse("title ILIKE $1 AND id > 10", &schema, &["%report%"])?
//!     .and_tenant("agency_id", "0b5e7a3c-1b2d-4c5e-8f90-a1b2c3d4e5f6")?;
//! assert!(clause.matches(&[Some("42"), Some("Q3 Report"), Some("0b5e7a3c-1b2d-4c5e-8f90-a1b2c3d4e5f6")])?);
//! let mut params = ParamSink::new();
//! let sql = clause.to_sql(&mut params);
//! assert_eq!(sql, r#"(("title" ILIKE $1::text) AND ("id" > $2::int8) AND ("agency_id" = $3::uuid))"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The parser is hand-written recursive descent rather than `sqlparser`: the subset is small,
//! Electric's error format needs exact character positions for every error (not only syntax
//! errors), and a generic SQL AST would still need a second pass to refuse the 95% of SQL
//! that is out of scope. Limits on input length ([`MAX_WHERE_LEN`]) and nesting
//! ([`MAX_DEPTH`]) keep hostile input from exhausting the stack.

mod datetime;
mod error;
mod eval;
mod expr;
mod fold;
mod json;
mod lexer;
mod parser;
mod render;
mod schema;
mod typecheck;
mod value;

pub use error::{EvalError, WhereError};
pub use parser::MAX_DEPTH;
pub use render::{ParamSink, quote_ident};
pub use schema::{PgType, ScalarType, TableSchema};

use expr::Expr;
use parser::CmpOp;

/// Longest where clause accepted, in bytes. Generous for ID lists inlined by proxies.
pub const MAX_WHERE_LEN: usize = 64 * 1024;

/// A where clause that parsed and type-checked against a table. Fields are private: the only
/// way to get one is [`WhereClause::parse`] (or [`WhereClause::all_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WhereClause {
    schema: TableSchema,
    /// None selects every row (a shape without `where`).
    expr: Option<Expr>,
}

impl WhereClause {
    /// Parses `text` against `schema`; `params[0]` is `$1` (Electric's `params[1]`), and every
    /// parameter is a string that takes the type of what it is compared with.
    pub fn parse<S: AsRef<str>>(text: &str, schema: &TableSchema, params: &[S]) -> Result<Self, WhereError> {
        if text.len() > MAX_WHERE_LEN {
            return Err(WhereError {
                location: 0,
                reason: format!("where clause is longer than {MAX_WHERE_LEN} bytes"),
            });
        }
        let tokens = lexer::tokenize(text)?;
        if tokens.len() == 1 {
            return Err(WhereError::syntax(text, text.len(), "syntax error at end of input"));
        }
        let ast = parser::Parser::new(text, tokens).parse()?;
        let checker = typecheck::Checker { src: text, schema, params };
        let expr = checker.check_root(&ast)?;
        Ok(Self { schema: schema.clone(), expr: Some(expr) })
    }

    /// The shape of a whole table: no where clause.
    pub fn all_rows(schema: &TableSchema) -> Self {
        Self { schema: schema.clone(), expr: None }
    }

    /// ANDs `column = value` into the clause: how the edge pins a shape to the caller's agency,
    /// so no where clause can reach another agency's rows.
    pub fn and_tenant(self, column: &str, value: &str) -> Result<Self, WhereError> {
        let tenant_err = |reason: String| WhereError { location: 0, reason };
        let (index, ty) = self
            .schema
            .lookup(column)
            .ok_or_else(|| tenant_err(format!("tenant column \"{column}\" does not exist")))?;
        if ty.array || matches!(ty.scalar, ScalarType::Other(_)) {
            return Err(tenant_err(format!("tenant column \"{column}\" has unsupported type {ty}")));
        }
        let ty = ty.clone();
        let v = value::parse_value(value, &ty).map_err(|e| tenant_err(format!("tenant value: {e}")))?;
        let pin = Expr::Cmp {
            op: CmpOp::Eq,
            l: Box::new(Expr::Column { index, name: column.to_owned(), ty: ty.clone() }),
            r: Box::new(Expr::Const { value: Some(v), ty: ty.clone() }),
            ty,
        };
        let expr = match self.expr {
            None => pin,
            Some(Expr::And(mut items)) => {
                items.push(pin);
                Expr::And(items)
            }
            Some(e) => Expr::And(vec![e, pin]),
        };
        Ok(Self { schema: self.schema, expr: Some(expr) })
    }

    /// The SQL condition, e.g. `(("col" = $1::int4) AND …)`, with every value pushed to `sink`.
    /// A clause without a where renders as `TRUE`.
    pub fn to_sql(&self, sink: &mut ParamSink) -> String {
        match &self.expr {
            Some(e) => render::render(e, sink),
            None => "TRUE".to_owned(),
        }
    }

    /// Three-valued result for one row whose values (Postgres text format, None for NULL) are
    /// listed in the schema's column order: `Some(true)`, `Some(false)` or `None` (NULL).
    pub fn evaluate(&self, row: &[Option<&str>]) -> Result<Option<bool>, EvalError> {
        let expected = self.schema.columns().len();
        if row.len() != expected {
            return Err(EvalError::RowWidth { expected, got: row.len() });
        }
        match &self.expr {
            None => Ok(Some(true)),
            Some(e) => eval::eval_bool(e, &eval::Row { values: row }),
        }
    }

    /// Whether the row belongs to the shape: the where clause is TRUE (NULL does not match).
    pub fn matches(&self, row: &[Option<&str>]) -> Result<bool, EvalError> {
        Ok(self.evaluate(row)? == Some(true))
    }

    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }
}

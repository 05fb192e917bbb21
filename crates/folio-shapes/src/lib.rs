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
//! assert_eq!(
//!     sql,
//!     r#"(("agency_id" = $1::uuid) AND CASE WHEN ("agency_id" = $2::uuid) THEN (("title" ILIKE $3::text) AND ("id" > $4::int8)) ELSE FALSE END)"#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The parser is hand-written recursive descent rather than `sqlparser`: the subset is small,
//! Electric's error format needs exact character positions for every error (not only syntax
//! errors), and a generic SQL AST would still need a second pass to refuse the 95% of SQL
//! that is out of scope. Limits on input length ([`MAX_WHERE_LEN`]) and nesting
//! ([`MAX_DEPTH`]) keep hostile input from exhausting the stack; [`Limits`] bound what one
//! clause may cost (its length, its LIKE patterns, the steps of one evaluation).

mod datetime;
mod error;
mod eval;
mod expr;
mod fold;
mod index;
mod json;
mod lexer;
mod order;
mod parser;
mod render;
mod schema;
mod subquery;
mod typecheck;
mod value;

pub use error::{EvalError, WhereError};
pub use order::{MAX_ORDER_TERMS, OrderBy};
pub use parser::MAX_DEPTH;
pub use render::{ParamSink, quote_ident};
pub use schema::{PgType, ScalarType, TableSchema};
pub use subquery::{MAX_SUBQUERIES, Subquery, SubqueryTable, Tuple, ValueSet};

use expr::Expr;
use parser::CmpOp;

/// Longest where clause accepted, in bytes. Generous for ID lists inlined by proxies; a server
/// can ask for less with [`Limits::max_where_bytes`].
pub const MAX_WHERE_LEN: usize = 64 * 1024;

/// What one clause may cost: bounds checked when it is parsed, and the budget of every
/// evaluation. A server serving untrusted callers sets these from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest clause, bytes (never more than [`MAX_WHERE_LEN`]).
    pub max_where_bytes: usize,
    /// Longest constant LIKE/ILIKE pattern, characters. Matching costs the subject's length
    /// times the pattern's length / 64 (see the matcher), so this bounds a match's cost per
    /// character of the row.
    pub max_like_pattern_chars: usize,
    /// Steps one evaluation (one row) may take; beyond, [`EvalError::BudgetExceeded`]. A step
    /// is about one node visited, one value compared, 8–16 characters of a value parsed or
    /// compared, or one character times one 64-element word of a LIKE pattern matched.
    pub eval_steps: u64,
}

impl Limits {
    pub const DEFAULT_EVAL_STEPS: u64 = 1_000_000;
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_where_bytes: MAX_WHERE_LEN, max_like_pattern_chars: 4096, eval_steps: Self::DEFAULT_EVAL_STEPS }
    }
}

/// A where clause that parsed and type-checked against a table. Fields are private: the only
/// way to get one is [`WhereClause::parse`] (or [`WhereClause::all_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WhereClause {
    schema: TableSchema,
    /// None selects every row (a shape without `where`).
    expr: Option<Expr>,
    /// `tenant column = agency`, checked before `expr` is looked at (see [`Self::and_tenant`]).
    tenant: Option<Expr>,
    /// Steps one evaluation may take.
    eval_steps: u64,
    /// The clause's `IN (SELECT …)` subqueries, in the order they appear.
    subqueries: Vec<Subquery>,
}

impl WhereClause {
    /// Parses `text` against `schema`; `params[0]` is `$1` (Electric's `params[1]`), and every
    /// parameter is a string that takes the type of what it is compared with.
    pub fn parse<S: AsRef<str>>(text: &str, schema: &TableSchema, params: &[S]) -> Result<Self, WhereError> {
        Self::parse_within(text, schema, params, &Limits::default())
    }

    /// As [`Self::parse`], within `limits`.
    pub fn parse_within<S: AsRef<str>>(
        text: &str,
        schema: &TableSchema,
        params: &[S],
        limits: &Limits,
    ) -> Result<Self, WhereError> {
        Self::parse_inner(text, schema, params, limits, None)
    }

    /// As [`Self::parse_within`], also accepting `IN (SELECT …)` on the tables of `tables`
    /// (by name as written in the clause; [`subquery_tables`] lists the names a clause uses).
    /// Every subquery is pinned to its table's tenant, so it never reads another tenant's rows.
    pub fn parse_with_subqueries<S: AsRef<str>>(
        text: &str,
        schema: &TableSchema,
        params: &[S],
        limits: &Limits,
        tables: &std::collections::HashMap<String, SubqueryTable>,
    ) -> Result<Self, WhereError> {
        Self::parse_inner(text, schema, params, limits, Some(tables))
    }

    fn parse_inner<S: AsRef<str>>(
        text: &str,
        schema: &TableSchema,
        params: &[S],
        limits: &Limits,
        tables: Option<&std::collections::HashMap<String, SubqueryTable>>,
    ) -> Result<Self, WhereError> {
        let max = limits.max_where_bytes.min(MAX_WHERE_LEN);
        if text.len() > max {
            return Err(WhereError { location: 0, reason: format!("where clause is longer than {max} bytes") });
        }
        let tokens = lexer::tokenize(text)?;
        if tokens.len() == 1 {
            return Err(WhereError::syntax(text, text.len(), "syntax error at end of input"));
        }
        let ast = parser::Parser::new(text, tokens).parse()?;
        let subqueries = std::cell::RefCell::new(Vec::new());
        let checker = typecheck::Checker {
            src: text,
            schema,
            params,
            tables,
            subqueries: &subqueries,
            eval_steps: limits.eval_steps,
            in_subquery: false,
        };
        let expr = checker.check_root(&ast)?;
        let subqueries = subqueries.into_inner();
        if let Some(chars) = expr.longest_like_pattern()
            && chars > limits.max_like_pattern_chars
        {
            return Err(WhereError {
                location: 0,
                reason: format!("LIKE pattern is longer than {} characters ({chars})", limits.max_like_pattern_chars),
            });
        }
        Ok(Self { schema: schema.clone(), expr: Some(expr), tenant: None, eval_steps: limits.eval_steps, subqueries })
    }

    /// The shape of a whole table: no where clause.
    pub fn all_rows(schema: &TableSchema) -> Self {
        Self::from_parts(schema.clone(), None, Limits::DEFAULT_EVAL_STEPS)
    }

    pub(crate) fn from_parts(schema: TableSchema, expr: Option<Expr>, eval_steps: u64) -> Self {
        Self { schema, expr, tenant: None, eval_steps, subqueries: Vec::new() }
    }

    /// The clause's subqueries: [`Self::evaluate_with`] takes one [`ValueSet`] per entry, in
    /// this order.
    pub fn subqueries(&self) -> &[Subquery] {
        &self.subqueries
    }

    /// Pins the clause to `column = value`: how the edge keeps a shape to the caller's agency,
    /// so no where clause can reach another agency's rows. The pin is checked FIRST, and the
    /// caller's clause only on rows that pass it (in SQL under a `CASE` guard, which Postgres
    /// may not reorder): a clause that fails on some value (a cast) can never fail on, or
    /// quote, another agency's row.
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
        let tenant = match self.tenant {
            None => pin,
            Some(Expr::And(mut pins)) => {
                pins.push(pin);
                Expr::And(pins)
            }
            Some(other) => Expr::And(vec![other, pin]),
        };
        Ok(Self { tenant: Some(tenant), ..self })
    }

    /// Both clauses: rows must satisfy this one (tenant pin included) AND `other`. How a
    /// subset snapshot narrows its shape without leaving it: the subset's clause joins the
    /// shape's under the shape's tenant pin, so it is never evaluated on another tenant's row.
    /// Both must be parsed against the same table schema.
    pub fn and_also(self, other: &WhereClause) -> Result<Self, WhereError> {
        if self.schema != other.schema {
            return Err(WhereError {
                location: 0,
                reason: "clauses of different tables cannot be combined".to_owned(),
            });
        }
        let tenant = match (self.tenant, other.tenant.clone()) {
            (None, t) | (t, None) => t,
            (Some(a), Some(b)) => Some(Expr::And(vec![a, b])),
        };
        let expr = match (self.expr, other.expr.clone()) {
            (None, e) | (e, None) => e,
            (Some(a), Some(b)) => Some(Expr::And(vec![a, b])),
        };
        if !other.subqueries.is_empty() {
            return Err(WhereError { location: 0, reason: "subqueries are not supported here".to_owned() });
        }
        Ok(Self {
            schema: self.schema,
            expr,
            tenant,
            eval_steps: self.eval_steps.min(other.eval_steps),
            subqueries: self.subqueries,
        })
    }

    /// The SQL condition, e.g. `(("col" = $1::int4) AND …)`, with every value pushed to `sink`.
    /// A clause without a where renders as `TRUE`. A pinned clause renders as
    /// `(pin AND CASE WHEN pin THEN (clause) ELSE FALSE END)`: the first `pin` lets Postgres
    /// use the tenant column's index, the `CASE` keeps the clause from ever being evaluated on
    /// a row of another tenant, whatever order the planner picks.
    pub fn to_sql(&self, sink: &mut ParamSink) -> String {
        match (&self.tenant, &self.expr) {
            (None, Some(e)) => render::render_in(e, sink, &self.subqueries),
            (None, None) => "TRUE".to_owned(),
            (Some(pin), None) => render::render(pin, sink),
            (Some(pin), Some(e)) => {
                let first = render::render(pin, sink);
                let guard = render::render(pin, sink);
                let clause = render::render_in(e, sink, &self.subqueries);
                format!("({first} AND CASE WHEN {guard} THEN {clause} ELSE FALSE END)")
            }
        }
    }

    /// Three-valued result for one row whose values (Postgres text format, None for NULL) are
    /// listed in the schema's column order: `Some(true)`, `Some(false)` or `None` (NULL).
    /// Fails with [`EvalError::BudgetExceeded`] beyond the clause's step budget.
    pub fn evaluate(&self, row: &[Option<&str>]) -> Result<Option<bool>, EvalError> {
        self.evaluate_with(row, &[])
    }

    /// As [`Self::evaluate`] for a clause with subqueries: `sets[k]` is what subquery `k`
    /// ([`Self::subqueries`]) yields at the point of the change stream the row belongs to.
    pub fn evaluate_with(&self, row: &[Option<&str>], sets: &[ValueSet]) -> Result<Option<bool>, EvalError> {
        let expected = self.schema.columns().len();
        if row.len() != expected {
            return Err(EvalError::RowWidth { expected, got: row.len() });
        }
        let row = eval::Row::with_sets(row, sets, self.eval_steps);
        if let Some(pin) = &self.tenant
            && eval::eval_bool(pin, &row)? != Some(true)
        {
            // Another tenant's row (or none): the caller's clause is not looked at.
            return Ok(Some(false));
        }
        match &self.expr {
            None => Ok(Some(true)),
            Some(e) => eval::eval_bool(e, &row),
        }
    }

    /// Whether the row belongs to the shape: the where clause is TRUE (NULL does not match).
    pub fn matches(&self, row: &[Option<&str>]) -> Result<bool, EvalError> {
        Ok(self.evaluate(row)? == Some(true))
    }

    /// As [`Self::matches`], with what the subqueries yield (see [`Self::evaluate_with`]).
    pub fn matches_with(&self, row: &[Option<&str>], sets: &[ValueSet]) -> Result<bool, EvalError> {
        Ok(self.evaluate_with(row, sets)? == Some(true))
    }

    pub fn schema(&self) -> &TableSchema {
        &self.schema
    }

    /// About how many bytes of memory the clause holds (its typed tree, constants and the
    /// schema copy): what a cache of clauses counts to stay within a byte budget.
    pub fn estimated_bytes(&self) -> usize {
        let schema: usize = self
            .schema
            .columns()
            .iter()
            .map(|(n, t)| n.len() + std::mem::size_of::<(String, PgType)>() + t.heap_bytes())
            .sum();
        std::mem::size_of::<Self>()
            + schema
            + self.expr.as_ref().map_or(0, Expr::heap_bytes)
            + self.tenant.as_ref().map_or(0, Expr::heap_bytes)
            + self.subqueries.iter().map(Subquery::heap_bytes).sum::<usize>()
    }
}

/// The tables a clause's `IN (SELECT … FROM t …)` subqueries read, as written (unqualified,
/// lower-cased unless quoted), each once: what a server describes before
/// [`WhereClause::parse_with_subqueries`]. Fails on a syntax error, as parsing would.
pub fn subquery_tables(text: &str) -> Result<Vec<String>, WhereError> {
    if text.len() > MAX_WHERE_LEN {
        return Err(WhereError { location: 0, reason: format!("where clause is longer than {MAX_WHERE_LEN} bytes") });
    }
    let tokens = lexer::tokenize(text)?;
    if tokens.len() == 1 {
        return Ok(Vec::new());
    }
    let ast = parser::Parser::new(text, tokens).parse()?;
    let mut out = Vec::new();
    ast.visit_selects(&mut |t| {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_combined_clause_keeps_both_conditions_under_the_tenant_pin() {
        let schema = TableSchema::new([("id", "int8"), ("agency_id", "uuid"), ("priority", "int4")]);
        let agency = "0b5e7a3c-1b2d-4c5e-8f90-a1b2c3d4e5f6";
        let shape = WhereClause::parse("id > $1", &schema, &["10"]).unwrap().and_tenant("agency_id", agency).unwrap();
        let subset = WhereClause::parse("priority = $1 OR id < 0", &schema, &["3"]).unwrap();
        let both = shape.and_also(&subset).unwrap();
        let mut sink = ParamSink::new();
        assert_eq!(
            both.to_sql(&mut sink),
            r#"(("agency_id" = $1::uuid) AND CASE WHEN ("agency_id" = $2::uuid) THEN (("id" > $3::int8) AND (("priority" = $4::int4) OR ("id" < $5::int8))) ELSE FALSE END)"#
        );
        assert_eq!(sink.into_values().len(), 5);
        assert!(both.matches(&[Some("11"), Some(agency), Some("3")]).unwrap());
        assert!(!both.matches(&[Some("11"), Some(agency), Some("1")]).unwrap());
        assert!(!both.matches(&[Some("9"), Some(agency), Some("3")]).unwrap());
        assert!(!both.matches(&[Some("11"), Some("1b5e7a3c-1b2d-4c5e-8f90-a1b2c3d4e5f6"), Some("3")]).unwrap());
        let other = WhereClause::all_rows(&TableSchema::new([("id", "int8")]));
        assert!(WhereClause::all_rows(&schema).and_also(&other).is_err());
    }
}

//! Renders a typed predicate as SQL in which every value is a bound parameter and every
//! identifier is quoted, so no text from the request reaches the query.

use crate::expr::Expr;
use crate::parser::{ArrayOp, CmpOp, IsTest};
use crate::schema::{PgType, ScalarType};

/// Collects the parameter values a rendered predicate refers to, as Postgres text (bind them
/// as `text`; the SQL casts each placeholder to its type). Start it after the parameters the
/// surrounding query already uses with [`ParamSink::starting_after`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParamSink {
    first: usize,
    values: Vec<Option<String>>,
}

impl ParamSink {
    pub fn new() -> Self {
        Self::default()
    }

    /// For a query that already has `$1..$n`: the first placeholder written is `$n+1`.
    pub fn starting_after(n: usize) -> Self {
        Self { first: n, values: Vec::new() }
    }

    fn bind(&mut self, v: Option<String>) -> String {
        self.values.push(v);
        format!("${}", self.first + self.values.len())
    }

    pub fn values(&self) -> &[Option<String>] {
        &self.values
    }

    pub fn into_values(self) -> Vec<Option<String>> {
        self.values
    }
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn type_sql(ty: &PgType) -> String {
    let base = match &ty.scalar {
        ScalarType::Other(n) => quote_ident(n),
        s => s.sql_name().to_owned(),
    };
    if ty.array { format!("{base}[]") } else { base }
}

pub(crate) fn render(e: &Expr, sink: &mut ParamSink) -> String {
    match e {
        Expr::Const { value, ty } => {
            let p = sink.bind(value.as_ref().map(|v| v.to_pg_text()));
            format!("{p}::{}", type_sql(ty))
        }
        Expr::Column { name, .. } => quote_ident(name),
        Expr::Cast { expr, to, .. } => format!("CAST({} AS {})", render(expr, sink), type_sql(to)),
        Expr::Not(x) => format!("(NOT {})", render(x, sink)),
        Expr::And(items) => join(items, " AND ", sink),
        Expr::Or(items) => join(items, " OR ", sink),
        Expr::Cmp { op, l, r, ty } => {
            let l = render(l, sink);
            let r = render(r, sink);
            format!("({l}{} {} {r})", collate(ty, *op), op.sql())
        }
        Expr::Quantified { op, all, l, r, ty } => {
            let l = render(l, sink);
            let r = render(r, sink);
            format!("({l}{} {} {} ({r}))", collate(ty, *op), op.sql(), if *all { "ALL" } else { "ANY" })
        }
        Expr::ArrayOp { op, l, r, .. } => {
            let l = render(l, sink);
            let r = render(r, sink);
            let o = match op {
                ArrayOp::Contains => "@>",
                ArrayOp::ContainedBy => "<@",
                ArrayOp::Overlaps => "&&",
            };
            format!("({l} {o} {r})")
        }
        Expr::Is { expr, test, negated } => {
            let x = render(expr, sink);
            let t = match test {
                IsTest::Null => "NULL",
                IsTest::True => "TRUE",
                IsTest::False => "FALSE",
                IsTest::Unknown => "UNKNOWN",
            };
            format!("({x} IS {}{t})", if *negated { "NOT " } else { "" })
        }
        Expr::Distinct { l, r, negated, .. } => {
            let l = render(l, sink);
            let r = render(r, sink);
            format!("({l} IS {}DISTINCT FROM {r})", if *negated { "NOT " } else { "" })
        }
        Expr::Like { expr, pattern, escape, ci, negated } => {
            let x = render(expr, sink);
            let p = render(pattern, sink);
            let esc = escape.as_ref().map(|e| format!(" ESCAPE {}", render(e, sink))).unwrap_or_default();
            format!("({x} {}{} {p}{esc})", if *negated { "NOT " } else { "" }, if *ci { "ILIKE" } else { "LIKE" })
        }
        Expr::In { expr, list, negated, .. } => {
            let x = render(expr, sink);
            let items: Vec<String> = list.iter().map(|i| render(i, sink)).collect();
            format!("({x} {}IN ({}))", if *negated { "NOT " } else { "" }, items.join(", "))
        }
        Expr::Lower(x) => format!("lower({})", render(x, sink)),
        Expr::Upper(x) => format!("upper({})", render(x, sink)),
        Expr::Concat(a, b) => {
            let a = render(a, sink);
            let b = render(b, sink);
            format!("({a} || {b})")
        }
        Expr::ArrayCtor { items, ty } => {
            let items: Vec<String> = items.iter().map(|i| render(i, sink)).collect();
            format!("(ARRAY[{}]::{})", items.join(", "), type_sql(ty))
        }
    }
}

/// Text orders by code point in the evaluator, so ordering comparisons pin the "C" collation:
/// without it a database with a linguistic default collation would order strings differently.
/// Equality is left alone (deterministic collations compare bytes anyway) so that it can still
/// use the column's indexes in the snapshot query.
fn collate(ty: &PgType, op: CmpOp) -> &'static str {
    if ty.is_collatable() && !op.is_equality() { " COLLATE \"C\"" } else { "" }
}

fn join(items: &[Expr], sep: &str, sink: &mut ParamSink) -> String {
    let parts: Vec<String> = items.iter().map(|i| render(i, sink)).collect();
    format!("({})", parts.join(sep))
}

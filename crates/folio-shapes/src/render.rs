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
    render_in(e, sink, &[])
}

/// Renders `e`, whose `InSelect` nodes refer to `subs`.
pub(crate) fn render_in(e: &Expr, sink: &mut ParamSink, subs: &[crate::Subquery]) -> String {
    match e {
        Expr::Const { value, ty } => {
            let p = sink.bind(value.as_ref().map(|v| v.to_pg_text()));
            format!("{p}::{}", type_sql(ty))
        }
        Expr::Column { name, .. } => quote_ident(name),
        Expr::Cast { expr, to, .. } => format!("CAST({} AS {})", render_in(expr, sink, subs), type_sql(to)),
        Expr::Not(x) => format!("(NOT {})", render_in(x, sink, subs)),
        Expr::And(items) => join(items, " AND ", sink, subs),
        Expr::Or(items) => join(items, " OR ", sink, subs),
        Expr::Cmp { op, l, r, ty } => {
            let l = render_in(l, sink, subs);
            let r = render_in(r, sink, subs);
            format!("({l}{} {} {r})", collate(ty, *op), op.sql())
        }
        Expr::Quantified { op, all, l, r, ty } => {
            let l = render_in(l, sink, subs);
            let r = render_in(r, sink, subs);
            format!("({l}{} {} {} ({r}))", collate(ty, *op), op.sql(), if *all { "ALL" } else { "ANY" })
        }
        Expr::ArrayOp { op, l, r, .. } => {
            let l = render_in(l, sink, subs);
            let r = render_in(r, sink, subs);
            let o = match op {
                ArrayOp::Contains => "@>",
                ArrayOp::ContainedBy => "<@",
                ArrayOp::Overlaps => "&&",
            };
            format!("({l} {o} {r})")
        }
        Expr::Is { expr, test, negated } => {
            let x = render_in(expr, sink, subs);
            let t = match test {
                IsTest::Null => "NULL",
                IsTest::True => "TRUE",
                IsTest::False => "FALSE",
                IsTest::Unknown => "UNKNOWN",
            };
            format!("({x} IS {}{t})", if *negated { "NOT " } else { "" })
        }
        Expr::Distinct { l, r, negated, .. } => {
            let l = render_in(l, sink, subs);
            let r = render_in(r, sink, subs);
            format!("({l} IS {}DISTINCT FROM {r})", if *negated { "NOT " } else { "" })
        }
        Expr::Like { expr, pattern, escape, ci, negated } => {
            let x = render_in(expr, sink, subs);
            let p = render_in(pattern, sink, subs);
            let esc = escape.as_ref().map(|e| format!(" ESCAPE {}", render_in(e, sink, subs))).unwrap_or_default();
            format!("({x} {}{} {p}{esc})", if *negated { "NOT " } else { "" }, if *ci { "ILIKE" } else { "LIKE" })
        }
        Expr::In { expr, list, negated, .. } => {
            let x = render_in(expr, sink, subs);
            let items: Vec<String> = list.iter().map(|i| render_in(i, sink, subs)).collect();
            format!("({x} {}IN ({}))", if *negated { "NOT " } else { "" }, items.join(", "))
        }
        Expr::InSelect { left, sub, negated } => {
            let cols: Vec<String> = left.iter().map(|(_, n, _)| quote_ident(n)).collect();
            // A clause is only ever rendered with the subqueries it was parsed with.
            let select = subs[*sub].to_sql(sink);
            format!("({}({}) IN ({select}))", if *negated { "NOT " } else { "" }, cols.join(", "))
        }
        Expr::Lower(x) => format!("lower({})", render_in(x, sink, subs)),
        Expr::Upper(x) => format!("upper({})", render_in(x, sink, subs)),
        Expr::Concat(a, b) => {
            let a = render_in(a, sink, subs);
            let b = render_in(b, sink, subs);
            format!("({a} || {b})")
        }
        Expr::ArrayCtor { items, ty } => {
            let items: Vec<String> = items.iter().map(|i| render_in(i, sink, subs)).collect();
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

fn join(items: &[Expr], sep: &str, sink: &mut ParamSink, subs: &[crate::Subquery]) -> String {
    let parts: Vec<String> = items.iter().map(|i| render_in(i, sink, subs)).collect();
    format!("({})", parts.join(sep))
}

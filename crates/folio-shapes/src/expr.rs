//! The typed predicate: every operand already converted to the type its operator works on, so
//! the evaluator and the SQL renderer follow one decision about types and cannot disagree.

use crate::parser::{ArrayOp, CmpOp, IsTest};
use crate::schema::PgType;
use crate::value::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// A literal or `$n` parameter, already parsed; bound as a query parameter in SQL.
    Const {
        value: Option<Value>,
        ty: PgType,
    },
    Column {
        index: usize,
        name: String,
        ty: PgType,
    },
    Cast {
        expr: Box<Expr>,
        from: PgType,
        to: PgType,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// Both sides of type `ty`.
    Cmp {
        op: CmpOp,
        l: Box<Expr>,
        r: Box<Expr>,
        ty: PgType,
    },
    /// `l op ANY/ALL (r)`; `r` is an array of `ty`.
    Quantified {
        op: CmpOp,
        all: bool,
        l: Box<Expr>,
        r: Box<Expr>,
        ty: PgType,
    },
    /// Both sides arrays of type `ty`.
    ArrayOp {
        op: ArrayOp,
        l: Box<Expr>,
        r: Box<Expr>,
        ty: PgType,
    },
    Is {
        expr: Box<Expr>,
        test: IsTest,
        negated: bool,
    },
    /// NULL-safe comparison; both sides of type `ty`.
    Distinct {
        l: Box<Expr>,
        r: Box<Expr>,
        negated: bool,
        ty: PgType,
    },
    /// `expr` is text-like (bpchar keeps its padding, as Postgres' bpcharlike does).
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<Box<Expr>>,
        ci: bool,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
        ty: PgType,
    },
    Lower(Box<Expr>),
    Upper(Box<Expr>),
    Concat(Box<Expr>, Box<Expr>),
    ArrayCtor {
        items: Vec<Expr>,
        ty: PgType,
    },
    /// `(cols) [NOT] IN (subquery number sub)`; the columns are of the shape's table, their
    /// types equal to what the subquery selects.
    InSelect {
        left: Vec<(usize, String, PgType)>,
        sub: usize,
        negated: bool,
    },
}

impl Expr {
    pub(crate) fn ty(&self) -> PgType {
        use crate::schema::ScalarType;
        match self {
            Expr::Const { ty, .. } | Expr::Column { ty, .. } | Expr::ArrayCtor { ty, .. } => ty.clone(),
            Expr::Cast { to, .. } => to.clone(),
            Expr::Lower(_) | Expr::Upper(_) | Expr::Concat(..) => PgType::scalar(ScalarType::Text),
            _ => PgType::scalar(ScalarType::Bool),
        }
    }
}

impl Expr {
    /// Whether the expression reads no column, so Postgres would fold it to a constant.
    pub(crate) fn is_constant(&self) -> bool {
        match self {
            Expr::Const { .. } => true,
            Expr::Column { .. } | Expr::InSelect { .. } => false,
            Expr::Cast { expr, .. }
            | Expr::Not(expr)
            | Expr::Is { expr, .. }
            | Expr::Lower(expr)
            | Expr::Upper(expr) => expr.is_constant(),
            Expr::And(items) | Expr::Or(items) | Expr::ArrayCtor { items, .. } => items.iter().all(Expr::is_constant),
            Expr::Cmp { l, r, .. }
            | Expr::Quantified { l, r, .. }
            | Expr::ArrayOp { l, r, .. }
            | Expr::Distinct { l, r, .. }
            | Expr::Concat(l, r) => l.is_constant() && r.is_constant(),
            Expr::Like { expr, pattern, escape, .. } => {
                expr.is_constant() && pattern.is_constant() && escape.as_ref().is_none_or(|e| e.is_constant())
            }
            Expr::In { expr, list, .. } => expr.is_constant() && list.iter().all(Expr::is_constant),
        }
    }
}

impl Expr {
    /// The direct subexpressions.
    fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Const { .. } | Expr::Column { .. } | Expr::InSelect { .. } => Vec::new(),
            Expr::Cast { expr, .. }
            | Expr::Not(expr)
            | Expr::Is { expr, .. }
            | Expr::Lower(expr)
            | Expr::Upper(expr) => vec![expr],
            Expr::And(items) | Expr::Or(items) | Expr::ArrayCtor { items, .. } => items.iter().collect(),
            Expr::Cmp { l, r, .. }
            | Expr::Quantified { l, r, .. }
            | Expr::ArrayOp { l, r, .. }
            | Expr::Distinct { l, r, .. }
            | Expr::Concat(l, r) => vec![l, r],
            Expr::Like { expr, pattern, escape, .. } => {
                let mut c: Vec<&Expr> = vec![expr, pattern];
                c.extend(escape.as_deref());
                c
            }
            Expr::In { expr, list, .. } => std::iter::once(&**expr).chain(list).collect(),
        }
    }

    /// Characters of the longest constant LIKE/ILIKE pattern, if there is one.
    pub(crate) fn longest_like_pattern(&self) -> Option<usize> {
        let own = match self {
            Expr::Like { pattern, .. } => match &**pattern {
                Expr::Const { value: Some(Value::Text(p)), .. } => Some(p.chars().count()),
                _ => None,
            },
            _ => None,
        };
        self.children().into_iter().filter_map(Expr::longest_like_pattern).chain(own).max()
    }

    /// Bytes this node and its subtree hold (an estimate: sizes of the nodes, their strings and
    /// constants; allocator overhead not counted).
    pub(crate) fn heap_bytes(&self) -> usize {
        let own = match self {
            Expr::Const { value, ty } => value.as_ref().map_or(0, Value::heap_bytes) + ty.heap_bytes(),
            Expr::Column { name, ty, .. } => name.len() + ty.heap_bytes(),
            Expr::Cast { from, to, .. } => from.heap_bytes() + to.heap_bytes(),
            Expr::Cmp { ty, .. }
            | Expr::Quantified { ty, .. }
            | Expr::ArrayOp { ty, .. }
            | Expr::Distinct { ty, .. }
            | Expr::In { ty, .. }
            | Expr::ArrayCtor { ty, .. } => ty.heap_bytes(),
            Expr::InSelect { left, .. } => left.iter().map(|(_, n, t)| n.len() + t.heap_bytes() + 32).sum(),
            _ => 0,
        };
        std::mem::size_of::<Expr>() + own + self.children().into_iter().map(Expr::heap_bytes).sum::<usize>()
    }
}

//! Constant folding as Postgres' planner does it (`eval_const_expressions`): subexpressions
//! that read no column become constants, nested AND/OR are flattened, and a constant operand
//! that decides an AND/OR replaces it. Postgres evaluates what is left left to right; doing the
//! same makes "which rows fail to evaluate" agree as well, e.g. `CAST(col AS int2) = 1 AND
//! (x AND FALSE)` is FALSE in Postgres, never an overflow error.

use crate::error::EvalError;
use crate::eval::{self, Row};

/// Steps folding one constant subexpression may take: constant parts are evaluated while the
/// request is parsed, so they are bounded like a row's evaluation.
const FOLD_STEPS: u64 = crate::Limits::DEFAULT_EVAL_STEPS;
use crate::expr::Expr;
use crate::value::Value;

pub(crate) fn fold(e: Expr) -> Result<Expr, EvalError> {
    let b = |e: Box<Expr>| fold(*e).map(Box::new);
    let e = match e {
        Expr::And(items) => return junction(items, false),
        Expr::Or(items) => return junction(items, true),
        e @ (Expr::Const { .. } | Expr::Column { .. } | Expr::InSelect { .. }) => return Ok(e),
        Expr::Cast { expr, from, to } => Expr::Cast { expr: b(expr)?, from, to },
        Expr::Not(x) => Expr::Not(b(x)?),
        Expr::Cmp { op, l, r, ty } => Expr::Cmp { op, l: b(l)?, r: b(r)?, ty },
        Expr::Quantified { op, all, l, r, ty } => Expr::Quantified { op, all, l: b(l)?, r: b(r)?, ty },
        Expr::ArrayOp { op, l, r, ty } => Expr::ArrayOp { op, l: b(l)?, r: b(r)?, ty },
        Expr::Is { expr, test, negated } => Expr::Is { expr: b(expr)?, test, negated },
        Expr::Distinct { l, r, negated, ty } => Expr::Distinct { l: b(l)?, r: b(r)?, negated, ty },
        Expr::Like { expr, pattern, escape, ci, negated } => {
            Expr::Like { expr: b(expr)?, pattern: b(pattern)?, escape: escape.map(b).transpose()?, ci, negated }
        }
        Expr::In { expr, list, negated, ty } => {
            Expr::In { expr: b(expr)?, list: list.into_iter().map(fold).collect::<Result<_, _>>()?, negated, ty }
        }
        Expr::Lower(x) => Expr::Lower(b(x)?),
        Expr::Upper(x) => Expr::Upper(b(x)?),
        Expr::Concat(l, r) => Expr::Concat(b(l)?, b(r)?),
        Expr::ArrayCtor { items, ty } => {
            Expr::ArrayCtor { items: items.into_iter().map(fold).collect::<Result<_, _>>()?, ty }
        }
    };
    // Postgres folds a strict operator with a constant NULL argument to NULL without running
    // the other argument (so `CAST(col AS int4) IN (NULL)`, which it turns into `= NULL`, can
    // never fail on an overflowing row).
    let is_null = |x: &Expr| matches!(x, Expr::Const { value: None, .. });
    let strict_null = match &e {
        Expr::Cmp { l, r, .. } | Expr::ArrayOp { l, r, .. } => is_null(l) || is_null(r),
        Expr::Like { expr, pattern, escape, .. } => {
            is_null(expr) || is_null(pattern) || escape.as_deref().is_some_and(is_null)
        }
        Expr::In { expr, list, .. } if list.len() == 1 => is_null(expr) || is_null(&list[0]),
        _ => false,
    };
    if strict_null {
        return Ok(Expr::Const { value: None, ty: e.ty() });
    }
    if e.is_constant() {
        let ty = e.ty();
        let value = eval::eval(&e, &Row::unbound_by_row(FOLD_STEPS))?;
        return Ok(Expr::Const { value, ty });
    }
    Ok(e)
}

/// AND (`decisive` = false) or OR (`decisive` = true).
fn junction(items: Vec<Expr>, decisive: bool) -> Result<Expr, EvalError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match fold(item)? {
            Expr::And(inner) if !decisive => out.extend(inner),
            Expr::Or(inner) if decisive => out.extend(inner),
            Expr::Const { value: Some(Value::Bool(b)), .. } if b == decisive => return Ok(constant(decisive)),
            // The neutral constant drops out; a NULL constant stays, as in Postgres.
            Expr::Const { value: Some(Value::Bool(_)), .. } => {}
            other => out.push(other),
        }
    }
    Ok(match out.len() {
        0 => constant(!decisive),
        1 => out.pop().unwrap_or_else(|| constant(!decisive)),
        _ if decisive => Expr::Or(out),
        _ => Expr::And(out),
    })
}

fn constant(b: bool) -> Expr {
    Expr::Const { value: Some(Value::Bool(b)), ty: crate::schema::PgType::scalar(crate::schema::ScalarType::Bool) }
}

//! Resolves names and types, turning the syntax tree into an [`Expr`]. Literal strings and
//! `$n` parameters start out of unknown type and take the type of what they are compared
//! with, as in Postgres; mixed numeric, text and date/time operands meet at Postgres' common
//! type, made explicit as casts.

use crate::error::WhereError;
use crate::expr::Expr;
use crate::parser::{Ast, CmpOp, IsTest, Select};
use crate::schema::{PgType, ScalarType, TableSchema};
use crate::value::{self, Num, Value};

pub(crate) struct Checker<'a, S> {
    pub src: &'a str,
    pub schema: &'a TableSchema,
    pub params: &'a [S],
    /// Tables subqueries may read; None where subqueries are not allowed (inside a subquery,
    /// subset clauses).
    pub tables: Option<&'a std::collections::HashMap<String, crate::SubqueryTable>>,
    /// Subqueries found so far; `Expr::InSelect` refers to them by index.
    pub subqueries: &'a std::cell::RefCell<Vec<crate::Subquery>>,
    pub eval_steps: u64,
    /// Checking a subquery's own WHERE (where another subquery is refused as nested).
    pub in_subquery: bool,
}

/// An operand before its type is settled.
enum Operand {
    Typed(Expr),
    /// A string literal or parameter (`Some`), or NULL (`None`), of type unknown.
    Unknown {
        text: Option<String>,
        pos: usize,
    },
}

fn bool_ty() -> PgType {
    PgType::scalar(ScalarType::Bool)
}

fn text_ty() -> PgType {
    PgType::scalar(ScalarType::Text)
}

/// Postgres' common type of two operand types, or None when no operator applies.
pub(crate) fn common_type(a: &PgType, b: &PgType) -> Option<PgType> {
    if a.array != b.array {
        return None;
    }
    let (x, y) = (&a.scalar, &b.scalar);
    use ScalarType::*;
    let scalar = if x == y {
        match x {
            Other(_) => return None,
            Varchar | Name => Text,
            s => s.clone(),
        }
    } else if x.is_int() && y.is_int() {
        if *x == Int8 || *y == Int8 { Int8 } else { Int4 }
    } else if x.is_numeric_family() && y.is_numeric_family() {
        if matches!(x, Float4 | Float8) || matches!(y, Float4 | Float8) { Float8 } else { Numeric }
    } else if matches!((x, y), (Bpchar, Varchar) | (Varchar, Bpchar)) {
        // varchar converts to bpchar implicitly, so trailing spaces stop counting; text does
        // not (bpchar = text compares as text, the bpchar side losing its padding).
        Bpchar
    } else if x.is_text_like() && y.is_text_like() {
        Text
    } else if x.is_datetime() && y.is_datetime() {
        if *x == Timestamptz || *y == Timestamptz { Timestamptz } else { Timestamp }
    } else {
        return None;
    };
    Some(PgType { scalar, array: a.array })
}

impl<S: AsRef<str>> Checker<'_, S> {
    fn err(&self, pos: usize, reason: impl Into<String>) -> WhereError {
        WhereError::at(self.src, pos, reason)
    }

    pub(crate) fn check_root(&self, ast: &Ast) -> Result<Expr, WhereError> {
        let e = match self.operand(ast)? {
            Operand::Typed(e) if e.ty() != bool_ty() => return Err(self.err(0, "WHERE clause must return a boolean")),
            op => self.coerce(op, &bool_ty(), ast.pos())?,
        };
        // A constant part that fails (`'a' LIKE 'a\'`) fails at plan time in Postgres too.
        crate::fold::fold(e).map_err(|err| self.err(0, err.to_string()))
    }

    fn boolean(&self, ast: &Ast) -> Result<Expr, WhereError> {
        let op = self.operand(ast)?;
        self.coerce(op, &bool_ty(), ast.pos())
    }

    /// Converts an operand to `ty`: unknowns are parsed, typed expressions get an implicit cast
    /// when Postgres would insert one.
    fn coerce(&self, op: Operand, ty: &PgType, pos: usize) -> Result<Expr, WhereError> {
        match op {
            Operand::Unknown { text: None, .. } => Ok(Expr::Const { value: None, ty: ty.clone() }),
            Operand::Unknown { text: Some(t), pos } => {
                if matches!(ty.scalar, ScalarType::Other(_)) {
                    return Err(
                        self.err(pos, format!("comparisons on type {ty} are not supported; cast the column to text"))
                    );
                }
                value::parse_value(&t, ty)
                    .map(|v| Expr::Const { value: Some(v), ty: ty.clone() })
                    .map_err(|e| self.err(pos, e))
            }
            Operand::Typed(e) => {
                let from = e.ty();
                if &from == ty {
                    return Ok(e);
                }
                if common_type(&from, ty).as_ref() != Some(ty)
                    && !(from.scalar.is_text_like() && ty.scalar.is_text_like() && from.array == ty.array)
                {
                    return Err(self.err(pos, format!("argument of type {from} cannot be used where {ty} is expected")));
                }
                self.cast(e, ty, pos)
            }
        }
    }

    fn cast(&self, e: Expr, to: &PgType, pos: usize) -> Result<Expr, WhereError> {
        let from = e.ty();
        if &from == to {
            return Ok(e);
        }
        if !value::castable(&from, to) {
            return Err(self.err(pos, format!("cannot cast type {from} to {to}")));
        }
        // Constant casts happen now, so a bad literal is refused before any row is seen.
        if let Expr::Const { value, .. } = e {
            let value = value.map(|v| value::cast(v, &from, to)).transpose().map_err(|m| self.err(pos, m))?;
            return Ok(Expr::Const { value, ty: to.clone() });
        }
        Ok(Expr::Cast { expr: Box::new(e), from, to: to.clone() })
    }

    fn typed(&self, ast: &Ast) -> Result<Expr, WhereError> {
        match self.operand(ast)? {
            Operand::Typed(e) => Ok(e),
            u => self.coerce(u, &text_ty(), ast.pos()),
        }
    }

    fn operand(&self, ast: &Ast) -> Result<Operand, WhereError> {
        Ok(Operand::Typed(match ast {
            Ast::Str { text, pos } => return Ok(Operand::Unknown { text: Some(text.clone()), pos: *pos }),
            Ast::Null { pos } => return Ok(Operand::Unknown { text: None, pos: *pos }),
            Ast::Param { n, pos } => {
                let text = self
                    .params
                    .get(*n as usize - 1)
                    .ok_or_else(|| self.err(*pos, format!("parameter ${n} was not provided")))?;
                return Ok(Operand::Unknown { text: Some(text.as_ref().to_owned()), pos: *pos });
            }
            Ast::Number { text, pos } => {
                number(text).ok_or_else(|| self.err(*pos, format!("invalid number {text}")))?
            }
            Ast::Bool { value, .. } => Expr::Const { value: Some(Value::Bool(*value)), ty: bool_ty() },
            Ast::Column { name, pos } => {
                let (index, ty) = self
                    .schema
                    .lookup(name)
                    .ok_or_else(|| self.err(*pos, format!("column \"{name}\" does not exist")))?;
                Expr::Column { index, name: name.clone(), ty: ty.clone() }
            }
            Ast::Neg { expr, pos } => match self.operand(expr)? {
                Operand::Typed(Expr::Const { value: Some(v), ty }) if ty.scalar.is_numeric_family() && !ty.array => {
                    let v = negate(v).ok_or_else(|| self.err(*pos, "value out of range"))?;
                    Expr::Const { value: Some(v), ty }
                }
                _ => return Err(self.err(*pos, "unary minus is only supported on numeric literals")),
            },
            Ast::Cast { expr, ty, pos } => {
                let target = match ScalarType::from_sql_name(&ty.name) {
                    Some(s) => PgType { scalar: s, array: ty.array },
                    None => {
                        return Err(self.err(*pos, format!("type \"{}\" is not supported in where clauses", ty.name)));
                    }
                };
                match self.operand(expr)? {
                    Operand::Typed(e) => self.cast(e, &target, *pos)?,
                    u => self.coerce(u, &target, expr.pos())?,
                }
            }
            Ast::Not { expr, .. } => Expr::Not(Box::new(self.boolean(expr)?)),
            Ast::And(items) => Expr::And(items.iter().map(|a| self.boolean(a)).collect::<Result<_, _>>()?),
            Ast::Or(items) => Expr::Or(items.iter().map(|a| self.boolean(a)).collect::<Result<_, _>>()?),
            Ast::Cmp { op, l, r, pos } => {
                let (l, r, ty) = self.unify_pair(l, r, *pos, op.sql())?;
                if matches!(ty.scalar, ScalarType::Other(_)) || (ty.scalar == ScalarType::Jsonb && !op.is_equality()) {
                    return Err(self.err(*pos, format!("operator does not exist: {ty} {} {ty}", op.sql())));
                }
                Expr::Cmp { op: *op, l: Box::new(l), r: Box::new(r), ty }
            }
            Ast::Between { expr, lo, hi, negated, pos } => {
                // x BETWEEN a AND b is defined as x >= a AND x <= b.
                let lower = self.operand(&Ast::Cmp { op: CmpOp::Ge, l: expr.clone(), r: lo.clone(), pos: *pos })?;
                let upper = self.operand(&Ast::Cmp { op: CmpOp::Le, l: expr.clone(), r: hi.clone(), pos: *pos })?;
                let (Operand::Typed(lower), Operand::Typed(upper)) = (lower, upper) else {
                    return Err(self.err(*pos, "invalid BETWEEN"));
                };
                let both = Expr::And(vec![lower, upper]);
                if *negated { Expr::Not(Box::new(both)) } else { both }
            }
            Ast::Quantified { op, all, l, r, pos } => {
                let lo = self.operand(l)?;
                let ro = self.operand(r)?;
                let elem = match (&lo, &ro) {
                    (_, Operand::Typed(re)) if !re.ty().array => {
                        return Err(self.err(r.pos(), "op ANY/ALL (array) requires an array on the right"));
                    }
                    (Operand::Typed(le), Operand::Typed(re)) => common_type(&le.ty(), &re.ty().element()),
                    (Operand::Typed(le), Operand::Unknown { .. }) => Some(le.ty()),
                    (Operand::Unknown { .. }, Operand::Typed(re)) => Some(re.ty().element()),
                    _ => Some(text_ty()),
                };
                let elem = elem
                    .filter(|t| {
                        !t.array
                            && !matches!(t.scalar, ScalarType::Other(_))
                            && (t.scalar != ScalarType::Jsonb || op.is_equality())
                    })
                    .ok_or_else(|| self.err(*pos, "operator does not exist for these operand types"))?;
                let arr = PgType::array_of(elem.scalar.clone());
                let l = self.coerce(lo, &elem, l.pos())?;
                let r = self.coerce(ro, &arr, r.pos())?;
                Expr::Quantified { op: *op, all: *all, l: Box::new(l), r: Box::new(r), ty: elem }
            }
            Ast::ArrayOp { op, l, r, pos } => {
                let (l, r, ty) = self.unify_pair(l, r, *pos, "array operator")?;
                if !ty.array {
                    return Err(self.err(
                        *pos,
                        format!(
                            "operator does not exist: {ty} {} {ty}",
                            match op {
                                crate::parser::ArrayOp::Contains => "@>",
                                crate::parser::ArrayOp::ContainedBy => "<@",
                                crate::parser::ArrayOp::Overlaps => "&&",
                            }
                        ),
                    ));
                }
                Expr::ArrayOp { op: *op, l: Box::new(l), r: Box::new(r), ty }
            }
            Ast::Concat { l, r, pos } => {
                let lo = self.operand(l)?;
                let ro = self.operand(r)?;
                let textish = |o: &Operand| match o {
                    Operand::Unknown { .. } => true,
                    Operand::Typed(e) => e.ty().is_text_like(),
                };
                // jsonb || jsonb is jsonb concatenation, which is not offered.
                let non_array = |o: &Operand| match o {
                    Operand::Unknown { .. } => true,
                    Operand::Typed(e) => {
                        !e.ty().array && !matches!(e.ty().scalar, ScalarType::Other(_) | ScalarType::Jsonb)
                    }
                };
                if !(textish(&lo) || textish(&ro)) || !non_array(&lo) || !non_array(&ro) {
                    return Err(self.err(*pos, "operator || is only supported on text (array concatenation is not)"));
                }
                let l = self.to_text(lo, l.pos())?;
                let r = self.to_text(ro, r.pos())?;
                Expr::Concat(Box::new(l), Box::new(r))
            }
            Ast::Distinct { l, r, negated, pos } => {
                let (l, r, ty) = self.unify_pair(l, r, *pos, "IS DISTINCT FROM")?;
                if matches!(ty.scalar, ScalarType::Other(_)) {
                    return Err(self.err(*pos, format!("operator does not exist: {ty} = {ty}")));
                }
                Expr::Distinct { l: Box::new(l), r: Box::new(r), negated: *negated, ty }
            }
            Ast::Is { expr, test, negated, .. } => {
                let e = match test {
                    IsTest::Null => self.typed(expr)?,
                    _ => self.boolean(expr)?,
                };
                Expr::Is { expr: Box::new(e), test: *test, negated: *negated }
            }
            Ast::Row { pos, .. } => {
                return Err(self.err(*pos, "a row of columns can only be compared with IN (SELECT ...)"));
            }
            Ast::InSelect { left, select, negated, pos } => self.in_select(left, select, *negated, *pos)?,
            Ast::In { expr, list, negated, pos } => {
                let first = self.operand(expr)?;
                let items = list.iter().map(|a| self.operand(a)).collect::<Result<Vec<_>, _>>()?;
                let mut ty: Option<PgType> = None;
                for o in std::iter::once(&first).chain(items.iter()) {
                    if let Operand::Typed(e) = o {
                        let t = e.ty();
                        ty = Some(match ty {
                            None => t,
                            Some(prev) => common_type(&prev, &t)
                                .ok_or_else(|| self.err(*pos, format!("IN types {prev} and {t} cannot be matched")))?,
                        });
                    }
                }
                let ty = ty.unwrap_or_else(text_ty);
                if matches!(ty.scalar, ScalarType::Other(_)) {
                    return Err(self.err(*pos, format!("operator does not exist: {ty} = {ty}")));
                }
                let e = self.coerce(first, &ty, expr.pos())?;
                let list = items
                    .into_iter()
                    .zip(list)
                    .map(|(o, a)| self.coerce(o, &ty, a.pos()))
                    .collect::<Result<Vec<_>, _>>()?;
                Expr::In { expr: Box::new(e), list, negated: *negated, ty }
            }
            Ast::Like { expr, pattern, escape, ci, negated, pos } => {
                let e = match self.operand(expr)? {
                    Operand::Typed(e) if e.ty().is_text_like() => e,
                    Operand::Typed(e) => {
                        return Err(self.err(
                            *pos,
                            format!("operator does not exist: {} {}LIKE text", e.ty(), if *ci { "I" } else { "" }),
                        ));
                    }
                    u => self.coerce(u, &text_ty(), expr.pos())?,
                };
                let p = self.operand(pattern)?;
                let p = self.coerce(p, &text_ty(), pattern.pos())?;
                let esc = match escape {
                    Some(x) => {
                        let o = self.operand(x)?;
                        Some(Box::new(self.coerce(o, &text_ty(), x.pos())?))
                    }
                    None => None,
                };
                Expr::Like { expr: Box::new(e), pattern: Box::new(p), escape: esc, ci: *ci, negated: *negated }
            }
            Ast::Func { name, args, pos } => match (name.as_str(), args.as_slice()) {
                ("lower" | "upper", [arg]) => {
                    let o = self.operand(arg)?;
                    let e = match o {
                        Operand::Typed(e) if !e.ty().is_text_like() => {
                            return Err(self.err(arg.pos(), format!("function {name}({}) does not exist", e.ty())));
                        }
                        o => self.coerce(o, &text_ty(), arg.pos())?,
                    };
                    if name == "lower" { Expr::Lower(Box::new(e)) } else { Expr::Upper(Box::new(e)) }
                }
                ("lower" | "upper", _) => return Err(self.err(*pos, format!("function {name} takes one argument"))),
                _ => return Err(self.err(*pos, format!("function {name} is not supported"))),
            },
            Ast::Array { items, pos } => {
                let ops = items.iter().map(|a| self.operand(a)).collect::<Result<Vec<_>, _>>()?;
                let mut ty: Option<PgType> = None;
                for o in &ops {
                    if let Operand::Typed(e) = o {
                        let t = e.ty();
                        if t.array {
                            return Err(self.err(*pos, "multidimensional arrays are not supported"));
                        }
                        ty = Some(match ty {
                            None => t,
                            Some(prev) => common_type(&prev, &t).ok_or_else(|| {
                                self.err(*pos, format!("ARRAY types {prev} and {t} cannot be matched"))
                            })?,
                        });
                    }
                }
                let elem = ty.unwrap_or_else(text_ty);
                if matches!(elem.scalar, ScalarType::Other(_)) {
                    return Err(self.err(*pos, format!("arrays of {elem} are not supported")));
                }
                let items = ops
                    .into_iter()
                    .zip(items)
                    .map(|(o, a)| self.coerce(o, &elem, a.pos()))
                    .collect::<Result<Vec<_>, _>>()?;
                Expr::ArrayCtor { items, ty: PgType::array_of(elem.scalar) }
            }
        }))
    }

    /// `left [NOT] IN (SELECT …)`: the subquery is typed against its own table, with the same
    /// parameters, and pinned to the tenant its table description carries.
    fn in_select(&self, left: &Ast, select: &Select, negated: bool, pos: usize) -> Result<Expr, WhereError> {
        let Some(tables) = self.tables else {
            let reason = if self.in_subquery {
                "subqueries nested inside a subquery are not supported"
            } else {
                "subqueries are not supported here"
            };
            return Err(self.err(pos, reason));
        };
        let refs: Vec<&Ast> = match left {
            Ast::Row { items, .. } => items.iter().collect(),
            one => vec![one],
        };
        let mut cols = Vec::with_capacity(refs.len());
        for r in refs {
            let Ast::Column { name, pos } = r else {
                return Err(self.err(
                    r.pos(),
                    "currently, left side of `IN (SELECT ...)` can only be a column reference or a list of column references",
                ));
            };
            let (index, ty) =
                self.schema.lookup(name).ok_or_else(|| self.err(*pos, format!("column \"{name}\" does not exist")))?;
            cols.push((index, name.clone(), ty.clone(), *pos));
        }
        let table = tables
            .get(&select.table)
            .ok_or_else(|| self.err(select.table_pos, format!("relation \"{}\" does not exist", select.table)))?;
        let selected = crate::subquery::check_columns(self.src, &cols, &select.columns, table)?;
        let nested = std::cell::RefCell::new(Vec::new());
        let inner = Checker {
            src: self.src,
            schema: &table.schema,
            params: self.params,
            tables: None,
            subqueries: &nested,
            eval_steps: self.eval_steps,
            in_subquery: true,
        };
        let expr = select.filter.as_ref().map(|f| inner.check_root(f)).transpose()?;
        let mut clause = crate::WhereClause::from_parts(table.schema.clone(), expr, self.eval_steps);
        if let Some((column, value)) = &table.tenant {
            clause = clause.and_tenant(column, value)?;
        }
        let mut subs = self.subqueries.borrow_mut();
        if subs.len() >= crate::subquery::MAX_SUBQUERIES {
            return Err(self.err(pos, format!("at most {} subqueries are supported", crate::subquery::MAX_SUBQUERIES)));
        }
        subs.push(crate::Subquery::new(select.table.clone(), table.sql_name.clone(), selected, clause));
        Ok(Expr::InSelect {
            left: cols.into_iter().map(|(i, n, t, _)| (i, n, t)).collect(),
            sub: subs.len() - 1,
            negated,
        })
    }

    fn to_text(&self, o: Operand, pos: usize) -> Result<Expr, WhereError> {
        match o {
            Operand::Typed(e) => self.cast(e, &text_ty(), pos),
            u => self.coerce(u, &text_ty(), pos),
        }
    }

    /// Both operands of a binary operator brought to their common type.
    fn unify_pair(&self, l: &Ast, r: &Ast, pos: usize, what: &str) -> Result<(Expr, Expr, PgType), WhereError> {
        let lo = self.operand(l)?;
        let ro = self.operand(r)?;
        let ty = match (&lo, &ro) {
            (Operand::Typed(a), Operand::Typed(b)) => {
                let (ta, tb) = (a.ty(), b.ty());
                common_type(&ta, &tb)
                    .ok_or_else(|| self.err(pos, format!("operator does not exist: {ta} {what} {tb}")))?
            }
            (Operand::Typed(a), _) => a.ty(),
            (_, Operand::Typed(b)) => b.ty(),
            _ => text_ty(),
        };
        let l = self.coerce(lo, &ty, l.pos())?;
        let r = self.coerce(ro, &ty, r.pos())?;
        Ok((l, r, ty))
    }
}

/// Postgres types numeric literals by size: int4, then int8, then numeric.
fn number(text: &str) -> Option<Expr> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(v) = text.parse::<i32>() {
            return Some(Expr::Const { value: Some(Value::Int(i64::from(v))), ty: PgType::scalar(ScalarType::Int4) });
        }
        if let Ok(v) = text.parse::<i64>() {
            return Some(Expr::Const { value: Some(Value::Int(v)), ty: PgType::scalar(ScalarType::Int8) });
        }
    }
    let n = value::parse_numeric(text).ok()?;
    Some(Expr::Const { value: Some(Value::Numeric(n)), ty: PgType::scalar(ScalarType::Numeric) })
}

fn negate(v: Value) -> Option<Value> {
    Some(match v {
        Value::Int(i) => Value::Int(i.checked_neg()?),
        Value::Numeric(Num::Finite(d)) => Value::Numeric(Num::Finite(-d)),
        Value::Numeric(Num::PosInf) => Value::Numeric(Num::NegInf),
        Value::Numeric(Num::NegInf) => Value::Numeric(Num::PosInf),
        Value::Float4(f) => Value::Float4(-f),
        Value::Float8(f) => Value::Float8(-f),
        other => other,
    })
}

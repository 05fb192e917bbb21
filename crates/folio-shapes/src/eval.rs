//! Evaluates a typed predicate over one row of Postgres text-format values with SQL's
//! three-valued logic (`None` is NULL).

use std::cmp::Ordering;

use crate::error::EvalError;
use crate::expr::Expr;
use crate::parser::{ArrayOp, CmpOp, IsTest};
use crate::value::{self, Value};

pub(crate) struct Row<'r> {
    pub values: &'r [Option<&'r str>],
}

type EResult = Result<Option<Value>, EvalError>;

fn rt(msg: impl Into<String>) -> EvalError {
    EvalError::Runtime(msg.into())
}

fn apply(op: CmpOp, o: Ordering) -> bool {
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

fn as_bool(v: Option<Value>) -> Result<Option<bool>, EvalError> {
    match v {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(rt(format!("expected a boolean, got {}", other.to_pg_text()))),
    }
}

fn as_text(v: Value) -> Result<String, EvalError> {
    match v {
        Value::Text(s) => Ok(s),
        other => Err(rt(format!("expected text, got {}", other.to_pg_text()))),
    }
}

fn as_array(v: Value) -> Result<Vec<Option<Value>>, EvalError> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(rt(format!("expected an array, got {}", other.to_pg_text()))),
    }
}

/// Case mapping one character at a time, keeping characters whose mapping is not a single
/// character (ß, İ): Postgres' lower()/upper() under libc locales map per character too.
fn map_chars(s: &str, upper: bool) -> String {
    s.chars()
        .map(|c| {
            let mut m: Vec<char> = if upper { c.to_uppercase().collect() } else { c.to_lowercase().collect() };
            if m.len() == 1 { m.pop().unwrap_or(c) } else { c }
        })
        .collect()
}

pub(crate) fn eval_bool(e: &Expr, row: &Row<'_>) -> Result<Option<bool>, EvalError> {
    as_bool(eval(e, row)?)
}

/// AND (`decisive` = false) or OR (`decisive` = true) in three-valued logic, left to right,
/// stopping at the first decisive operand or error, as Postgres' executor does on the tree
/// its planner folded (see `fold`).
fn junction(items: &[Expr], row: &Row<'_>, decisive: bool) -> Result<Option<bool>, EvalError> {
    let mut saw_null = false;
    for x in items {
        match eval_bool(x, row)? {
            Some(b) if b == decisive => return Ok(Some(decisive)),
            Some(_) => {}
            None => saw_null = true,
        }
    }
    Ok((!saw_null).then_some(!decisive))
}

pub(crate) fn eval(e: &Expr, row: &Row<'_>) -> EResult {
    Ok(match e {
        Expr::Const { value, .. } => value.clone(),
        Expr::Column { index, name, ty } => match row.values.get(*index).copied().flatten() {
            None => None,
            Some(text) => Some(
                value::parse_value(text, ty)
                    .map_err(|reason| EvalError::BadColumnValue { column: name.clone(), reason })?,
            ),
        },
        Expr::Cast { expr, from, to } => match eval(expr, row)? {
            None => None,
            Some(v) => Some(value::cast(v, from, to).map_err(rt)?),
        },
        Expr::Not(x) => eval_bool(x, row)?.map(|b| Value::Bool(!b)),
        Expr::And(items) => junction(items, row, false)?.map(Value::Bool),
        Expr::Or(items) => junction(items, row, true)?.map(Value::Bool),
        Expr::Cmp { op, l, r, ty } => {
            let (Some(a), Some(b)) = (eval(l, row)?, eval(r, row)?) else { return Ok(None) };
            Some(Value::Bool(apply(*op, value::compare(&a, &b, &ty.scalar))))
        }
        Expr::Quantified { op, all, l, r, ty } => {
            let Some(arr) = eval(r, row)? else { return Ok(None) };
            let arr = as_array(arr)?;
            let x = eval(l, row)?;
            // Empty array: ANY is false and ALL is true, even for a NULL left side.
            let mut saw_null = false;
            for item in &arr {
                let res = match (&x, item) {
                    (Some(x), Some(item)) => Some(apply(*op, value::compare(x, item, &ty.scalar))),
                    _ => None,
                };
                match res {
                    Some(b) if b != *all => return Ok(Some(Value::Bool(b))),
                    None => saw_null = true,
                    _ => {}
                }
            }
            (!saw_null).then_some(Value::Bool(*all))
        }
        Expr::ArrayOp { op, l, r, ty } => {
            let (Some(a), Some(b)) = (eval(l, row)?, eval(r, row)?) else { return Ok(None) };
            let (a, b) = (as_array(a)?, as_array(b)?);
            let scalar = &ty.scalar;
            // NULL elements never match in @>, <@ and && (array_contain_compare).
            let contains = |hay: &[Option<Value>], needles: &[Option<Value>]| {
                needles.iter().all(|n| match n {
                    None => false,
                    Some(n) => hay.iter().flatten().any(|h| value::compare(h, n, scalar) == Ordering::Equal),
                })
            };
            Some(Value::Bool(match op {
                ArrayOp::Contains => contains(&a, &b),
                ArrayOp::ContainedBy => contains(&b, &a),
                ArrayOp::Overlaps => a
                    .iter()
                    .flatten()
                    .any(|x| b.iter().flatten().any(|y| value::compare(x, y, scalar) == Ordering::Equal)),
            }))
        }
        Expr::Is { expr, test, negated } => {
            let v = eval(expr, row)?;
            let hit = match test {
                IsTest::Null => v.is_none(),
                IsTest::Unknown => as_bool(v)?.is_none(),
                IsTest::True => as_bool(v)? == Some(true),
                IsTest::False => as_bool(v)? == Some(false),
            };
            Some(Value::Bool(hit != *negated))
        }
        Expr::Distinct { l, r, negated, ty } => {
            let distinct = match (eval(l, row)?, eval(r, row)?) {
                (None, None) => false,
                (Some(a), Some(b)) => value::compare(&a, &b, &ty.scalar) != Ordering::Equal,
                _ => true,
            };
            Some(Value::Bool(distinct != *negated))
        }
        Expr::Like { expr, pattern, escape, ci, negated } => {
            let Some(s) = eval(expr, row)? else { return Ok(None) };
            let Some(p) = eval(pattern, row)? else { return Ok(None) };
            let esc = match escape {
                None => Some('\\'),
                Some(x) => match eval(x, row)? {
                    None => return Ok(None),
                    Some(v) => {
                        let t = as_text(v)?;
                        let mut cs = t.chars();
                        match (cs.next(), cs.next()) {
                            (None, _) => None,
                            (Some(c), None) => Some(c),
                            _ => return Err(rt("invalid escape string: escape string must be empty or one character")),
                        }
                    }
                },
            };
            let (mut s, mut p) = (as_text(s)?, as_text(p)?);
            if *ci {
                s = map_chars(&s, false);
                p = map_chars(&p, false);
            }
            let m = like_match(&s, &p, esc)?;
            Some(Value::Bool(m != *negated))
        }
        Expr::In { expr, list, negated, ty } => {
            let Some(x) = eval(expr, row)? else { return Ok(None) };
            let mut saw_null = false;
            let mut found = false;
            for item in list {
                match eval(item, row)? {
                    None => saw_null = true,
                    Some(v) if value::compare(&x, &v, &ty.scalar) == Ordering::Equal => {
                        found = true;
                        break;
                    }
                    Some(_) => {}
                }
            }
            if found {
                Some(Value::Bool(!*negated))
            } else if saw_null {
                None
            } else {
                Some(Value::Bool(*negated))
            }
        }
        Expr::Lower(x) => eval(x, row)?.map(|v| as_text(v).map(|s| Value::Text(map_chars(&s, false)))).transpose()?,
        Expr::Upper(x) => eval(x, row)?.map(|v| as_text(v).map(|s| Value::Text(map_chars(&s, true)))).transpose()?,
        Expr::Concat(a, b) => {
            let (Some(a), Some(b)) = (eval(a, row)?, eval(b, row)?) else { return Ok(None) };
            let mut s = as_text(a)?;
            s.push_str(&as_text(b)?);
            Some(Value::Text(s))
        }
        Expr::ArrayCtor { items, .. } => {
            Some(Value::Array(items.iter().map(|x| eval(x, row)).collect::<Result<_, _>>()?))
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    Lit(char),
    One,
    Any,
}

/// LIKE on characters: `%` any run, `_` one character, `esc` quotes the next character.
pub(crate) fn like_match(s: &str, pattern: &str, esc: Option<char>) -> Result<bool, EvalError> {
    let mut pat = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        if Some(c) == esc {
            match it.next() {
                Some(n) => pat.push(Pat::Lit(n)),
                None => return Err(rt("LIKE pattern must not end with escape character")),
            }
        } else if c == '%' {
            if pat.last() != Some(&Pat::Any) {
                pat.push(Pat::Any);
            }
        } else if c == '_' {
            pat.push(Pat::One);
        } else {
            pat.push(Pat::Lit(c));
        }
    }
    let s: Vec<char> = s.chars().collect();
    // Greedy matching with one backtrack point per `%`: O(len(s) * len(pattern)) worst case.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match pat.get(pi) {
            Some(Pat::Any) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(Pat::One) => {
                si += 1;
                pi += 1;
            }
            Some(Pat::Lit(c)) if *c == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return Ok(false),
            },
        }
    }
    Ok(pat[pi..].iter().all(|p| *p == Pat::Any))
}

#[cfg(test)]
mod tests {
    use super::like_match;

    #[test]
    fn like_handles_wildcards_and_escapes() {
        assert!(like_match("abc", "a%", Some('\\')).unwrap());
        assert!(like_match("abc", "_b_", Some('\\')).unwrap());
        assert!(!like_match("abc", "_b", Some('\\')).unwrap());
        assert!(like_match("a%c", r"a\%c", Some('\\')).unwrap());
        assert!(!like_match("abc", r"a\%c", Some('\\')).unwrap());
        assert!(like_match("a\\c", r"a\c", None).unwrap());
        assert!(like_match("mississippi", "%iss%ppi", Some('\\')).unwrap());
        assert!(like_match("", "%", Some('\\')).unwrap());
        assert!(like_match("é", "_", Some('\\')).unwrap());
        assert!(like_match("abc", "a", Some('\\')).is_ok_and(|m| !m));
        assert!(like_match("abc", r"ab\", Some('\\')).is_err());
    }
}

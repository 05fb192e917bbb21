//! Evaluates a typed predicate over one row of Postgres text-format values with SQL's
//! three-valued logic (`None` is NULL).

use std::{cell::Cell, cmp::Ordering, collections::HashMap};

use crate::error::EvalError;
use crate::expr::Expr;
use crate::parser::{ArrayOp, CmpOp, IsTest};
use crate::value::{self, Value};

pub(crate) struct Row<'r> {
    pub values: &'r [Option<&'r str>],
    /// What each subquery of the clause yields now (`Expr::InSelect` refers to them by index).
    pub sets: &'r [crate::ValueSet],
    /// Steps this evaluation may still take (see [`crate::Limits::eval_steps`]).
    pub budget: Cell<u64>,
    pub limit: u64,
}

impl<'r> Row<'r> {
    pub(crate) fn new(values: &'r [Option<&'r str>], steps: u64) -> Self {
        Row { values, sets: &[], budget: Cell::new(steps), limit: steps }
    }

    pub(crate) fn with_sets(values: &'r [Option<&'r str>], sets: &'r [crate::ValueSet], steps: u64) -> Self {
        Row { values, sets, budget: Cell::new(steps), limit: steps }
    }

    /// A row without values, for constant subexpressions.
    pub(crate) fn unbound_by_row(steps: u64) -> Self {
        Row::new(&[], steps)
    }

    /// Takes `steps` from the budget, or fails once it is spent: an evaluation's cost is
    /// bounded whatever the clause and the row's values (a step is about one character or
    /// one value compared).
    fn charge(&self, steps: u64) -> Result<(), EvalError> {
        let left = self.budget.get();
        if steps > left {
            self.budget.set(0);
            return Err(EvalError::BudgetExceeded { steps: self.limit });
        }
        self.budget.set(left - steps);
        Ok(())
    }
}

/// What comparing or copying a value costs, in steps: proportional to its size.
fn weight(v: &Value) -> u64 {
    match v {
        Value::Text(s) | Value::Other(s) => 1 + s.len() as u64 / 16,
        Value::Array(items) => 1 + items.iter().flatten().map(weight).sum::<u64>(),
        Value::Json(_) | Value::Numeric(_) => 1 + v.to_pg_text().len() as u64 / 16,
        _ => 1,
    }
}

fn compare_cost(a: &Value, b: &Value) -> u64 {
    weight(a).min(weight(b))
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
    row.charge(1)?;
    Ok(match e {
        Expr::Const { value, .. } => value.clone(),
        Expr::Column { index, name, ty } => match row.values.get(*index).copied().flatten() {
            None => None,
            Some(text) => Some({
                row.charge(1 + text.len() as u64 / 8)?;
                value::parse_value(text, ty)
                    .map_err(|reason| EvalError::BadColumnValue { column: name.clone(), reason })?
            }),
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
            row.charge(compare_cost(&a, &b))?;
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
                    (Some(x), Some(item)) => {
                        row.charge(compare_cost(x, item))?;
                        Some(apply(*op, value::compare(x, item, &ty.scalar)))
                    }
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
            // Containment and overlap compare every element with every other at worst.
            let (wa, wb) = (a.iter().flatten().map(weight).sum::<u64>(), b.iter().flatten().map(weight).sum::<u64>());
            row.charge(wa.saturating_mul(b.len() as u64).saturating_add(wb.saturating_mul(a.len() as u64)))?;
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
                (Some(a), Some(b)) => {
                    row.charge(compare_cost(&a, &b))?;
                    value::compare(&a, &b, &ty.scalar) != Ordering::Equal
                }
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
                row.charge(1 + (s.len() + p.len()) as u64)?;
                s = map_chars(&s, false);
                p = map_chars(&p, false);
            }
            let pattern = LikePattern::compile(&p, esc)?;
            row.charge(pattern.cost(&s))?;
            let m = pattern.matches(&s);
            Some(Value::Bool(m != *negated))
        }
        Expr::InSelect { left, sub, negated } => {
            let vals: Vec<Option<&str>> = left.iter().map(|(i, _, _)| row.values[*i]).collect();
            let set = row.sets.get(*sub).ok_or(EvalError::SubqueryValuesMissing)?;
            row.charge(1 + vals.iter().flatten().map(|v| v.len() as u64 / 16).sum::<u64>())?;
            let found = set.test(&vals, &mut |n| row.charge(n))?;
            found.map(|b| Value::Bool(b != *negated))
        }
        Expr::In { expr, list, negated, ty } => {
            let Some(x) = eval(expr, row)? else { return Ok(None) };
            let mut saw_null = false;
            let mut found = false;
            for item in list {
                let v = eval(item, row)?;
                if let Some(v) = &v {
                    row.charge(compare_cost(&x, v))?;
                }
                match v {
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
        Expr::Lower(x) | Expr::Upper(x) => match eval(x, row)? {
            None => None,
            Some(v) => {
                let s = as_text(v)?;
                row.charge(1 + s.len() as u64)?;
                Some(Value::Text(map_chars(&s, matches!(e, Expr::Upper(_)))))
            }
        },
        Expr::Concat(a, b) => {
            let (Some(a), Some(b)) = (eval(a, row)?, eval(b, row)?) else { return Ok(None) };
            row.charge(weight(&a) + weight(&b))?;
            let mut s = as_text(a)?;
            s.push_str(&as_text(b)?);
            Some(Value::Text(s))
        }
        Expr::ArrayCtor { items, .. } => {
            Some(Value::Array(items.iter().map(|x| eval(x, row)).collect::<Result<_, _>>()?))
        }
    })
}

/// A compiled LIKE pattern, matched as a bit-parallel NFA (Shift-And with `%` as a
/// self-loop): one pass over the subject, `ceil((len(pattern) + 1) / 64)` word operations per
/// character, no backtracking, so a pattern cannot make a match super-linear in the subject.
pub(crate) struct LikePattern {
    /// Number of pattern elements (`%` runs, `_`, literal characters); state `i` means the
    /// first `i` elements matched.
    len: usize,
    words: usize,
    /// Per literal character: the elements that are that character.
    literal: HashMap<char, Vec<u64>>,
    /// `_` elements (match any one character).
    one: Vec<u64>,
    /// `%` elements (match any run, including the empty one).
    any: Vec<u64>,
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

impl LikePattern {
    /// `%` any run, `_` one character, `esc` quotes the next character.
    pub(crate) fn compile(pattern: &str, esc: Option<char>) -> Result<Self, EvalError> {
        enum Element {
            Lit(char),
            One,
            Any,
        }
        let mut elements = Vec::new();
        let mut it = pattern.chars();
        while let Some(c) = it.next() {
            if Some(c) == esc {
                match it.next() {
                    Some(n) => elements.push(Element::Lit(n)),
                    None => return Err(rt("LIKE pattern must not end with escape character")),
                }
            } else if c == '%' {
                // A run of `%` is one element: the closure below then needs a single step.
                if !matches!(elements.last(), Some(Element::Any)) {
                    elements.push(Element::Any);
                }
            } else if c == '_' {
                elements.push(Element::One);
            } else {
                elements.push(Element::Lit(c));
            }
        }
        let len = elements.len();
        let words = len / 64 + 1;
        let mut p = LikePattern { len, words, literal: HashMap::new(), one: vec![0; words], any: vec![0; words] };
        for (i, e) in elements.iter().enumerate() {
            match e {
                Element::Lit(c) => set_bit(p.literal.entry(*c).or_insert_with(|| vec![0; words]), i),
                Element::One => set_bit(&mut p.one, i),
                Element::Any => set_bit(&mut p.any, i),
            }
        }
        Ok(p)
    }

    /// Steps matching `subject` takes: its characters times the words of state.
    pub(crate) fn cost(&self, subject: &str) -> u64 {
        (1 + subject.len() as u64).saturating_mul(self.words as u64)
    }

    /// Adds the states reachable through `%` matching the empty run.
    fn close(&self, state: &mut [u64]) {
        let mut carry = 0;
        for (w, any) in state.iter_mut().zip(&self.any) {
            let through = *w & any;
            *w |= (through << 1) | carry;
            carry = through >> 63;
        }
    }

    pub(crate) fn matches(&self, subject: &str) -> bool {
        let mut state = vec![0u64; self.words];
        let mut next = vec![0u64; self.words];
        state[0] = 1;
        self.close(&mut state);
        let none = vec![0u64; self.words];
        for c in subject.chars() {
            let literal = self.literal.get(&c).unwrap_or(&none);
            let mut carry = 0;
            let mut alive = 0;
            for k in 0..self.words {
                let step = state[k] & (literal[k] | self.one[k]);
                next[k] = (step << 1) | carry | (state[k] & self.any[k]);
                carry = step >> 63;
                alive |= next[k];
            }
            if alive == 0 {
                return false;
            }
            self.close(&mut next);
            std::mem::swap(&mut state, &mut next);
        }
        state[self.len / 64] & (1 << (self.len % 64)) != 0
    }
}

/// LIKE on characters: `%` any run, `_` one character, `esc` quotes the next character.
#[cfg(test)]
pub(crate) fn like_match(s: &str, pattern: &str, esc: Option<char>) -> Result<bool, EvalError> {
    Ok(LikePattern::compile(pattern, esc)?.matches(s))
}

#[cfg(test)]
mod tests {
    use super::{LikePattern, like_match};

    /// The textbook recursive matcher: exponential on hostile patterns, exact on small ones.
    fn reference(s: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|k| reference(&s[k..], rest)),
            Some(('_', rest)) => !s.is_empty() && reference(&s[1..], rest),
            Some((c, rest)) => s.first() == Some(c) && reference(&s[1..], rest),
        }
    }

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
        assert!(like_match("", "", Some('\\')).unwrap());
        assert!(!like_match("a", "", Some('\\')).unwrap());
        assert!(like_match("é", "_", Some('\\')).unwrap());
        assert!(like_match("abc", "a", Some('\\')).is_ok_and(|m| !m));
        assert!(like_match("abc", r"ab\", Some('\\')).is_err());
    }

    #[test]
    fn the_bit_parallel_matcher_agrees_with_the_reference_on_every_small_case() {
        // Every subject and pattern over a tiny alphabet up to these lengths.
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let subjects = all(&['a', 'b'], 6);
        let patterns = all(&['a', 'b', '%', '_'], 5);
        for p in &patterns {
            let compiled = LikePattern::compile(p, None).unwrap();
            let pc: Vec<char> = p.chars().collect();
            for s in &subjects {
                let sc: Vec<char> = s.chars().collect();
                assert_eq!(compiled.matches(s), reference(&sc, &pc), "{s:?} LIKE {p:?}");
            }
        }
    }

    #[test]
    fn patterns_longer_than_one_word_of_state_match_across_word_boundaries() {
        for len in [62, 63, 64, 65, 127, 128, 129, 300] {
            let s = "ab".repeat(len);
            let exact = s.clone();
            assert!(like_match(&s, &exact, None).unwrap(), "{len}");
            let ones = "_".repeat(s.len());
            assert!(like_match(&s, &ones, None).unwrap(), "{len}");
            assert!(!like_match(&s, &format!("{ones}_"), None).unwrap(), "{len}");
            let split = format!("{}%{}", &s[..s.len() / 2 - 1], &s[s.len() / 2 + 1..]);
            assert!(like_match(&s, &split, None).unwrap(), "{len}");
            assert!(!like_match(&s, &format!("{split}x"), None).unwrap(), "{len}");
        }
    }

    #[test]
    fn a_pathological_pattern_matches_in_one_pass_over_the_subject() {
        // The attack's shape: 3,000 pattern characters over 40,000 of content that nearly
        // matches everywhere. Backtracking takes len(s) * len(p) steps (minutes in debug).
        let subject = "a".repeat(40_000);
        let pattern = format!("%{}b%", "a%".repeat(1_500));
        let started = std::time::Instant::now();
        assert!(!like_match(&subject, &pattern, None).unwrap());
        let compiled = LikePattern::compile(&pattern, None).unwrap();
        // The cost the budget is charged is known before matching starts.
        assert_eq!(compiled.cost(&subject), 40_001 * (3_002 / 64 + 1));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    }
}

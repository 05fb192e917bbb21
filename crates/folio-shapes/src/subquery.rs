//! `col IN (SELECT c FROM t WHERE …)` and `(a, b) IN (SELECT x, y FROM t …)`: a shape whose
//! rows depend on another table. The subquery is parsed and typed like a where clause of its
//! own table (with the same `$n` parameters), pinned to the same tenant, and evaluated on a
//! change against a [`ValueSet`]: what the subquery yields at that point of the change stream,
//! which the server keeps current from the other table's changes.
//!
//! Only types whose Postgres text form is canonical (one text per value) may be compared this
//! way, so that set membership on text is exactly SQL equality: integers, text, uuid, bool and
//! date. `numeric` (`1.0` = `1.00`), floats, timestamps and `bpchar` (padding) are refused.

use std::collections::HashMap;

use crate::error::{EvalError, WhereError};
use crate::schema::{PgType, ScalarType, TableSchema};
use crate::{ParamSink, WhereClause, quote_ident};

/// What the caller knows of a table a subquery names.
#[derive(Debug, Clone)]
pub struct SubqueryTable {
    /// The table as SQL, already quoted (`"public"."clients"`).
    pub sql_name: String,
    pub schema: TableSchema,
    /// `(column, value)` pinned inside the subquery (the caller's tenant), if the table has one.
    pub tenant: Option<(String, String)>,
}

/// One subquery of a clause: the table it reads, the columns it selects, its own clause
/// (tenant pin included).
#[derive(Debug, Clone, PartialEq)]
pub struct Subquery {
    table: String,
    sql_name: String,
    /// Selected columns: index in the subquery table's schema and name.
    columns: Vec<(usize, String)>,
    clause: WhereClause,
}

/// Most subqueries one clause may hold.
pub const MAX_SUBQUERIES: usize = 8;

pub(crate) fn value_type_supported(ty: &PgType) -> bool {
    use ScalarType::*;
    !ty.array && matches!(ty.scalar, Int2 | Int4 | Int8 | Text | Varchar | Uuid | Bool | Date)
}

impl Subquery {
    pub(crate) fn new(table: String, sql_name: String, columns: Vec<(usize, String)>, clause: WhereClause) -> Self {
        Subquery { table, sql_name, columns, clause }
    }

    /// The table's name as written in the clause (unqualified, the shape's schema).
    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn schema(&self) -> &TableSchema {
        self.clause.schema()
    }

    /// The subquery's own clause, tenant pin included.
    pub fn clause(&self) -> &WhereClause {
        &self.clause
    }

    /// The tuple this row of the subquery's table contributes: its selected values when the
    /// row satisfies the subquery's clause (tenant pin included), else None.
    pub fn yields(&self, row: &[Option<&str>]) -> Result<Option<Tuple>, EvalError> {
        if !self.clause.matches(row)? {
            return Ok(None);
        }
        Ok(Some(self.columns.iter().map(|(i, _)| row[*i].map(str::to_owned)).collect()))
    }

    /// `SELECT c1::text, …, count(*) FROM t WHERE <clause> GROUP BY c1, …`: the query whose
    /// rows fill a [`ValueSet`] (with [`ValueSet::add_counted`]).
    pub fn counts_sql(&self, sink: &mut ParamSink) -> String {
        let cols: Vec<String> = self.columns.iter().map(|(_, n)| quote_ident(n)).collect();
        let texts: Vec<String> = cols.iter().map(|c| format!("{c}::text")).collect();
        format!(
            "SELECT {}, count(*) FROM {} WHERE {} GROUP BY {}",
            texts.join(", "),
            self.sql_name,
            self.clause.to_sql(sink),
            cols.join(", ")
        )
    }

    /// `SELECT c1, … FROM t WHERE <clause>`, the subquery as rendered inside the shape's SQL.
    pub(crate) fn to_sql(&self, sink: &mut ParamSink) -> String {
        let cols: Vec<String> = self.columns.iter().map(|(_, n)| quote_ident(n)).collect();
        format!("SELECT {} FROM {} WHERE {}", cols.join(", "), self.sql_name, self.clause.to_sql(sink))
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.len()
            + self.sql_name.len()
            + self.columns.iter().map(|(_, n)| n.len() + 16).sum::<usize>()
            + self.clause.estimated_bytes()
    }
}

/// One value yielded by a subquery: the selected columns in Postgres text form.
pub type Tuple = Box<[Option<String>]>;

/// What a subquery currently yields, with how many rows yield each tuple: a tuple enters the
/// set when its count goes 0 → 1 and leaves at 1 → 0, so a change of one row never needs the
/// other rows to be decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueSet {
    counts: HashMap<Tuple, u64>,
    /// Tuples holding a NULL: membership tests with them follow SQL's three-valued logic.
    with_null: usize,
}

impl ValueSet {
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// `n` more rows yield `tuple`; true when it was not yielded before.
    pub fn add_counted(&mut self, tuple: Tuple, n: u64) -> bool {
        let has_null = tuple.iter().any(Option::is_none);
        let c = self.counts.entry(tuple).or_insert(0);
        *c += n;
        let new = *c == n;
        if new && has_null {
            self.with_null += 1;
        }
        new
    }

    /// One row less yields `tuple`; true when no row yields it any more. None when the set did
    /// not hold it (the set and the table disagree: the caller cannot decide the change).
    pub fn remove_one(&mut self, tuple: &[Option<String>]) -> Option<bool> {
        let c = self.counts.get_mut(tuple)?;
        *c -= 1;
        if *c > 0 {
            return Some(false);
        }
        self.counts.remove(tuple);
        if tuple.iter().any(Option::is_none) {
            self.with_null -= 1;
        }
        Some(true)
    }

    pub fn contains(&self, tuple: &[Option<String>]) -> bool {
        self.counts.contains_key(tuple)
    }

    /// `(l1, …) IN (the set)` with SQL semantics: TRUE on an equal tuple; else NULL when some
    /// tuple compares NULL (a NULL on either side and every other column equal); else FALSE.
    /// `steps` is charged for the linear scan the NULL cases need.
    pub(crate) fn test(
        &self,
        left: &[Option<&str>],
        charge: &mut dyn FnMut(u64) -> Result<(), EvalError>,
    ) -> Result<Option<bool>, EvalError> {
        if self.counts.is_empty() {
            return Ok(Some(false));
        }
        let left_null = left.iter().any(Option::is_none);
        if !left_null {
            let key: Vec<Option<String>> = left.iter().map(|v| v.map(str::to_owned)).collect();
            if self.counts.contains_key(key.as_slice()) {
                return Ok(Some(true));
            }
            if self.with_null == 0 {
                return Ok(Some(false));
            }
        }
        charge(self.counts.len() as u64)?;
        let unknown = self.counts.keys().any(|t| {
            t.iter().zip(left).all(|(r, l)| match (r, l) {
                (Some(r), Some(l)) => r == l,
                _ => true,
            })
        });
        Ok(if unknown { None } else { Some(false) })
    }
}

/// Checks the select list of a subquery against the left side of its IN.
pub(crate) fn check_columns(
    src: &str,
    left: &[(usize, String, PgType, usize)],
    selected: &[(String, usize)],
    table: &SubqueryTable,
) -> Result<Vec<(usize, String)>, WhereError> {
    if left.len() != selected.len() {
        let at = selected.first().map_or(0, |(_, p)| *p);
        let what = if selected.len() > left.len() { "too many" } else { "too few" };
        return Err(WhereError::at(src, at, format!("subquery has {what} columns")));
    }
    let mut out = Vec::with_capacity(left.len());
    for ((_, _, lty, _), (name, pos)) in left.iter().zip(selected) {
        let (i, rty) = table
            .schema
            .lookup(name)
            .ok_or_else(|| WhereError::at(src, *pos, format!("column \"{name}\" does not exist")))?;
        if rty != lty {
            return Err(WhereError::at(
                src,
                *pos,
                format!("left side of `IN (SELECT ...)` has type {lty} but subquery returns {rty}"),
            ));
        }
        if !value_type_supported(rty) {
            return Err(WhereError::at(
                src,
                *pos,
                format!("`IN (SELECT ...)` on type {rty} is not supported (integers, text, uuid, bool and date are)"),
            ));
        }
        out.push((i, name.clone()));
    }
    Ok(out)
}

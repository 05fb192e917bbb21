//! What lets a server find the shapes a change concerns without evaluating every shape: a
//! `column = constant` (or `column IN (constants)`) that every row of a shape satisfies.

use crate::WhereClause;
use crate::expr::Expr;
use crate::parser::CmpOp;
use crate::schema::{PgType, ScalarType};

/// Types whose Postgres text form is the one a change event carries for the same value, so
/// equal text is SQL equality (booleans print `t`, dates follow `DateStyle`: left out).
fn canonical(ty: &PgType) -> bool {
    !ty.array
        && matches!(
            ty.scalar,
            ScalarType::Int2
                | ScalarType::Int4
                | ScalarType::Int8
                | ScalarType::Text
                | ScalarType::Varchar
                | ScalarType::Uuid
        )
}

/// The column and constants of `column = constant` / `column IN (constants)`, if `e` is one.
fn equality(e: &Expr) -> Option<(usize, Vec<String>)> {
    let column = |c: &Expr, ty: &PgType| match c {
        Expr::Column { index, ty: cty, .. } if cty == ty && canonical(ty) => Some(*index),
        _ => None,
    };
    match e {
        Expr::Cmp { op: CmpOp::Eq, l, r, ty } => {
            let (index, value) = match (column(l, ty), column(r, ty)) {
                (Some(i), None) => (i, r),
                (None, Some(i)) => (i, l),
                _ => return None,
            };
            match value.as_ref() {
                Expr::Const { value: Some(v), ty: vty } if vty == ty => Some((index, vec![v.to_pg_text()])),
                // `= NULL` holds for no row.
                Expr::Const { value: None, .. } => Some((index, Vec::new())),
                _ => None,
            }
        }
        Expr::In { expr, list, negated: false, ty } => {
            let index = column(expr, ty)?;
            let mut values = Vec::with_capacity(list.len());
            for item in list {
                match item {
                    Expr::Const { value: Some(v), ty: vty } if vty == ty => values.push(v.to_pg_text()),
                    Expr::Const { value: None, .. } => {}
                    _ => return None,
                }
            }
            Some((index, values))
        }
        _ => None,
    }
}

impl WhereClause {
    /// A `column = constant` or `column IN (constants)` every row of the shape satisfies (the
    /// clause itself or one of its top-level `AND`s), on a column of integers, text or uuid:
    /// the column's index and the constants as Postgres writes them. A change whose old and
    /// new rows both hold none of them in that column cannot concern the shape.
    pub fn equality_key(&self) -> Option<(usize, Vec<String>)> {
        match self.expr.as_ref()? {
            Expr::And(items) => items.iter().find_map(equality),
            e => equality(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{TableSchema, WhereClause};

    fn key(clause: &str, params: &[&str]) -> Option<(usize, Vec<String>)> {
        let schema = TableSchema::new(
            [
                ("id", "int8"),
                ("bucket", "int4"),
                ("title", "text"),
                ("owner", "uuid"),
                ("done", "bool"),
                ("due", "date"),
            ]
            .map(|(n, t)| (n.to_owned(), t.to_owned())),
        );
        WhereClause::parse(clause, &schema, params).unwrap().equality_key()
    }

    #[test]
    fn equalities_that_every_row_satisfies_are_keys() {
        assert_eq!(key("bucket = 7", &[]), Some((1, vec!["7".into()])));
        assert_eq!(key("7 = bucket", &[]), Some((1, vec!["7".into()])));
        assert_eq!(key("bucket = $1", &["12"]), Some((1, vec!["12".into()])));
        assert_eq!(key("title = 'a b' AND id > 3", &[]), Some((2, vec!["a b".into()])));
        assert_eq!(key("id > 3 AND bucket IN (1, 2, NULL)", &[]), Some((1, vec!["1".into(), "2".into()])));
        assert_eq!(
            key("owner = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", &[]),
            Some((3, vec!["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()]))
        );
    }

    #[test]
    fn anything_else_is_not_a_key() {
        for clause in [
            "bucket > 7",
            "bucket = 7 OR id = 1",
            "NOT (bucket = 7)",
            "bucket NOT IN (1, 2)",
            "bucket = id",
            "lower(title) = 'a'",
            "done = true",
            "due = '2024-01-02'",
            "bucket::text = '7'",
        ] {
            assert_eq!(key(clause, &[]), None, "{clause}");
        }
        let schema = TableSchema::new([("id".to_owned(), "int8".to_owned())]);
        assert_eq!(WhereClause::all_rows(&schema).equality_key(), None);
    }
}

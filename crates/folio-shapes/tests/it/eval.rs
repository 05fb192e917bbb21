use folio_shapes::{EvalError, WhereClause};

use crate::common::{COLUMNS, row, schema};

fn eval(text: &str, values: &[(&str, &str)]) -> Option<bool> {
    let clause = WhereClause::parse(text, &schema(), &["7"]).unwrap_or_else(|e| panic!("{text}: {e}"));
    clause.evaluate(&row(values)).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn three_valued_logic() {
    assert_eq!(eval("i4 = 1", &[]), None);
    assert_eq!(eval("i4 = 1 AND FALSE", &[]), Some(false));
    assert_eq!(eval("i4 = 1 OR TRUE", &[]), Some(true));
    assert_eq!(eval("NOT (i4 = 1)", &[]), None);
    assert_eq!(eval("i4 IN (1, NULL)", &[("i4", "2")]), None);
    assert_eq!(eval("i4 NOT IN (1, NULL)", &[("i4", "1")]), Some(false));
    assert_eq!(eval("i4 IS NULL", &[]), Some(true));
    assert_eq!(eval("b IS UNKNOWN", &[]), Some(true));
    assert_eq!(eval("b IS NOT TRUE", &[]), Some(true));
    assert_eq!(eval("i4 = ANY('{}')", &[]), Some(false));
    assert_eq!(eval("i4 IS DISTINCT FROM 1", &[]), Some(true));
    assert_eq!(eval("i4 IS NOT DISTINCT FROM NULL", &[]), Some(true));
    assert_eq!(eval("i4 IS DISTINCT FROM 1.0", &[("i4", "1")]), Some(false));
    assert_eq!(eval("i4 = ANY(ai)", &[("i4", "3"), ("ai", "{1,NULL}")]), None);
    assert_eq!(eval("i4 = ANY(ai)", &[("i4", "1"), ("ai", "{1,NULL}")]), Some(true));
}

#[test]
fn postgres_value_semantics() {
    assert_eq!(eval("i4 = 1.0", &[("i4", "1")]), Some(true));
    assert_eq!(eval("n = 1", &[("n", "1.000")]), Some(true));
    assert_eq!(eval("f8 = 'NaN'", &[("f8", "NaN")]), Some(true));
    assert_eq!(eval("f8 > 1e308", &[("f8", "NaN")]), Some(true));
    assert_eq!(eval("f4 = 0.1", &[("f4", "0.1")]), Some(false));
    assert_eq!(eval("f4 = '0.1'", &[("f4", "0.1")]), Some(true));
    assert_eq!(eval("c = 'ab'", &[("c", "ab   ")]), Some(true));
    assert_eq!(eval("c LIKE 'ab'", &[("c", "ab   ")]), Some(false));
    assert_eq!(eval("t ILIKE 'ÉT_'", &[("t", "été")]), Some(true));
    assert_eq!(eval("t LIKE 'a\\%'", &[("t", "a%")]), Some(true));
    assert_eq!(eval("t LIKE 'a\\%'", &[("t", "ab")]), Some(false));
    assert_eq!(eval("tz = '2024-01-01 05:30:00+05:30'", &[("tz", "2024-01-01 00:00:00+00")]), Some(true));
    assert_eq!(eval("tz > d", &[("tz", "2024-01-01 00:00:01+00"), ("d", "2024-01-01")]), Some(true));
    assert_eq!(eval("ts < 'infinity'", &[("ts", "294276-12-31 23:59:59.999999")]), Some(true));
    assert_eq!(
        eval("u = '{550E8400E29B41D4A716446655440000}'", &[("u", "550e8400-e29b-41d4-a716-446655440000")]),
        Some(true)
    );
    assert_eq!(eval("ai @> '{1,1}'", &[("ai", "{1,2}")]), Some(true));
    assert_eq!(eval("ai @> '{NULL}'", &[("ai", "{NULL}")]), Some(false));
    assert_eq!(eval("at && ARRAY['a b']", &[("at", "{x,\"a b\"}")]), Some(true));
    assert_eq!(eval("t || $1 = 'x7'", &[("t", "x")]), Some(true));
    assert_eq!(eval("i4 = $1", &[("i4", "7")]), Some(true));
}

#[test]
fn bad_rows_are_errors_not_panics() {
    let clause = WhereClause::parse("i4 = 1", &schema(), &[] as &[&str]).unwrap();
    assert!(matches!(clause.evaluate(&[None]), Err(EvalError::RowWidth { .. })));
    let mut r = vec![None; COLUMNS.len()];
    r[2] = Some("one");
    assert!(matches!(clause.evaluate(&r), Err(EvalError::BadColumnValue { .. })));
    let like = WhereClause::parse("t LIKE v", &schema(), &[] as &[&str]).unwrap();
    assert!(matches!(like.evaluate(&row(&[("t", "a"), ("v", "a\\")])), Err(EvalError::Runtime(_))));
}

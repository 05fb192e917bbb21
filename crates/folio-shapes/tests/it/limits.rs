//! What one clause may cost: parse-time limits, the per-evaluation step budget, and the tenant
//! pin that is checked before the caller's clause looks at a row.

use folio_shapes::{EvalError, Limits, ParamSink, WhereClause};

use crate::common::{row, schema};

const MINE: &str = "550e8400-e29b-41d4-a716-446655440000";
const THEIRS: &str = "00000000-0000-0000-0000-000000000001";

#[test]
fn clauses_and_like_patterns_over_their_limits_are_refused_when_parsed() {
    let limits = Limits { max_where_bytes: 64, max_like_pattern_chars: 8, ..Limits::default() };
    let long = format!("t = '{}'", "x".repeat(64));
    let e = WhereClause::parse_within(&long, &schema(), &[] as &[&str], &limits).unwrap_err();
    assert_eq!(e.to_string(), "At location 0: where clause is longer than 64 bytes");
    let e = WhereClause::parse_within("t LIKE '%abcdefgh%'", &schema(), &[] as &[&str], &limits).unwrap_err();
    assert_eq!(e.to_string(), "At location 0: LIKE pattern is longer than 8 characters (10)");
    // Parameters count as the pattern they become, nested anywhere in the clause.
    let e = WhereClause::parse_within("id = 1 OR NOT (t ILIKE $1)", &schema(), &["%abcdefgh%"], &limits).unwrap_err();
    assert!(e.reason.starts_with("LIKE pattern is longer than 8"), "{e}");
    assert!(WhereClause::parse_within("t LIKE '%abcdef%'", &schema(), &[] as &[&str], &limits).is_ok());
}

#[test]
fn an_evaluation_over_its_step_budget_fails_visibly_instead_of_guessing() {
    let limits = Limits { eval_steps: 2_000, ..Limits::default() };
    let clause = WhereClause::parse_within("t LIKE '%needle%'", &schema(), &[] as &[&str], &limits).unwrap();
    let small = "hay ".repeat(10) + "needle";
    assert!(clause.matches(&row(&[("t", &small)])).unwrap());
    let large = "hay ".repeat(10_000) + "needle";
    assert_eq!(clause.matches(&row(&[("t", &large)])), Err(EvalError::BudgetExceeded { steps: 2_000 }));
    // Each evaluation has the whole budget again.
    assert!(clause.matches(&row(&[("t", &small)])).unwrap());
    // Long IN lists cost per element compared.
    let list: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
    let in_list = format!("id IN ({})", list.join(","));
    let clause = WhereClause::parse_within(&in_list, &schema(), &[] as &[&str], &limits).unwrap();
    assert!(matches!(clause.matches(&row(&[("id", "-1")])), Err(EvalError::BudgetExceeded { .. })));
    assert!(clause.matches(&row(&[("id", "3")])).unwrap());
}

#[test]
fn the_tenant_pin_is_checked_before_the_callers_clause_reads_the_row() {
    // A cast that fails on the other tenant's value: it must never be evaluated there.
    let clause = WhereClause::parse("t::int4 > 0", &schema(), &[] as &[&str]).unwrap().and_tenant("u", MINE).unwrap();
    assert_eq!(clause.evaluate(&row(&[("t", "Alpha"), ("u", THEIRS)])), Ok(Some(false)));
    assert_eq!(clause.evaluate(&row(&[("t", "Alpha")])), Ok(Some(false)));
    assert!(clause.evaluate(&row(&[("t", "Alpha"), ("u", MINE)])).is_err());
    assert!(clause.matches(&row(&[("t", "5"), ("u", MINE)])).unwrap());
    let mut sink = ParamSink::new();
    let sql = clause.to_sql(&mut sink);
    assert!(sql.starts_with(r#"(("u" = $1::uuid) AND CASE WHEN ("u" = $2::uuid) THEN"#), "{sql}");
}

#[test]
fn a_clause_estimates_its_memory_in_proportion_to_its_size() {
    let small = WhereClause::parse("id = 1", &schema(), &[] as &[&str]).unwrap();
    let list: Vec<String> = (0..2_000).map(|i| format!("'{i:0>20}'")).collect();
    let large = WhereClause::parse(&format!("t IN ({})", list.join(",")), &schema(), &[] as &[&str]).unwrap();
    assert!(small.estimated_bytes() < 8 * 1024, "{}", small.estimated_bytes());
    // At least the list's text, and its nodes.
    assert!(large.estimated_bytes() > 2_000 * 20 + 2_000 * 64, "{}", large.estimated_bytes());
}

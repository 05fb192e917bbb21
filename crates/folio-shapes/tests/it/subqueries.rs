//! `IN (SELECT …)` clauses: what is accepted, what is refused and why, the SQL (tenant pinned
//! inside every subquery), and membership decided exactly as Postgres decides it, NULLs and
//! composite keys included.

use std::collections::HashMap;

use folio_shapes::{Limits, ParamSink, SubqueryTable, TableSchema, ValueSet, WhereClause, subquery_tables};
use sqlx::{Connection, PgConnection, Row};

const AGENCY: &str = "0b5e7a3c-1b2d-4c5e-8f90-a1b2c3d4e5f6";

fn proposals() -> TableSchema {
    TableSchema::new([
        ("id", "int8"),
        ("agency_id", "uuid"),
        ("client_id", "int8"),
        ("owner", "text"),
        ("amount", "numeric"),
    ])
}

fn tables() -> HashMap<String, SubqueryTable> {
    let clients = SubqueryTable {
        sql_name: r#""public"."clients""#.into(),
        schema: TableSchema::new([
            ("id", "int8"),
            ("agency_id", "uuid"),
            ("region", "text"),
            ("owner", "text"),
            ("score", "numeric"),
        ]),
        tenant: Some(("agency_id".into(), AGENCY.into())),
    };
    HashMap::from([("clients".to_owned(), clients)])
}

fn parse(text: &str, params: &[&str]) -> Result<WhereClause, String> {
    WhereClause::parse_with_subqueries(text, &proposals(), params, &Limits::default(), &tables())
        .map_err(|e| e.to_string())
}

fn set(tuples: &[&[Option<&str>]]) -> ValueSet {
    let mut s = ValueSet::default();
    for t in tuples {
        s.add_counted(t.iter().map(|v| v.map(str::to_owned)).collect(), 1);
    }
    s
}

#[test]
fn a_subquery_renders_with_the_tenant_pinned_inside_and_shares_the_parameters() {
    let clause = parse("client_id IN (SELECT id FROM clients WHERE region = $1) AND id > $2", &["north", "10"])
        .unwrap()
        .and_tenant("agency_id", AGENCY)
        .unwrap();
    let mut sink = ParamSink::new();
    assert_eq!(
        clause.to_sql(&mut sink),
        concat!(
            r#"(("agency_id" = $1::uuid) AND CASE WHEN ("agency_id" = $2::uuid) THEN ((("client_id") IN (SELECT "id" FROM "public"."clients" WHERE "#,
            r#"(("agency_id" = $3::uuid) AND CASE WHEN ("agency_id" = $4::uuid) THEN ("region" = $5::text) ELSE FALSE END))) AND ("id" > $6::int8)) ELSE FALSE END)"#
        )
    );
    assert_eq!(sink.values()[4].as_deref(), Some("north"));
    let subs = clause.subqueries();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].table(), "clients");
    // A row of the subquery's table yields its id only when it is the agency's and in the region.
    let yields = |row: [Option<&str>; 5]| subs[0].yields(&row).unwrap();
    assert_eq!(
        yields([Some("7"), Some(AGENCY), Some("north"), None, None]).as_deref(),
        Some(&[Some("7".to_owned())][..])
    );
    assert_eq!(yields([Some("7"), Some(AGENCY), Some("south"), None, None]), None);
    let other = "1b5e7a3c-1b2d-4c5e-8f90-a1b2c3d4e5f6";
    assert_eq!(yields([Some("7"), Some(other), Some("north"), None, None]), None, "another agency's client");

    let sets = [set(&[&[Some("7")]])];
    let row = |client: &'static str, id: &'static str| [Some(id), Some(AGENCY), Some(client), None, None];
    assert!(clause.matches_with(&row("7", "11"), &sets).unwrap());
    assert!(!clause.matches_with(&row("8", "11"), &sets).unwrap());
    assert!(!clause.matches_with(&row("7", "9"), &sets).unwrap());
    assert!(clause.matches(&row("7", "11")).is_err(), "evaluating without the sets is an error, not a guess");
}

#[test]
fn composite_keys_not_in_and_several_subqueries() {
    let clause = parse(
        "(client_id, owner) IN (SELECT id, owner FROM clients WHERE region = $1) OR NOT client_id IN (SELECT id FROM clients)",
        &["north"],
    )
    .unwrap();
    assert_eq!(clause.subqueries().len(), 2);
    let mut sink = ParamSink::new();
    let sql = clause.to_sql(&mut sink);
    assert!(sql.contains(r#"(("client_id", "owner") IN (SELECT "id", "owner" FROM "public"."clients" WHERE"#), "{sql}");
    assert!(
        sql.contains(
            r#"(NOT (("client_id") IN (SELECT "id" FROM "public"."clients" WHERE ("agency_id" = $4::uuid))))"#
        ),
        "{sql}"
    );
    assert_eq!(
        subquery_tables("(a, b) IN (SELECT x, y FROM clients) OR c NOT IN (SELECT z FROM \"Other\")").unwrap(),
        ["clients", "Other"]
    );
}

#[test]
fn refused_forms_say_why_and_where() {
    let cases = [
        (
            "client_id IN (SELECT region FROM clients)",
            "At location 21: left side of `IN (SELECT ...)` has type int8 but subquery returns text",
        ),
        (
            "lower(owner) IN (SELECT owner FROM clients)",
            "At location 0: currently, left side of `IN (SELECT ...)` can only be a column reference or a list of column references",
        ),
        ("client_id IN (SELECT id FROM invoices)", "At location 29: relation \"invoices\" does not exist"),
        ("client_id IN (SELECT id, owner FROM clients)", "At location 21: subquery has too many columns"),
        ("client_id IN (SELECT nope FROM clients)", "At location 21: column \"nope\" does not exist"),
        (
            "amount IN (SELECT score FROM clients)",
            "At location 18: `IN (SELECT ...)` on type numeric is not supported (integers, text, uuid, bool and date are)",
        ),
        (
            "client_id IN (SELECT id FROM clients WHERE id IN (SELECT id FROM clients))",
            "At location 46: subqueries nested inside a subquery are not supported",
        ),
        (
            "client_id IN (SELECT id FROM clients ORDER BY id)",
            "At location 37: SELECT statement must not contain any clauses",
        ),
        (
            "client_id IN (SELECT DISTINCT id FROM clients)",
            "At location 21: SELECT statement must not contain any clauses",
        ),
        (
            "EXISTS (SELECT id FROM clients)",
            "At location 0: only `value IN (SELECT ...)` sublinks are supported right now",
        ),
        (
            "client_id = (SELECT id FROM clients)",
            "At location 13: only `value IN (SELECT ...)` sublinks are supported right now",
        ),
        ("(client_id, owner) IN (1, 2)", "At location 19: a row of columns can only be compared with IN (SELECT ...)"),
        ("client_id IN (SELECT id FROM clients WHERE region = $3)", "At location 52: parameter $3 was not provided"),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text, &["x"]).unwrap_err(), want, "{text}");
    }
}

/// Every (left, set) combination of a few values and NULLs, single-column and composite, IN
/// and NOT IN: the evaluator's answer (TRUE / FALSE / NULL) equals Postgres' own.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn membership_with_nulls_agrees_with_postgres() -> anyhow::Result<()> {
    let db = folio_testkit::TestDb::new().await?;
    let mut conn = PgConnection::connect(&db.url).await?;
    let values = [None, Some("1"), Some("2")];
    let mut tuples: Vec<[Option<&str>; 2]> = Vec::new();
    for a in values {
        for b in values {
            tuples.push([a, b]);
        }
    }
    let schema = TableSchema::new([("a", "int4"), ("b", "int4")]);
    let sub_table = SubqueryTable { sql_name: "s".into(), schema: schema.clone(), tenant: None };
    let tables = HashMap::from([("s".to_owned(), sub_table)]);
    let clauses = [
        "a IN (SELECT a FROM s)",
        "a NOT IN (SELECT a FROM s)",
        "(a, b) IN (SELECT a, b FROM s)",
        "NOT (a, b) IN (SELECT a, b FROM s)",
    ];
    let parsed: Vec<WhereClause> = clauses
        .iter()
        .map(|c| WhereClause::parse_with_subqueries(c, &schema, &[] as &[&str], &Limits::default(), &tables).unwrap())
        .collect();
    let mut checks = 0;
    // Sets: every subset of up to two of the nine tuples.
    let mut sets: Vec<Vec<[Option<&str>; 2]>> = vec![Vec::new()];
    for i in 0..tuples.len() {
        sets.push(vec![tuples[i]]);
        for j in i + 1..tuples.len() {
            sets.push(vec![tuples[i], tuples[j]]);
        }
    }
    for members in &sets {
        let lit = |v: Option<&str>| v.unwrap_or("NULL").to_owned();
        let rows: Vec<String> =
            members.iter().map(|[a, b]| format!("({}::int4, {}::int4)", lit(*a), lit(*b))).collect();
        let from = if rows.is_empty() {
            "(SELECT NULL::int4 AS a, NULL::int4 AS b WHERE FALSE) s".to_owned()
        } else {
            format!("(VALUES {}) s(a, b)", rows.join(", "))
        };
        for (text, clause) in clauses.iter().zip(&parsed) {
            let width = if text.contains("(a, b)") { 2 } else { 1 };
            let vs = {
                let mut s = ValueSet::default();
                for t in members {
                    s.add_counted(t[..width].iter().map(|v| v.map(str::to_owned)).collect(), 1);
                }
                s
            };
            for left in &tuples {
                let sql = text.replace("FROM s", &format!("FROM {from}"));
                let sql =
                    format!("SELECT {sql} FROM (SELECT {}::int4 AS a, {}::int4 AS b) t", lit(left[0]), lit(left[1]));
                let want: Option<bool> =
                    sqlx::query(sqlx::AssertSqlSafe(sql.clone())).fetch_one(&mut conn).await?.get(0);
                let got = clause.evaluate_with(&left[..], std::slice::from_ref(&vs))?;
                assert_eq!(got, want, "{sql}");
                checks += 1;
            }
        }
    }
    assert!(checks > 1000, "{checks}");
    Ok(())
}

#[test]
fn a_value_set_counts_the_rows_behind_each_tuple() {
    let t = |v: Option<&str>| -> folio_shapes::Tuple { vec![v.map(str::to_owned)].into() };
    let mut s = ValueSet::default();
    assert!(s.add_counted(t(Some("1")), 2), "a new tuple");
    assert!(!s.add_counted(t(Some("1")), 1), "one more row behind a known tuple");
    assert_eq!(s.remove_one(&t(Some("1"))), Some(false));
    assert_eq!(s.remove_one(&t(Some("1"))), Some(false));
    assert_eq!(s.remove_one(&t(Some("1"))), Some(true), "its last row");
    assert_eq!(s.remove_one(&t(Some("1"))), None, "not held: the caller cannot decide");
    assert!(s.is_empty());
    // A NULL tuple makes a miss unknown (NULL), as in SQL; removing it makes it a plain FALSE.
    let clause = WhereClause::parse_with_subqueries(
        "client_id IN (SELECT id FROM clients)",
        &proposals(),
        &[] as &[&str],
        &Limits::default(),
        &tables(),
    )
    .unwrap();
    let row = [Some("1"), Some(AGENCY), Some("5"), None, None];
    assert!(s.add_counted(t(None), 1));
    assert_eq!(clause.evaluate_with(&row, std::slice::from_ref(&s)).unwrap(), None);
    assert_eq!(s.remove_one(&t(None)), Some(true));
    assert!(s.add_counted(t(Some("4")), 1));
    assert_eq!(clause.evaluate_with(&row, std::slice::from_ref(&s)).unwrap(), Some(false));
}

//! Random tuples round-trip through real replication (issue 18): proptest makes rows of every
//! common type — NULLs, any Unicode text, extreme numbers, NaN and infinities, arrays with NULLs,
//! JSON, bytes — PostgreSQL commits them (an insert, then an update of every row to another
//! random tuple), pgoutput streams them to the ingester in this process, and every published
//! event must carry, column for column, exactly what PostgreSQL prints for the committed row
//! (with the output settings wal-ingest streams with), the update's old row included.
//!
//! The decoder's own properties (`src/decode_properties.rs`) check it against an independent
//! encoder; this one checks it against PostgreSQL itself. `FOLIO_PROPTEST_CASES` sets the cases
//! (200 pairs of transactions by default, each of up to 6 rows); a failure is saved under
//! `proptest-regressions/` and replayed first from then on.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use folio_proto::events::v1::{ChangeEvent, Operation, column_value};
use futures::StreamExt as _;
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};
use prost::Message as _;
use sqlx::Row as _;

use crate::helpers::Harness;

const COLUMNS: [&str; 9] = ["i8", "n", "t", "flag", "ts", "tags", "j", "raw", "f8"];

#[derive(Debug, Clone)]
struct Tuple {
    i8: Option<i64>,
    n: Option<String>,
    t: Option<String>,
    flag: Option<bool>,
    ts: Option<String>,
    tags: Option<Vec<Option<String>>>,
    j: Option<String>,
    raw: Option<Vec<u8>>,
    f8: Option<f64>,
}

fn numeric() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => (any::<i64>(), 0usize..12).prop_map(|(digits, scale)| {
            let s = digits.unsigned_abs().to_string();
            let s = if scale > 0 { format!("{}.{}", &s[..s.len().saturating_sub(scale).max(1)], &s[s.len().saturating_sub(scale).max(1)..]) } else { s };
            let s = s.trim_end_matches('.').to_owned();
            if digits < 0 { format!("-{s}") } else { s }
        }),
        1 => Just("NaN".to_owned()),
    ]
}

fn timestamp() -> impl Strategy<Value = String> {
    (1i32..9999, 1u32..13, 1u32..29, 0u32..24, 0u32..60, 0u32..60, 0u32..1_000_000, -12i32..15).prop_map(
        |(y, mo, d, h, mi, s, us, off)| format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}{off:+03}"),
    )
}

fn json() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_owned()),
        "[a-z é\"\\\\]{0,8}".prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
    ];
    proptest::collection::vec(("[a-z]{1,4}", value), 0..5).prop_map(|pairs| {
        let fields: Vec<String> = pairs.into_iter().map(|(k, v)| format!("\"{k}\": {v}")).collect();
        format!("{{{}}}", fields.join(", "))
    })
}

fn tuple() -> impl Strategy<Value = Tuple> {
    use proptest::option::of;
    (
        of(any::<i64>()),
        of(numeric()),
        of("[^\u{0}]{0,40}"),
        of(any::<bool>()),
        of(timestamp()),
        of(proptest::collection::vec(of("[^\u{0}]{0,8}"), 0..4)),
        of(json()),
        of(proptest::collection::vec(any::<u8>(), 0..24)),
        of(any::<f64>()),
    )
        .prop_map(|(i8, n, t, flag, ts, tags, j, raw, f8)| Tuple { i8, n, t, flag, ts, tags, j, raw, f8 })
}

fn bind<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    t: &Tuple,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(t.i8)
        .bind(t.n.clone())
        .bind(t.t.clone())
        .bind(t.flag)
        .bind(t.ts.clone())
        .bind(t.tags.clone())
        .bind(t.j.clone())
        .bind(t.raw.clone())
        .bind(t.f8)
}

/// A row as text, by column name (None: NULL).
type Printed = HashMap<String, Option<String>>;

fn printed(row: &[folio_proto::events::v1::ColumnValue]) -> Printed {
    row.iter()
        .map(|c| {
            let value = match &c.value {
                Some(column_value::Value::Text(t)) => Some(t.clone()),
                _ => None,
            };
            (c.name.clone(), value)
        })
        .collect()
}

#[test]
fn random_tuples_round_trip_through_real_replication() {
    let cases: u32 = std::env::var("FOLIO_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let h = runtime.block_on(Harness::new()).expect("a sandbox");
    let (ingester, mut messages) = runtime.block_on(async {
        let pool = &h.db.pool;
        for sql in [
            "CREATE TABLE prop_rows (id bigint PRIMARY KEY, i8 int8, n numeric, t text, flag bool, ts timestamptz, \
             tags text[], j jsonb, raw bytea, f8 float8)",
            "ALTER TABLE prop_rows REPLICA IDENTITY FULL",
            "ALTER PUBLICATION folio_changes ADD TABLE prop_rows",
        ] {
            sqlx::query(sql).execute(pool).await.unwrap();
        }
        let ingester = h.spawn().await;
        h.wait_for_slot().await;
        let stream = folio_testkit::eventually("the changes stream", || async {
            h.js.get_stream(h.changes_stream()).await.ok()
        })
        .await;
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: h.subjects().table_filter("public", "prop_rows"),
                ..Default::default()
            })
            .await
            .unwrap();
        (ingester, consumer.messages().await.unwrap())
    });
    let messages = tokio::sync::Mutex::new(&mut messages);
    let next_id = AtomicI64::new(1);
    let insert = "INSERT INTO prop_rows VALUES ($10, $1, $2::numeric, $3, $4, $5::timestamptz, $6, $7::jsonb, $8, $9)";
    let update = "UPDATE prop_rows SET i8 = $1, n = $2::numeric, t = $3, flag = $4, ts = $5::timestamptz, tags = $6, \
                  j = $7::jsonb, raw = $8, f8 = $9 WHERE id = $10";
    // Through the output functions (format), as pgoutput prints: `::text` would print a bool as `true`.
    let printed_columns: Vec<String> =
        COLUMNS.iter().map(|c| format!("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END")).collect();
    let select = format!(
        "SELECT id::text, {} FROM prop_rows WHERE id = ANY($1) ORDER BY prop_rows.id",
        printed_columns.join(", ")
    );

    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        source_file: Some(file!()),
        ..Config::default()
    };
    let strategy = proptest::collection::vec((tuple(), tuple()), 1..7);
    let outcome = TestRunner::new(config).run(&strategy, |rows| {
        runtime.block_on(async {
            let pool = &h.db.pool;
            let first = next_id.fetch_add(rows.len() as i64, Ordering::Relaxed);
            let ids: Vec<i64> = (first..first + rows.len() as i64).collect();
            // What PostgreSQL prints for the committed rows, as wal-ingest streams with.
            let select = &select;
            let committed = |ids: Vec<i64>| async move {
                let mut tx = pool.begin().await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(folio_db::text_output_set_local())).execute(&mut *tx).await.unwrap();
                let rows =
                    sqlx::query(sqlx::AssertSqlSafe(select.clone())).bind(&ids).fetch_all(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
                rows.iter()
                    .map(|r| {
                        std::iter::once("id")
                            .chain(COLUMNS)
                            .enumerate()
                            .map(|(i, c)| (c.to_owned(), r.get::<Option<String>, _>(i)))
                            .collect::<Printed>()
                    })
                    .collect::<Vec<_>>()
            };
            let mut tx = pool.begin().await.unwrap();
            for ((before, _), id) in rows.iter().zip(&ids) {
                // A value PostgreSQL refuses (a timestamp past its range) is not this property's.
                if bind(sqlx::query(insert), before).bind(id).execute(&mut *tx).await.is_err() {
                    return Ok(());
                }
            }
            tx.commit().await.unwrap();
            let inserted = committed(ids.clone()).await;
            let mut tx = pool.begin().await.unwrap();
            for ((_, after), id) in rows.iter().zip(&ids) {
                bind(sqlx::query(update), after).bind(id).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
            let updated = committed(ids.clone()).await;

            let mut messages = messages.lock().await;
            let mut events = Vec::new();
            while events.len() < 2 * rows.len() {
                let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
                    .await
                    .map_err(|_| TestCaseError::fail("no event within 30 s"))?
                    .expect("the stream goes on")
                    .expect("a message");
                let event = ChangeEvent::decode(m.payload.clone()).expect("a ChangeEvent");
                // Left over from a case that failed half-way (while shrinking): not this one's.
                let id = printed(&event.new_row).get("id").cloned().flatten().and_then(|id| id.parse().ok());
                if id.is_some_and(|id| ids.contains(&id)) {
                    events.push(event);
                }
            }
            for (i, e) in events[..rows.len()].iter().enumerate() {
                prop_assert_eq!(e.operation(), Operation::Insert);
                prop_assert_eq!(printed(&e.new_row), inserted[i].clone(), "insert of {:?}", rows[i].0);
            }
            for (i, e) in events[rows.len()..].iter().enumerate() {
                prop_assert_eq!(e.operation(), Operation::Update);
                prop_assert_eq!(printed(&e.new_row), updated[i].clone(), "update to {:?}", rows[i].1);
                prop_assert_eq!(printed(&e.old_row), inserted[i].clone(), "old row of {:?}", rows[i].0);
            }
            Ok(())
        })
    });
    runtime.block_on(async {
        ingester.stop().await.ok();
        h.cleanup().await;
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    eprintln!("{cases} random transaction pairs round-tripped through replication");
}

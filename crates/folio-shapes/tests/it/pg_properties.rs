//! The PostgreSQL cross-check as a proptest property (issue 18): a generated where clause gives
//! the same TRUE/FALSE/NULL on every row three ways — our evaluator, Postgres running the clause
//! as written, and Postgres running our rendering with bound params (postgres.rs's `judge`).
//!
//! A case is the generator's seed and the clause's depth, so a failure is saved under
//! `proptest-regressions/` as the seed that makes the clause and replayed first from then on;
//! shrinking moves towards shallower clauses and smaller seeds. `FOLIO_PROPTEST_CASES` sets the
//! number of clauses (1,000 by default, each checked on every row of the table).

use folio_shapes::{ParamSink, WhereClause};
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};
use rand::{SeedableRng, rngs::StdRng};

use crate::{
    common::schema,
    postgres::{Gen, Verdict, judge, run_batch, table},
};

#[test]
fn generated_clauses_agree_with_postgres_on_every_row() {
    let cases: u32 = std::env::var("FOLIO_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut rows_gen = Gen { rng: StdRng::seed_from_u64(0xf011_0018), params: Vec::new() };
    let (_db, conn, text_rows) = runtime.block_on(table(&mut rows_gen)).expect("the table of random rows");
    let rows: Vec<Vec<Option<&str>>> = text_rows.iter().map(|r| r.iter().map(|v| v.as_deref()).collect()).collect();
    let schema = schema();
    let conn = tokio::sync::Mutex::new(conn);
    let checked = std::cell::Cell::new(0usize);

    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&(any::<u64>(), 0u32..4), |(seed, depth)| {
        let mut g = Gen { rng: StdRng::seed_from_u64(seed), params: Vec::new() };
        let pair = g.boolean(depth);
        let params = g.params.clone();
        let clause = WhereClause::parse(&pair.w, &schema, &params);
        let (pg_raw, pg_rendered) = runtime.block_on(async {
            let mut conn = conn.lock().await;
            let raw = [(pair.raw.clone(), Vec::new())];
            let pg_raw = run_batch(&mut conn, &raw, &raw).await.remove(0);
            let pg_rendered = match &clause {
                Ok(c) => {
                    let mut sink = ParamSink::new();
                    let rendered = [(c.to_sql(&mut sink), sink.into_values())];
                    run_batch(&mut conn, &rendered, &rendered).await.remove(0)
                }
                Err(_) => Err("not rendered".into()),
            };
            (pg_raw, pg_rendered)
        });
        match judge(&pair, &params, &clause, &rows, &pg_raw, &pg_rendered) {
            Verdict::Agree(n) => {
                checked.set(checked.get() + n);
                Ok(())
            }
            Verdict::RefusedByBoth => Ok(()),
            Verdict::Disagree(why) => Err(TestCaseError::fail(why)),
        }
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    eprintln!("{cases} generated clauses agree with PostgreSQL: {} row checks", checked.get());
    assert!(checked.get() >= cases as usize * rows.len() / 2, "too few row checks ran: {}", checked.get());
}

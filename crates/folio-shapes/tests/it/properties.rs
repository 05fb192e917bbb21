//! Property tests (issue 18) of the where-clause language with proptest, beside the seeded
//! fuzzers in hostile.rs and postgres.rs: a failure here is shrunk to a minimal clause and saved
//! under `proptest-regressions/`, replayed first from then on. Any text, and any soup of the
//! language's own tokens, is parsed or refused; what parses renders SQL and evaluates on a row
//! of NULLs without a panic, and parsing the same text twice gives the same clause.
//!
//! `FOLIO_PROPTEST_CASES` sets the cases per property (2,000 by default).

use folio_shapes::{ParamSink, WhereClause};
use proptest::prelude::*;

use crate::{
    common::{COLUMNS, schema},
    hostile::TOKENS,
};

fn config() -> ProptestConfig {
    let cases = std::env::var("FOLIO_PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    ProptestConfig::with_cases(cases)
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let schema = schema();
    let first = WhereClause::parse(text, &schema, &["1", "a"]);
    let again = WhereClause::parse(text, &schema, &["1", "a"]);
    prop_assert_eq!(format!("{first:?}"), format!("{again:?}"), "parsing is not deterministic");
    if let Ok(clause) = first {
        let _ = clause.to_sql(&mut ParamSink::new());
        let nulls = vec![None; COLUMNS.len()];
        let _ = clause.evaluate(&nulls);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_parsed_or_refused_never_a_panic(text in ".{0,200}") {
        check(&text)?;
    }

    #[test]
    fn any_token_soup_is_parsed_or_refused_and_what_parses_renders_and_evaluates(
        words in proptest::collection::vec(proptest::sample::select(TOKENS), 1..30)
    ) {
        check(&words.join(" "))?;
    }
}

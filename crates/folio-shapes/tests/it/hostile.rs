//! The parser faces the internet: no input may panic it or exhaust the stack.

use folio_shapes::{MAX_DEPTH, MAX_WHERE_LEN, ParamSink, WhereClause};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{COLUMNS, schema};

pub(crate) const TOKENS: &[&str] = &[
    "i4",
    "t",
    "b",
    "ai",
    "at",
    "c",
    "n",
    "f8",
    "tz",
    "d",
    "u",
    "\"Odd \"\"Name\"\"\"",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "<>",
    "<",
    ">=",
    "!=",
    "||",
    "@>",
    "<@",
    "&&",
    "::",
    "-",
    "+",
    "*",
    "AND",
    "OR",
    "NOT",
    "IS",
    "NULL",
    "TRUE",
    "FALSE",
    "UNKNOWN",
    "IN",
    "LIKE",
    "ILIKE",
    "ESCAPE",
    "BETWEEN",
    "DISTINCT",
    "FROM",
    "ANY",
    "ALL",
    "ARRAY",
    "CAST",
    "AS",
    "int4",
    "text",
    "date",
    "bool",
    "int4[]",
    "lower",
    "upper",
    "'a%'",
    "'x'",
    "''",
    "'{1,NULL}'",
    "'2024-01-01'",
    "1",
    "-1",
    "1.5",
    "1e400",
    "$1",
    "$2",
    "$0",
    "$99999999999",
    "'",
    "\"",
    "/*",
    "*/",
    "--",
    "é",
    "\u{0}",
    ";",
    "99999999999999999999999999999999",
];

const CLASSES: &[&[&str]] = &[
    &[
        "i4",
        "t",
        "b",
        "ai",
        "at",
        "c",
        "n",
        "f8",
        "tz",
        "d",
        "u",
        "i8",
        "ts",
        "f4",
        "v",
        "i2",
        "j",
        "\"Odd \"\"Name\"\"\"",
    ],
    &[
        "1",
        "2.5",
        "1e3",
        "-1",
        "'x'",
        "'a%'",
        "''",
        "'{1,NULL}'",
        "'2024-01-01'",
        "$1",
        "$2",
        "NULL",
        "TRUE",
        "'NaN'",
        "'t'",
    ],
    &["=", "<>", "<", ">=", "!=", "<=", ">", "||", "@>", "<@", "&&", "LIKE", "ILIKE"],
    &["AND", "OR"],
    &["ANY", "ALL"],
    &["date", "int4", "text", "numeric", "float8", "timestamptz", "bool", "uuid", "int8"],
];

const SEEDS: &[&str] = &[
    "i4 = 1 AND t LIKE 'a%'",
    "( i4 IN ( 1 , 2 ) OR NOT b ) AND c IS NOT NULL",
    "n BETWEEN 1 AND 2.5 OR f8 > '1e10'",
    "lower ( t ) = 'x' AND ai @> ARRAY [ 1 , 2 ]",
    "i4 = ANY ( ai ) OR t <> ALL ( at )",
    "tz > '2024-01-01' :: date AND d < CAST ( '2025-01-01' AS date )",
    "t || $2 ILIKE $1 ESCAPE '!'",
    "b IS NOT TRUE OR ( t = $1 ) IS NULL OR i8 NOT BETWEEN -1 AND 1e3",
    "j = '{\"a\": 1}' OR j IN ( '[1]' , 'null' ) OR j :: text LIKE '%a%'",
];

#[test]
fn random_bytes_and_token_soup_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed_f01e);
    let schema = schema();
    let rows: Vec<Vec<Option<&str>>> = vec![
        vec![None; COLUMNS.len()],
        COLUMNS
            .iter()
            .map(|(_, ty)| {
                Some(match *ty {
                    "int2" | "int4" | "int8" | "numeric" | "float4" | "float8" => "1",
                    "bool" => "t",
                    "uuid" => "550e8400-e29b-41d4-a716-446655440000",
                    "date" => "2024-01-01",
                    "timestamp" | "timestamptz" => "2024-01-01 00:00:00+00",
                    "_int4" | "text[]" => "{1,NULL}",
                    "jsonb" => r#"{"a": [1, {"b": null}]}"#,
                    _ => "a%",
                })
            })
            .collect(),
    ];
    for seed in SEEDS {
        WhereClause::parse(seed, &schema, &["1", "a"]).unwrap_or_else(|e| panic!("seed {seed:?}: {e}"));
    }
    let mut parsed = 0;
    for i in 0..20_000 {
        let text = match i % 3 {
            0 => {
                let len = rng.random_range(0..64);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            1 => {
                let len = rng.random_range(1..24);
                (0..len).map(|_| TOKENS[rng.random_range(0..TOKENS.len())]).collect::<Vec<_>>().join(" ")
            }
            _ => {
                // Valid clauses with a few tokens dropped, repeated or replaced reach every
                // later stage (type checker, evaluator, renderer) with odd but parseable input.
                let mut words: Vec<&str> = SEEDS[rng.random_range(0..SEEDS.len())].split(' ').collect();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..words.len());
                    // Mostly swap a token for another of its class (column, literal,
                    // operator), which keeps the clause parseable but changes its types.
                    if let Some(class) = CLASSES.iter().find(|c| c.contains(&words[at]))
                        && rng.random_bool(0.8)
                    {
                        words[at] = class[rng.random_range(0..class.len())];
                        continue;
                    }
                    match rng.random_range(0..3) {
                        0 if words.len() > 1 => {
                            words.remove(at);
                        }
                        1 => words.insert(at, words[at]),
                        _ => words[at] = TOKENS[rng.random_range(0..TOKENS.len())],
                    }
                }
                words.join(" ")
            }
        };
        if let Ok(clause) = WhereClause::parse(&text, &schema, &["1", "a"]) {
            parsed += 1;
            let _ = clause.to_sql(&mut ParamSink::new());
            for r in &rows {
                let _ = clause.evaluate(r);
            }
        }
    }
    // The soup must reach the type checker and evaluator, not only the lexer.
    eprintln!("{parsed} of 20000 hostile inputs parsed");
    assert!(parsed > 500, "only {parsed} random inputs parsed");
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let n = 100_000;
    let cases = [
        format!("{}i4 = 1{}", "(".repeat(n), ")".repeat(n)),
        format!("{}b", "NOT ".repeat(n)),
        format!("{} i4 = 1", "- ".repeat(n)),
        format!("t{} = 'a'", " || t".repeat(n / 10)),
        format!("i4{} = 1", "::int4".repeat(n / 10)),
        format!("b{}", " IS NULL".repeat(n / 10)),
        format!("i4 = ANY({}ai{})", "ARRAY[".repeat(n / 10), "]".repeat(n / 10)),
        format!("t IN ({}'a'{})", "lower(".repeat(n / 10), ")".repeat(n / 10)),
    ];
    for text in &cases {
        let text = &text[..text.len().min(MAX_WHERE_LEN)];
        let e = WhereClause::parse(text, &schema(), &[] as &[&str]).expect_err("deep input must be refused");
        assert!(
            e.reason.contains("nested too deeply") || e.reason.contains("syntax error"),
            "unexpected error for deep input: {e}"
        );
    }
    // BETWEEN type-checks its tested expression twice; nesting it must not be exponential.
    let nested_between = format!("{}b{}", "(".repeat(40), ") BETWEEN FALSE AND TRUE".repeat(40));
    let started = std::time::Instant::now();
    let e = WhereClause::parse(&nested_between, &schema(), &[] as &[&str]).expect_err("nested BETWEEN must be refused");
    assert!(e.reason.contains("BETWEEN nested"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));

    let just_deep_enough = format!("{}i4 = 1{}", "(".repeat(MAX_DEPTH - 2), ")".repeat(MAX_DEPTH - 2));
    WhereClause::parse(&just_deep_enough, &schema(), &[] as &[&str]).unwrap();
}

#[test]
fn long_flat_input_is_fine_and_overlong_input_is_refused() {
    let ids: Vec<String> = (0..5_000).map(|i| i.to_string()).collect();
    let text = format!("i4 IN ({}) AND {}", ids.join(","), vec!["b"; 2_000].join(" AND "));
    assert!(text.len() < MAX_WHERE_LEN);
    let clause = WhereClause::parse(&text, &schema(), &[] as &[&str]).unwrap();
    let mut r = vec![None; COLUMNS.len()];
    r[2] = Some("4999");
    r[10] = Some("t");
    assert!(clause.matches(&r).unwrap());

    let too_long = format!("t = '{}'", "x".repeat(MAX_WHERE_LEN));
    let e = WhereClause::parse(&too_long, &schema(), &[] as &[&str]).unwrap_err();
    assert!(e.reason.contains("longer than"), "{e}");
}

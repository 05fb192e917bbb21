//! Fuzz-style cross-check against the real PostgreSQL: random where clauses over random rows
//! (NULLs included) must give the same TRUE/FALSE/NULL three ways — our evaluator, Postgres
//! running the clause as written (params inlined as quoted literals, which is what an
//! unknown-typed `$n` is), and Postgres running our `to_sql` rendering with bound params.

use std::fmt::Write as _;

use anyhow::Context as _;
use folio_shapes::{ParamSink, WhereClause, quote_ident};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::{Connection, PgConnection, Row as _};

use crate::common::{COLUMNS, schema};

const ROWS: usize = 48;
const EXPRESSIONS: usize = 5_000;
const BATCH: usize = 30;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    I2,
    I4,
    I8,
    Num,
    F4,
    F8,
    Text,
    Varchar,
    Bpchar,
    Bool,
    Uuid,
    Date,
    Ts,
    Tz,
    IntArr,
    TextArr,
    Jsonb,
}

use Kind::*;

const SCALARS: &[Kind] = &[I2, I4, I8, Num, F4, F8, Text, Varchar, Bpchar, Bool, Uuid, Date, Ts, Tz, Jsonb];

fn column_of(k: Kind) -> &'static [&'static str] {
    match k {
        I2 => &["i2"],
        I4 => &["i4", "id"],
        I8 => &["i8"],
        Num => &["n"],
        F4 => &["f4"],
        F8 => &["f8"],
        Text => &["t", "\"Odd \"\"Name\"\"\""],
        Varchar => &["v"],
        Bpchar => &["c"],
        Bool => &["b"],
        Uuid => &["u"],
        Date => &["d"],
        Ts => &["ts"],
        Tz => &["tz"],
        IntArr => &["ai"],
        TextArr => &["at"],
        Jsonb => &["j"],
    }
}

/// Values as text; every one is valid input for its kind.
fn pool(k: Kind) -> &'static [&'static str] {
    match k {
        I2 => &["0", "1", "-1", "2", "3", "-32768", "32767", "7", " +7 "],
        I4 | I8 => &["0", "1", "-1", "2", "3", "7", "-2147483648", "2147483647", "100", " 3 "],
        Num => &[
            "0",
            "1",
            "1.0",
            "-1.50",
            "2.5",
            "3.14159",
            "0.1",
            "1000",
            "-0.0001",
            "NaN",
            "7",
            "99999999.99",
            "1e40",
            "-2.5",
            "123456789012345678901234567890.123456789",
            " 2.50 ",
            "1.5e-3",
            "-Infinity",
        ],
        F4 => &[
            "0",
            "1",
            "-1",
            "0.1",
            "2.5",
            "-0",
            "NaN",
            "Infinity",
            "-Infinity",
            "3.4e38",
            "1e-7",
            "7",
            "1.5e3",
            "-3.5",
            "1e-40",
        ],
        F8 => &[
            "0",
            "1",
            "-1",
            "0.1",
            "2.5",
            "-0",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e308",
            "1e-300",
            "1234567890123456",
            "7",
        ],
        Text | Varchar => &[
            "", "a", "ab", "abc", "A", "B", "a%c", "a_c", "ab ", " ab", "é", "É", "Été", "Σ", "x\\y", "O'Brien", "z",
            "7", "{1}",
        ],
        Bpchar => &["", "a", "ab", "ab  ", "A", "b ", "é", "a%"],
        Bool => &["t", "f", "true", "false", "yes", "off", "1", " TR", "n"],
        Uuid => &[
            "00000000-0000-0000-0000-000000000000",
            "550e8400-e29b-41d4-a716-446655440000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "7d444840-9dc0-11d1-b245-5ffdce74fad2",
            "{550E8400-E29B-41D4-A716-446655440000}",
            "7d4448409dc011d1b2455ffdce74fad2",
            "7d44-4840-9dc0-11d1-b245-5ffd-ce74-fad2",
        ],
        Date => &[
            "2024-01-01",
            "2024-02-29",
            "1999-12-31",
            "0001-01-01",
            "0044-03-15 BC",
            "infinity",
            "-infinity",
            "2024-01-02",
            "2024-1-2",
            "2024-01-01 13:00:00",
        ],
        Ts => &[
            "2024-01-01 00:00:00",
            "2024-01-01 12:30:00.5",
            "2024-02-29 23:59:59.999999",
            "1999-12-31 00:00:00",
            "infinity",
            "-infinity",
            "2024-01-01 00:00:00.000001",
            "2024-01-01T12:30:00.5",
            "2024-01-01 12:30",
            "2024-01-01 00:00:00.0000005",
            "2024-01-01 00:00:00.0000015",
            "2024-01-01 05:30:00+05:30",
        ],
        Tz => &[
            "2024-01-01 00:00:00+00",
            "2024-01-01 12:30:00.5+00",
            "2024-01-01 05:30:00+05:30",
            "2023-12-31 19:00:00-05",
            "1999-12-31 00:00:00+00",
            "infinity",
            "-infinity",
            "2024-01-01T00:00:00Z",
            "2024-01-01 00:00:00.123456789+00",
            "2024-01-01",
            "2024-01-01 01:00:00+0100",
            "0044-03-15 12:00:00+00 BC",
        ],
        IntArr => &["{}", "{1}", "{1,2}", "{2,1}", "{NULL}", "{1,NULL}", "{3,7,1}", "{0}"],
        TextArr => &["{}", "{a}", "{a,b}", "{\"a b\",NULL}", "{ab,A}", "{\"\"}", "{é,z}"],
        Jsonb => &[
            r#"{"a": 1}"#,
            r#"{"a":1.0}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": 2}"#,
            r#"{"b": [1, 2], "a": null}"#,
            r#"{"a":null,"b":[1,2.00]}"#,
            "[1, 2]",
            "[2,1]",
            r#""str""#,
            r#""\u00e9\n""#,
            r#""é\n""#,
            "1",
            "1.00",
            "1e2",
            "100",
            "null",
            "true",
            "{}",
            r#"{"é": "x\"y", "aa": {"z": []}}"#,
        ],
    }
}

fn sql_type(k: Kind) -> &'static str {
    match k {
        I2 => "int2",
        I4 => "int4",
        I8 => "int8",
        Num => "numeric",
        F4 => "float4",
        F8 => "float8",
        Text => "text",
        Varchar => "varchar",
        Bpchar => "bpchar",
        Bool => "bool",
        Uuid => "uuid",
        Date => "date",
        Ts => "timestamp",
        Tz => "timestamptz",
        IntArr => "int4[]",
        TextArr => "text[]",
        Jsonb => "jsonb",
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Builds the clause twice: `w` with `$n` placeholders for our parser, `raw` with the params
/// inlined as quoted literals for Postgres.
pub(crate) struct Gen {
    pub(crate) rng: StdRng,
    pub(crate) params: Vec<String>,
}

pub(crate) struct Pair {
    pub(crate) w: String,
    pub(crate) raw: String,
}

impl Pair {
    fn same(s: String) -> Self {
        Pair { raw: s.clone(), w: s }
    }
    fn wrap(f: impl Fn(&str) -> String, p: &Pair) -> Self {
        Pair { w: f(&p.w), raw: f(&p.raw) }
    }
    fn two(f: impl Fn(&str, &str) -> String, a: &Pair, b: &Pair) -> Self {
        Pair { w: f(&a.w, &b.w), raw: f(&a.raw, &b.raw) }
    }
}

impl Gen {
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// An unknown-typed string: a literal or a `$n` parameter.
    fn string(&mut self, s: &str) -> Pair {
        if self.chance(0.3) {
            self.params.push(s.to_owned());
            Pair { w: format!("${}", self.params.len()), raw: quote(s) }
        } else {
            Pair::same(quote(s))
        }
    }

    fn literal(&mut self, k: Kind) -> Pair {
        let v = self.pick(pool(k));
        match k {
            I2 | I4 | I8 | Num if self.chance(0.5) && !v.contains('N') && !v.starts_with('-') => {
                Pair::same(v.to_owned())
            }
            I2 | I8 | F4 | F8 | Uuid | Date | Ts | Tz | Varchar | Bpchar | Num | Jsonb if self.chance(0.5) => {
                let s = self.string(v);
                if self.chance(0.5) {
                    Pair::wrap(|x| format!("{x}::{}", sql_type(k)), &s)
                } else {
                    Pair::wrap(|x| format!("CAST({x} AS {})", sql_type(k)), &s)
                }
            }
            Bool if self.chance(0.5) => Pair::same(if v.starts_with('t') { "TRUE" } else { "FALSE" }.to_owned()),
            IntArr if self.chance(0.4) => {
                let n = self.rng.random_range(1..4);
                let items: Vec<String> = (0..n).map(|_| self.pick(&["1", "2", "7", "NULL", "0"]).to_owned()).collect();
                Pair::same(format!("ARRAY[{}]::int4[]", items.join(", ")))
            }
            TextArr if self.chance(0.4) => {
                let n = self.rng.random_range(1..4);
                let items: Vec<String> = (0..n).map(|_| quote(self.pick(&["a", "b", "a b", "é", "z"]))).collect();
                Pair::same(format!("ARRAY[{}]", items.join(", ")))
            }
            // Text stays an unknown-typed literal, which takes the other operand's type.
            _ => self.string(v),
        }
    }

    /// An expression of kind `k` (or one Postgres implicitly converts to `k`'s family).
    fn value(&mut self, k: Kind, depth: u32) -> Pair {
        let roll = self.rng.random_range(0..10);
        if roll < 4 {
            return Pair::same(self.pick(column_of(k)).to_owned());
        }
        if roll < 7 || depth == 0 {
            return self.literal(k);
        }
        match k {
            Text | Varchar => match self.rng.random_range(0..8) {
                0 => {
                    let k = self.pick(&[Text, Varchar, Bpchar]);
                    let x = self.value(k, depth - 1);
                    Pair::wrap(|x| format!("lower({x})"), &x)
                }
                1 => {
                    let k = self.pick(&[Text, Varchar, Bpchar]);
                    let x = self.value(k, depth - 1);
                    Pair::wrap(|x| format!("upper({x})"), &x)
                }
                2 => {
                    let a = self.value(Text, depth - 1);
                    let k = self.pick(&[Text, Varchar, Bpchar]);
                    let b = self.value(k, depth - 1);
                    Pair::two(|a, b| format!("({a} || {b})"), &a, &b)
                }
                3 => {
                    // Output functions: every type printed as Postgres prints it.
                    let src =
                        self.pick(&[I2, I4, I8, Num, F4, F8, Bool, Uuid, Date, Ts, Tz, Bpchar, IntArr, TextArr, Jsonb]);
                    let col = self.pick(column_of(src)).to_owned();
                    Pair::same(format!("{col}::text"))
                }
                4 => {
                    // text || anynonarray converts the other side with its output function.
                    let other = self.pick(&[I4, Num, F8, Bool, Date, Tz, Uuid, Bpchar]);
                    let x = self.value(other, 0);
                    let t = self.value(Text, 0);
                    if self.chance(0.5) {
                        Pair::two(|t, x| format!("({t} || {x})"), &t, &x)
                    } else {
                        Pair::two(|x, t| format!("({x} || {t})"), &x, &t)
                    }
                }
                _ => self.literal(k),
            },
            // Casts that round (numeric half away from zero, float half to even) or fail on
            // NaN/Infinity rows, which Postgres must then fail on too.
            I4 | I2 if self.chance(0.3) => {
                let src = self.pick(&["f4", "f8", "n", "i8", "b"]);
                Pair::same(format!("CAST({src} AS {})", sql_type(k)))
            }
            I8 if self.chance(0.5) => Pair::same(format!("CAST({} AS int8)", self.pick(&["i2", "i4"]))),
            Num if self.chance(0.5) => Pair::same(format!("{}::numeric", self.pick(&["i2", "i4", "i8"]))),
            F8 if self.chance(0.5) => Pair::same(format!("{}::float8", self.pick(&["f4", "i4", "n"]))),
            Ts if self.chance(0.5) => Pair::same(format!("{}::timestamp", self.pick(&["d", "tz"]))),
            Date if self.chance(0.5) => Pair::same(format!("{}::date", self.pick(&["ts", "tz"]))),
            Tz if self.chance(0.5) => Pair::same(format!("{}::timestamptz", self.pick(&["d", "ts"]))),
            _ => self.literal(k),
        }
    }

    /// A kind that compares with `k` in Postgres.
    fn partner(&mut self, k: Kind) -> Kind {
        if self.chance(0.6) {
            return k;
        }
        match k {
            I2 | I4 | I8 | Num => self.pick(&[I2, I4, I8, Num, F4, F8]),
            F4 | F8 => self.pick(&[I4, Num, F4, F8]),
            Text | Varchar | Bpchar => self.pick(&[Text, Varchar, Bpchar]),
            Date | Ts | Tz => self.pick(&[Date, Ts, Tz]),
            other => other,
        }
    }

    fn cmp_op(&mut self) -> &'static str {
        self.pick(&["=", "<>", "!=", "<", "<=", ">", ">="])
    }

    pub(crate) fn boolean(&mut self, depth: u32) -> Pair {
        let choice = if depth == 0 { self.rng.random_range(0..3) } else { self.rng.random_range(0..16) };
        match choice {
            0 | 3 | 4 => {
                let k = self.pick(SCALARS);
                let a = self.value(k, depth.saturating_sub(1));
                let k2 = self.partner(k);
                let b = self.value(k2, depth.saturating_sub(1));
                // jsonb offers equality only.
                let op = if k == Jsonb { self.pick(&["=", "<>", "!="]) } else { self.cmp_op() };
                Pair::two(|a, b| format!("{a} {op} {b}"), &a, &b)
            }
            1 => {
                let roll = self.rng.random_range(0..4);
                match roll {
                    0 => Pair::same("b".into()),
                    1 => Pair::same(self.pick(&["TRUE", "FALSE", "NULL"]).into()),
                    _ => {
                        let k = self.pick(SCALARS);
                        let a = self.value(k, 0);
                        let neg = if self.chance(0.5) { "NOT " } else { "" };
                        Pair::wrap(|a| format!("{a} IS {neg}NULL"), &a)
                    }
                }
            }
            2 if self.chance(0.3) => {
                let k = self.pick(SCALARS);
                let a = self.value(k, depth.saturating_sub(1));
                let k2 = self.partner(k);
                let b =
                    if self.chance(0.2) { Pair::same("NULL".into()) } else { self.value(k2, depth.saturating_sub(1)) };
                let not = if self.chance(0.5) { "NOT " } else { "" };
                Pair::two(|a, b| format!("{a} IS {not}DISTINCT FROM {b}"), &a, &b)
            }
            2 => {
                let k = self.pick(&[Text, Varchar, Bpchar]);
                let a = self.value(k, depth.saturating_sub(1));
                let pat = self
                    .pick(&["%", "a%", "%b%", "_", "a_c", "%\\%%", "ab ", "A%", "%é%", "É%", "_b%", "a\\_c", "", "%c"]);
                let p = self.string(pat);
                let op = self.pick(&["LIKE", "ILIKE", "NOT LIKE", "NOT ILIKE"]);
                if self.chance(0.2) {
                    let p2 = self.string(&pat.replace('\\', "!"));
                    Pair::two(|a, p| format!("{a} {op} {p} ESCAPE '!'"), &a, &p2)
                } else {
                    Pair::two(|a, p| format!("{a} {op} {p}"), &a, &p)
                }
            }
            5 | 6 => {
                let a = self.boolean(depth - 1);
                let b = self.boolean(depth - 1);
                let op = self.pick(&["AND", "OR"]);
                Pair::two(|a, b| format!("({a} {op} {b})"), &a, &b)
            }
            7 => {
                let a = self.boolean(depth - 1);
                Pair::wrap(|a| format!("NOT ({a})"), &a)
            }
            8 => {
                let a = self.boolean(depth - 1);
                let t = self.pick(&["TRUE", "FALSE", "UNKNOWN", "NOT TRUE", "NOT FALSE", "NOT UNKNOWN"]);
                Pair::wrap(|a| format!("({a}) IS {t}"), &a)
            }
            9 => {
                let k = self.pick(&[I2, I4, I8, Num, F8, Text, Date, Ts, Tz, Uuid, Bpchar]);
                let x = self.value(k, depth - 1);
                let lo = self.literal(k);
                let hi = self.literal(k);
                let not = if self.chance(0.3) { "NOT " } else { "" };
                Pair {
                    w: format!("{} {not}BETWEEN {} AND {}", x.w, lo.w, hi.w),
                    raw: format!("{} {not}BETWEEN {} AND {}", x.raw, lo.raw, hi.raw),
                }
            }
            10 => {
                let k = self.pick(SCALARS);
                let x = self.value(k, depth - 1);
                let n = self.rng.random_range(1..5);
                let items: Vec<Pair> = (0..n)
                    .map(|_| if self.chance(0.1) { Pair::same("NULL".into()) } else { self.literal(k) })
                    .collect();
                let not = if self.chance(0.3) { "NOT " } else { "" };
                Pair {
                    w: format!(
                        "{} {not}IN ({})",
                        x.w,
                        items.iter().map(|p| p.w.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    raw: format!(
                        "{} {not}IN ({})",
                        x.raw,
                        items.iter().map(|p| p.raw.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }
            }
            11 => {
                let (k, arr) = if self.chance(0.5) { (I4, IntArr) } else { (Text, TextArr) };
                let x = self.value(k, 0);
                let a = self.value(arr, 1);
                let op = self.cmp_op();
                let q = self.pick(&["ANY", "ALL", "SOME"]);
                Pair::two(|x, a| format!("{x} {op} {q}({a})"), &x, &a)
            }
            12 => {
                let arr = self.pick(&[IntArr, TextArr]);
                let a = self.value(arr, 1);
                let b = self.value(arr, 1);
                let op = self.pick(&["@>", "<@", "&&", "=", "<>", "<"]);
                Pair::two(|a, b| format!("{a} {op} {b}"), &a, &b)
            }
            _ => {
                let a = self.boolean(depth - 1);
                let b = self.boolean(depth - 1);
                let c = self.boolean(depth - 1);
                Pair {
                    w: format!("{} AND {} OR {}", a.w, b.w, c.w),
                    raw: format!("{} AND {} OR {}", a.raw, b.raw, c.raw),
                }
            }
        }
    }
}

fn kind_of(ty: &str) -> Kind {
    match ty {
        "int2" => I2,
        "int4" => I4,
        "int8" => I8,
        "numeric" => Num,
        "float4" => F4,
        "float8" => F8,
        "text" => Text,
        "varchar" => Varchar,
        "bpchar" => Bpchar,
        "bool" => Bool,
        "uuid" => Uuid,
        "date" => Date,
        "timestamp" => Ts,
        "timestamptz" => Tz,
        "_int4" => IntArr,
        "jsonb" => Jsonb,
        _ => TextArr,
    }
}

pub(crate) type Outcome = Result<Vec<Option<bool>>, String>;

/// Runs `SELECT (e1), (e2), … FROM t ORDER BY id`; on error, one query per expression so one
/// bad expression does not hide the others.
/// `solo[i]` is `batch[i]` numbered on its own, for the one-by-one retry.
pub(crate) async fn run_batch(
    conn: &mut PgConnection,
    batch: &[(String, Vec<Option<String>>)],
    solo: &[(String, Vec<Option<String>>)],
) -> Vec<Outcome> {
    async fn one(
        conn: &mut PgConnection,
        exprs: &[(String, Vec<Option<String>>)],
    ) -> Result<Vec<Vec<Option<bool>>>, String> {
        let mut sql = String::from("SELECT ");
        for (i, (e, _)) in exprs.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            write!(sql, "({e})").ok();
        }
        sql.push_str(" FROM shape_rows ORDER BY shape_rows.id");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, params) in exprs {
            for p in params {
                q = q.bind(p.clone());
            }
        }
        let rows = q.fetch_all(&mut *conn).await.map_err(|e| e.to_string())?;
        let mut out = vec![Vec::with_capacity(rows.len()); exprs.len()];
        for r in &rows {
            for (i, col) in out.iter_mut().enumerate() {
                col.push(r.try_get::<Option<bool>, _>(i).map_err(|e| e.to_string())?);
            }
        }
        Ok(out)
    }
    match one(conn, batch).await {
        Ok(cols) => cols.into_iter().map(Ok).collect(),
        Err(_) => {
            let mut out = Vec::new();
            for e in solo {
                out.push(one(conn, std::slice::from_ref(e)).await.map(|mut v| v.remove(0)));
            }
            out
        }
    }
}

/// A fresh database with `shape_rows`: `ROWS` random rows (NULLs included) drawn with `g`, on a
/// connection with the settings Electric pins; returns the rows as Postgres prints them.
pub(crate) async fn table(
    g: &mut Gen,
) -> anyhow::Result<(folio_testkit::TestDb, PgConnection, Vec<Vec<Option<String>>>)> {
    let db = folio_testkit::TestDb::new().await?;
    let mut conn = PgConnection::connect(&db.url).await?;
    // The settings Electric pins (and wal-ingest's output assumes): UTC, ISO dates.
    sqlx::query("SET TimeZone = 'UTC'").execute(&mut conn).await?;
    sqlx::query("SET DateStyle = 'ISO, DMY'").execute(&mut conn).await?;
    sqlx::query("SET extra_float_digits = 1").execute(&mut conn).await?;

    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|(n, t)| format!("{} {}", quote_ident(n), if *t == "_int4" { "int4[]" } else { t }))
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE shape_rows ({})", cols.join(", "))))
        .execute(&mut conn)
        .await?;

    let placeholders: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, t))| format!("${}::{}", i + 1, if *t == "_int4" { "int4[]" } else { t }))
        .collect();
    let insert = format!("INSERT INTO shape_rows VALUES ({})", placeholders.join(", "));
    for id in 0..ROWS {
        let mut values = vec![Some(id.to_string())];
        for (_, t) in &COLUMNS[1..] {
            values.push(if g.chance(0.15) { None } else { Some(g.pick(pool(kind_of(t))).to_owned()) });
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
        for v in &values {
            q = q.bind(v.clone());
        }
        q.execute(&mut conn).await.with_context(|| format!("insert {values:?}"))?;
    }
    // Read the rows back as Postgres prints them: that text is what change events carry.
    // Through the output function (format), not ::text, which would strip bpchar padding.
    let select_text: Vec<String> = COLUMNS
        .iter()
        .map(|(n, _)| format!("CASE WHEN {0} IS NULL THEN NULL ELSE format('%s', {0}) END", quote_ident(n)))
        .collect();
    let text_rows: Vec<Vec<Option<String>>> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM shape_rows ORDER BY shape_rows.id",
        select_text.join(", ")
    )))
    .fetch_all(&mut conn)
    .await?
    .iter()
    .map(|r| (0..COLUMNS.len()).map(|i| r.get::<Option<String>, _>(i)).collect())
    .collect();
    Ok((db, conn, text_rows))
}

pub(crate) enum Verdict {
    /// Agreement on this many rows.
    Agree(usize),
    /// A bad literal, refused by us and by Postgres: agreement too.
    RefusedByBoth,
    Disagree(String),
}

/// Our parse and evaluation of `pair.w` against Postgres running `pair.raw` (`pg_raw`) and our
/// rendering of it (`pg_rendered`), on every row.
pub(crate) fn judge(
    pair: &Pair,
    params: &[String],
    clause: &Result<WhereClause, folio_shapes::WhereError>,
    rows: &[Vec<Option<&str>>],
    pg_raw: &Outcome,
    pg_rendered: &Outcome,
) -> Verdict {
    let clause = match clause {
        Ok(c) => c,
        Err(_) if pg_raw.is_err() => return Verdict::RefusedByBoth,
        Err(e) => {
            return Verdict::Disagree(format!("refused {:?} (params {params:?}) which Postgres accepts: {e}", pair.w));
        }
    };
    let ours: Result<Vec<Option<bool>>, String> =
        rows.iter().map(|r| clause.evaluate(r).map_err(|e| e.to_string())).collect();
    let describe =
        || format!("{:?} params {:?}\n    rendered {}", pair.w, params, clause.to_sql(&mut ParamSink::new()));
    match (&ours, pg_raw, pg_rendered) {
        (Ok(o), Ok(r), Ok(s)) => {
            for (i, ((o, r), s)) in o.iter().zip(r).zip(s).enumerate() {
                if o != r || o != s {
                    return Verdict::Disagree(format!(
                        "{}\n    row {:?}\n    ours {o:?}, postgres {r:?}, postgres(rendered) {s:?}",
                        describe(),
                        rows[i]
                    ));
                }
            }
            Verdict::Agree(o.len())
        }
        // Postgres and we failing on the same data is agreement (e.g. an overflowing cast).
        (Err(_), Err(_), Err(_)) => Verdict::Agree(rows.len()),
        _ => Verdict::Disagree(format!(
            "{}\n    ours {:?}\n    postgres {:?}\n    postgres(rendered) {:?}",
            describe(),
            ours.as_ref().err(),
            pg_raw.as_ref().err(),
            pg_rendered.as_ref().err()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn random_clauses_agree_with_postgres() -> anyhow::Result<()> {
    let seed: u64 = std::env::var("FOLIO_SHAPES_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xf011_0005);
    let mut g = Gen { rng: StdRng::seed_from_u64(seed), params: Vec::new() };
    let (_db, mut conn, text_rows) = table(&mut g).await?;
    let rows: Vec<Vec<Option<&str>>> = text_rows.iter().map(|r| r.iter().map(|v| v.as_deref()).collect()).collect();

    let schema = schema();
    let started = std::time::Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut checks = 0usize;
    let mut generated = 0usize;
    let mut refused_by_both = 0usize;
    while generated < EXPRESSIONS {
        let mut batch = Vec::new();
        while batch.len() < BATCH && generated < EXPRESSIONS {
            generated += 1;
            g.params.clear();
            let depth = g.rng.random_range(0..4);
            let pair = g.boolean(depth);
            let clause = WhereClause::parse(&pair.w, &schema, &g.params);
            batch.push((pair, g.params.clone(), clause));
        }
        let raw: Vec<(String, Vec<Option<String>>)> =
            batch.iter().map(|(p, _, _)| (p.raw.clone(), Vec::new())).collect();
        let rendered: Vec<(String, Vec<Option<String>>)> = batch
            .iter()
            .filter_map(|(_, _, c)| c.as_ref().ok())
            .scan(0, |bound, c| {
                // One statement holds the whole batch, so each clause continues the numbering.
                let mut sink = ParamSink::starting_after(*bound);
                let sql = c.to_sql(&mut sink);
                *bound += sink.values().len();
                Some((sql, sink.into_values()))
            })
            .collect();
        let rendered_solo: Vec<(String, Vec<Option<String>>)> = batch
            .iter()
            .filter_map(|(_, _, c)| c.as_ref().ok())
            .map(|c| {
                let mut sink = ParamSink::new();
                (c.to_sql(&mut sink), sink.into_values())
            })
            .collect();
        let raw_results = run_batch(&mut conn, &raw, &raw).await;
        let mut rendered_results = run_batch(&mut conn, &rendered, &rendered_solo).await.into_iter();
        for ((pair, params, clause), pg_raw) in batch.iter().zip(raw_results) {
            let pg_rendered = match clause {
                Ok(_) => rendered_results.next().unwrap_or_else(|| Err("missing result".into())),
                Err(_) => Err("not rendered".into()),
            };
            match judge(pair, params, clause, &rows, &pg_raw, &pg_rendered) {
                Verdict::Agree(n) => checks += n,
                Verdict::RefusedByBoth => refused_by_both += 1,
                Verdict::Disagree(why) => failures.push(why),
            }
        }
    }
    eprintln!(
        "seed {seed}: {generated} clauses x {ROWS} rows = {checks} row checks against Postgres in {:?} ({refused_by_both} clauses refused by both)",
        started.elapsed()
    );
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(15).collect();
        panic!(
            "{} of {generated} clauses disagree with Postgres (seed {seed}):\n{}",
            failures.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
    }
    assert!(checks >= EXPRESSIONS * ROWS * 9 / 10, "too few checks ran: {checks}");
    Ok(())
}

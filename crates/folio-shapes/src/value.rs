//! Typed values read from Postgres text format, with Postgres' comparison rules.

use std::cmp::Ordering;

use std::str::FromStr;

use bigdecimal::{BigDecimal, RoundingMode, ToPrimitive};

use crate::datetime::{self, Days, Micros};
use crate::json::{self, Json};
use crate::schema::{PgType, ScalarType};

/// A `numeric`. Postgres numerics also hold NaN and ±Infinity, ordered
/// `-Infinity < finite < Infinity < NaN` with `NaN = NaN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Num {
    NegInf,
    Finite(BigDecimal),
    PosInf,
    NaN,
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        fn rank(n: &Num) -> u8 {
            match n {
                Num::NegInf => 0,
                Num::Finite(_) => 1,
                Num::PosInf => 2,
                Num::NaN => 3,
            }
        }
        match (self, other) {
            (Num::Finite(a), Num::Finite(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Bool(bool),
    Int(i64),
    Numeric(Num),
    Float4(f32),
    Float8(f64),
    Text(String),
    Uuid(u128),
    Date(Days),
    Timestamp(Micros),
    Timestamptz(Micros),
    Json(Json),
    /// A value of a type the evaluator does not model, kept as its text.
    Other(String),
    Array(Vec<Option<Value>>),
}

impl Value {
    /// Bytes held on the heap, estimated (numbers and documents by their text's length).
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Value::Text(s) | Value::Other(s) => s.len(),
            Value::Numeric(_) | Value::Json(_) => 32 + 2 * self.to_pg_text().len(),
            Value::Array(items) => {
                items.len() * std::mem::size_of::<Option<Value>>()
                    + items.iter().flatten().map(Value::heap_bytes).sum::<usize>()
            }
            _ => 0,
        }
    }
}

pub(crate) type ParseResult = Result<Value, String>;

fn invalid(ty: &str, s: &str) -> String {
    format!("invalid input syntax for type {ty}: \"{s}\"")
}

fn parse_int(s: &str, ty: &ScalarType) -> ParseResult {
    let (name, min, max) = match ty {
        ScalarType::Int2 => ("smallint", i64::from(i16::MIN), i64::from(i16::MAX)),
        ScalarType::Int4 => ("integer", i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => ("bigint", i64::MIN, i64::MAX),
    };
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(name, s));
    }
    match t.parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Value::Int(v)),
        _ => Err(format!("value \"{s}\" is out of range for type {name}")),
    }
}

pub(crate) fn parse_numeric(s: &str) -> Result<Num, String> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Ok(Num::NaN),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok(Num::PosInf),
        "-infinity" | "-inf" => return Ok(Num::NegInf),
        _ => {}
    }
    // Checked by hand because rust_decimal's parser is laxer than numeric_in (underscores).
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let well_formed = (!int_part.is_empty() || !frac_part.is_empty())
        && int_part.bytes().all(|b| b.is_ascii_digit())
        && frac_part.bytes().all(|b| b.is_ascii_digit())
        && exponent.is_none_or(|e| {
            let d = e.strip_prefix(['+', '-']).unwrap_or(e);
            !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
        });
    if !well_formed {
        return Err(invalid("numeric", s));
    }
    // Postgres allows at most 131072 digits before the point; the cap also keeps hostile
    // exponents from turning comparisons into huge multiplications.
    if let Some(e) = exponent
        && e.trim_start_matches(['+', '-']).parse::<i64>().map_or(true, |v| v > 131_072)
    {
        return Err(format!("value overflows numeric format: \"{s}\""));
    }
    BigDecimal::from_str(t).map(Num::Finite).map_err(|_| invalid("numeric", s))
}

fn float_syntax_ok(t: &str) -> bool {
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let l = body.to_ascii_lowercase();
    if matches!(l.as_str(), "inf" | "infinity" | "nan") {
        return true;
    }
    let (mantissa, exponent) = match l.find('e') {
        Some(i) => (&l[..i], Some(&l[i + 1..])),
        None => (l.as_str(), None),
    };
    let (a, b) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    (!a.is_empty() || !b.is_empty())
        && a.bytes().all(|c| c.is_ascii_digit())
        && b.bytes().all(|c| c.is_ascii_digit())
        && exponent.is_none_or(|e| {
            let d = e.strip_prefix(['+', '-']).unwrap_or(e);
            !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())
        })
}

fn parse_float(s: &str, double: bool) -> ParseResult {
    let name = if double { "double precision" } else { "real" };
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if !float_syntax_ok(t) {
        return Err(invalid(name, s));
    }
    let lower = t.to_ascii_lowercase();
    let explicit_inf = lower.contains("inf");
    // Postgres refuses values that overflow to infinity or underflow to zero.
    let mantissa = lower.split('e').next().unwrap_or("");
    let nonzero = mantissa.bytes().any(|b| matches!(b, b'1'..=b'9'));
    let out_of_range = || format!("\"{s}\" is out of range for type {name}");
    if double {
        let v: f64 = t.parse().map_err(|_| invalid(name, s))?;
        if (v.is_infinite() && !explicit_inf) || (v == 0.0 && nonzero) {
            return Err(out_of_range());
        }
        Ok(Value::Float8(v))
    } else {
        let v: f32 = t.parse().map_err(|_| invalid(name, s))?;
        if (v.is_infinite() && !explicit_inf) || (v == 0.0 && nonzero) {
            return Err(out_of_range());
        }
        Ok(Value::Float4(v))
    }
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    let l = s.trim_matches(|c: char| c.is_ascii_whitespace()).to_ascii_lowercase();
    // boolin accepts any unambiguous prefix of these words.
    let prefix_of = |w: &str| !l.is_empty() && w.starts_with(l.as_str());
    if prefix_of("true") || prefix_of("yes") || l == "on" || l == "1" {
        Some(true)
    } else if prefix_of("false") || prefix_of("no") || (l.len() >= 2 && "off".starts_with(l.as_str())) || l == "0" {
        Some(false)
    } else {
        None
    }
}

fn parse_uuid(s: &str) -> ParseResult {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let inner = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')).unwrap_or(t);
    let mut v: u128 = 0;
    let mut n = 0;
    let mut prev_hyphen = true;
    for b in inner.bytes() {
        if b == b'-' {
            // uuid_in allows a hyphen after any group of four digits.
            if prev_hyphen || n % 4 != 0 || n == 32 {
                return Err(invalid("uuid", s));
            }
            prev_hyphen = true;
            continue;
        }
        let d = (b as char).to_digit(16).ok_or_else(|| invalid("uuid", s))?;
        if n == 32 {
            return Err(invalid("uuid", s));
        }
        v = (v << 4) | u128::from(d);
        n += 1;
        prev_hyphen = false;
    }
    if n != 32 || prev_hyphen {
        return Err(invalid("uuid", s));
    }
    Ok(Value::Uuid(v))
}

/// Parses one value of a scalar type from Postgres text format.
pub(crate) fn parse_scalar(s: &str, ty: &ScalarType) -> ParseResult {
    match ty {
        ScalarType::Int2 | ScalarType::Int4 | ScalarType::Int8 => parse_int(s, ty),
        ScalarType::Numeric => parse_numeric(s).map(Value::Numeric),
        ScalarType::Float4 => parse_float(s, false),
        ScalarType::Float8 => parse_float(s, true),
        ScalarType::Text | ScalarType::Varchar | ScalarType::Bpchar | ScalarType::Name => {
            if s.contains('\0') {
                return Err("invalid byte sequence: 0x00".into());
            }
            Ok(Value::Text(s.to_owned()))
        }
        ScalarType::Bool => parse_bool(s).map(Value::Bool).ok_or_else(|| invalid("boolean", s)),
        ScalarType::Uuid => parse_uuid(s),
        ScalarType::Date => datetime::parse_date(s).map(Value::Date),
        ScalarType::Timestamp => datetime::parse_timestamp(s, false).map(Value::Timestamp),
        ScalarType::Timestamptz => datetime::parse_timestamp(s, true).map(Value::Timestamptz),
        ScalarType::Jsonb => json::parse(s).map(Value::Json),
        ScalarType::Other(_) => Ok(Value::Other(s.to_owned())),
    }
}

pub(crate) fn parse_value(s: &str, ty: &PgType) -> ParseResult {
    if ty.array { parse_array(s, &ty.scalar) } else { parse_scalar(s, &ty.scalar) }
}

/// Parses a one-dimensional array literal such as `{1,NULL,"a \"b\""}`.
fn parse_array(s: &str, elem: &ScalarType) -> ParseResult {
    let malformed = |why: &str| format!("malformed array literal: \"{s}\" ({why})");
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if t.starts_with('[') {
        return Err(malformed("explicit bounds are not supported"));
    }
    let inner = t.strip_prefix('{').and_then(|x| x.strip_suffix('}')).ok_or_else(|| malformed("expected {…}"))?;
    let mut out = Vec::new();
    if inner.trim_matches(|c: char| c.is_ascii_whitespace()).is_empty() {
        return Ok(Value::Array(out));
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut item = String::new();
        let mut quoted = false;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => item.push(chars.next().ok_or_else(|| malformed("unterminated escape"))?),
                    Some(c) => item.push(c),
                    None => return Err(malformed("unterminated quote")),
                }
            }
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' | '}' | '"' => return Err(malformed("multidimensional or malformed arrays are not supported")),
                    '\\' => {
                        chars.next();
                        item.push(chars.next().ok_or_else(|| malformed("unterminated escape"))?);
                    }
                    c => {
                        item.push(c);
                        chars.next();
                    }
                }
            }
            let trimmed = item.trim_end_matches(|c: char| c.is_ascii_whitespace()).len();
            item.truncate(trimmed);
            if item.is_empty() {
                return Err(malformed("empty element"));
            }
        }
        if !quoted && item.eq_ignore_ascii_case("null") {
            out.push(None);
        } else {
            out.push(Some(parse_scalar(&item, elem)?));
        }
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(_) => return Err(malformed("junk after element")),
        }
    }
    Ok(Value::Array(out))
}

/// Postgres' shortest-exact float output (extra_float_digits >= 1, the default since PG 12):
/// exponent form when the decimal exponent is < -4 or >= the type's DIG (15 or 6).
pub(crate) fn format_float(v: f64, dig: i32, sci: String) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    // `sci` is Rust's shortest round-trip form, e.g. "-1.2345e-7".
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if neg { "-" } else { "" };
    if exp < -4 || exp >= dig {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    } else if exp < 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
    } else {
        let point = exp as usize + 1;
        if digits.len() <= point {
            format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point], &digits[point..])
        }
    }
}

fn format_num(n: &Num) -> String {
    match n {
        Num::NaN => "NaN".into(),
        Num::PosInf => "Infinity".into(),
        Num::NegInf => "-Infinity".into(),
        Num::Finite(d) => d.to_plain_string(),
    }
}

fn quote_array_elem(s: &str) -> String {
    let needs = s.is_empty()
        || s.eq_ignore_ascii_case("null")
        || s.chars().any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
    if !needs {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Value {
    /// The value in Postgres text format, as `::text` would print it (session zone UTC,
    /// DateStyle ISO). Used both for casts to text and for binding parameters.
    pub(crate) fn to_pg_text(&self) -> String {
        match self {
            Value::Bool(b) => if *b { "true" } else { "false" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Numeric(n) => format_num(n),
            Value::Float4(f) => format_float(f64::from(*f), 6, format!("{f:e}")),
            Value::Float8(f) => format_float(*f, 15, format!("{f:e}")),
            Value::Text(s) | Value::Other(s) => s.clone(),
            Value::Uuid(u) => {
                let h = format!("{u:032x}");
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            }
            Value::Date(d) => datetime::format_date(*d),
            Value::Timestamp(t) => datetime::format_timestamp(*t, false),
            Value::Timestamptz(t) => datetime::format_timestamp(*t, true),
            Value::Json(j) => {
                let mut out = String::new();
                json::write(&mut out, j);
                out
            }
            Value::Array(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        None => "NULL".to_owned(),
                        Some(v) => quote_array_elem(&v.to_pg_text()),
                    })
                    .collect();
                format!("{{{}}}", parts.join(","))
            }
        }
    }
}

/// Float ordering as Postgres has it: NaN equals NaN and sorts above everything, -0 = 0.
fn cmp_f64(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

fn trim_bpchar(s: &str) -> &str {
    s.trim_end_matches(' ')
}

/// Compares two non-NULL values of the same type `ty` (operands are cast to a common type
/// before comparison, so mixed variants do not occur for well-typed expressions).
pub(crate) fn compare(a: &Value, b: &Value, ty: &ScalarType) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Numeric(x), Value::Numeric(y)) => x.cmp(y),
        (Value::Float4(x), Value::Float4(y)) => cmp_f64(f64::from(*x), f64::from(*y)),
        (Value::Float8(x), Value::Float8(y)) => cmp_f64(*x, *y),
        (Value::Text(x), Value::Text(y)) if *ty == ScalarType::Bpchar => trim_bpchar(x).cmp(trim_bpchar(y)),
        // Byte order of UTF-8 is code point order, i.e. the "C" collation the SQL renders.
        (Value::Text(x), Value::Text(y)) | (Value::Other(x), Value::Other(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) | (Value::Timestamptz(x), Value::Timestamptz(y)) => x.cmp(y),
        // Only equality is offered on jsonb; the order among unequal values is arbitrary.
        (Value::Json(x), Value::Json(y)) => {
            if x == y {
                Ordering::Equal
            } else {
                a.to_pg_text().cmp(&b.to_pg_text()).then(Ordering::Less)
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            // array_cmp: element-wise, NULL equal to NULL and above any value, then length.
            for (ex, ey) in x.iter().zip(y) {
                let o = match (ex, ey) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                    (Some(ex), Some(ey)) => compare(ex, ey, ty),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => variant_rank(a).cmp(&variant_rank(b)),
    }
}

fn variant_rank(v: &Value) -> u8 {
    match v {
        Value::Bool(_) => 0,
        Value::Int(_) => 1,
        Value::Numeric(_) => 2,
        Value::Float4(_) => 3,
        Value::Float8(_) => 4,
        Value::Text(_) => 5,
        Value::Uuid(_) => 6,
        Value::Date(_) => 7,
        Value::Timestamp(_) => 8,
        Value::Timestamptz(_) => 9,
        Value::Other(_) => 10,
        Value::Array(_) => 11,
        Value::Json(_) => 12,
    }
}

/// numeric -> integer rounds half away from zero; float -> integer rounds half to even.
fn int_in_range(v: i64, to: &ScalarType) -> Result<Value, String> {
    let ok = match to {
        ScalarType::Int2 => i16::try_from(v).is_ok(),
        ScalarType::Int4 => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok { Ok(Value::Int(v)) } else { Err(format!("{} out of range", to.sql_name())) }
}

fn f64_to_num(v: f64, dig: usize) -> Result<Num, String> {
    if v.is_nan() {
        return Ok(Num::NaN);
    }
    if v.is_infinite() {
        return Ok(if v > 0.0 { Num::PosInf } else { Num::NegInf });
    }
    // float8_numeric prints the value with DBL_DIG (FLT_DIG for float4) significant digits.
    let s = format!("{v:.prec$e}", prec = dig - 1);
    match parse_numeric(&s)? {
        Num::Finite(d) => Ok(Num::Finite(d.normalized())),
        other => Ok(other),
    }
}

fn num_to_f64(n: &Num) -> f64 {
    match n {
        Num::NaN => f64::NAN,
        Num::PosInf => f64::INFINITY,
        Num::NegInf => f64::NEG_INFINITY,
        // Through text so the result is correctly rounded, as numeric_float8 does.
        Num::Finite(d) => d.to_string().parse().unwrap_or(f64::NAN),
    }
}

/// Converts a non-NULL value to another type, with Postgres' cast semantics.
pub(crate) fn cast(v: Value, from: &PgType, to: &PgType) -> Result<Value, String> {
    if from == to {
        return Ok(v);
    }
    if to.array || from.array {
        return match (v, to.array) {
            (Value::Text(s), true) => parse_value(&s, to),
            (Value::Array(items), true) => {
                let (fe, te) = (from.element(), to.element());
                items
                    .into_iter()
                    .map(|e| e.map(|e| cast(e, &fe, &te)).transpose())
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            (v, false) if to.scalar.is_text_like() => Ok(Value::Text(v.to_pg_text())),
            _ => Err(format!("cannot cast type {from} to {to}")),
        };
    }
    let (f, t) = (&from.scalar, &to.scalar);
    match (v, t) {
        (Value::Text(s), _) if *f == ScalarType::Bpchar && t.is_text_like() => {
            Ok(Value::Text(trim_bpchar(&s).to_owned()))
        }
        (v, _) if t.is_text_like() => Ok(Value::Text(v.to_pg_text())),
        (Value::Text(s) | Value::Other(s), _) => parse_scalar(&s, t),
        (Value::Int(i), t) if t.is_int() => int_in_range(i, t),
        (Value::Int(i), ScalarType::Numeric) => Ok(Value::Numeric(Num::Finite(BigDecimal::from(i)))),
        (Value::Int(i), ScalarType::Float4) => Ok(Value::Float4(i as f32)),
        (Value::Int(i), ScalarType::Float8) => Ok(Value::Float8(i as f64)),
        (Value::Int(i), ScalarType::Bool) => Ok(Value::Bool(i != 0)),
        (Value::Bool(b), ScalarType::Int4) => Ok(Value::Int(i64::from(b))),
        (Value::Numeric(n), t) if t.is_int() => match n {
            Num::Finite(d) => {
                // HalfUp in bigdecimal rounds ties away from zero, as numeric_int8 does.
                let r = d.with_scale_round(0, RoundingMode::HalfUp);
                let i = r.to_i64().ok_or_else(|| format!("{} out of range", t.sql_name()))?;
                int_in_range(i, t)
            }
            _ => Err(format!("cannot convert {} to {}", format_num(&n), t.sql_name())),
        },
        (Value::Numeric(n), ScalarType::Float8) => {
            let f = num_to_f64(&n);
            if f.is_infinite() && matches!(n, Num::Finite(_)) {
                Err("value out of range: overflow".into())
            } else {
                Ok(Value::Float8(f))
            }
        }
        (Value::Numeric(n), ScalarType::Float4) => {
            let g = match &n {
                Num::Finite(d) => d.to_string().parse::<f32>().unwrap_or(f32::NAN),
                other => num_to_f64(other) as f32,
            };
            if g.is_infinite() && matches!(n, Num::Finite(_)) {
                Err("value out of range: overflow".into())
            } else {
                Ok(Value::Float4(g))
            }
        }
        (Value::Float4(x), t) if t.is_int() || *t == ScalarType::Numeric || *t == ScalarType::Float8 => match t {
            ScalarType::Float8 => Ok(Value::Float8(f64::from(x))),
            ScalarType::Numeric => f64_to_num(f64::from(x), 6).map(Value::Numeric),
            _ => float_to_int(f64::from(x), t),
        },
        (Value::Float8(x), t) if t.is_int() || *t == ScalarType::Numeric || *t == ScalarType::Float4 => match t {
            ScalarType::Float4 => {
                let g = x as f32;
                if g.is_infinite() && x.is_finite() {
                    Err("value out of range: overflow".into())
                } else {
                    Ok(Value::Float4(g))
                }
            }
            ScalarType::Numeric => f64_to_num(x, 15).map(Value::Numeric),
            _ => float_to_int(x, t),
        },
        (Value::Date(d), ScalarType::Timestamp) => datetime::date_to_timestamp(d).map(Value::Timestamp),
        (Value::Date(d), ScalarType::Timestamptz) => datetime::date_to_timestamp(d).map(Value::Timestamptz),
        (Value::Timestamp(t), ScalarType::Timestamptz) => Ok(Value::Timestamptz(t)),
        (Value::Timestamptz(t), ScalarType::Timestamp) => Ok(Value::Timestamp(t)),
        (Value::Timestamp(t) | Value::Timestamptz(t), ScalarType::Date) => {
            Ok(Value::Date(datetime::timestamp_to_date(t)))
        }
        _ => Err(format!("cannot cast type {from} to {to}")),
    }
}

fn float_to_int(x: f64, t: &ScalarType) -> Result<Value, String> {
    let r = x.round_ties_even();
    // i64 bounds as floats: [-2^63, 2^63).
    if !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
        return Err(format!("{} out of range", t.sql_name()));
    }
    int_in_range(r as i64, t)
}

/// Whether `cast` supports converting `from` to `to`, checked when the clause is parsed so
/// unsupported casts are refused up front rather than failing on every row.
pub(crate) fn castable(from: &PgType, to: &PgType) -> bool {
    if from == to {
        return true;
    }
    let (f, t) = (&from.scalar, &to.scalar);
    if from.array || to.array {
        return match (from.array, to.array) {
            (true, true) => castable(&from.element(), &to.element()),
            (false, true) => f.is_text_like(),
            _ => t.is_text_like(),
        };
    }
    if t.is_text_like() || f.is_text_like() || matches!(f, ScalarType::Other(_)) {
        return !matches!(t, ScalarType::Other(_));
    }
    (f.is_numeric_family() && t.is_numeric_family())
        || (f.is_datetime() && t.is_datetime() && !(*f == ScalarType::Date && *t == ScalarType::Date))
        || (*f == ScalarType::Bool && *t == ScalarType::Int4)
        || (*f == ScalarType::Int4 && *t == ScalarType::Bool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_output_matches_postgres() {
        let f = |v: f64| Value::Float8(v).to_pg_text();
        assert_eq!(f(1e20), "1e+20");
        assert_eq!(f(123456789012345.0), "123456789012345");
        assert_eq!(f(1234567890123456.0), "1.234567890123456e+15");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(0.00001), "1e-05");
        assert_eq!(f(-1.5), "-1.5");
        assert_eq!(Value::Float4(0.1).to_pg_text(), "0.1");
    }

    #[test]
    fn arrays_parse_quotes_and_nulls() {
        let v = parse_value(r#"{a,"b c",NULL,"NULL","x\"y"}"#, &PgType::array_of(ScalarType::Text)).unwrap();
        assert_eq!(v.to_pg_text(), r#"{a,"b c",NULL,"NULL","x\"y"}"#);
        assert!(parse_value("{{1,2},{3,4}}", &PgType::array_of(ScalarType::Int4)).is_err());
    }

    #[test]
    fn casts_round_like_postgres() {
        let n = |s: &str| Value::Numeric(parse_numeric(s).unwrap());
        let num = PgType::scalar(ScalarType::Numeric);
        let int = PgType::scalar(ScalarType::Int4);
        let f8 = PgType::scalar(ScalarType::Float8);
        assert_eq!(cast(n("2.5"), &num, &int).unwrap(), Value::Int(3));
        assert_eq!(cast(n("-2.5"), &num, &int).unwrap(), Value::Int(-3));
        assert_eq!(cast(Value::Float8(2.5), &f8, &int).unwrap(), Value::Int(2));
        assert!(cast(Value::Int(70000), &int, &PgType::scalar(ScalarType::Int2)).is_err());
    }
}

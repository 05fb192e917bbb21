//! `jsonb` values, for equality. Hand-written instead of serde_json because jsonb compares
//! numbers as `numeric` (`1.0 = 1`, no f64 rounding of big numbers) and serde_json only keeps
//! exact numbers with a feature that would change it for the whole workspace.

use std::str::FromStr;

use bigdecimal::BigDecimal;

/// A jsonb value in Postgres' canonical form: object keys sorted as jsonb stores them (shorter
/// first, then bytewise) with the last duplicate winning, so structural equality is jsonb's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(BigDecimal),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// Postgres refuses deeper documents too (its stack depth check); this keeps recursion bounded.
const MAX_JSON_DEPTH: usize = 128;

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

pub(crate) fn parse(text: &str) -> Result<Json, String> {
    let mut p = P { s: text.as_bytes(), i: 0 };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("invalid input syntax for type json: \"{text}\""));
    }
    Ok(v)
}

impl P<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn err<T>(&self) -> Result<T, String> {
        Err(format!("invalid input syntax for type json at byte {}", self.i))
    }

    fn lit(&mut self, word: &[u8], v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            self.err()
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_JSON_DEPTH {
            return Err("json document is nested too deeply".into());
        }
        self.ws();
        match self.s.get(self.i) {
            Some(b'n') => self.lit(b"null", Json::Null),
            Some(b't') => self.lit(b"true", Json::Bool(true)),
            Some(b'f') => self.lit(b"false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::Str),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return self.err(),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut pairs: Vec<(String, Json)> = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(pairs));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return self.err();
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.s.get(self.i) != Some(&b':') {
                        return self.err();
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    pairs.push((k, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            break;
                        }
                        _ => return self.err(),
                    }
                }
                // Last duplicate wins, then jsonb's key order.
                let mut dedup: Vec<(String, Json)> = Vec::with_capacity(pairs.len());
                for (k, v) in pairs.into_iter().rev() {
                    if !dedup.iter().any(|(d, _)| *d == k) {
                        dedup.push((k, v));
                    }
                }
                dedup.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
                Ok(Json::Obj(dedup))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.err(),
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let st = p.i;
            while p.s.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - st
        };
        let int_start = self.i;
        let n = digits(self);
        // JSON forbids leading zeros ("01").
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            return self.err();
        }
        if self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return self.err();
            }
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let exp_start = self.i;
            if digits(self) == 0 {
                return self.err();
            }
            let exp = std::str::from_utf8(&self.s[exp_start..self.i]).ok().and_then(|e| e.parse::<i64>().ok());
            if exp.is_none_or(|e| e > 131_072) {
                return Err("value overflows numeric format".into());
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| "invalid json number".to_owned())?;
        BigDecimal::from_str(text).map(Json::Num).map_err(|_| "invalid json number".into())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self.s.get(self.i..self.i + 4).ok_or("invalid unicode escape in json")?;
        let h = std::str::from_utf8(h).map_err(|_| "invalid unicode escape in json".to_owned())?;
        let v = u32::from_str_radix(h, 16).map_err(|_| "invalid unicode escape in json".to_owned())?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.s.get(self.i).is_some_and(|c| *c != b'"' && *c != b'\\' && *c >= 0x20) {
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).map_err(|_| "invalid utf-8 in json".to_owned())?);
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = *self.s.get(self.i).ok_or("unterminated json string")?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err("invalid unicode surrogate pair in json".into());
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err("invalid unicode surrogate pair in json".into());
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            // jsonb cannot store \u0000 either.
                            match char::from_u32(cp).filter(|c| *c != '\0') {
                                Some(ch) => out.push(ch),
                                None => return Err("unsupported unicode escape in json".into()),
                            }
                        }
                        _ => return self.err(),
                    }
                }
                _ => return Err("unterminated json string or control character in it".into()),
            }
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// jsonb's text output: `{"a": 1, "b": [1, 2]}`.
pub(crate) fn write(out: &mut String, v: &Json) {
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Num(n) => out.push_str(&n.to_plain_string()),
        Json::Str(s) => write_str(out, s),
        Json::Arr(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(out, x);
            }
            out.push(']');
        }
        Json::Obj(pairs) => {
            out.push('{');
            for (i, (k, x)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write(out, x);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        let mut out = String::new();
        write(&mut out, &parse(s).unwrap());
        out
    }

    #[test]
    fn canonical_like_jsonb() {
        assert_eq!(canon(r#"{"bb":1,"a":[1.0,2e2,-0.5],"bb":"\u00e9\n"}"#), r#"{"a": [1.0, 200, -0.5], "bb": "é\n"}"#);
        assert_eq!(parse("1.0").unwrap(), parse("1").unwrap());
        assert!(parse("01").is_err());
        assert!(parse("[1,]").is_err());
        assert!(parse(&"[".repeat(1000)).is_err());
    }
}

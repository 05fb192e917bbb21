//! Tokens of the where-clause subset, following Postgres' lexical rules where they matter
//! (identifier folding, `''` escapes, operator splitting, comments).

use crate::error::WhereError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Unquoted word, already lower-cased (Postgres folds unquoted identifiers and keywords).
    Word(String),
    /// `"Quoted"` identifier, case kept.
    Quoted(String),
    Str(String),
    Number(String),
    Param(u32),
    Op(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    DoubleColon,
    Eof,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub tok: Tok,
    /// Byte offsets into the where clause.
    pub start: usize,
    pub end: usize,
}

const OP_CHARS: &[u8] = b"+-*/<>=~!@#%^&|`?";

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, WhereError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // Postgres block comments nest.
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            if depth != 0 {
                return Err(WhereError::syntax(src, start, "unterminated /* comment"));
            }
            continue;
        }
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'[' => {
                i += 1;
                Tok::LBracket
            }
            b']' => {
                i += 1;
                Tok::RBracket
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                i += 2;
                Tok::DoubleColon
            }
            b'\'' => {
                let mut s = String::new();
                i += 1;
                let mut seg = i;
                loop {
                    match b.get(i) {
                        None => return Err(WhereError::syntax(src, start, "unterminated quoted string")),
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                            s.push_str(&src[seg..=i]);
                            i += 2;
                            seg = i;
                        }
                        Some(b'\'') => {
                            s.push_str(&src[seg..i]);
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                Tok::Str(s)
            }
            b'"' => {
                let mut s = String::new();
                i += 1;
                let mut seg = i;
                loop {
                    match b.get(i) {
                        None => return Err(WhereError::syntax(src, start, "unterminated quoted identifier")),
                        Some(b'"') if b.get(i + 1) == Some(&b'"') => {
                            s.push_str(&src[seg..=i]);
                            i += 2;
                            seg = i;
                        }
                        Some(b'"') => {
                            s.push_str(&src[seg..i]);
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
                if s.is_empty() {
                    return Err(WhereError::syntax(src, start, "zero-length delimited identifier"));
                }
                Tok::Quoted(s)
            }
            b'$' => {
                i += 1;
                let ds = i;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let n = src[ds..i].parse::<u32>().ok().filter(|n| *n > 0);
                match n {
                    Some(n) => Tok::Param(n),
                    None => {
                        return Err(WhereError::syntax(
                            src,
                            start,
                            format!("syntax error at or near \"{}\"", &src[start..i.max(start + 1)]),
                        ));
                    }
                }
            }
            b'0'..=b'9' | b'.' if c != b'.' || b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                if b.get(i) == Some(&b'.') && b.get(i + 1) != Some(&b'.') {
                    i += 1;
                    while b.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                }
                if matches!(b.get(i), Some(b'e' | b'E')) {
                    let save = i;
                    i += 1;
                    if matches!(b.get(i), Some(b'+' | b'-')) {
                        i += 1;
                    }
                    if b.get(i).is_some_and(u8::is_ascii_digit) {
                        while b.get(i).is_some_and(u8::is_ascii_digit) {
                            i += 1;
                        }
                    } else {
                        i = save;
                    }
                }
                Tok::Number(src[start..i].to_owned())
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while b.get(i).is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80) {
                    i += 1;
                }
                let word = &src[start..i];
                if b.get(i) == Some(&b'\'') {
                    // E'…', U&'…', B'…', X'…' literals have their own escape rules; refusing
                    // them beats reading them wrong. `date '…'` has a space and is fine.
                    if matches!(word.to_ascii_lowercase().as_str(), "e" | "b" | "x" | "n" | "u") {
                        return Err(WhereError::at(src, start, format!("{word}'…' string literals are not supported")));
                    }
                }
                Tok::Word(word.to_ascii_lowercase())
            }
            c if OP_CHARS.contains(&c) => {
                while b.get(i).is_some_and(|c| OP_CHARS.contains(c)) {
                    // A comment start ends the operator, as in Postgres.
                    let comment =
                        (b[i] == b'-' && b.get(i + 1) == Some(&b'-')) || (b[i] == b'/' && b.get(i + 1) == Some(&b'*'));
                    if comment && i > start {
                        break;
                    }
                    i += 1;
                }
                let mut op = &src[start..i];
                // Postgres: a multi-char operator may end in + or - only if it also contains one
                // of ~ ! @ # % ^ & | ` ?, so `>=-1` is `>=` then `-1`.
                while op.len() > 1
                    && (op.ends_with('+') || op.ends_with('-'))
                    && !op.bytes().any(|c| b"~!@#%^&|`?".contains(&c))
                {
                    op = &op[..op.len() - 1];
                }
                i = start + op.len();
                Tok::Op(op.to_owned())
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(WhereError::syntax(src, start, format!("syntax error at or near \"{ch}\"")));
            }
        };
        out.push(Token { tok, start, end: i });
    }
    out.push(Token { tok: Tok::Eof, start: src.len(), end: src.len() });
    Ok(out)
}

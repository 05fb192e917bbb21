//! `ORDER BY` lists of subset snapshots (Electric's `subset__order_by`): column names only, each
//! with an optional `ASC`/`DESC` and `NULLS FIRST`/`NULLS LAST`. Nothing else (expressions,
//! functions, casts, parameters, subqueries) is accepted, so the rendered list holds only
//! quoted catalog names and keywords: no text from the request reaches the query.

use crate::error::WhereError;
use crate::lexer::{self, Tok};
use crate::render::quote_ident;
use crate::schema::TableSchema;

/// Most terms one list may have; more is never a real view's sort.
pub const MAX_ORDER_TERMS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    /// Index of the column in the table schema.
    index: usize,
    name: String,
    descending: bool,
    /// `Some(true)`: NULLS FIRST; `Some(false)`: NULLS LAST; None: Postgres' default for the
    /// direction (as the client asked nothing).
    nulls_first: Option<bool>,
}

/// A parsed `ORDER BY` list over columns of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    terms: Vec<Term>,
}

impl OrderBy {
    /// Parses `text` against `schema`; a column must exist and satisfy `allowed` (the caller's
    /// choice, e.g. the columns its shape selects). Errors read as Electric's
    /// (`At location N: …`, N a character offset in `text`).
    pub fn parse(text: &str, schema: &TableSchema, allowed: impl Fn(usize) -> bool) -> Result<Self, WhereError> {
        if text.len() > crate::MAX_WHERE_LEN {
            return Err(WhereError { location: 0, reason: "order by is too long".to_owned() });
        }
        let tokens = lexer::tokenize(text)?;
        let at = |i: usize, reason: String| WhereError::at(text, tokens[i].start, reason);
        let mut terms = Vec::new();
        let mut i = 0;
        loop {
            let name = match &tokens[i].tok {
                Tok::Word(w) => w.clone(),
                Tok::Quoted(q) => q.clone(),
                Tok::Param(n) => return Err(at(i, format!("parameter ${n} is not supported in ORDER BY clauses"))),
                Tok::Eof if terms.is_empty() => return Err(at(i, "order by can't be empty".to_owned())),
                _ => return Err(at(i, "only column names are allowed in ORDER BY clauses".to_owned())),
            };
            if tokens[i + 1].tok == Tok::LParen {
                return Err(at(i, "function calls are not allowed in ORDER BY clauses".to_owned()));
            }
            let index = match schema.lookup(&name) {
                Some((index, _)) if allowed(index) => index,
                Some(_) => return Err(at(i, format!("column \"{name}\" is not selected by the shape"))),
                None => return Err(at(i, format!("unknown reference {name}"))),
            };
            i += 1;
            let word = |i: usize, w: &str| matches!(&tokens[i].tok, Tok::Word(x) if x == w);
            let mut descending = false;
            if word(i, "asc") {
                i += 1;
            } else if word(i, "desc") {
                descending = true;
                i += 1;
            }
            let mut nulls_first = None;
            if word(i, "nulls") {
                nulls_first = Some(match &tokens[i + 1].tok {
                    Tok::Word(w) if w == "first" => true,
                    Tok::Word(w) if w == "last" => false,
                    _ => return Err(at(i + 1, "NULLS must be followed by FIRST or LAST".to_owned())),
                });
                i += 2;
            }
            terms.push(Term { index, name, descending, nulls_first });
            if terms.len() > MAX_ORDER_TERMS {
                return Err(at(i, format!("ORDER BY may name at most {MAX_ORDER_TERMS} columns")));
            }
            match &tokens[i].tok {
                Tok::Comma => i += 1,
                Tok::Eof => break,
                _ => {
                    return Err(at(
                        i,
                        "only column names, ASC/DESC and NULLS FIRST/LAST are allowed in ORDER BY clauses".to_owned(),
                    ));
                }
            }
        }
        Ok(OrderBy { terms })
    }

    /// The list with `columns` (e.g. the primary key) appended where not already named, so
    /// that rows equal in the asked order still come in one order every time: `LIMIT` and
    /// `OFFSET` then page the same way on every request.
    pub fn then_by(mut self, schema: &TableSchema, columns: &[usize]) -> Self {
        for &index in columns {
            if !self.terms.iter().any(|t| t.index == index)
                && let Some((name, _)) = schema.columns().get(index)
            {
                self.terms.push(Term { index, name: name.clone(), descending: false, nulls_first: None });
            }
        }
        self
    }

    /// `"a" DESC NULLS LAST, "b" ASC`: quoted names and keywords only. With `relation` (an
    /// already quoted name), each column is qualified by it: in `ORDER BY`, Postgres resolves
    /// a bare name to an output column first, which a query's select list may also name.
    pub fn to_sql(&self, relation: Option<&str>) -> String {
        let terms: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let mut s = relation.map(|r| format!("{r}.")).unwrap_or_default();
                s.push_str(&quote_ident(&t.name));
                s.push_str(if t.descending { " DESC" } else { " ASC" });
                match t.nulls_first {
                    Some(true) => s.push_str(" NULLS FIRST"),
                    Some(false) => s.push_str(" NULLS LAST"),
                    None => {}
                }
                s
            })
            .collect();
        terms.join(", ")
    }

    /// Indexes of the columns named, in order.
    pub fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.terms.iter().map(|t| t.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        TableSchema::new([("id", "int8"), ("Title", "text"), ("priority", "int4"), ("secret", "text")])
    }

    #[test]
    fn column_lists_render_as_quoted_names_and_keywords() {
        let all = |_: usize| true;
        let o = OrderBy::parse(r#"priority DESC NULLS LAST, "Title", id asc"#, &schema(), all).unwrap();
        assert_eq!(o.to_sql(None), r#""priority" DESC NULLS LAST, "Title" ASC, "id" ASC"#);
        let o = OrderBy::parse(r#""priority" NULLS FIRST"#, &schema(), all).unwrap().then_by(&schema(), &[0, 2]);
        assert_eq!(
            o.to_sql(Some(r#""public"."t""#)),
            r#""public"."t"."priority" ASC NULLS FIRST, "public"."t"."id" ASC"#
        );
        assert_eq!(o.columns().collect::<Vec<_>>(), vec![2, 0]);
    }

    #[test]
    fn anything_but_a_column_is_refused_with_its_location() {
        let not_secret = |i: usize| i != 3;
        let err = |t: &str| OrderBy::parse(t, &schema(), not_secret).unwrap_err().to_string();
        assert_eq!(err("pg_sleep(5)"), "At location 0: function calls are not allowed in ORDER BY clauses");
        assert_eq!(err("id, $1"), "At location 4: parameter $1 is not supported in ORDER BY clauses");
        assert_eq!(err("nope"), "At location 0: unknown reference nope");
        assert_eq!(err("title"), "At location 0: unknown reference title", "unquoted names fold to lower case");
        assert_eq!(err("secret"), "At location 0: column \"secret\" is not selected by the shape");
        assert!(err("id::text").contains("only column names"), "{}", err("id::text"));
        assert!(err("id; DROP TABLE x").starts_with("At location"), "{}", err("id; DROP TABLE x"));
        assert!(err("(SELECT 1)").contains("only column names"));
        assert!(err("CASE WHEN id > 1 THEN 1 END").contains("unknown reference case"));
        assert!(err("id nulls middle").contains("FIRST or LAST"));
        assert_eq!(err(""), "At location 0: order by can't be empty");
        assert!(err(&vec!["id"; MAX_ORDER_TERMS + 1].join(",")).contains("at most"));
    }
}

//! Field parsers for request messages. Each returns the field's domain value or its violations;
//! [`all`] and [`each`] combine them, so a request reports every bad field at once and a
//! handler only ever sees values that parsed.

use folio_domain::{Currency, IdParseError};
use time::{Date, format_description::well_known::Iso8601};
use tonic_types::FieldViolation;

use crate::error::ApiError;

/// The violations of one or more fields, in field order. Never empty.
#[derive(Debug)]
pub struct Invalid(Vec<FieldViolation>);

pub type Parsed<T> = Result<T, Invalid>;

impl Invalid {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::InvalidArgument(invalid.0)
    }
}

impl From<Invalid> for tonic::Status {
    fn from(invalid: Invalid) -> Self {
        ApiError::from(invalid).into()
    }
}

/// Several parsed fields as one: every value, or every violation in the order of the tuple.
pub trait Combine {
    type Values;
    fn combine(self) -> Parsed<Self::Values>;
}

macro_rules! combine_tuple {
    ($($value:ident: $ty:ident),+) => {
        impl<$($ty),+> Combine for ($(Parsed<$ty>,)+) {
            type Values = ($($ty,)+);

            fn combine(self) -> Parsed<Self::Values> {
                let ($($value,)+) = self;
                let mut violations = Vec::new();
                $(let $value = $value.map_err(|invalid| violations.extend(invalid.0));)+
                match ($($value,)+) {
                    ($(Ok($value),)+) => Ok(($($value,)+)),
                    // At least one field failed, and a failure is never empty.
                    _ => Err(Invalid(violations)),
                }
            }
        }
    };
}

combine_tuple!(a: A, b: B);
combine_tuple!(a: A, b: B, c: C);
combine_tuple!(a: A, b: B, c: C, d: D);
combine_tuple!(a: A, b: B, c: C, d: D, e: E);
combine_tuple!(a: A, b: B, c: C, d: D, e: E, f: F);
combine_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G);
combine_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H);
combine_tuple!(a: A, b: B, c: C, d: D, e: E, f: F, g: G, h: H, i: I);

/// Every value of `fields`, or every violation among them.
pub fn all<C: Combine>(fields: C) -> Parsed<C::Values> {
    fields.combine()
}

/// Every item parsed, or the violations of every bad item.
pub fn each<T>(items: impl IntoIterator<Item = Parsed<T>>) -> Parsed<Vec<T>> {
    let mut values = Vec::new();
    let mut violations = Vec::new();
    for item in items {
        match item {
            Ok(value) => values.push(value),
            Err(invalid) => violations.extend(invalid.0),
        }
    }
    if violations.is_empty() { Ok(values) } else { Err(Invalid(violations)) }
}

/// A field that holds only when `ok`.
pub fn check(ok: bool, field: &str, description: impl FnOnce() -> String) -> Parsed<()> {
    if ok { Ok(()) } else { Err(Invalid::new(field, description())) }
}

/// A required id.
pub fn id<T>(field: &str, raw: &str, parse: fn(&str) -> Result<T, IdParseError>) -> Parsed<T> {
    if raw.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    parse(raw).map_err(|e| Invalid::new(field, e.to_string()))
}

/// An optional id: empty means absent.
pub fn optional_id<T>(field: &str, raw: &str, parse: fn(&str) -> Result<T, IdParseError>) -> Parsed<Option<T>> {
    if raw.is_empty() { Ok(None) } else { id(field, raw, parse).map(Some) }
}

/// Text of `min..=max` characters.
pub fn text(field: &str, value: String, min: usize, max: usize) -> Parsed<String> {
    no_nul(field, &value)?;
    let len = value.chars().count();
    if len < min {
        let description =
            if min == 1 { "is required".to_owned() } else { format!("must be at least {min} characters") };
        Err(Invalid::new(field, description))
    } else if len > max {
        Err(Invalid::new(field, format!("must be at most {max} characters, got {len}")))
    } else {
        Ok(value)
    }
}

/// PostgreSQL's text cannot hold U+0000: refused here, with the field's name, instead of
/// failing in the database as an internal error (issue 13, finding 10).
pub fn no_nul(field: &str, value: &str) -> Parsed<()> {
    check(!value.contains('\0'), field, || "must not contain a NUL character (U+0000)".to_owned())
}

/// An ISO date (`YYYY-MM-DD`); empty means none.
pub fn date(field: &str, raw: &str) -> Parsed<Option<Date>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let date = Date::parse(raw, &Iso8601::DATE)
        .map_err(|_| Invalid::new(field, format!("must be a date as YYYY-MM-DD, got {raw:?}")))?;
    // Year 0 parses (ISO 8601's 1 BC) and Postgres stores it as "0001-01-01 BC", which no
    // reader of the change event expects (issue 13, finding 9).
    check((1..=9999).contains(&date.year()), field, || format!("must be in the years 1 to 9999, got {raw:?}"))?;
    Ok(Some(date))
}

/// Light check: one `@`, something on each side, no spaces. Delivery proves the rest.
pub fn email(field: &str, email: String) -> Parsed<String> {
    no_nul(field, &email)?;
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.contains('@'));
    check(ok, field, || format!("is not an email address: {email:?}"))?;
    Ok(email)
}

/// An ISO 4217 code Folio knows, kept as given.
pub fn currency(raw: String) -> Parsed<String> {
    match Currency::parse(&raw) {
        Ok(_) => Ok(raw),
        Err(e) => Err(Invalid::new("currency", e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Parsed<impl std::fmt::Debug>) -> Vec<String> {
        result.unwrap_err().0.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn all_reports_every_bad_field_in_order() {
        let parsed = all((text("a", String::new(), 1, 5), text("b", "ok".into(), 1, 5), date("c", "31/01/2027")));
        assert_eq!(fields(parsed), ["a", "c"]);
        let (a, b) = all((text("a", "x".into(), 1, 5), date("b", "2027-01-31"))).unwrap();
        assert_eq!((a.as_str(), b.map(|d| d.to_string())), ("x", Some("2027-01-31".to_owned())));
    }

    #[test]
    fn each_reports_every_bad_item() {
        let items = ["", "ok", ""].map(|s| text("item", s.to_owned(), 1, 5));
        assert_eq!(fields(each(items)), ["item", "item"]);
        assert_eq!(each(["a", "b"].map(|s| text("item", s.to_owned(), 1, 5))).unwrap(), ["a", "b"]);
    }

    #[test]
    fn text_counts_characters_not_bytes() {
        assert!(text("t", "ééé".into(), 1, 3).is_ok());
        assert_eq!(text("t", "éééé".into(), 1, 3).unwrap_err().0[0].description, "must be at most 3 characters, got 4");
        assert_eq!(text("t", "a".into(), 2, 3).unwrap_err().0[0].description, "must be at least 2 characters");
    }

    #[test]
    fn a_nul_character_is_a_field_violation_not_an_internal_error() {
        assert_eq!(fields(text("title", "a\0b".into(), 1, 10)), ["title"]);
        assert_eq!(fields(email("email", "a\0@b.c".into())), ["email"]);
    }

    #[test]
    fn ids_are_required_unless_optional() {
        assert_eq!(id("id", "", folio_domain::ClientId::parse).unwrap_err().0[0].description, "is required");
        assert!(optional_id("id", "", folio_domain::ClientId::parse).unwrap().is_none());
        assert_eq!(fields(optional_id("id", "nope", folio_domain::ClientId::parse)), ["id"]);
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(email("e", "a@b.c".into()).is_ok());
        for bad in ["a@b", "@b.c", "a b@c.d", "a@b@c.d"] {
            assert!(email("e", bad.into()).is_err(), "{bad}");
        }
    }
}

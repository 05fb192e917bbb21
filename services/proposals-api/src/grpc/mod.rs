//! gRPC handlers: parse the request into domain values, call the store, convert the result.

pub mod clients;
pub mod convert;
pub mod proposals;
pub mod templates;

use time::{Date, format_description::well_known::Iso8601};

use crate::error::Violations;

/// An ISO date (`YYYY-MM-DD`); empty means none.
pub(crate) fn parse_date(v: &mut Violations, field: &str, raw: &str) -> Option<Date> {
    if raw.is_empty() {
        return None;
    }
    match Date::parse(raw, &Iso8601::DATE) {
        Ok(d) => Some(d),
        Err(_) => {
            v.add(field, format!("must be a date as YYYY-MM-DD, got {raw:?}"));
            None
        }
    }
}

/// Light check: one `@`, something on each side, no spaces. Delivery proves the rest.
pub(crate) fn check_email(v: &mut Violations, field: &str, email: &str) {
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.') && !domain.contains('@'));
    v.check(ok, field, || format!("is not an email address: {email:?}"));
}

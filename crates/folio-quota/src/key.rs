//! What a limit counts against: `<scope>:<id>:<name>`, e.g. `agency:<uuid>:api-writes`.

use std::fmt;

/// A limit's key. Written `agency:<id>:api-writes` (logs, `QuotaFailure` subjects); stored in
/// the KV bucket as `agency.<id>.api-writes`, since KV keys allow no `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quota key {0:?}: expected <scope>:<id>:<name> of letters, digits, '-' and '_'")]
pub struct KeyError(pub String);

impl QuotaKey {
    /// A limit of one agency (tenant).
    pub fn agency(id: impl fmt::Display, name: &str) -> Result<Self, KeyError> {
        Self::from_parts("agency", &id.to_string(), name)
    }

    /// A limit of one caller (the user a bearer token names).
    pub fn token(id: impl fmt::Display, name: &str) -> Result<Self, KeyError> {
        Self::from_parts("token", &id.to_string(), name)
    }

    /// `<scope>:<id>:<name>`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(scope), Some(id), Some(name), None) => Self::from_parts(scope, id, name),
            _ => Err(KeyError(s.to_owned())),
        }
    }

    fn from_parts(scope: &str, id: &str, name: &str) -> Result<Self, KeyError> {
        let token_ok =
            |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if [scope, id, name].into_iter().all(token_ok) {
            Ok(Self(format!("{scope}.{id}.{name}")))
        } else {
            Err(KeyError(format!("{scope}:{id}:{name}")))
        }
    }

    /// The key inside the KV bucket.
    pub fn as_kv(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QuotaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.0.splitn(3, '.').enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            f.write_str(part)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_between_their_written_and_stored_forms() {
        let key = QuotaKey::agency("0190c3e2-7a1b-7c3d-9e8f-0123456789ab", "api-writes").unwrap();
        assert_eq!(key.as_kv(), "agency.0190c3e2-7a1b-7c3d-9e8f-0123456789ab.api-writes");
        assert_eq!(QuotaKey::parse(&key.to_string()).unwrap(), key);
    }

    #[test]
    fn keys_that_could_escape_their_scope_are_refused() {
        for bad in ["agency:a.b:x", "agency:*:x", "agency:>:x", "agency::x", "a:b", "a:b:c:d", "token:u:x y"] {
            assert!(QuotaKey::parse(bad).is_err(), "{bad}");
        }
    }
}

//! Typed identifiers: a `ProposalId` cannot be passed where a `ClientId` is expected.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id (expected a UUID): {0:?}")]
pub struct IdParseError(pub String);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A new time-ordered id (UUIDv7), so inserts stay local in the primary-key index.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
            pub fn parse(s: &str) -> Result<Self, IdParseError> {
                uuid::Uuid::parse_str(s).map(Self).map_err(|_| IdParseError(s.to_owned()))
            }
            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(u: uuid::Uuid) -> Self {
                Self(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant: every row a user can see belongs to exactly one agency.
    AgencyId
);
uuid_id!(UserId);
uuid_id!(ClientId);
uuid_id!(TemplateId);
uuid_id!(ProposalId);
uuid_id!(LineItemId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        let id = ProposalId::new();
        assert_eq!(ProposalId::parse(&id.to_string()).unwrap(), id);
        assert!(ProposalId::parse("not-a-uuid").is_err());
        assert!(ProposalId::parse("").is_err());
    }
}

//! The emails Folio sends to agency users, and which of them a user or an agency may turn off.
//! The API (preferences) and the notifier (who gets what) read this one list.

/// Who may turn an email off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optionality {
    /// Always sent: nobody can turn it off.
    Mandatory,
    /// Users (and agency defaults) can turn it off.
    Optional,
    /// The proposal owner's copy is always sent; the rest of the team's copies can be turned off.
    OptionalForTeam,
}

/// One kind of email, named by the event type that causes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailKind {
    pub event_type: &'static str,
    pub description: &'static str,
    pub optionality: Optionality,
}

impl EmailKind {
    /// Whether a preference can turn it off (for at least some of its recipients).
    pub fn can_turn_off(&self) -> bool {
        self.optionality != Optionality::Mandatory
    }
}

/// Every email kind, in the order settings list them.
pub const EMAIL_KINDS: [EmailKind; 6] = [
    EmailKind {
        event_type: "proposal.sent",
        description: "The client's copy of a sent proposal.",
        optionality: Optionality::Mandatory,
    },
    EmailKind {
        event_type: "proposal.viewed",
        description: "The owner hears that the client opened a proposal.",
        optionality: Optionality::Optional,
    },
    EmailKind {
        event_type: "proposal.accepted",
        description: "A proposal was accepted; always sent to its owner, optional for the rest of the team.",
        optionality: Optionality::OptionalForTeam,
    },
    EmailKind {
        event_type: "proposal.declined",
        description: "A proposal was declined; always sent to its owner, optional for the rest of the team.",
        optionality: Optionality::OptionalForTeam,
    },
    EmailKind {
        event_type: "proposal.expiring",
        description: "The owner is reminded that a sent proposal is about to expire.",
        optionality: Optionality::Optional,
    },
    EmailKind {
        event_type: "endpoint.disabled",
        description: "Admins hear that a failing webhook endpoint was disabled.",
        optionality: Optionality::Mandatory,
    },
];

/// The email kind of `event_type`, if Folio sends one.
pub fn email_kind(event_type: &str) -> Option<&'static EmailKind> {
    EMAIL_KINDS.iter().find(|k| k.event_type == event_type)
}

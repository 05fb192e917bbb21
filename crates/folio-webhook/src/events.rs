//! What Folio's webhooks carry: Standard Webhooks' `{type, timestamp, data}` body, the `data`
//! of each event type, and the catalogue of event types. The notifier serialises exactly these
//! types; the API's `ListEventTypes` and `docs/webhooks.md` describe them with JSON Schemas
//! derived from them, so the documentation cannot drift from what is sent.

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, macros::format_description};
use uuid::Uuid;

/// The body of every webhook request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Message<T> {
    /// The event type, e.g. `proposal.sent`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When it happened (RFC 3339): the commit of the change, or the time a test was asked for.
    pub timestamp: String,
    pub data: T,
}

impl<T: Serialize> Message<T> {
    pub fn new(event_type: &str, occurred_at: OffsetDateTime, data: T) -> Self {
        Self { event_type: event_type.to_owned(), timestamp: rfc3339(occurred_at), data }
    }

    /// The message as JSON.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("webhook messages serialise")
    }
}

/// The proposal fields notifications talk about, as of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalSnapshot {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub client_id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    /// draft, sent, viewed, accepted, declined or withdrawn.
    pub status: String,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    /// The total in the currency's minor unit (cents for EUR), tax included.
    pub total_minor: i64,
    /// Last day the proposal is valid (`YYYY-MM-DD`), or null.
    #[serde(with = "optional_date")]
    #[schemars(with = "Option<String>")]
    pub valid_until: Option<Date>,
    /// Increases with every change of the proposal.
    pub version: i64,
}

/// `data` of every `proposal.*` event: the proposal as of the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProposalEvent {
    #[serde(flatten)]
    pub proposal: ProposalSnapshot,
    /// The status before this event, for status changes; null otherwise.
    pub previous_status: Option<String>,
    /// The id of the change that caused the event (stable across redeliveries).
    pub event_id: String,
    /// On `proposal.accepted` when the client accepted on their page: the e-signature. Absent
    /// otherwise (e.g. when agency staff recorded the acceptance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureRecord>,
}

/// A client's e-signature, as recorded when they accepted on the proposal's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SignatureRecord {
    /// The signature record's id (also on the signed copy's certificate).
    pub id: Uuid,
    /// The full name the client typed.
    pub signer_name: String,
    /// RFC 3339, UTC.
    pub signed_at: String,
    /// The client ticked "I agree to sign electronically".
    pub consent: bool,
    /// The proposal version that was signed.
    pub proposal_version: i64,
    /// SHA-256 (hex) of the exact PDF the client was shown and signed.
    pub document_sha256: String,
    /// The capability link the client used (its id; the token is never stored).
    pub link_id: Uuid,
    /// The signer's IP address as the gateway saw it.
    pub ip_address: Option<String>,
    /// The signer's browser user agent.
    pub user_agent: Option<String>,
}

/// `data` of `webhook.test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TestEvent {
    /// The endpoint the test was sent to.
    pub endpoint_id: Uuid,
    pub message: String,
}

/// The event type of test messages.
pub const TEST_EVENT: &str = "webhook.test";

/// One entry of the catalogue.
#[derive(Debug, Clone)]
pub struct EventTypeInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// The JSON Schema of the whole message body of this event type.
    pub schema: Schema,
}

/// Every event type a webhook endpoint can receive, in a stable order.
pub fn catalogue() -> Vec<EventTypeInfo> {
    let proposal =
        |name, description| EventTypeInfo { name, description, schema: schemars::schema_for!(Message<ProposalEvent>) };
    vec![
        proposal("proposal.created", "A proposal was created (a draft, or imported in another status)."),
        proposal("proposal.updated", "A proposal's content, line items, client or dates changed."),
        proposal("proposal.sent", "A proposal was sent to its client."),
        proposal("proposal.viewed", "The client opened a sent proposal for the first time."),
        proposal(
            "proposal.accepted",
            "The client accepted the proposal. When they signed on their page, `data.signature` is the e-signature record.",
        ),
        proposal("proposal.declined", "The client declined the proposal."),
        proposal("proposal.withdrawn", "The agency withdrew a sent proposal."),
        proposal("proposal.reopened", "A withdrawn proposal went back to draft."),
        proposal("proposal.archived", "A proposal was archived."),
        proposal("proposal.deleted", "A proposal was deleted."),
        proposal(
            "proposal.expiring",
            "A sent proposal's validity ends soon (sent ahead of `valid_until` by the notifier's reminder lead).",
        ),
        EventTypeInfo {
            name: TEST_EVENT,
            description: "A test message an admin asked for (SendTestEvent); every endpoint receives it whatever its filter.",
            schema: schemars::schema_for!(Message<TestEvent>),
        },
    ]
}

/// The `webhook-id` of every attempt of one delivery (its retries, replays and recoveries),
/// so a receiver can drop a message it already handled.
pub fn message_id(delivery: Uuid) -> String {
    format!("msg_{}", delivery.simple())
}

/// Whether `name` is an event type of the catalogue.
pub fn is_event_type(name: &str) -> bool {
    catalogue().iter().any(|t| t.name == name)
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

mod optional_date {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Date>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(
                &d.format(format_description!("[year]-[month]-[day]")).map_err(serde::ser::Error::custom)?,
            ),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| Date::parse(&s, format_description!("[year]-[month]-[day]")).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_message_is_flat_and_matches_its_schema_fields() {
        let snapshot = ProposalSnapshot {
            id: Uuid::nil(),
            agency_id: Uuid::nil(),
            client_id: Uuid::nil(),
            owner_id: Uuid::nil(),
            title: "T".into(),
            status: "sent".into(),
            currency: "EUR".into(),
            total_minor: 12100,
            valid_until: Some(time::macros::date!(2027 - 01 - 31)),
            version: 2,
        };
        let data = ProposalEvent {
            proposal: snapshot,
            previous_status: Some("draft".into()),
            event_id: "e".into(),
            signature: None,
        };
        let msg = Message::new("proposal.sent", OffsetDateTime::UNIX_EPOCH, data).to_value();
        assert_eq!(msg["type"], "proposal.sent");
        assert_eq!(msg["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(msg["data"]["valid_until"], "2027-01-31");
        assert_eq!(msg["data"]["previous_status"], "draft");
        let schema = serde_json::to_value(schemars::schema_for!(Message<ProposalEvent>)).unwrap();
        let text = schema.to_string();
        let data_keys: Vec<&String> = msg["data"].as_object().unwrap().keys().collect();
        for key in data_keys {
            assert!(text.contains(&format!("\"{key}\"")), "{key} is described by the schema");
        }
    }

    #[test]
    fn the_catalogue_has_unique_names() {
        let names: std::collections::HashSet<_> = catalogue().iter().map(|t| t.name).collect();
        assert_eq!(names.len(), catalogue().len());
        assert!(is_event_type("proposal.accepted") && !is_event_type("proposal.exploded"));
    }
}

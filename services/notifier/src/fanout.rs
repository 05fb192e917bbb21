//! Who hears about a transition: the deliveries one change event turns into.
//!
//! Emails: sent → the client contact; viewed → the owner; accepted or declined → the owner
//! and the rest of the agency's team; expiring → the owner. Webhooks: every enabled endpoint
//! of the agency subscribed to the event type. An opted-out user's delivery is written as
//! `skipped`, so the decision is on record and a redelivered event cannot revive it.

use std::{collections::HashSet, time::Duration};

use folio_proto::events::v1::ChangeEvent;
use folio_webhook::events::{Message, ProposalEvent};
use serde_json::{Value, json};
use sqlx::PgConnection;
use time::{OffsetDateTime, Time};
use uuid::Uuid;

use crate::{
    store::{Channel, NewDelivery},
    transitions::{self, EventType, ProposalSnapshot, RowError, Transition},
};

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("the change event's row is unreadable")]
    Row(#[from] RowError),
    #[error("failed to read recipients")]
    Db(#[from] sqlx::Error),
}

/// Who an email is for; decides wording and whether the recipient may opt out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The client contact: not a Folio user, the email carries the proposal itself.
    Client,
    Owner,
    Team,
    /// An agency admin told about an account matter (a disabled endpoint).
    Admin,
}

/// Mandatory emails cannot be opted out of: the client's copy of a sent proposal, the owner's
/// news that a proposal was accepted or declined, and account notices.
pub fn is_mandatory(event_type: &str, audience: Audience) -> bool {
    match audience {
        Audience::Client | Audience::Admin => true,
        Audience::Owner => matches!(event_type, "proposal.accepted" | "proposal.declined"),
        Audience::Team => false,
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Member {
    id: Uuid,
    email: String,
    name: String,
}

/// Every delivery `event` (with JetStream message id `event_id`) calls for. Reads recipients
/// on `conn`, which is the transaction that then writes the deliveries.
pub async fn deliveries_for(
    conn: &mut PgConnection,
    event_id: &str,
    event: &ChangeEvent,
    reminder_lead: Duration,
    now: OffsetDateTime,
) -> Result<Vec<NewDelivery>, FanoutError> {
    let found = transitions::transitions(event)?;
    let reminder = transitions::expiry_to_remind(event)?;
    let Some(agency) = found.first().map(|t| t.proposal.agency_id).or(reminder.as_ref().map(|(p, _)| p.agency_id))
    else {
        return Ok(Vec::new());
    };
    let occurred_at = event
        .commit_time
        .as_ref()
        .and_then(|t| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)).ok()
        })
        .unwrap_or(now);

    let agency_name: String = sqlx::query_scalar("SELECT name FROM agencies WHERE id = $1")
        .bind(agency)
        .fetch_optional(&mut *conn)
        .await?
        .unwrap_or_default();
    let team: Vec<Member> = sqlx::query_as("SELECT id, email, name FROM users WHERE agency_id = $1 ORDER BY id")
        .bind(agency)
        .fetch_all(&mut *conn)
        .await?;
    let opted_out = crate::preferences::opted_out(conn, agency).await?;

    // Every transition and the reminder are of the one row this event changed: one client.
    let client_id = found.first().map(|t| t.proposal.client_id).or(reminder.as_ref().map(|(p, _)| p.client_id));
    let client: Option<(String, String)> = match client_id {
        Some(id) => {
            sqlx::query_as("SELECT email, name FROM clients WHERE id = $1 AND agency_id = $2")
                .bind(id)
                .bind(agency)
                .fetch_optional(&mut *conn)
                .await?
        }
        None => None,
    };

    let mut out = Vec::new();
    for (i, t) in found.iter().enumerate() {
        // One change can stand for two events (a row inserted as sent is created and sent);
        // each needs its own idempotency key, or the second would collide with the first.
        let keyed;
        let event_id = if i == 0 {
            event_id
        } else {
            keyed = format!("{event_id}#{}", t.event_type);
            keyed.as_str()
        };
        let base = EmailFacts { event_id, transition: t, occurred_at, client: client.as_ref(), due_at: now };
        let mut people =
            People { agency, agency_name: &agency_name, team: &team, opted_out: &opted_out, out: &mut out };
        let mut signature = None;
        match t.event_type {
            EventType::Sent => {
                if let Some((email, name)) = &client {
                    people.email(&base, Audience::Client, None, email, name);
                    // The link's id, never its token: this payload is published (client_links.rs).
                    let link = crate::client_links::issued_for(conn, &t.proposal).await?;
                    if let (Some(link), Some(email)) = (link, people.out.last_mut()) {
                        email.payload["link_id"] = json!(link);
                    }
                }
            }
            EventType::Viewed | EventType::Expiring => people.owner(&base),
            EventType::Accepted | EventType::Declined => {
                let first = people.out.len();
                people.owner(&base);
                // Signed on the client's page: the owner's email carries the signed copy, and
                // the client gets theirs (both attached once pdf-render has made it).
                if t.event_type == EventType::Accepted
                    && let Some(sig) = crate::client_links::signature(conn, &t.proposal).await?
                {
                    if let Some(owner_email) = people.out.get_mut(first) {
                        owner_email.payload["signed_copy"] = json!(sig.id);
                    }
                    if let Some((email, name)) = &client {
                        people.email(&base, Audience::Client, None, email, name);
                        if let Some(client_email) = people.out.last_mut() {
                            client_email.payload["signed_copy"] = json!(sig.id);
                            client_email.payload["link_id"] = json!(sig.link_id);
                        }
                    }
                    signature = Some(sig);
                }
                for m in team.iter().filter(|m| m.id != t.proposal.owner_id) {
                    people.email(&base, Audience::Team, Some(m.id), &m.email, &m.name);
                }
                // The client's reason, when they declined from their page (issue 20).
                if t.event_type == EventType::Declined
                    && let Some(reason) = crate::client_links::decline_reason(conn, &t.proposal).await?
                {
                    for email in &mut people.out[first..] {
                        email.payload["decline_reason"] = json!(reason);
                    }
                }
            }
            _ => {}
        }
        let mut payload =
            webhook_payload(t.event_type, &t.proposal, t.previous_status.as_deref(), event_id, occurred_at);
        if let Some(sig) = signature.take() {
            payload["data"]["signature"] = json!(sig);
        }
        webhooks(conn, agency, event_id, t.event_type, &t.proposal, payload, now, &mut out).await?;
    }

    if let Some((proposal, valid_until)) = reminder {
        // A proposal is valid through its `valid_until` day (UTC).
        let expires_at = valid_until.next_day().unwrap_or(valid_until).with_time(Time::MIDNIGHT).assume_utc();
        if expires_at > now {
            let due_at = (expires_at - reminder_lead).max(now);
            // Keyed by the expiry, not the event: the next edit of the same proposal must not
            // schedule the same reminder again; moving the date schedules a new one.
            let reminder_id = format!("expiring:{}:{valid_until}", proposal.id);
            let t = Transition { event_type: EventType::Expiring, proposal, previous_status: None };
            let base =
                EmailFacts { event_id: &reminder_id, transition: &t, occurred_at, client: client.as_ref(), due_at };
            let mut people =
                People { agency, agency_name: &agency_name, team: &team, opted_out: &opted_out, out: &mut out };
            people.owner(&base);
            let payload = webhook_payload(EventType::Expiring, &t.proposal, None, &reminder_id, expires_at);
            webhooks(conn, agency, &reminder_id, EventType::Expiring, &t.proposal, payload, due_at, &mut out).await?;
        }
    }
    Ok(out)
}

struct EmailFacts<'a> {
    event_id: &'a str,
    transition: &'a Transition,
    occurred_at: OffsetDateTime,
    client: Option<&'a (String, String)>,
    due_at: OffsetDateTime,
}

struct People<'a> {
    agency: Uuid,
    agency_name: &'a str,
    team: &'a [Member],
    opted_out: &'a HashSet<(Uuid, String)>,
    out: &'a mut Vec<NewDelivery>,
}

impl People<'_> {
    fn owner(&mut self, facts: &EmailFacts<'_>) {
        let owner = facts.transition.proposal.owner_id;
        if let Some(m) = self.team.iter().find(|m| m.id == owner) {
            let (email, name) = (m.email.clone(), m.name.clone());
            self.email(facts, Audience::Owner, Some(owner), &email, &name);
        }
    }

    fn email(&mut self, facts: &EmailFacts<'_>, audience: Audience, user: Option<Uuid>, email: &str, name: &str) {
        let t = facts.transition;
        let event_type = t.event_type.as_str();
        let skipped_because = match user {
            Some(u) if !is_mandatory(event_type, audience) && self.opted_out.contains(&(u, event_type.to_owned())) => {
                Some(format!("recipient opted out of {event_type}"))
            }
            _ => None,
        };
        let owner_name = self.team.iter().find(|m| m.id == t.proposal.owner_id).map(|m| m.name.as_str()).unwrap_or("");
        let payload = json!({
            "kind": "proposal",
            "audience": audience,
            "user_id": user,
            "to_name": name,
            "agency_name": self.agency_name,
            "client_name": facts.client.map(|c| c.1.as_str()).unwrap_or(""),
            "owner_name": owner_name,
            "previous_status": t.previous_status,
            "occurred_at": rfc3339(facts.occurred_at),
            "proposal": t.proposal,
        });
        self.out.push(NewDelivery {
            agency_id: self.agency,
            event_id: facts.event_id.to_owned(),
            channel: Channel::Email,
            // One email per address, whatever role the person has.
            recipient: email.trim().to_lowercase(),
            event_type: event_type.to_owned(),
            proposal_id: Some(t.proposal.id),
            payload,
            due_at: facts.due_at,
            skipped_because,
            failed_because: None,
        });
    }
}

/// Why a message to a disabled endpoint was written as failed without an attempt.
pub const DISABLED_WHEN_SENT: &str = "the endpoint was disabled when the event happened";

#[allow(clippy::too_many_arguments)]
async fn webhooks(
    conn: &mut PgConnection,
    agency: Uuid,
    event_id: &str,
    event_type: EventType,
    proposal: &ProposalSnapshot,
    payload: Value,
    due_at: OffsetDateTime,
    out: &mut Vec<NewDelivery>,
) -> Result<(), sqlx::Error> {
    // A disabled endpoint's messages are written as failed, not left out: once it is
    // re-enabled, recovering it since the outage began delivers them too.
    let endpoints: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT id, disabled_at IS NOT NULL FROM webhook_endpoints \
          WHERE agency_id = $1 AND (cardinality(event_types) = 0 OR $2 = ANY(event_types)) \
          ORDER BY id",
    )
    .bind(agency)
    .bind(event_type.as_str())
    .fetch_all(&mut *conn)
    .await?;
    out.extend(endpoints.into_iter().map(|(endpoint, disabled)| NewDelivery {
        agency_id: agency,
        event_id: event_id.to_owned(),
        channel: Channel::Webhook,
        recipient: endpoint.to_string(),
        event_type: event_type.as_str().to_owned(),
        proposal_id: Some(proposal.id),
        payload: payload.clone(),
        due_at,
        skipped_because: None,
        failed_because: disabled.then(|| DISABLED_WHEN_SENT.to_owned()),
    }));
    Ok(())
}

/// The webhook body: Standard Webhooks' `{type, timestamp, data}`, as
/// [`folio_webhook::events`] defines (and documents) it.
pub fn webhook_payload(
    event_type: EventType,
    proposal: &ProposalSnapshot,
    previous_status: Option<&str>,
    event_id: &str,
    occurred_at: OffsetDateTime,
) -> Value {
    let data = ProposalEvent {
        proposal: proposal.clone(),
        previous_status: previous_status.map(str::to_owned),
        event_id: event_id.to_owned(),
        signature: None,
    };
    Message::new(event_type.as_str(), occurred_at, data).to_value()
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Tells the agency's admins that `endpoint` was disabled; once per failure streak (the
/// streak's start is part of the idempotency key).
pub async fn endpoint_disabled_notices(
    pool: &sqlx::PgPool,
    endpoint: &crate::store::Endpoint,
    now: OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let agency_name: String = sqlx::query_scalar("SELECT name FROM agencies WHERE id = $1")
        .bind(endpoint.agency_id)
        .fetch_optional(&mut *tx)
        .await?
        .unwrap_or_default();
    let admins: Vec<Member> =
        sqlx::query_as("SELECT id, email, name FROM users WHERE agency_id = $1 AND role = 'admin' ORDER BY id")
            .bind(endpoint.agency_id)
            .fetch_all(&mut *tx)
            .await?;
    let failing_since = rfc3339(endpoint.failing_since.unwrap_or(now));
    let event_id = format!("endpoint-disabled:{}:{failing_since}", endpoint.id);
    let notices: Vec<NewDelivery> = admins
        .iter()
        .map(|m| NewDelivery {
            agency_id: endpoint.agency_id,
            event_id: event_id.clone(),
            channel: Channel::Email,
            recipient: m.email.trim().to_lowercase(),
            event_type: EventType::EndpointDisabled.as_str().to_owned(),
            proposal_id: None,
            payload: json!({
                "kind": "endpoint_disabled",
                "user_id": m.id,
                "to_name": m.name,
                "agency_name": agency_name,
                "url": endpoint.url,
                "endpoint_id": endpoint.id,
                "failing_since": failing_since,
            }),
            due_at: now,
            skipped_because: None,
            failed_because: None,
        })
        .collect();
    let new = crate::store::insert_deliveries(&mut tx, &notices).await?;
    tx.commit().await?;
    Ok(new)
}

//! Notification preferences: a user's own choices (`notification_preferences`, which the
//! notifier's unsubscribe link also writes) and the agency's defaults
//! (`agency_notification_defaults`). The notifier reads both (its `preferences` module).

use std::collections::HashMap;

use folio_domain::{
    AgencyId, UserId,
    notifications::{EMAIL_KINDS, EmailKind},
};
use sqlx::PgPool;

use super::{Committed, commit};
use crate::error::ApiError;

/// Where a preference's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    Agency,
    User,
    Mandatory,
}

/// One email kind as it applies (to a user, or by default to the agency).
#[derive(Debug, Clone)]
pub struct Preference {
    pub kind: &'static EmailKind,
    pub enabled: bool,
    pub source: Source,
}

/// A choice for one optional email kind; `None` clears it.
#[derive(Debug, Clone)]
pub struct Setting {
    pub event_type: &'static str,
    pub enabled: Option<bool>,
}

async fn agency_defaults(pool: &PgPool, agency: AgencyId) -> Result<HashMap<String, bool>, ApiError> {
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT event_type, enabled FROM agency_notification_defaults WHERE agency_id = $1")
            .bind(agency.as_uuid())
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

fn resolve(defaults: &HashMap<String, bool>, own: &HashMap<String, bool>) -> Vec<Preference> {
    EMAIL_KINDS
        .iter()
        .map(|kind| {
            let (enabled, source) = if !kind.can_turn_off() {
                (true, Source::Mandatory)
            } else if let Some(&opted_out) = own.get(kind.event_type) {
                (!opted_out, Source::User)
            } else if let Some(&enabled) = defaults.get(kind.event_type) {
                (enabled, Source::Agency)
            } else {
                (true, Source::BuiltIn)
            };
            Preference { kind, enabled, source }
        })
        .collect()
}

/// What `user` of `agency` receives. A user who is not (or no longer) in the agency: NOT_FOUND.
pub async fn for_user(pool: &PgPool, agency: AgencyId, user: UserId) -> Result<Vec<Preference>, ApiError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND agency_id = $2)")
        .bind(user.as_uuid())
        .bind(agency.as_uuid())
        .fetch_one(pool)
        .await?;
    if !exists {
        return Err(ApiError::not_found("user", user));
    }
    let own: Vec<(String, bool)> =
        sqlx::query_as("SELECT event_type, opted_out FROM notification_preferences WHERE user_id = $1")
            .bind(user.as_uuid())
            .fetch_all(pool)
            .await?;
    Ok(resolve(&agency_defaults(pool, agency).await?, &own.into_iter().collect()))
}

/// Sets `user`'s own choices in one transaction.
pub async fn set_for_user(
    pool: &PgPool,
    agency: AgencyId,
    user: UserId,
    settings: &[Setting],
) -> Result<Committed<Vec<Preference>>, ApiError> {
    let mut tx = super::begin(pool).await?;
    // Locks the user row: a concurrent removal waits, and a removed user is NOT_FOUND.
    let exists: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND agency_id = $2 FOR SHARE")
            .bind(user.as_uuid())
            .bind(agency.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    if exists.is_none() {
        return Err(ApiError::not_found("user", user));
    }
    for s in settings {
        match s.enabled {
            Some(enabled) => {
                sqlx::query(
                    "INSERT INTO notification_preferences (user_id, event_type, opted_out) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, event_type) DO UPDATE SET opted_out = EXCLUDED.opted_out",
                )
                .bind(user.as_uuid())
                .bind(s.event_type)
                .bind(!enabled)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM notification_preferences WHERE user_id = $1 AND event_type = $2")
                    .bind(user.as_uuid())
                    .bind(s.event_type)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    let committed = commit(tx, ()).await?;
    let prefs = for_user(pool, agency, user).await?;
    Ok(committed.map(|()| prefs))
}

/// The agency's defaults.
pub async fn for_agency(pool: &PgPool, agency: AgencyId) -> Result<Vec<Preference>, ApiError> {
    Ok(resolve(&agency_defaults(pool, agency).await?, &HashMap::new()))
}

/// Sets the agency's defaults in one transaction.
pub async fn set_for_agency(
    pool: &PgPool,
    agency: AgencyId,
    settings: &[Setting],
) -> Result<Committed<Vec<Preference>>, ApiError> {
    let mut tx = super::begin(pool).await?;
    for s in settings {
        match s.enabled {
            Some(enabled) => {
                sqlx::query(
                    "INSERT INTO agency_notification_defaults (agency_id, event_type, enabled) VALUES ($1, $2, $3) \
                     ON CONFLICT (agency_id, event_type) DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()",
                )
                .bind(agency.as_uuid())
                .bind(s.event_type)
                .bind(enabled)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM agency_notification_defaults WHERE agency_id = $1 AND event_type = $2")
                    .bind(agency.as_uuid())
                    .bind(s.event_type)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    let committed = commit(tx, ()).await?;
    let defaults = for_agency(pool, agency).await?;
    Ok(committed.map(|()| defaults))
}

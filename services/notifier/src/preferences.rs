//! Whose optional emails are turned off: a user's own choice (`notification_preferences`, set
//! through the API or an unsubscribe link) and otherwise the agency's default
//! (`agency_notification_defaults`, set by its admins). Mandatory emails ignore both; callers
//! check [`crate::fanout::is_mandatory`] first.

use std::collections::HashSet;

use sqlx::PgConnection;
use uuid::Uuid;

/// Every (user, event type) of `agency` whose email is turned off.
pub async fn opted_out(conn: &mut PgConnection, agency: Uuid) -> Result<HashSet<(Uuid, String)>, sqlx::Error> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT p.user_id, p.event_type FROM notification_preferences p JOIN users u ON u.id = p.user_id \
          WHERE u.agency_id = $1 AND p.opted_out \
         UNION \
         SELECT u.id, d.event_type FROM users u \
           JOIN agency_notification_defaults d ON d.agency_id = u.agency_id AND NOT d.enabled \
          WHERE u.agency_id = $1 AND NOT EXISTS \
                (SELECT 1 FROM notification_preferences p WHERE p.user_id = u.id AND p.event_type = d.event_type)",
    )
    .bind(agency)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Whether `user` has `event_type` emails turned off now (a user no longer there: no).
pub async fn is_opted_out(conn: &mut PgConnection, user: Uuid, event_type: &str) -> Result<bool, sqlx::Error> {
    let off: Option<bool> = sqlx::query_scalar(
        "SELECT coalesce(p.opted_out, NOT d.enabled, false) FROM users u \
           LEFT JOIN notification_preferences p ON p.user_id = u.id AND p.event_type = $2 \
           LEFT JOIN agency_notification_defaults d ON d.agency_id = u.agency_id AND d.event_type = $2 \
          WHERE u.id = $1",
    )
    .bind(user)
    .bind(event_type)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(off == Some(true))
}

#[cfg(test)]
mod tests {
    use folio_domain::notifications::{EMAIL_KINDS, Optionality};

    use crate::fanout::{Audience, is_mandatory};

    /// The catalogue the API lets people set agrees with what fanout treats as mandatory.
    #[test]
    fn the_email_catalogue_matches_what_fanout_treats_as_mandatory() {
        for kind in EMAIL_KINDS {
            let t = kind.event_type;
            let (owner, team) = (is_mandatory(t, Audience::Owner), is_mandatory(t, Audience::Team));
            match kind.optionality {
                Optionality::Mandatory => {
                    assert!(t == "proposal.sent" || t == "endpoint.disabled", "{t}: sent to clients or admins only")
                }
                Optionality::Optional => assert!(!owner && !team, "{t}"),
                Optionality::OptionalForTeam => assert!(owner && !team, "{t}"),
            }
        }
        assert!(is_mandatory("proposal.sent", Audience::Client));
        assert!(is_mandatory("endpoint.disabled", Audience::Admin));
    }
}

//! NotificationPreferenceService: each user's choice of emails, and the agency's defaults.

use folio_domain::notifications::email_kind;
use folio_proto::api::v1::{self as pb, notification_preference_service_server::NotificationPreferenceService};
use tonic::{Request, Response, Status};

use super::fields::{self, Invalid, Parsed};
use crate::{
    Caller, Role,
    auth::caller,
    error::ApiError,
    store::preferences::{self as db, Preference, Setting, Source},
};

/// More settings than email kinds can only be repeats.
const MAX_SETTINGS: usize = 32;

#[derive(Clone)]
pub struct PreferenceApi {
    pub pool: sqlx::PgPool,
}

fn admin<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    let caller = caller(request)?;
    match caller.role {
        Role::Admin => Ok(caller),
        _ => Err(ApiError::PermissionDenied("only an agency admin can set the agency's notification defaults".into())),
    }
}

/// Known email kinds, each once; a mandatory one can be left on or unset, never turned off.
fn settings(raw: Vec<pb::NotificationSetting>) -> Parsed<Vec<Setting>> {
    let count = raw.len();
    fields::check(count <= MAX_SETTINGS, "settings", || format!("at most {MAX_SETTINGS} settings, got {count}"))?;
    let mut seen: Vec<&'static str> = Vec::with_capacity(count);
    let parsed = fields::each(raw.into_iter().enumerate().map(|(i, s)| {
        let kind = email_kind(&s.event_type).ok_or_else(|| {
            Invalid::new(format!("settings[{i}].event_type"), format!("{:?} is not an email Folio sends", s.event_type))
        })?;
        fields::check(!seen.contains(&kind.event_type), &format!("settings[{i}].event_type"), || {
            format!("{} is set twice", kind.event_type)
        })?;
        seen.push(kind.event_type);
        fields::check(kind.can_turn_off() || s.enabled != Some(false), &format!("settings[{i}].enabled"), || {
            format!("{} is a mandatory email and cannot be turned off", kind.event_type)
        })?;
        Ok(Setting { event_type: kind.event_type, enabled: s.enabled })
    }))?;
    // Mandatory kinds have nothing to store.
    Ok(parsed.into_iter().filter(|s| email_kind(s.event_type).is_some_and(|k| k.can_turn_off())).collect())
}

fn preference(p: Preference) -> pb::NotificationPreference {
    let source = match p.source {
        Source::BuiltIn => pb::PreferenceSource::BuiltIn,
        Source::Agency => pb::PreferenceSource::Agency,
        Source::User => pb::PreferenceSource::User,
        Source::Mandatory => pb::PreferenceSource::Mandatory,
    };
    pb::NotificationPreference {
        event_type: p.kind.event_type.to_owned(),
        description: p.kind.description.to_owned(),
        enabled: p.enabled,
        mandatory: !p.kind.can_turn_off(),
        source: source as i32,
    }
}

fn preferences(ps: Vec<Preference>) -> Vec<pb::NotificationPreference> {
    ps.into_iter().map(preference).collect()
}

#[tonic::async_trait]
impl NotificationPreferenceService for PreferenceApi {
    async fn get_my_notification_preferences(
        &self,
        request: Request<pb::GetMyNotificationPreferencesRequest>,
    ) -> Result<Response<pb::GetMyNotificationPreferencesResponse>, Status> {
        let caller = caller(&request)?;
        let prefs = db::for_user(&self.pool, caller.agency_id, caller.user_id).await?;
        Ok(Response::new(pb::GetMyNotificationPreferencesResponse { preferences: preferences(prefs) }))
    }

    async fn update_my_notification_preferences(
        &self,
        request: Request<pb::UpdateMyNotificationPreferencesRequest>,
    ) -> Result<Response<pb::UpdateMyNotificationPreferencesResponse>, Status> {
        // Every role chooses its own emails, viewers included: it changes nothing of the agency's.
        let caller = caller(&request)?;
        let settings = settings(request.into_inner().settings)?;
        let done = db::set_for_user(&self.pool, caller.agency_id, caller.user_id, &settings).await?;
        tracing::info!(settings = settings.len(), "notification preferences set");
        Ok(Response::new(pb::UpdateMyNotificationPreferencesResponse {
            txid: done.txid.0,
            preferences: preferences(done.value),
        }))
    }

    async fn get_agency_notification_defaults(
        &self,
        request: Request<pb::GetAgencyNotificationDefaultsRequest>,
    ) -> Result<Response<pb::GetAgencyNotificationDefaultsResponse>, Status> {
        let caller = admin(&request)?;
        let defaults = db::for_agency(&self.pool, caller.agency_id).await?;
        Ok(Response::new(pb::GetAgencyNotificationDefaultsResponse { defaults: preferences(defaults) }))
    }

    async fn update_agency_notification_defaults(
        &self,
        request: Request<pb::UpdateAgencyNotificationDefaultsRequest>,
    ) -> Result<Response<pb::UpdateAgencyNotificationDefaultsResponse>, Status> {
        let caller = admin(&request)?;
        let settings = settings(request.into_inner().settings)?;
        let done = db::set_for_agency(&self.pool, caller.agency_id, &settings).await?;
        tracing::info!(settings = settings.len(), "agency notification defaults set");
        Ok(Response::new(pb::UpdateAgencyNotificationDefaultsResponse {
            txid: done.txid.0,
            defaults: preferences(done.value),
        }))
    }
}

//! NotificationPreferenceService over gRPC: a user's own choices, the agency's defaults, and
//! the refusals (mandatory emails → INVALID_ARGUMENT on `enabled`, viewer/editor setting the
//! agency's defaults → PERMISSION_DENIED). That the notifier honours them is its
//! tests/it/preferences.rs.

use folio_proto::api::v1::{
    self as pb, notification_preference_service_client::NotificationPreferenceServiceClient as Client,
};
use proposals_api::{Caller, Role, tenancy};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

use crate::helpers::{Bearer, TestApp, spawn_app};

type Prefs = Client<InterceptedService<Channel, Bearer>>;

fn client(app: &TestApp, caller: Caller) -> Prefs {
    Client::with_interceptor(app.channel.clone(), app.bearer(caller))
}

async fn admin(app: &TestApp) -> Prefs {
    let agency = app.editor.caller.agency_id;
    let admin = tenancy::create_user(&app.db.pool, agency, "ad@northwind.test", "Ad Min", Role::Admin).await.unwrap();
    client(app, Caller { user_id: admin, agency_id: agency, role: Role::Admin })
}

fn set(event_type: &str, enabled: Option<bool>) -> pb::NotificationSetting {
    pb::NotificationSetting { event_type: event_type.into(), enabled }
}

fn find<'a>(prefs: &'a [pb::NotificationPreference], event_type: &str) -> &'a pb::NotificationPreference {
    prefs.iter().find(|p| p.event_type == event_type).unwrap_or_else(|| panic!("{event_type} listed"))
}

fn state(prefs: &[pb::NotificationPreference], event_type: &str) -> (bool, pb::PreferenceSource) {
    let p = find(prefs, event_type);
    (p.enabled, p.source())
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_user_reads_and_sets_their_own_emails_over_the_agency_defaults() {
    use pb::PreferenceSource::{Agency, BuiltIn, Mandatory, User};
    let app = spawn_app().await;
    let mut admin = admin(&app).await;
    let mut editor = client(&app, app.editor.caller);
    let mut viewer = client(&app, app.viewer.caller);

    let mine = editor.get_my_notification_preferences(pb::GetMyNotificationPreferencesRequest {}).await.unwrap();
    let mine = mine.into_inner().preferences;
    assert_eq!(state(&mine, "proposal.viewed"), (true, BuiltIn));
    assert_eq!(state(&mine, "proposal.sent"), (true, Mandatory));
    assert!(find(&mine, "proposal.sent").mandatory && find(&mine, "endpoint.disabled").mandatory);
    assert!(!find(&mine, "proposal.accepted").mandatory, "optional for the team, the owner always gets it");

    // The agency turns views off by default: everyone who chose nothing follows.
    let defaults = admin
        .update_agency_notification_defaults(pb::UpdateAgencyNotificationDefaultsRequest {
            settings: vec![set("proposal.viewed", Some(false)), set("proposal.expiring", Some(false))],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(defaults.txid > 0);
    assert_eq!(state(&defaults.defaults, "proposal.viewed"), (false, Agency));
    let read = admin.get_agency_notification_defaults(pb::GetAgencyNotificationDefaultsRequest {}).await.unwrap();
    assert_eq!(state(&read.into_inner().defaults, "proposal.expiring"), (false, Agency));
    let mine = editor.get_my_notification_preferences(pb::GetMyNotificationPreferencesRequest {}).await.unwrap();
    assert_eq!(state(&mine.into_inner().preferences, "proposal.viewed"), (false, Agency));

    // The editor wants views anyway and no team acceptances; a viewer sets their own too.
    let updated = editor
        .update_my_notification_preferences(pb::UpdateMyNotificationPreferencesRequest {
            settings: vec![set("proposal.viewed", Some(true)), set("proposal.accepted", Some(false))],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.txid > 0);
    assert_eq!(state(&updated.preferences, "proposal.viewed"), (true, User));
    assert_eq!(state(&updated.preferences, "proposal.accepted"), (false, User));
    assert_eq!(state(&updated.preferences, "proposal.expiring"), (false, Agency));
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT event_type, opted_out FROM notification_preferences WHERE user_id = $1 ORDER BY event_type",
    )
    .bind(app.editor.caller.user_id.as_uuid())
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![("proposal.accepted".to_owned(), true), ("proposal.viewed".to_owned(), false)]);
    viewer
        .update_my_notification_preferences(pb::UpdateMyNotificationPreferencesRequest {
            settings: vec![set("proposal.declined", Some(false))],
        })
        .await
        .expect("every role chooses its own emails");

    // Clearing a choice falls back to the agency's default; clearing that, to sent.
    let cleared = editor
        .update_my_notification_preferences(pb::UpdateMyNotificationPreferencesRequest {
            settings: vec![set("proposal.viewed", None)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&cleared.preferences, "proposal.viewed"), (false, Agency));
    let defaults = admin
        .update_agency_notification_defaults(pb::UpdateAgencyNotificationDefaultsRequest {
            settings: vec![set("proposal.viewed", None)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&defaults.defaults, "proposal.viewed"), (true, BuiltIn));
}

#[tokio::test]
async fn mandatory_emails_unknown_kinds_and_other_roles_are_refused() {
    let app = spawn_app().await;
    let mut admin = admin(&app).await;
    let mut editor = client(&app, app.editor.caller);
    let mut viewer = client(&app, app.viewer.caller);

    // Neither a user nor the agency turns a mandatory email off; every bad setting is named.
    let refused = editor
        .update_my_notification_preferences(pb::UpdateMyNotificationPreferencesRequest {
            settings: vec![
                set("proposal.viewed", Some(false)),
                set("proposal.sent", Some(false)),
                set("proposal.teleported", Some(false)),
                set("proposal.viewed", Some(true)),
            ],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&refused),
        vec!["settings[1].enabled", "settings[2].event_type", "settings[3].event_type"],
        "{refused:?}"
    );
    assert!(refused.message().contains("proposal.sent is a mandatory email"), "{}", refused.message());
    let refused = admin
        .update_agency_notification_defaults(pb::UpdateAgencyNotificationDefaultsRequest {
            settings: vec![set("endpoint.disabled", Some(false))],
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), violated_fields(&refused)),
        (Code::InvalidArgument, vec!["settings[0].enabled".into()])
    );
    // Nothing of a refused call was written.
    let stored: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM notification_preferences) + (SELECT count(*) FROM agency_notification_defaults)",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);
    // Leaving a mandatory email on is no change at all.
    let kept = admin
        .update_agency_notification_defaults(pb::UpdateAgencyNotificationDefaultsRequest {
            settings: vec![set("proposal.sent", Some(true))],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&kept.defaults, "proposal.sent"), (true, pb::PreferenceSource::Mandatory));

    // The agency's defaults are the admins'.
    for c in [&mut editor, &mut viewer] {
        let read = c.get_agency_notification_defaults(pb::GetAgencyNotificationDefaultsRequest {}).await.unwrap_err();
        assert_eq!(read.code(), Code::PermissionDenied);
        let write = c
            .update_agency_notification_defaults(pb::UpdateAgencyNotificationDefaultsRequest {
                settings: vec![set("proposal.viewed", Some(false))],
            })
            .await
            .unwrap_err();
        assert_eq!(write.code(), Code::PermissionDenied);
    }

    // Defaults are per agency: another agency's admin neither sees nor changes these.
    admin
        .update_agency_notification_defaults(pb::UpdateAgencyNotificationDefaultsRequest {
            settings: vec![set("proposal.viewed", Some(false))],
        })
        .await
        .unwrap();
    let other = app.outsider.caller.agency_id;
    let outsider_id = tenancy::create_user(&app.db.pool, other, "ad@contoso.test", "Other", Role::Admin).await.unwrap();
    let mut outsider = client(&app, Caller { user_id: outsider_id, agency_id: other, role: Role::Admin });
    let theirs = outsider.get_agency_notification_defaults(pb::GetAgencyNotificationDefaultsRequest {}).await.unwrap();
    assert_eq!(state(&theirs.into_inner().defaults, "proposal.viewed"), (true, pb::PreferenceSource::BuiltIn));

    // A token whose user is gone (removed from the agency) reads nothing.
    let ghost =
        Caller { user_id: folio_domain::UserId::new(), agency_id: app.editor.caller.agency_id, role: Role::Editor };
    let gone = client(&app, ghost)
        .get_my_notification_preferences(pb::GetMyNotificationPreferencesRequest {})
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

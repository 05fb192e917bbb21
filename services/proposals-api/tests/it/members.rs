//! MemberService and InvitationService over gRPC: every RPC's happy path and refusals
//! (viewer/editor → PERMISSION_DENIED, another agency's ids → NOT_FOUND, the last admin →
//! FAILED_PRECONDITION, bad fields → INVALID_ARGUMENT naming them), the audit event of every
//! change, and the invitation token kept out of every table and change event. The email itself
//! (the link read from an SMTP server) is the notifier's tests/it/invitations.rs.

use folio_proto::api::v1::{
    self as pb, invitation_service_client::InvitationServiceClient, member_service_client::MemberServiceClient,
};
use folio_proto::jobs::v1::InvitationEmailJob;
use proposals_api::{Caller, Role, tenancy};
use sha2::{Digest, Sha256};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use tonic_types::StatusExt;

use crate::helpers::{Bearer, TestApp, create_client, create_proposal, item, spawn_app};

type Members = MemberServiceClient<InterceptedService<Channel, Bearer>>;

fn client(app: &TestApp, caller: Caller) -> Members {
    MemberServiceClient::with_interceptor(app.channel.clone(), app.bearer(caller))
}

struct Admin {
    caller: Caller,
    members: Members,
}

async fn admin(app: &TestApp, email: &str) -> Admin {
    let agency = app.editor.caller.agency_id;
    let id = tenancy::create_user(&app.db.pool, agency, email, "Ad Min", Role::Admin).await.unwrap();
    let caller = Caller { user_id: id, agency_id: agency, role: Role::Admin };
    Admin { caller, members: client(app, caller) }
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// A private logical replication slot: what wal-ingest will see.
struct Slot {
    name: String,
    pool: sqlx::PgPool,
}

impl Slot {
    async fn create(pool: &sqlx::PgPool) -> Self {
        let name = format!("t_{}", folio_testkit::unique_suffix());
        sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
            .bind(&name)
            .execute(pool)
            .await
            .unwrap();
        Self { name, pool: pool.clone() }
    }

    /// Every change message and logical message committed since, as raw pgoutput bytes.
    async fn messages(&self) -> Vec<Vec<u8>> {
        sqlx::query_scalar(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', \
             'publication_names', 'folio_changes', 'messages', 'true')",
        )
        .bind(&self.name)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// The invitation jobs ('M' messages with the job prefix: flags, lsn, prefix\0, length, content).
    async fn invitation_jobs(&self) -> Vec<InvitationEmailJob> {
        let prefix = folio_bus::subjects::job_message_prefix("invitation");
        self.messages()
            .await
            .iter()
            .filter(|m| m.first() == Some(&b'M'))
            .filter_map(|m| {
                let rest = &m[1 + 1 + 8..];
                let nul = rest.iter().position(|b| *b == 0)?;
                (std::str::from_utf8(&rest[..nul]).ok()? == prefix)
                    .then(|| prost::Message::decode(&rest[nul + 1 + 4..]).expect("an InvitationEmailJob"))
            })
            .collect()
    }

    async fn drop(self) {
        sqlx::query("SELECT pg_drop_replication_slot($1)").bind(&self.name).execute(&self.pool).await.unwrap();
    }
}

fn invite(email: &str, role: pb::MemberRole) -> pb::InviteMemberRequest {
    pb::InviteMemberRequest { email: email.into(), role: role as i32, valid_for: None }
}

async fn audit(pool: &sqlx::PgPool, action: &str) -> Vec<(Option<uuid::Uuid>, uuid::Uuid, serde_json::Value)> {
    sqlx::query_as("SELECT actor_id, subject_id, details FROM audit_events WHERE action = $1 ORDER BY created_at")
        .bind(action)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_invites_and_the_invitee_joins_once() {
    let app = spawn_app().await;
    let mut a = admin(&app, "ad@northwind.test").await;
    let slot = Slot::create(&app.db.pool).await;

    let invited = a.members.invite_member(invite(" New.Person@Example.com ", pb::MemberRole::Editor)).await.unwrap();
    let invited = invited.into_inner();
    assert!(invited.txid > 0);
    let invitation = invited.invitation.unwrap();
    assert_eq!((invitation.email.as_str(), invitation.role()), ("new.person@example.com", pb::MemberRole::Editor));
    assert_eq!(invitation.invited_by, a.caller.user_id.to_string());
    let lifetime = invitation.expires_at.unwrap().seconds - invitation.created_at.unwrap().seconds;
    assert!((7 * 24 * 3600 - 5..=7 * 24 * 3600 + 5).contains(&lifetime), "{lifetime}");

    // The job carries the token; the table only its SHA-256; no change message carries either.
    let jobs = slot.invitation_jobs().await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(
        (job.email.as_str(), job.role.as_str(), job.invited_by_name.as_str()),
        ("new.person@example.com", "editor", "Ad Min")
    );
    assert!(job.token.len() >= 43, "{}", job.token);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM invitations WHERE id = $1::uuid")
        .bind(&invitation.id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, Sha256::digest(job.token.as_bytes()).to_vec());
    let changes: Vec<Vec<u8>> = slot.messages().await.into_iter().filter(|m| m.first() != Some(&b'M')).collect();
    let needle = job.token.as_bytes();
    for secret in [needle, stored.as_slice()] {
        assert!(!changes.iter().any(|m| m.windows(secret.len()).any(|w| w == secret)), "a secret in the change stream");
    }
    let invited_events = audit(&app.db.pool, "member.invited").await;
    assert_eq!(invited_events.len(), 1);
    assert_eq!(invited_events[0].0, Some(a.caller.user_id.as_uuid()));
    let listed = a.members.list_members(pb::ListMembersRequest {}).await.unwrap().into_inner();
    assert_eq!(
        listed.pending_invitations.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        vec![invitation.id.as_str()]
    );
    assert_eq!(listed.members.len(), 3, "editor, viewer and admin");

    // The link's token is the credential: no bearer token.
    let mut public = InvitationServiceClient::new(app.channel.clone());
    let accept = |token: &str| pb::AcceptInvitationRequest { token: token.into(), name: "New Person".into() };
    let joined = public.accept_invitation(accept(&job.token)).await.unwrap().into_inner();
    assert!(joined.txid > 0);
    assert_eq!(joined.agency_id, app.editor.caller.agency_id.to_string());
    let member = joined.member.unwrap();
    assert_eq!(
        (member.email.as_str(), member.name.as_str(), member.role()),
        ("new.person@example.com", "New Person", pb::MemberRole::Editor)
    );
    let joined_events = audit(&app.db.pool, "member.joined").await;
    assert_eq!((joined_events.len(), joined_events[0].1.to_string()), (1, member.id.clone()));
    let listed = a.members.list_members(pb::ListMembersRequest {}).await.unwrap().into_inner();
    assert!(listed.pending_invitations.is_empty());
    assert!(listed.members.iter().any(|m| m.id == member.id));

    // Used, unknown and expired tokens get one answer.
    let again = public.accept_invitation(accept(&job.token)).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    let unknown = public.accept_invitation(accept("not-a-token")).await.unwrap_err();
    assert_eq!((unknown.code(), unknown.message()), (again.code(), again.message()));
    a.members.invite_member(invite("late@example.com", pb::MemberRole::Viewer)).await.unwrap();
    let late = slot.invitation_jobs().await.pop().unwrap();
    sqlx::query("UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = 'late@example.com'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let expired = public.accept_invitation(accept(&late.token)).await.unwrap_err();
    assert_eq!((expired.code(), expired.message()), (again.code(), again.message()));
    let empty = public.accept_invitation(pb::AcceptInvitationRequest { token: late.token, name: " ".into() }).await;
    assert_eq!(violated_fields(&empty.unwrap_err()), vec!["name"]);
    slot.drop().await;
}

#[tokio::test]
async fn an_admin_changes_roles_and_removes_members_but_never_the_last_admin() {
    let app = spawn_app().await;
    let mut a = admin(&app, "ad@northwind.test").await;
    let b = admin(&app, "bee@northwind.test").await;
    let (editor, viewer) = (app.editor.caller.user_id, app.viewer.caller.user_id);

    let promoted = a
        .members
        .change_member_role(pb::ChangeMemberRoleRequest {
            user_id: viewer.to_string(),
            role: pb::MemberRole::Editor as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(promoted.txid > 0);
    assert_eq!(promoted.member.unwrap().role(), pb::MemberRole::Editor);
    let changed = audit(&app.db.pool, "member.role_changed").await;
    assert_eq!(changed[0].2["from"], "viewer");
    assert_eq!(changed[0].2["to"], "editor");
    // The same role again changes nothing.
    let same = a
        .members
        .change_member_role(pb::ChangeMemberRoleRequest {
            user_id: viewer.to_string(),
            role: pb::MemberRole::Editor as i32,
        })
        .await
        .unwrap();
    assert_eq!(same.into_inner().txid, 0);

    // The editor's proposals pass to the admin who removes them.
    let c = create_client(&app.editor, "Globex").await;
    let p = create_proposal(&app.editor, &c, "Owned", vec![item("Design", 1000, 10_000, 0)]).await;
    let removed = a.members.remove_member(pb::RemoveMemberRequest { user_id: editor.to_string() }).await.unwrap();
    assert!(removed.into_inner().txid > 0);
    let owner: uuid::Uuid = sqlx::query_scalar("SELECT owner_id FROM proposals WHERE id = $1::uuid")
        .bind(&p.id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(owner, a.caller.user_id.as_uuid());
    let gone = audit(&app.db.pool, "member.removed").await;
    assert_eq!(
        (gone[0].0, gone[0].1, gone[0].2["proposals_moved"].as_i64()),
        (Some(a.caller.user_id.as_uuid()), editor.as_uuid(), Some(1))
    );
    let listed = a.members.list_members(pb::ListMembersRequest {}).await.unwrap().into_inner();
    assert!(!listed.members.iter().any(|m| m.id == editor.to_string()));

    // Two admins: one demotes the other; then the last one can neither step down nor leave.
    a.members
        .change_member_role(pb::ChangeMemberRoleRequest {
            user_id: b.caller.user_id.to_string(),
            role: pb::MemberRole::Viewer as i32,
        })
        .await
        .unwrap();
    let demote = a
        .members
        .change_member_role(pb::ChangeMemberRoleRequest {
            user_id: a.caller.user_id.to_string(),
            role: pb::MemberRole::Editor as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(demote.code(), Code::FailedPrecondition, "{demote:?}");
    assert!(demote.message().contains("last admin"), "{}", demote.message());
    let leave =
        a.members.remove_member(pb::RemoveMemberRequest { user_id: a.caller.user_id.to_string() }).await.unwrap_err();
    assert_eq!(leave.code(), Code::FailedPrecondition);
    let admins: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND agency_id = $1")
        .bind(app.editor.caller.agency_id.as_uuid())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(admins, 1);
    assert_eq!(audit(&app.db.pool, "member.role_changed").await.len(), 2, "refusals leave no audit event");
}

#[tokio::test]
async fn other_roles_other_agencies_and_bad_fields_are_refused() {
    let app = spawn_app().await;
    let mut a = admin(&app, "ad@northwind.test").await;
    let target = app.viewer.caller.user_id.to_string();
    for caller in [app.editor.caller, app.viewer.caller] {
        let mut c = client(&app, caller);
        let codes = [
            c.list_members(pb::ListMembersRequest {}).await.unwrap_err().code(),
            c.invite_member(invite("x@example.com", pb::MemberRole::Admin)).await.unwrap_err().code(),
            c.change_member_role(pb::ChangeMemberRoleRequest {
                user_id: target.clone(),
                role: pb::MemberRole::Admin as i32,
            })
            .await
            .unwrap_err()
            .code(),
            c.remove_member(pb::RemoveMemberRequest { user_id: target.clone() }).await.unwrap_err().code(),
        ];
        assert_eq!(codes, [Code::PermissionDenied; 4], "{caller:?}");
    }

    // Another agency's admin: this agency's members are not found, and not listed.
    let other = app.outsider.caller.agency_id;
    let outsider_id = tenancy::create_user(&app.db.pool, other, "ad@contoso.test", "Other", Role::Admin).await.unwrap();
    let mut outsider = client(&app, Caller { user_id: outsider_id, agency_id: other, role: Role::Admin });
    let change = outsider
        .change_member_role(pb::ChangeMemberRoleRequest { user_id: target.clone(), role: pb::MemberRole::Admin as i32 })
        .await
        .unwrap_err();
    assert_eq!(change.code(), Code::NotFound);
    let remove = outsider.remove_member(pb::RemoveMemberRequest { user_id: target.clone() }).await.unwrap_err();
    assert_eq!(remove.code(), Code::NotFound);
    let theirs = outsider.list_members(pb::ListMembersRequest {}).await.unwrap().into_inner();
    assert!(!theirs.members.iter().any(|m| m.id == target));

    // Bad fields, each named.
    let bad = a
        .members
        .invite_member(pb::InviteMemberRequest {
            email: "not an address".into(),
            role: pb::MemberRole::Unspecified as i32,
            valid_for: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), violated_fields(&bad)),
        (Code::InvalidArgument, vec!["email".into(), "role".into(), "valid_for".into()])
    );
    let existing = a.members.invite_member(invite("AD@northwind.test", pb::MemberRole::Viewer)).await.unwrap_err();
    assert_eq!(violated_fields(&existing), vec!["email"]);
    let bad_id = a
        .members
        .change_member_role(pb::ChangeMemberRoleRequest { user_id: "nope".into(), role: 99 })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad_id), vec!["user_id", "role"]);
    let nobody = a
        .members
        .remove_member(pb::RemoveMemberRequest { user_id: folio_domain::UserId::new().to_string() })
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::NotFound);
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM invitations").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(none, 0);

    // Both tables flow through the WAL; the token's hash does not.
    let published: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT tablename::text, attnames::text[] FROM pg_publication_tables \
          WHERE pubname = 'folio_changes' AND tablename IN ('audit_events', 'invitations') ORDER BY tablename",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(published.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), vec!["audit_events", "invitations"]);
    assert!(!published[1].1.contains(&"token_sha256".to_owned()), "{published:?}");
}

#[tokio::test]
async fn an_admin_revokes_and_resends_invitations_and_reads_the_audit_trail() {
    let app = spawn_app().await;
    let mut a = admin(&app, "ad@northwind.test").await;
    let mut public = InvitationServiceClient::new(app.channel.clone());
    let accept = |token: &str| pb::AcceptInvitationRequest { token: token.into(), name: "Someone".into() };
    let slot = Slot::create(&app.db.pool).await;

    // Revoked: its link answers like an unknown one, and it leaves the pending list.
    let revoked = a.members.invite_member(invite("wrong@address.test", pb::MemberRole::Viewer)).await.unwrap();
    let revoked = revoked.into_inner().invitation.unwrap();
    let done = a
        .members
        .revoke_invitation(pb::RevokeInvitationRequest { invitation_id: revoked.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(done.txid > 0);
    let twice = a.members.revoke_invitation(pb::RevokeInvitationRequest { invitation_id: revoked.id.clone() }).await;
    assert_eq!(twice.unwrap().into_inner().txid, 0, "revoking again changes nothing");
    let token = slot.invitation_jobs().await.into_iter().find(|j| j.invitation_id == revoked.id).unwrap().token;
    let refused = public.accept_invitation(accept(&token)).await.unwrap_err();
    let unknown = public.accept_invitation(accept("not-a-token")).await.unwrap_err();
    assert_eq!((refused.code(), refused.message()), (unknown.code(), unknown.message()), "one answer");
    let listed = a.members.list_members(pb::ListMembersRequest {}).await.unwrap().into_inner();
    assert!(!listed.pending_invitations.iter().any(|i| i.id == revoked.id));
    let resend_revoked = a
        .members
        .resend_invitation(pb::ResendInvitationRequest { invitation_id: revoked.id.clone(), valid_for: None })
        .await
        .unwrap_err();
    assert_eq!(resend_revoked.code(), Code::FailedPrecondition);

    // Resent: a new link works, the old one no longer does.
    let sent = a.members.invite_member(invite("late@reader.test", pb::MemberRole::Editor)).await.unwrap();
    let sent = sent.into_inner().invitation.unwrap();
    let resent = a
        .members
        .resend_invitation(pb::ResendInvitationRequest {
            invitation_id: sent.id.clone(),
            valid_for: Some(prost_types::Duration { seconds: 2 * 3600, nanos: 0 }),
        })
        .await
        .unwrap()
        .into_inner();
    let lifetime = resent.invitation.unwrap().expires_at.unwrap().seconds - chrono_now();
    assert!((2 * 3600 - 10..=2 * 3600 + 10).contains(&lifetime), "{lifetime}");
    let jobs: Vec<_> = slot.invitation_jobs().await.into_iter().filter(|j| j.invitation_id == sent.id).collect();
    assert_eq!(jobs.len(), 2, "the resend emails a second link");
    assert_ne!(jobs[0].token, jobs[1].token);
    let old = public.accept_invitation(accept(&jobs[0].token)).await.unwrap_err();
    assert_eq!(old.code(), Code::NotFound);
    let joined = public.accept_invitation(accept(&jobs[1].token)).await.unwrap().into_inner();
    assert_eq!(joined.member.unwrap().email, "late@reader.test");
    let resend_accepted = a
        .members
        .resend_invitation(pb::ResendInvitationRequest { invitation_id: sent.id.clone(), valid_for: None })
        .await
        .unwrap_err();
    assert_eq!(resend_accepted.code(), Code::FailedPrecondition);
    let revoke_accepted =
        a.members.revoke_invitation(pb::RevokeInvitationRequest { invitation_id: sent.id.clone() }).await.unwrap_err();
    assert_eq!(revoke_accepted.code(), Code::FailedPrecondition);

    // The trail, newest first, a page at a time.
    let first = a
        .members
        .list_audit_events(pb::ListAuditEventsRequest { page_size: 2, page_token: String::new() })
        .await
        .unwrap()
        .into_inner();
    let second = a
        .members
        .list_audit_events(pb::ListAuditEventsRequest { page_size: 10, page_token: first.next_page_token.clone() })
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = first.events.iter().chain(&second.events).map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["member.joined", "member.invitation_resent", "member.invited", "member.invitation_revoked", "member.invited"]
    );
    assert!(second.next_page_token.is_empty());
    assert_eq!(first.events[1].actor_id, a.caller.user_id.to_string());
    assert!(first.events[0].actor_id.is_empty(), "an invitee joining acts for themselves");
    assert!(first.events[1].details_json.contains("late@reader.test"));

    // Other roles, other agencies, bad fields.
    let mut editor = client(&app, app.editor.caller);
    let denied = editor.list_audit_events(pb::ListAuditEventsRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = editor.revoke_invitation(pb::RevokeInvitationRequest { invitation_id: sent.id.clone() }).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let other = app.outsider.caller.agency_id;
    let outsider_id =
        tenancy::create_user(&app.db.pool, other, "ad2@contoso.test", "Other", Role::Admin).await.unwrap();
    let mut outsider = client(&app, Caller { user_id: outsider_id, agency_id: other, role: Role::Admin });
    let theirs = outsider.revoke_invitation(pb::RevokeInvitationRequest { invitation_id: revoked.id.clone() }).await;
    assert_eq!(theirs.unwrap_err().code(), Code::NotFound);
    let trail = outsider.list_audit_events(pb::ListAuditEventsRequest::default()).await.unwrap().into_inner();
    assert!(trail.events.is_empty(), "another agency's trail is its own");
    let bad = a
        .members
        .list_audit_events(pb::ListAuditEventsRequest { page_size: 500, page_token: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), vec!["page_size", "page_token"]);
    let bad = a.members.revoke_invitation(pb::RevokeInvitationRequest { invitation_id: "nope".into() }).await;
    assert_eq!(violated_fields(&bad.unwrap_err()), vec!["invitation_id"]);
    slot.drop().await;
}

fn chrono_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn redeeming_invitations_is_rate_limited_per_address() {
    let db = folio_testkit::TestDb::new().await.expect("test database");
    let mut config = proposals_api::Config::new(db.url.clone(), crate::helpers::SECRET);
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.common.shutdown_grace = std::time::Duration::from_secs(1);
    config.bus.nats_url = folio_testkit::nats_url();
    config.limits.rate_limits = true;
    config.limits.quota.rate_bucket = format!("test-rates-{}", folio_testkit::unique_suffix());
    config.client.invitation_requests_per_min = 4;
    let api = proposals_api::bind(config).await.expect("bind the API");
    let addr = api.addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api.run(shutdown.clone()));
    let _stop = shutdown.clone().drop_guard();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut public = InvitationServiceClient::new(channel);
    let guess = |ip: &'static str| {
        let mut request =
            tonic::Request::new(pb::AcceptInvitationRequest { token: "guessed".into(), name: "G".into() });
        request.metadata_mut().insert("x-forwarded-for", ip.parse().unwrap());
        request
    };
    // Four guesses a minute from one address are answered (NOT_FOUND); the fifth is refused.
    for i in 0..4 {
        let status = public.accept_invitation(guess("198.51.100.7")).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "guess {i}");
    }
    let limited = public.accept_invitation(guess("198.51.100.7")).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    // Another address is not held back by it.
    let other = public.accept_invitation(guess("203.0.113.9")).await.unwrap_err();
    assert_eq!(other.code(), Code::NotFound);
}

//! An invitation end to end: InviteMember (gRPC) → the job in the WAL → wal-ingest →
//! `folio.jobs.invitation` → the notifier's email → the link read from the SMTP server →
//! AcceptInvitation (gRPC, no bearer token) accepted once, refused the second time and after
//! expiry.

use folio_proto::api::v1::{
    self as pb, invitation_service_client::InvitationServiceClient, member_service_client::MemberServiceClient,
};
use folio_proto::tonic::{Code, transport::Channel};
use proposals_api::Role;

use crate::helpers::{JWT_SECRET, World};
use folio_testkit::Bearer;

/// The token at the end of the invitation link in the email to `address`, once it arrived.
async fn emailed_token(w: &World, address: &str, base: &str) -> String {
    let mail = folio_testkit::eventually("the invitation email", || async { w.smtp.to(address).pop() }).await;
    assert!(mail.header("subject").unwrap().contains("invited you to Acme Studio"), "{:?}", mail.header("subject"));
    let text = mail.text();
    let prefix = format!("{base}/invite/");
    let start = text.find(&prefix).unwrap_or_else(|| panic!("a link {prefix}… in {text}")) + prefix.len();
    text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emailed_invitation_link_is_accepted_once_and_refused_again_and_after_expiry() {
    let mut w = World::new().await.unwrap();
    // wal-ingest declares its own streams (the changes stream as the world's, and the jobs').
    w.js.delete_stream(&w.stream).await.unwrap();
    let ingest = w.sandbox.wal_ingest_config();
    w.sandbox.start_wal_ingest(ingest).await.expect("wal-ingest streams its slot");
    let config = w.config();
    let base = config.public_base_url.trim_end_matches('/').to_owned();
    let notifier = w.spawn_with(config).await;

    let mut api_config = proposals_api::Config::new(&w.db.url, JWT_SECRET);
    api_config.listen_addr = ([127, 0, 0, 1], 0).into();
    api_config.common.admin_addr = ([127, 0, 0, 1], 0).into();
    api_config.migrate = false;
    let bound = proposals_api::bind(api_config).await.expect("bind the API");
    let channel = Channel::from_shared(format!("http://{}", bound.addr())).unwrap().connect_lazy();
    let api = bound.spawn();
    let token = format!("Bearer {}", w.token(&w.owner, Role::Admin)).parse().unwrap();
    let mut members = MemberServiceClient::with_interceptor(channel.clone(), Bearer(token));
    let mut public = InvitationServiceClient::new(channel);
    let invite = |email: &str| pb::InviteMemberRequest {
        email: email.into(),
        role: pb::MemberRole::Editor as i32,
        valid_for: None,
    };
    let invited = folio_testkit::eventually("the API to serve", || {
        let (mut members, request) = (members.clone(), invite("joiner@example.test"));
        async move { members.invite_member(request).await.ok() }
    })
    .await
    .into_inner();
    assert!(invited.txid > 0);

    let link_token = emailed_token(&w, "joiner@example.test", &base).await;
    assert!(link_token.len() >= 43, "{link_token}");
    let accept = |token: &str| pb::AcceptInvitationRequest { token: token.into(), name: "Jo Iner".into() };
    let joined = public.accept_invitation(accept(&link_token)).await.expect("the link works once").into_inner();
    let member = joined.member.unwrap();
    assert_eq!((member.email.as_str(), member.role()), ("joiner@example.test", pb::MemberRole::Editor));
    assert_eq!(joined.agency_id, w.agency.to_string());
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE id = $1::uuid AND agency_id = $2")
        .bind(&member.id)
        .bind(w.agency.as_uuid())
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(role, "editor");

    let again = public.accept_invitation(accept(&link_token)).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "{again:?}");

    // A second invitation, emailed, then expired before it is used.
    members.invite_member(invite("late@example.test")).await.unwrap();
    let late_token = emailed_token(&w, "late@example.test", &base).await;
    sqlx::query("UPDATE invitations SET expires_at = now() - interval '1 second' WHERE email = 'late@example.test'")
        .execute(&w.db.pool)
        .await
        .unwrap();
    let expired = public.accept_invitation(accept(&late_token)).await.unwrap_err();
    assert_eq!((expired.code(), expired.message()), (again.code(), again.message()), "one answer for both");
    let joined: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'late@example.test'")
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(joined, 0);
    // One email per invitation: the job was acked, not redelivered.
    assert_eq!(w.smtp.to("joiner@example.test").len(), 1);

    api.stop().await.expect("the API stops");
    notifier.stop().await;
    w.sandbox.stop().await;
}

//! The agency's notification defaults and users' own choices, written by the API's
//! NotificationPreferenceService store, decide who is emailed: a default turned off silences
//! everyone who chose nothing, a user who turned the email back on still gets it, and
//! mandatory emails go out whatever the defaults say.

use std::time::Duration;

use folio_domain::ProposalStatus;
use proposals_api::store::preferences::{self, Setting};

use crate::helpers::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agency_defaults_silence_those_who_chose_nothing_and_a_users_choice_wins() {
    let w = World::new().await.unwrap();
    let pool = &w.db.pool;
    // The agency turns off team acceptances and views; the editor wants acceptances anyway.
    let off = |event_type| Setting { event_type, enabled: Some(false) };
    preferences::set_for_agency(pool, w.agency, &[off("proposal.accepted"), off("proposal.viewed")]).await.unwrap();
    let on = Setting { event_type: "proposal.accepted", enabled: Some(true) };
    preferences::set_for_user(pool, w.agency, w.editor.id, &[on]).await.unwrap();
    let notifier = w.spawn().await;

    let p = w.created("Defaults", None).await;
    w.transition(p, ProposalStatus::Sent).await;
    w.transition(p, ProposalStatus::Viewed).await;
    w.transition(p, ProposalStatus::Accepted).await;
    folio_testkit::eventually("the acceptance emails", || async {
        (w.smtp.to(&w.owner.email).len() == 1 && w.smtp.to(&w.editor.email).len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The client's copy is mandatory; the owner's acceptance too; the view is off by default.
    assert_eq!(w.smtp.to(&w.client_email).iter().map(|m| m.event()).collect::<Vec<_>>(), vec!["proposal.sent"]);
    assert_eq!(w.smtp.to(&w.owner.email).iter().map(|m| m.event()).collect::<Vec<_>>(), vec!["proposal.accepted"]);
    // The editor turned acceptances back on; the viewer chose nothing and follows the agency.
    assert_eq!(w.smtp.to(&w.editor.email).iter().map(|m| m.event()).collect::<Vec<_>>(), vec!["proposal.accepted"]);
    assert!(w.smtp.to(&w.viewer.email).is_empty(), "{:?}", w.smtp.to(&w.viewer.email));
    let accepted = w.deliveries("proposal.accepted").await;
    let viewer = accepted.iter().find(|d| d.recipient == w.viewer.email.to_lowercase()).expect("on record");
    assert_eq!(viewer.status, "skipped");
    assert!(viewer.last_error.as_deref().unwrap().contains("opted out"), "{viewer:?}");
    let viewed = w.deliveries("proposal.viewed").await;
    assert_eq!(viewed.iter().map(|d| d.status.as_str()).collect::<Vec<_>>(), vec!["skipped"]);
    notifier.stop().await;
    w.cleanup().await;
}

//! Each proposal transition produces exactly the emails and webhooks it should.

use folio_domain::ProposalStatus;
use serde_json::json;

use crate::helpers::{Mail, World};

fn today_plus(days: i64) -> time::Date {
    time::OffsetDateTime::now_utc().date() + time::Duration::days(days)
}

fn events(mails: &[Mail]) -> Vec<String> {
    let mut e: Vec<String> = mails.iter().map(|m| m.event().to_owned()).collect();
    e.sort();
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transition_sends_the_right_emails_and_webhooks() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/all", &[], json!({})).await;
    w.add_endpoint("/accepted-only", &["proposal.accepted"], json!({})).await;
    let notifier = w.spawn().await;

    // Valid until tomorrow: inside the 3-day reminder lead, so the reminder is due at once.
    let p = w.created("Website redesign", Some(today_plus(1))).await;
    folio_testkit::eventually("proposal.created reaches /all", || async {
        (w.receiver.accepted("/all").await.len() == 1).then_some(())
    })
    .await;
    assert!(w.smtp.messages().is_empty(), "creating a draft emails nobody");

    w.transition(p, ProposalStatus::Sent).await;
    folio_testkit::eventually("the client's proposal and the owner's reminder", || async {
        (w.smtp.to(&w.client_email).len() == 1 && w.smtp.to(&w.owner.email).len() == 1).then_some(())
    })
    .await;
    w.settled().await;

    w.transition(p, ProposalStatus::Viewed).await;
    folio_testkit::eventually("the owner hears of the view", || async {
        (w.smtp.to(&w.owner.email).len() == 2).then_some(())
    })
    .await;
    w.settled().await;

    w.transition(p, ProposalStatus::Accepted).await;
    folio_testkit::eventually("the team hears of the acceptance", || async {
        (w.smtp.to(&w.editor.email).len() == 1 && w.smtp.to(&w.viewer.email).len() == 1).then_some(())
    })
    .await;

    // A second proposal, declined, without an expiry date (so no reminder).
    let q = w.created("Brand audit", None).await;
    w.transition(q, ProposalStatus::Sent).await;
    w.transition(q, ProposalStatus::Declined).await;
    folio_testkit::eventually("the decline reaches the team", || async {
        (w.smtp.to(&w.editor.email).len() == 2).then_some(())
    })
    .await;
    w.settled().await;
    // Anything wrongly queued would have gone out by now.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // Emails: exactly these, to exactly these people.
    let client = w.smtp.to(&w.client_email);
    assert_eq!(events(&client), vec!["proposal.sent", "proposal.sent"]);
    assert_eq!(
        events(&w.smtp.to(&w.owner.email)),
        vec!["proposal.accepted", "proposal.declined", "proposal.expiring", "proposal.viewed"]
    );
    assert_eq!(events(&w.smtp.to(&w.editor.email)), vec!["proposal.accepted", "proposal.declined"]);
    assert_eq!(events(&w.smtp.to(&w.viewer.email)), vec!["proposal.accepted", "proposal.declined"]);
    assert_eq!(w.smtp.messages().len(), 2 + 4 + 2 + 2);

    // The client's email is the proposal: a link to it, no unsubscribe (it is not a list).
    let sent = client.iter().find(|m| m.text().contains("Website redesign")).expect("the first proposal's email");
    assert!(sent.text().contains(&format!("/p/{p}")), "{}", sent.raw);
    assert!(sent.text().contains("121.00 EUR"), "total in the body: {}", sent.raw);
    assert!(sent.header("list-unsubscribe").is_none());
    assert!(sent.raw.contains("Content-Type: text/html") && sent.raw.contains("Content-Type: text/plain"));
    let sent_delivery = w.deliveries("proposal.sent").await.into_iter().find(|d| d.channel == "email").unwrap();
    assert_eq!(sent_delivery.recipient, w.client_email);
    assert!(
        client.iter().any(|m| m.header("message-id") == Some(&format!("<{}@folio.localhost>", sent_delivery.id))),
        "Message-ID is derived from the delivery id"
    );
    // Optional emails carry RFC 8058 one-click headers; mandatory ones do not.
    let owner = w.smtp.to(&w.owner.email);
    let viewed = owner.iter().find(|m| m.event() == "proposal.viewed").unwrap();
    assert!(
        viewed
            .header("list-unsubscribe")
            .is_some_and(|h| h.starts_with("<http") && h.contains("/v1/unsubscribe?token="))
    );
    assert_eq!(viewed.header("list-unsubscribe-post"), Some("List-Unsubscribe=One-Click"));
    assert!(viewed.text().contains(&format!("/proposals/{p}")));
    let accepted = owner.iter().find(|m| m.event() == "proposal.accepted").unwrap();
    assert!(accepted.header("list-unsubscribe").is_none(), "the owner's acceptance news is mandatory");
    let team_accepted = &w.smtp.to(&w.editor.email).into_iter().find(|m| m.event() == "proposal.accepted").unwrap();
    assert!(team_accepted.header("list-unsubscribe").is_some());

    // Webhooks: every event to the catch-all endpoint, only acceptances to the other, all
    // verified by the receiver's standardwebhooks check.
    let log = w.receiver.log().await;
    assert!(log.iter().all(|h| h.outcome == "accepted"), "{log:#?}");
    let mut all: Vec<(String, String)> = w
        .receiver
        .accepted("/all")
        .await
        .iter()
        .map(|h| (h.event_type().to_owned(), h.payload.as_ref().unwrap()["data"]["id"].as_str().unwrap().to_owned()))
        .collect();
    all.sort();
    let (p, q) = (p.to_string(), q.to_string());
    let mut want = vec![
        ("proposal.accepted".to_owned(), p.clone()),
        ("proposal.created".to_owned(), p.clone()),
        ("proposal.created".to_owned(), q.clone()),
        ("proposal.declined".to_owned(), q.clone()),
        ("proposal.expiring".to_owned(), p.clone()),
        ("proposal.sent".to_owned(), p.clone()),
        ("proposal.sent".to_owned(), q.clone()),
        ("proposal.viewed".to_owned(), p.clone()),
    ];
    want.sort();
    assert_eq!(all, want);
    let only = w.receiver.accepted("/accepted-only").await;
    assert_eq!(only.len(), 1);
    let body = only[0].payload.as_ref().unwrap();
    assert_eq!(body["type"], "proposal.accepted");
    assert_eq!(body["data"]["status"], "accepted");
    assert_eq!(body["data"]["previous_status"], "viewed");
    assert_eq!(body["data"]["total_minor"], 12100);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(only[0].webhook_id.as_deref().unwrap().starts_with("msg_"));

    notifier.stop().await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_inserted_as_sent_is_both_created_and_sent() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/all", &[], json!({})).await;
    let notifier = w.spawn().await;
    // An import: the row arrives already sent, in one insert event.
    let p = w.new_proposal("Imported", None).await;
    sqlx::query("UPDATE proposals SET status = 'sent', sent_at = now() WHERE id = $1")
        .bind(p.as_uuid())
        .execute(&w.db.pool)
        .await
        .unwrap();
    let (msg_id, event) = w.event(folio_proto::events::v1::Operation::Insert, Vec::new(), w.row(p).await);
    w.publish(&msg_id, &event).await;
    folio_testkit::eventually("both webhooks and the client's email", || async {
        (w.receiver.accepted("/all").await.len() == 2 && w.smtp.to(&w.client_email).len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    let mut types: Vec<String> = w.receiver.accepted("/all").await.iter().map(|h| h.event_type().to_owned()).collect();
    types.sort();
    assert_eq!(types, vec!["proposal.created", "proposal.sent"]);
    let sent = w.deliveries("proposal.sent").await;
    assert!(sent.iter().all(|d| d.event_id == format!("{msg_id}#proposal.sent")), "{sent:?}");
    notifier.stop().await;
    w.cleanup().await;
}

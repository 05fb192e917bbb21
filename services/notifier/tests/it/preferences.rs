//! Preferences: an opted-out user gets nothing, mandatory emails still go out, and the
//! unsubscribe link (RFC 8058 one-click POST) works.

use std::time::Duration;

use folio_domain::ProposalStatus;

use crate::helpers::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opted_out_user_gets_nothing_and_one_click_unsubscribe_works() {
    let w = World::new().await.unwrap();
    sqlx::query(
        "INSERT INTO notification_preferences (user_id, event_type, opted_out) VALUES ($1, 'proposal.viewed', true)",
    )
    .bind(w.owner.id.as_uuid())
    .execute(&w.db.pool)
    .await
    .unwrap();
    let notifier = w.spawn().await;

    let p = w.created("Quiet please", None).await;
    w.transition(p, ProposalStatus::Sent).await;
    w.transition(p, ProposalStatus::Viewed).await;
    w.transition(p, ProposalStatus::Accepted).await;
    folio_testkit::eventually("the acceptance emails", || async {
        (w.smtp.to(&w.owner.email).len() == 1 && w.smtp.to(&w.editor.email).len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The owner opted out of views: no email, and the decision is on record.
    let owner_mail = w.smtp.to(&w.owner.email);
    assert_eq!(owner_mail.iter().map(|m| m.event()).collect::<Vec<_>>(), vec!["proposal.accepted"]);
    let viewed = w.deliveries("proposal.viewed").await;
    assert_eq!(viewed.len(), 1);
    assert_eq!(viewed[0].status, "skipped");
    assert_eq!(viewed[0].attempts, 0);
    assert!(viewed[0].last_error.as_deref().unwrap().contains("opted out"));

    // The editor unsubscribes from acceptances with the email's one-click link.
    let mail = w.smtp.to(&w.editor.email).remove(0);
    let link = mail.header("list-unsubscribe").unwrap().trim_matches(['<', '>']).to_owned();
    let token = link.split_once("token=").unwrap().1.to_owned();
    let http = reqwest::Client::new();
    let base = format!("http://{}/v1/unsubscribe?token={token}", notifier.http);
    // Following the link (what a mail scanner does) only shows a form.
    let page = http.get(&base).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    let opted: i64 = sqlx::query_scalar("SELECT count(*) FROM notification_preferences WHERE user_id = $1")
        .bind(w.editor.id.as_uuid())
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(opted, 0, "a GET must not unsubscribe");
    let one_click = http
        .post(&base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status().as_u16(), 200);
    let pref: (String, bool) =
        sqlx::query_as("SELECT event_type, opted_out FROM notification_preferences WHERE user_id = $1")
            .bind(w.editor.id.as_uuid())
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(pref, ("proposal.accepted".to_owned(), true));
    let forged = http.post(format!("http://{}/v1/unsubscribe?token=x{token}", notifier.http)).send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 400);

    // The next acceptance reaches the owner (mandatory) but not the editor.
    let q = w.created("Second", None).await;
    w.transition(q, ProposalStatus::Sent).await;
    w.transition(q, ProposalStatus::Accepted).await;
    folio_testkit::eventually("the owner's second acceptance", || async {
        (w.smtp.to(&w.owner.email).len() == 2).then_some(())
    })
    .await;
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.smtp.to(&w.editor.email).len(), 1, "the editor unsubscribed");
    assert_eq!(w.smtp.to(&w.viewer.email).len(), 2, "the viewer did not");
    notifier.stop().await;
    w.cleanup().await;
}

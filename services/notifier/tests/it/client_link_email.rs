//! The client's link (issue 20) through the whole path: the API's send issues it in the sending
//! transaction → wal-ingest → JetStream → notifier → the email in the SMTP sink carries
//! `<public base>/p/<token>`, a token that opens exactly that link, while neither the change
//! stream nor the delivery rows ever hold it. Then the client's open and answer flow back out
//! as `proposal.viewed` and `proposal.declined` webhooks like any transition.

use std::time::Duration;

use folio_auth::client_link::{ClientLinkKey, TEST_CLIENT_LINK_SECRET, TokenHash};
use folio_domain::ProposalStatus;
use proposals_api::store::client_links::{self, LinkIssuer};
use serde_json::json;

use crate::helpers::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sent_email_carries_the_client_link_and_the_clients_answers_become_webhooks() {
    let mut w = World::new().await.unwrap();
    w.js.delete_stream(&w.stream).await.unwrap();
    w.add_endpoint("/client", &["proposal.viewed", "proposal.declined"], json!({})).await;
    let ingest = w.sandbox.wal_ingest_config();
    w.sandbox.start_wal_ingest(ingest).await.expect("wal-ingest streams its slot");
    let config = w.config();
    let public_base = config.public_base_url.trim_end_matches('/').to_owned();
    let notifier = w.spawn_with(config).await;

    // The notifier's Config::new and the API's share the test secret, as production shares one.
    let issuer =
        LinkIssuer { key: ClientLinkKey::new(TEST_CLIENT_LINK_SECRET.as_bytes()), ttl: Duration::from_secs(3600) };
    let p = w.new_proposal("Linked", None).await;
    client_links::transition(&w.db.pool, &issuer, w.agency, p, ProposalStatus::Sent, None).await.unwrap();
    folio_testkit::eventually("the client's email", || async { (w.smtp.to(&w.client_email).len() == 1).then_some(()) })
        .await;

    let mail = w.smtp.to(&w.client_email).remove(0);
    let text = mail.text();
    let prefix = format!("{public_base}/p/");
    let start = text.find(&prefix).unwrap_or_else(|| panic!("no client link in {text}")) + prefix.len();
    let token: String =
        text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    assert_eq!(token.len(), 43, "{text}");
    assert!(!text.contains(&format!("/p/{p}")), "the proposal's id is no longer the link");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_sha256 FROM client_links WHERE proposal_id = $1")
        .bind(p.as_uuid())
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    let hash = TokenHash::of(&token).expect("a well-formed token");
    assert!(hash.matches(&stored), "the emailed token is the link's");

    // The token is in the email only: not in a delivery row, not in any message on the stream.
    let in_deliveries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notification_deliveries WHERE payload::text LIKE '%' || $1 || '%'")
            .bind(&token)
            .fetch_one(&w.db.pool)
            .await
            .unwrap();
    assert_eq!(in_deliveries, 0);
    let mut stream = w.js.get_stream(&w.stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    assert!(last > 0);
    for seq in 1..=last {
        if let Ok(message) = stream.get_raw_message(seq).await {
            let payload = String::from_utf8_lossy(&message.payload);
            assert!(!payload.contains(&token), "message {seq} carries the token");
        }
    }

    // The client opens the page, then declines: both are transitions, so both become events.
    let (_, view) = client_links::record_view(&w.db.pool, &hash, "desktop").await.unwrap().value;
    assert_eq!(view.proposal.status, "viewed");
    client_links::decline(&w.db.pool, &hash, Some("Over budget")).await.unwrap();
    folio_testkit::eventually("the viewed and declined webhooks", || async {
        (w.receiver.accepted("/client").await.len() == 2).then_some(())
    })
    .await;
    let hooks = w.receiver.accepted("/client").await;
    // Deliveries to one endpoint are not ordered between events: find each by its type.
    let mut types: Vec<&str> = hooks.iter().map(|h| h.event_type()).collect();
    types.sort();
    assert_eq!(types, ["proposal.declined", "proposal.viewed"]);
    let declined = hooks.iter().find(|h| h.event_type() == "proposal.declined").unwrap();
    assert_eq!(declined.payload.as_ref().unwrap()["data"]["previous_status"], "viewed");
    let declined = folio_testkit::eventually("the owner hears of the view and the decline", || async {
        let mails = w.smtp.to(&w.owner.email);
        let viewed = mails.iter().any(|m| m.event() == "proposal.viewed");
        mails.into_iter().find(|m| m.event() == "proposal.declined").filter(|_| viewed)
    })
    .await;
    // The client's reason reaches the agency (the text part is plain UTF-8 or quoted-printable).
    let text = declined.text();
    assert!(text.contains("Their reason:") && text.contains("Over budget"), "{text}");
    w.settled().await;

    notifier.stop().await;
    w.sandbox.stop().await;
}

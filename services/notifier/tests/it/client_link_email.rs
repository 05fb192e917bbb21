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

/// The PDF attached to `mail` (lettre writes it base64-encoded, as the one application/pdf part):
/// (file name, bytes).
fn pdf_attachment(mail: &crate::helpers::Mail) -> Option<(String, Vec<u8>)> {
    use base64::Engine as _;
    let raw = mail.raw.replace("\r\n", "\n");
    let part = raw.split("\n--").find(|part| part.contains("Content-Type: application/pdf"))?;
    let (head, body) = part.split_once("\n\n")?;
    let name = head.split("filename=\"").nth(1)?.split('"').next()?.to_owned();
    let b64: String = body.lines().take_while(|l| !l.starts_with("--")).collect::<String>();
    Some((name, base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acceptance_on_the_page_emails_the_signed_copy_to_both_sides_and_its_webhook_carries_the_signature() {
    let mut w = World::new().await.unwrap();
    w.js.delete_stream(&w.stream).await.unwrap();
    w.add_endpoint("/accepted", &["proposal.accepted"], json!({})).await;
    let ingest = w.sandbox.wal_ingest_config();
    w.sandbox.start_wal_ingest(ingest).await.expect("wal-ingest streams its slot");
    let render = w.sandbox.pdf_render_config();
    w.sandbox.start_pdf_render(render.clone()).await.expect("pdf-render consumes the jobs stream");
    let notifier = w.spawn_with(w.config()).await;

    // Sent with its link; the version the client sees rendered, as their page asks for it.
    let key = ClientLinkKey::new(TEST_CLIENT_LINK_SECRET.as_bytes());
    let issuer = LinkIssuer { key: key.clone(), ttl: Duration::from_secs(3600) };
    let p = w.new_proposal("Signed and sealed", None).await;
    let sent = client_links::transition(&w.db.pool, &issuer, w.agency, p, ProposalStatus::Sent, None).await.unwrap();
    let requeue = proposals_api::store::renditions::DEFAULT_REQUEUE_AFTER;
    let r = proposals_api::store::renditions::request(&w.db.pool, w.agency, w.owner.id, p, String::new(), requeue)
        .await
        .unwrap();
    let shown: String = folio_testkit::eventually("the sent version's PDF", || async {
        sqlx::query_scalar("SELECT pdf_sha256 FROM pdf_renditions WHERE id = $1 AND status = 'ready'")
            .bind(r.rendition_id)
            .fetch_optional(&w.db.pool)
            .await
            .unwrap()
    })
    .await;
    let link: uuid::Uuid = sqlx::query_scalar("SELECT id FROM client_links WHERE proposal_id = $1")
        .bind(p.as_uuid())
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    let hash = TokenHash::of(&key.token(link)).unwrap();
    let signature = client_links::Signature {
        signer_name: "Jordan Reyes".into(),
        proposal_version: sent.value.proposal.version,
        pdf_sha256: shown.clone(),
        ip_address: Some("198.51.100.23".parse().unwrap()),
        user_agent: "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148".into(),
    };
    client_links::accept(&w.db.pool, &hash, &signature).await.unwrap();

    // The webhook carries the signature record.
    let hook = folio_testkit::eventually("the accepted webhook", || async {
        w.receiver.accepted("/accepted").await.into_iter().next()
    })
    .await;
    let data = &hook.payload.as_ref().unwrap()["data"];
    let sig = &data["signature"];
    assert_eq!(sig["signer_name"], "Jordan Reyes", "{data}");
    assert_eq!(sig["document_sha256"], shown.as_str());
    assert_eq!(sig["proposal_version"], sent.value.proposal.version);
    assert_eq!(sig["link_id"], link.to_string());
    assert_eq!(sig["ip_address"], "198.51.100.23");
    assert_eq!(sig["consent"], true);

    // The client and the owner each get the signed copy, the same file as the one stored.
    let mails = folio_testkit::eventually("the signed copy emails", || async {
        let client = w.smtp.to(&w.client_email).into_iter().find(|m| m.event() == "proposal.accepted")?;
        let owner = w.smtp.to(&w.owner.email).into_iter().find(|m| m.event() == "proposal.accepted")?;
        Some((client, owner))
    })
    .await;
    let (client_name, client_pdf) = pdf_attachment(&mails.0).unwrap_or_else(|| panic!("no PDF in {}", mails.0.raw));
    let (owner_name, owner_pdf) = pdf_attachment(&mails.1).unwrap_or_else(|| panic!("no PDF in {}", mails.1.raw));
    assert_eq!(client_name, format!("signed-and-sealed-v{}-signed.pdf", sent.value.proposal.version));
    assert_eq!(client_name, owner_name);
    assert!(client_pdf == owner_pdf, "both sides get the same signed copy");
    let stored: String = sqlx::query_scalar("SELECT pdf_sha256 FROM signed_copies WHERE proposal_id = $1")
        .bind(p.as_uuid())
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    let attached: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&client_pdf).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(attached, stored);
    assert!(client_pdf.starts_with(b"%PDF-"));
    // The client's email speaks to them and links their own page, never an internal id.
    let text = mails.0.text();
    assert!(text.contains("You accepted") && text.contains("signed copy is attached"), "{text}");
    assert!(text.contains("/p/") && !text.contains(&p.to_string()), "{text}");
    w.settled().await;

    notifier.stop().await;
    w.sandbox.stop().await;
}

//! The client's side (issue 20): capability links and the public routes they open, over real
//! HTTP against the real API and PostgreSQL. Proposals are sent through the API's own
//! `TransitionProposal`, which issues the link; the token is derived from the link's id as the
//! notifier derives it for the email.

use std::time::Duration;

use folio_auth::client_link::{ClientLinkKey, TEST_CLIENT_LINK_SECRET};
use folio_proto::api::v1::{self as pb, ProposalStatus};
use serde_json::{Value, json};
use sha2::Digest as _;
use uuid::Uuid;

use crate::helpers::{Session, TestApp, create_client, create_proposal, item, spawn_app};

fn key() -> ClientLinkKey {
    ClientLinkKey::new(TEST_CLIENT_LINK_SECRET.as_bytes())
}

async fn transition(session: &Session, id: &str, to: ProposalStatus) -> pb::Proposal {
    session
        .proposals
        .clone()
        .transition_proposal(pb::TransitionProposalRequest { id: id.into(), to: to as i32, expected_version: 0 })
        .await
        .expect("transition")
        .into_inner()
        .proposal
        .unwrap()
}

async fn status_of(session: &Session, id: &str) -> pb::Proposal {
    session
        .proposals
        .clone()
        .get_proposal(pb::GetProposalRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap()
}

/// A sent proposal of the editor's agency and the token of the link its send issued.
async fn sent(app: &TestApp, session: &Session, title: &str) -> (pb::Proposal, String) {
    let client = create_client(session, &format!("Client {}", &folio_testkit::unique_suffix()[..6])).await;
    let p = create_proposal(session, &client, title, vec![item("Design", 2_000, 150_000, 200_000)]).await;
    let p = transition(session, &p.id, ProposalStatus::Sent).await;
    let token = current_token(app, &p.id).await;
    (p, token)
}

async fn current_token(app: &TestApp, proposal: &str) -> String {
    let id: Uuid = sqlx::query_scalar(
        "SELECT id FROM client_links WHERE proposal_id = $1::uuid AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1",
    )
    .bind(proposal)
    .fetch_one(&app.db.pool)
    .await
    .expect("a live link");
    key().token(id)
}

/// What pdf-render records when it has rendered a version: the accept check compares with it.
async fn rendered(app: &TestApp, proposal: &str, version: i64, pdf: &[u8]) -> String {
    let sha = hex(&sha2::Sha256::digest(pdf));
    sqlx::query(
        "INSERT INTO pdf_renditions (id, agency_id, proposal_id, proposal_version, template_sha256, status, pdf_sha256, \
         size_bytes, page_count, rendered_at) SELECT $1, agency_id, id, $2, 'test', 'ready', $3, $4, 1, now() \
         FROM proposals WHERE id = $5::uuid",
    )
    .bind(Uuid::now_v7())
    .bind(version)
    .bind(&sha)
    .bind(pdf.len() as i64)
    .bind(proposal)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sha
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(addr: std::net::SocketAddr) -> Self {
        Self { base: format!("http://{addr}"), client: reqwest::Client::new() }
    }

    async fn get(&self, token: &str) -> (u16, String) {
        let r = self.client.get(format!("{}/v1/client/{token}", self.base)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, token: &str, action: &str, body: Value, ua: &str, ip: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/client/{token}/{action}", self.base))
            .header("user-agent", ua)
            .header("x-forwarded-for", ip)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

const DESKTOP: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36";
const PHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148";

#[tokio::test]
async fn a_send_issues_a_hashed_link_and_the_page_shows_the_proposal_without_internal_ids() {
    let app = spawn_app().await;
    let http = Http::new(app.addr);
    let (p, token) = sent(&app, &app.editor, "Website redesign").await;
    assert_eq!(token.len(), 43, "32 bytes, base64url");

    let (recipient, issued_version, stored): (String, i64, Vec<u8>) = sqlx::query_as(
        "SELECT l.recipient, l.issued_version, l.token_sha256 FROM client_links l WHERE l.proposal_id = $1::uuid",
    )
    .bind(&p.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(recipient.ends_with("@client.test"), "{recipient}");
    assert_eq!(issued_version, p.version, "the version the send produced");
    assert_eq!(stored, sha2::Sha256::digest(base64_decode(&token)).to_vec(), "only the SHA-256 is stored");

    let (status, body) = http.get(&token).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["title"], "Website redesign");
    assert_eq!(page["agency"]["name"], "Northwind Studio");
    assert_eq!(page["agency"]["brand_color"], "#0b6e4f");
    assert_eq!(page["state"], "open");
    assert_eq!(page["terms"], "50 % upfront.");
    assert_eq!(page["valid_until"], "2027-01-31");
    assert_eq!(page["line_items"][0]["description"], "Design");
    assert_eq!(page["total_minor"], p.totals.as_ref().unwrap().total_minor);
    assert_eq!(page["total"], "3,600.00");
    assert_eq!(page["version"], p.version);
    // No internal id of any kind: proposal, agency, client, owner, line item, link.
    let link_id: Uuid = sqlx::query_scalar("SELECT id FROM client_links WHERE proposal_id = $1::uuid")
        .bind(&p.id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    for id in [p.id.clone(), p.client_id.clone(), p.owner_id.clone(), link_id.to_string(), p.line_items[0].id.clone()] {
        assert!(!body.contains(&id), "the page names {id}: {body}");
    }
    assert!(!body.contains(&app.editor.caller.agency_id.to_string()));
    // A GET records nothing: only the page's explicit open does.
    assert_eq!(status_of(&app.editor, &p.id).await.status(), ProposalStatus::Sent);
}

fn base64_decode(token: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap()
}

#[tokio::test]
async fn wrong_expired_revoked_tampered_and_archived_links_all_get_the_same_answer() {
    let app = spawn_app().await;
    let http = Http::new(app.addr);
    let (_, valid) = sent(&app, &app.editor, "Valid").await;
    assert_eq!(http.get(&valid).await.0, 200);

    let wrong = key().token(Uuid::new_v4());
    let mut tampered = valid.clone().into_bytes();
    tampered[10] = if tampered[10] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();

    let (expired_p, expired) = sent(&app, &app.editor, "Expired").await;
    sqlx::query("UPDATE client_links SET expires_at = now() - interval '1 second' WHERE proposal_id = $1::uuid")
        .bind(&expired_p.id)
        .execute(&app.db.pool)
        .await
        .unwrap();

    let (withdrawn_p, withdrawn) = sent(&app, &app.editor, "Withdrawn").await;
    transition(&app.editor, &withdrawn_p.id, ProposalStatus::Withdrawn).await;

    let (archived_p, archived) = sent(&app, &app.editor, "Archived").await;
    app.editor
        .proposals
        .clone()
        .archive_proposal(pb::ArchiveProposalRequest { id: archived_p.id.clone(), expected_version: 0 })
        .await
        .unwrap();

    // Sent again after a withdrawal: a new link, the old one dead.
    let (resent_p, before) = sent(&app, &app.editor, "Resent").await;
    transition(&app.editor, &resent_p.id, ProposalStatus::Withdrawn).await;
    transition(&app.editor, &resent_p.id, ProposalStatus::Draft).await;
    transition(&app.editor, &resent_p.id, ProposalStatus::Sent).await;
    let after = current_token(&app, &resent_p.id).await;
    assert_ne!(before, after);
    assert_eq!(http.get(&after).await.0, 200, "the re-issued link works");

    let generic = r#"{"code":"not_found","message":"this link is not valid"}"#;
    for (what, token) in [
        ("wrong", wrong.as_str()),
        ("tampered", tampered.as_str()),
        ("malformed", "not-a-token"),
        ("truncated", &valid[..42]),
        ("expired", expired.as_str()),
        ("revoked by a withdrawal", withdrawn.as_str()),
        ("revoked by archiving", archived.as_str()),
        ("replaced by a new send", before.as_str()),
    ] {
        assert_eq!(http.get(token).await, (404, generic.to_owned()), "{what}");
        for action in ["view", "accept", "decline"] {
            let body =
                json!({"signer_name": "Eve", "consent": true, "proposal_version": 1, "pdf_sha256": "0".repeat(64)});
            let (status, answer) = http.post(token, action, body, DESKTOP, "198.51.100.1").await;
            assert_eq!((status, answer.to_string()), (404, generic.to_owned()), "{what} {action}");
        }
        let pdf = reqwest::get(format!("{}/v1/client/{token}/pdf", http.base)).await.unwrap();
        assert_eq!(pdf.status().as_u16(), 404, "{what} pdf");
    }
    assert_eq!(status_of(&app.editor, &withdrawn_p.id).await.status(), ProposalStatus::Withdrawn);
}

#[tokio::test]
async fn a_link_reaches_only_its_own_proposal() {
    let app = spawn_app().await;
    let http = Http::new(app.addr);
    let (mine, token) = sent(&app, &app.editor, "Mine").await;
    let (theirs, _) = sent(&app, &app.editor, "Same agency, other client").await;
    let (outsider, _) = sent(&app, &app.outsider, "Other agency").await;

    let (_, page) = http.post(&token, "view", json!({}), DESKTOP, "198.51.100.2").await;
    assert_eq!(page["title"], "Mine");
    // The routes take the token and nothing else: no id of another proposal can be put in.
    for path in [format!("{token}/{}", theirs.id), outsider.id.clone(), format!("{token}?id={}", theirs.id)] {
        let r = reqwest::get(format!("{}/v1/client/{path}", http.base)).await.unwrap();
        let (status, body) = (r.status().as_u16(), r.text().await.unwrap());
        assert!(!body.contains("Same agency") && !body.contains("Other agency"), "{path}: {body}");
        if path.contains('?') {
            assert_eq!(status, 200, "a query is ignored: still the link's own proposal");
        } else {
            // No route: answered by the API's fallback (404 or the gRPC-Web layer's 400).
            assert!(matches!(status, 400 | 404), "{path}: {status}");
        }
    }
    let pdf_sha = rendered(&app, &mine.id, page["version"].as_i64().unwrap(), b"%PDF-mine").await;
    let body = json!({"signer_name": "Ada Lovelace", "consent": true, "proposal_version": page["version"], "pdf_sha256": pdf_sha});
    assert_eq!(http.post(&token, "accept", body, DESKTOP, "198.51.100.2").await.0, 200);

    assert_eq!(status_of(&app.editor, &mine.id).await.status(), ProposalStatus::Accepted);
    assert_eq!(status_of(&app.editor, &theirs.id).await.status(), ProposalStatus::Sent);
    assert_eq!(status_of(&app.outsider, &outsider.id).await.status(), ProposalStatus::Sent);
    let views: Vec<(String,)> = sqlx::query_as(
        "SELECT p.title FROM proposal_views v JOIN proposals p ON p.id = v.proposal_id ORDER BY v.viewed_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(views, vec![("Mine".to_owned(),)]);
}

#[tokio::test]
async fn the_first_open_moves_sent_to_viewed_and_every_open_is_recorded_with_a_device_class() {
    let app = spawn_app().await;
    let http = Http::new(app.addr);
    let (p, token) = sent(&app, &app.editor, "Tracked").await;

    let (status, first) = http.post(&token, "view", json!({}), PHONE, "203.0.113.9").await;
    assert_eq!(status, 200, "{first}");
    assert!(first["txid"].as_u64().unwrap() > 0, "the move to viewed committed");
    let viewed = status_of(&app.editor, &p.id).await;
    assert_eq!(viewed.status(), ProposalStatus::Viewed);
    assert_eq!(viewed.version, p.version + 1, "one transition, as TransitionProposal makes it");
    assert_eq!(first["version"], viewed.version);

    let (_, second) = http.post(&token, "view", json!({}), DESKTOP, "203.0.113.9").await;
    assert_eq!(second["state"], "open");
    assert_eq!(status_of(&app.editor, &p.id).await.version, viewed.version, "later opens change nothing");

    let opens: Vec<(String,)> =
        sqlx::query_as("SELECT device_class FROM proposal_views WHERE proposal_id = $1::uuid ORDER BY viewed_at")
            .bind(&p.id)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(opens, vec![("mobile".to_owned(),), ("desktop".to_owned(),)]);
    // No address anywhere in what a view keeps.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'proposal_views'",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(!columns.iter().any(|c| c.contains("ip") || c.contains("agent")), "{columns:?}");
}

#[tokio::test]
async fn accepting_a_changed_version_or_another_pdf_is_refused_and_a_signature_is_recorded() {
    let app = spawn_app().await;
    let http = Http::new(app.addr);
    let (p, token) = sent(&app, &app.editor, "Signed").await;
    // The page was read before any open was recorded (another tab then opened it: version + 1).
    let (_, shown) = http.get(&token).await;
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let (_, now) = http.post(&token, "view", json!({}), DESKTOP, "192.0.2.10").await;
    let current = now["version"].as_i64().unwrap();
    assert_eq!(current, shown["version"].as_i64().unwrap() + 1);
    let pdf_sha = rendered(&app, &p.id, current, b"%PDF-1.7 the shown bytes").await;

    let accept = |version: Value, sha: &str, name: &str, consent: bool| json!({"signer_name": name, "consent": consent, "proposal_version": version, "pdf_sha256": sha});
    let (status, refused) = http
        .post(&token, "accept", accept(shown["version"].clone(), &pdf_sha, "Grace Hopper", true), DESKTOP, "192.0.2.10")
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "conflict");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("changed since you opened it") && message.contains("reload"), "{message}");

    let other_pdf = hex(&sha2::Sha256::digest(b"other bytes"));
    let (status, refused) = http
        .post(&token, "accept", accept(json!(current), &other_pdf, "Grace Hopper", true), DESKTOP, "192.0.2.10")
        .await;
    assert_eq!((status, refused["message"].as_str().unwrap().contains("PDF")), (409, true), "{refused}");

    let (status, refused) = http
        .post(&token, "accept", accept(json!(current), &pdf_sha, "Grace Hopper", false), DESKTOP, "192.0.2.10")
        .await;
    assert_eq!(status, 400);
    assert!(refused["message"].as_str().unwrap().contains("tick the box"), "{refused}");
    let (status, _) =
        http.post(&token, "accept", accept(json!(current), &pdf_sha, " ", true), DESKTOP, "192.0.2.10").await;
    assert_eq!(status, 400, "a typed name is required");
    assert_eq!(status_of(&app.editor, &p.id).await.status(), ProposalStatus::Viewed, "nothing was signed");

    let (status, page) = http
        .post(&token, "accept", accept(json!(current), &pdf_sha, "Grace Hopper", true), DESKTOP, "10.0.0.1, 192.0.2.10")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["state"], "accepted");
    assert_eq!(page["response"]["signer_name"], "Grace Hopper");
    assert_eq!(status_of(&app.editor, &p.id).await.status(), ProposalStatus::Accepted, "the agency sees it");

    let record: (String, String, i64, String, bool, String, String, Uuid) = sqlx::query_as(
        "SELECT r.decision, r.signer_name, r.proposal_version, r.pdf_sha256, r.consent, host(r.ip_address), r.user_agent, \
         r.link_id FROM proposal_responses r WHERE r.proposal_id = $1::uuid",
    )
    .bind(&p.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let link_id: Uuid = sqlx::query_scalar("SELECT id FROM client_links WHERE proposal_id = $1::uuid")
        .bind(&p.id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        record,
        (
            "accepted".into(),
            "Grace Hopper".into(),
            current,
            pdf_sha,
            true,
            "192.0.2.10".into(),
            DESKTOP.into(),
            link_id
        )
    );

    // Answered: declining afterwards is refused in words.
    let (status, refused) = http.post(&token, "decline", json!({"reason": "too late"}), DESKTOP, "192.0.2.10").await;
    assert_eq!((status, refused["message"].as_str()), (412, Some("this proposal was already accepted")));
}

#[tokio::test]
async fn two_tabs_accepting_at_once_record_one_signature() {
    let app = spawn_app().await;
    let http = Http::new(app.addr);
    for round in 0..3 {
        let (p, token) = sent(&app, &app.editor, &format!("Race {round}")).await;
        let (_, page) = http.post(&token, "view", json!({}), DESKTOP, "192.0.2.20").await;
        let version = page["version"].as_i64().unwrap();
        let sha = rendered(&app, &p.id, version, format!("%PDF race {round}").as_bytes()).await;
        let body =
            |name: &str| json!({"signer_name": name, "consent": true, "proposal_version": version, "pdf_sha256": sha});
        let (a, b) = tokio::join!(
            http.post(&token, "accept", body("Tab One"), DESKTOP, "192.0.2.20"),
            http.post(&token, "accept", body("Tab Two"), DESKTOP, "192.0.2.21"),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 412], "{a:?} {b:?}");
        let signatures: i64 =
            sqlx::query_scalar("SELECT count(*) FROM proposal_responses WHERE proposal_id = $1::uuid")
                .bind(&p.id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(signatures, 1);
        let accepted = status_of(&app.editor, &p.id).await;
        assert_eq!((accepted.status(), accepted.version), (ProposalStatus::Accepted, version + 1), "accepted once");
    }
}

#[tokio::test]
async fn declining_records_the_reason() {
    let app = spawn_app().await;
    let http = Http::new(app.addr);
    let (p, token) = sent(&app, &app.editor, "Declined").await;
    let (status, page) =
        http.post(&token, "decline", json!({"reason": "Over our budget"}), DESKTOP, "192.0.2.30").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["state"].as_str(), page["response"]["decline_reason"].as_str()),
        (Some("declined"), Some("Over our budget"))
    );
    assert_eq!(status_of(&app.editor, &p.id).await.status(), ProposalStatus::Declined);
    let stored: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT host(ip_address), user_agent FROM proposal_responses WHERE proposal_id = $1::uuid")
            .bind(&p.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, (None, None), "a decline is no signature: no address kept");
}

#[tokio::test]
async fn the_rate_limits_hold_per_link_and_per_address() {
    let db = folio_testkit::TestDb::new().await.expect("test database");
    let mut config = proposals_api::Config::new(db.url.clone(), crate::helpers::SECRET);
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.common.shutdown_grace = Duration::from_secs(1);
    config.bus.nats_url = folio_testkit::nats_url();
    config.limits.rate_limits = true;
    config.limits.quota.rate_bucket = format!("test-rates-{}", folio_testkit::unique_suffix());
    config.client.client_link_requests_per_min = 5;
    config.client.client_address_requests_per_min = 12;
    let issuer = config.client.issuer();
    let api = proposals_api::bind(config).await.expect("bind the API");
    let http = Http::new(api.addr());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(api.run(shutdown.clone()));
    let _stop = shutdown.clone().drop_guard();

    // Two sent proposals, sent through the store as the API's transition sends them.
    use folio_domain::ProposalStatus as S;
    use proposals_api::{Role, store, tenancy};
    let agency = tenancy::create_agency(&db.pool, "Limited", "#123456").await.unwrap();
    let owner = tenancy::create_user(&db.pool, agency, "o@limited.test", "O", Role::Editor).await.unwrap();
    let mut tokens = Vec::new();
    for n in 0..2 {
        let fields = store::clients::ClientFields {
            name: format!("C{n}"),
            email: format!("c{n}@x.test"),
            company: String::new(),
        };
        let client = store::clients::create(&db.pool, agency, fields).await.unwrap();
        let new = store::proposals::NewProposal {
            client_id: client.value.id.into(),
            template_id: None,
            title: format!("P{n}"),
            currency: "EUR".into(),
            valid_until: None,
            content: String::new(),
            terms: String::new(),
            line_items: vec![store::proposals::NewLineItem {
                description: "x".into(),
                amounts: folio_domain::LineItemAmounts::parse(1_000, 100, 0).unwrap(),
            }],
        };
        let p = store::proposals::create(&db.pool, agency, owner, new, None).await.unwrap();
        let id = folio_domain::ProposalId::from(p.proposal.id);
        store::client_links::transition(&db.pool, &issuer, agency, id, S::Sent, None).await.unwrap();
        let link: Uuid = sqlx::query_scalar("SELECT id FROM client_links WHERE proposal_id = $1")
            .bind(p.proposal.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        tokens.push(key().token(link));
    }
    let get = |token: String, ip: &'static str| {
        let client = http.client.clone();
        let url = format!("{}/v1/client/{token}", http.base);
        async move { client.get(url).header("x-forwarded-for", ip).send().await.unwrap() }
    };
    // Per link: 5 a minute, from any address.
    for i in 0..5 {
        let ip = ["192.0.2.1", "192.0.2.2"][i % 2];
        assert_eq!(get(tokens[0].clone(), ip).await.status().as_u16(), 200, "request {i}");
    }
    let limited = get(tokens[0].clone(), "192.0.2.3").await;
    assert_eq!(limited.status().as_u16(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body = limited.text().await.unwrap();
    assert!(!body.contains(&tokens[0]), "the token is not echoed: {body}");
    assert_eq!(get(tokens[1].clone(), "192.0.2.3").await.status().as_u16(), 200, "another link has its own budget");

    // Per address: 12 a minute whatever the link, wrong tokens included.
    let guesser = "198.51.100.77";
    let mut answers = Vec::new();
    for _ in 0..14 {
        answers.push(get(key().token(Uuid::new_v4()), guesser).await.status().as_u16());
    }
    assert_eq!(answers[..12], [404; 12]);
    assert_eq!(answers[12..], [429, 429]);
    assert_eq!(
        get(tokens[1].clone(), guesser).await.status().as_u16(),
        429,
        "the address is limited on a good link too"
    );
}

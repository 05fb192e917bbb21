//! Every RPC's happy path.

use folio_proto::api::v1::{self as pb, ProposalStatus};

use crate::helpers::{JobSlot, create_client, create_proposal, item, spawn_app};

#[tokio::test]
async fn clients_crud() {
    let app = spawn_app().await;
    let mut clients = app.editor.clients.clone();
    let created = create_client(&app.editor, "Ada Lovelace").await;
    assert_eq!(created.agency_id, app.editor.caller.agency_id.to_string());

    let got = clients.get_client(pb::GetClientRequest { id: created.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.client.unwrap().email, "ada.lovelace@client.test");

    let updated = clients
        .update_client(pb::UpdateClientRequest {
            id: created.id.clone(),
            company: Some("Analytical Engines".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .client
        .unwrap();
    assert_eq!((updated.name.as_str(), updated.company.as_str()), ("Ada Lovelace", "Analytical Engines"));

    for n in 0..4 {
        create_client(&app.editor, &format!("Client {n}")).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = clients
            .list_clients(pb::ListClientsRequest { page_size: 2, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(page.clients.len() <= 2);
        seen.extend(page.clients.into_iter().map(|c| c.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5, "every client exactly once across pages");
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 5);

    clients.delete_client(pb::DeleteClientRequest { id: created.id.clone() }).await.unwrap();
    let gone = clients.get_client(pb::GetClientRequest { id: created.id }).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn templates_crud() {
    let app = spawn_app().await;
    let mut templates = app.editor.templates.clone();
    let t = templates
        .create_template(pb::CreateTemplateRequest { name: "Classic".into(), body: "= #data.title".into() })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_eq!(t.body_sha256.len(), 64);
    let t2 = templates
        .update_template(pb::UpdateTemplateRequest { id: t.id.clone(), body: Some("= Changed".into()), name: None })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    assert_ne!(t.body_sha256, t2.body_sha256, "hash follows the body");
    assert_eq!(t2.name, "Classic");
    let got = templates.get_template(pb::GetTemplateRequest { id: t.id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.template.unwrap().body, "= Changed");
    let list = templates.list_templates(pb::ListTemplatesRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.templates.len(), 1);

    // In use by a proposal: cannot be deleted.
    let client = create_client(&app.editor, "Grace Hopper").await;
    let p = app
        .editor
        .proposals
        .clone()
        .create_proposal(pb::CreateProposalRequest {
            client_id: client.id,
            title: "Compiler".into(),
            currency: "USD".into(),
            template_id: t.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(p.template_id, t.id);
    let in_use = templates.delete_template(pb::DeleteTemplateRequest { id: t.id.clone() }).await.unwrap_err();
    assert_eq!(in_use.code(), tonic::Code::FailedPrecondition);

    let spare = templates
        .create_template(pb::CreateTemplateRequest { name: "Spare".into(), body: "x".into() })
        .await
        .unwrap()
        .into_inner()
        .template
        .unwrap();
    templates.delete_template(pb::DeleteTemplateRequest { id: spare.id }).await.unwrap();
}

#[tokio::test]
async fn proposal_lifecycle_with_line_items_and_totals() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    let client = create_client(&app.editor, "Alan Turing").await;
    // 2 × 1,000.00 at 20 % and 1.5 × 0.33 at 7 %.
    let p = create_proposal(
        &app.editor,
        &client,
        "Website redesign",
        vec![item("Design", 2_000, 100_000, 200_000), item("Hosting", 1_500, 33, 70_000)],
    )
    .await;
    assert_eq!(p.status(), ProposalStatus::Draft);
    assert_eq!(p.version, 1);
    assert_eq!(p.line_items.len(), 2);
    let totals = p.totals.unwrap();
    assert_eq!((totals.subtotal_minor, totals.tax_minor, totals.total_minor), (200_050, 40_004, 240_054));

    let got =
        api.get_proposal(pb::GetProposalRequest { id: p.id.clone() }).await.unwrap().into_inner().proposal.unwrap();
    assert_eq!(got, p);

    let updated = api
        .update_proposal(pb::UpdateProposalRequest {
            id: p.id.clone(),
            expected_version: 1,
            title: Some("Website redesign and hosting".into()),
            valid_until: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(
        (updated.version, updated.title.as_str(), updated.valid_until.as_str()),
        (2, "Website redesign and hosting", "")
    );

    let added = api
        .add_line_item(pb::AddLineItemRequest {
            proposal_id: p.id.clone(),
            line_item: Some(item("Support", 1_000, 5_000, 0)),
            expected_version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    let after_add = added.proposal.unwrap();
    assert_eq!(after_add.line_items.len(), 3);
    assert_eq!(after_add.line_items[2].position, 3);
    assert_eq!(after_add.totals.unwrap().total_minor, 245_054);

    let changed = api
        .update_line_item(pb::UpdateLineItemRequest {
            proposal_id: p.id.clone(),
            line_item_id: added.line_item_id.clone(),
            quantity_milli: Some(3_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(changed.totals.unwrap().total_minor, 255_054);

    let hosting = changed.line_items[1].id.clone();
    let removed = api
        .remove_line_item(pb::RemoveLineItemRequest {
            proposal_id: p.id.clone(),
            line_item_id: hosting,
            expected_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    let t = removed.totals.unwrap();
    assert_eq!((t.subtotal_minor, t.tax_minor, t.total_minor), (215_000, 40_000, 255_000));
    assert_eq!(removed.version, 5);

    let mut status = removed;
    for to in [ProposalStatus::Sent, ProposalStatus::Viewed, ProposalStatus::Accepted] {
        status = api
            .transition_proposal(pb::TransitionProposalRequest {
                id: p.id.clone(),
                to: to as i32,
                expected_version: status.version,
            })
            .await
            .unwrap()
            .into_inner()
            .proposal
            .unwrap();
        assert_eq!(status.status(), to);
    }
    assert!(status.sent_at.is_some() && status.viewed_at.is_some() && status.accepted_at.is_some());

    let archived = api
        .archive_proposal(pb::ArchiveProposalRequest { id: p.id.clone(), expected_version: status.version })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert!(archived.archived_at.is_some());
    let listed = api.list_proposals(pb::ListProposalsRequest::default()).await.unwrap().into_inner();
    assert!(listed.proposals.is_empty(), "archived proposals are hidden by default");
    let listed = api
        .list_proposals(pb::ListProposalsRequest { include_archived: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.proposals.len(), 1);
}

#[tokio::test]
async fn withdraw_and_reopen() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    let client = create_client(&app.editor, "Barbara Liskov").await;
    let p = create_proposal(&app.editor, &client, "Audit", vec![item("Audit", 1_000, 90_000, 0)]).await;
    for to in [ProposalStatus::Sent, ProposalStatus::Withdrawn, ProposalStatus::Draft] {
        let moved = api
            .transition_proposal(pb::TransitionProposalRequest { id: p.id.clone(), to: to as i32, expected_version: 0 })
            .await
            .unwrap()
            .into_inner()
            .proposal
            .unwrap();
        assert_eq!(moved.status(), to);
    }
}

#[tokio::test]
async fn list_filters_and_paginates() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    let a = create_client(&app.editor, "Client A").await;
    let b = create_client(&app.editor, "Client B").await;
    let mut sent = Vec::new();
    for n in 0..7 {
        let client = if n % 2 == 0 { &a } else { &b };
        let p = create_proposal(&app.editor, client, &format!("P{n}"), vec![item("x", 1_000, 100, 0)]).await;
        if n < 3 {
            api.transition_proposal(pb::TransitionProposalRequest {
                id: p.id.clone(),
                to: ProposalStatus::Sent as i32,
                expected_version: 0,
            })
            .await
            .unwrap();
            sent.push(p.id);
        }
    }
    let by_status = api
        .list_proposals(pb::ListProposalsRequest { status: ProposalStatus::Sent as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<_> = by_status.proposals.iter().map(|p| p.id.clone()).collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent);

    let by_client = api
        .list_proposals(pb::ListProposalsRequest { client_id: a.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_client.proposals.len(), 4);
    assert!(by_client.proposals.iter().all(|p| p.client_id == a.id));

    let by_owner = api
        .list_proposals(pb::ListProposalsRequest {
            owner_id: app.editor.caller.user_id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_owner.proposals.len(), 7);

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_proposals(pb::ListProposalsRequest { page_size: 3, page_token: token.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        pages.push(page.proposals.iter().map(|p| p.title.clone()).collect::<Vec<_>>());
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, vec![vec!["P6", "P5", "P4"], vec!["P3", "P2", "P1"], vec!["P0"]], "newest first, no gaps");
}

#[tokio::test]
async fn idempotent_create_returns_the_first_result() {
    let app = spawn_app().await;
    let client = create_client(&app.editor, "Retry Co").await;
    let request = pb::CreateProposalRequest {
        idempotency_key: "create-42".into(),
        client_id: client.id.clone(),
        title: "Once".into(),
        currency: "EUR".into(),
        line_items: vec![item("x", 1_000, 1_000, 0)],
        ..Default::default()
    };
    // Eight concurrent retries of the same request.
    let attempts = (0..8).map(|_| {
        let mut api = app.editor.proposals.clone();
        let request = request.clone();
        tokio::spawn(async move { api.create_proposal(request).await.map(|r| r.into_inner().proposal.unwrap().id) })
    });
    let ids: Vec<String> = futures::future::join_all(attempts).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "every retry answers with the first proposal: {ids:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM proposals").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(count, 1);

    // The same key for a different request is refused, not silently answered.
    let mut api = app.editor.proposals.clone();
    let reused =
        api.create_proposal(pb::CreateProposalRequest { title: "Different".into(), ..request }).await.unwrap_err();
    assert_eq!(reused.code(), tonic::Code::InvalidArgument);
    assert!(reused.message().contains("idempotency_key"), "{}", reused.message());
}

#[tokio::test]
async fn request_pdf_writes_rendition_and_job_in_one_transaction() {
    let app = spawn_app().await;
    let pool = &app.db.pool;
    let slot = JobSlot::create(pool).await;

    let client = create_client(&app.editor, "Pdf Co").await;
    let p = create_proposal(&app.editor, &client, "Printable", vec![item("x", 1_000, 1_000, 0)]).await;
    let mut api = app.editor.proposals.clone();
    let first = api.request_pdf(pb::RequestPdfRequest { proposal_id: p.id.clone() }).await.unwrap().into_inner();
    assert_eq!(first.status(), pb::RenditionStatus::Queued);
    assert_eq!(first.proposal_version, 1);
    let again = api.request_pdf(pb::RequestPdfRequest { proposal_id: p.id.clone() }).await.unwrap().into_inner();
    assert_eq!(again.rendition_id, first.rendition_id, "same version and template: same rendition");

    let jobs = slot.pdf_jobs().await;
    slot.drop().await;
    assert_eq!(jobs.len(), 1, "the second request reuses the rendition and queues nothing");
    assert_eq!(jobs[0].rendition_id, first.rendition_id);
    assert_eq!(jobs[0].proposal_id, p.id);
    assert_eq!(jobs[0].proposal_version, 1);
}

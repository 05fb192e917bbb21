//! Every error class: bad input, stale version, illegal transition, cross-agency access,
//! viewer writing, missing and invalid tokens.

use folio_proto::api::v1::{self as pb, ProposalStatus};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{create_client, create_proposal, item, spawn_app};

fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    let details = status.get_details_bad_request().expect("google.rpc.BadRequest details");
    details.field_violations.into_iter().map(|v| (v.field, v.description)).collect()
}

/// Issue 13, finding 9: `valid_until = "0000-01-01"` was accepted and stored as 1 BC, and the
/// notifier then dropped every event of that proposal as unreadable.
#[tokio::test]
async fn a_valid_until_in_year_zero_is_refused_instead_of_stored_as_1_bc() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    for raw in ["0000-01-01", "-0001-06-30", "10000-01-01"] {
        let err = api
            .create_proposal(pb::CreateProposalRequest {
                client_id: uuid::Uuid::now_v7().to_string(),
                title: "t".into(),
                currency: "EUR".into(),
                valid_until: raw.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{raw}");
        assert!(violations(&err).iter().any(|(f, _)| f == "valid_until"), "{raw}: {:?}", violations(&err));
    }
}

#[tokio::test]
async fn bad_input_reports_every_field() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    let err = api
        .create_proposal(pb::CreateProposalRequest {
            client_id: "nope".into(),
            title: String::new(),
            currency: "euro".into(),
            valid_until: "31/01/2027".into(),
            line_items: vec![item("", 0, 100, 2_000_000)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = violations(&err).into_iter().map(|(f, _)| f).collect();
    for expected in
        ["client_id", "title", "currency", "valid_until", "line_items[0].description", "line_items[0].quantity_milli"]
    {
        assert!(fields.iter().any(|f| f == expected), "{expected} missing from {fields:?}");
    }

    // A well-formed id of a client that does not exist.
    let err = api
        .create_proposal(pb::CreateProposalRequest {
            client_id: uuid::Uuid::now_v7().to_string(),
            title: "t".into(),
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err)[0].0, "client_id");

    let err = api.get_proposal(pb::GetProposalRequest { id: "123".into() }).await.unwrap_err();
    assert_eq!(violations(&err)[0].0, "id");
    let err = api
        .list_proposals(pb::ListProposalsRequest { page_token: "garbage!".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violations(&err)[0].0, "page_token");
    let err = api.list_proposals(pb::ListProposalsRequest { page_size: 1000, ..Default::default() }).await.unwrap_err();
    assert_eq!(violations(&err)[0].0, "page_size");

    let mut clients = app.editor.clients.clone();
    let err = clients
        .create_client(pb::CreateClientRequest {
            name: "x".into(),
            email: "not an email".into(),
            company: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err), vec![("email".to_owned(), "is not an email address: \"not an email\"".to_owned())]);

    // Nothing half-written: no proposal exists after the failures.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM proposals").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn stale_version_is_aborted_with_the_current_version() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    let client = create_client(&app.editor, "Stale Co").await;
    let p = create_proposal(&app.editor, &client, "v1", vec![]).await;
    api.update_proposal(pb::UpdateProposalRequest {
        id: p.id.clone(),
        expected_version: 1,
        title: Some("v2".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = api
        .update_proposal(pb::UpdateProposalRequest {
            id: p.id.clone(),
            expected_version: 1,
            title: Some("lost".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "STALE_VERSION");
    assert_eq!(info.metadata.get("current_version").map(String::as_str), Some("2"));
    assert_eq!(err.metadata().get("folio-current-version").unwrap(), "2");
    let now = api.get_proposal(pb::GetProposalRequest { id: p.id }).await.unwrap().into_inner().proposal.unwrap();
    assert_eq!(now.title, "v2", "the stale write changed nothing");

    let err = api
        .update_proposal(pb::UpdateProposalRequest { id: now.id, expected_version: 0, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(violations(&err)[0].0, "expected_version");
}

#[tokio::test]
async fn illegal_transition_names_both_states() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    let client = create_client(&app.editor, "State Co").await;
    let p = create_proposal(&app.editor, &client, "t", vec![]).await;

    let err = api
        .transition_proposal(pb::TransitionProposalRequest {
            id: p.id.clone(),
            to: ProposalStatus::Accepted as i32,
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "a proposal cannot go from draft to accepted");
    let info = err.get_details_error_info().unwrap();
    assert_eq!((info.metadata["from"].as_str(), info.metadata["to"].as_str()), ("draft", "accepted"));

    // Sending needs something to price.
    let err = api
        .transition_proposal(pb::TransitionProposalRequest {
            id: p.id.clone(),
            to: ProposalStatus::Sent as i32,
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("no line items"), "{}", err.message());

    // A sent proposal is frozen.
    api.add_line_item(pb::AddLineItemRequest {
        proposal_id: p.id.clone(),
        line_item: Some(item("x", 1_000, 1, 0)),
        expected_version: 0,
    })
    .await
    .unwrap();
    api.transition_proposal(pb::TransitionProposalRequest {
        id: p.id.clone(),
        to: ProposalStatus::Sent as i32,
        expected_version: 0,
    })
    .await
    .unwrap();
    let err = api
        .add_line_item(pb::AddLineItemRequest {
            proposal_id: p.id.clone(),
            line_item: Some(item("y", 1_000, 1, 0)),
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("only a draft can be edited"), "{}", err.message());

    let err = api
        .transition_proposal(pb::TransitionProposalRequest {
            id: p.id,
            to: ProposalStatus::Unspecified as i32,
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&err)[0].0, "to");
}

#[tokio::test]
async fn another_agency_sees_not_found_never_data() {
    let app = spawn_app().await;
    let client = create_client(&app.editor, "Private Co").await;
    let p = create_proposal(&app.editor, &client, "Secret", vec![item("x", 1_000, 1, 0)]).await;
    let mut theirs = app.outsider.proposals.clone();

    let err = theirs.get_proposal(pb::GetProposalRequest { id: p.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(!err.message().contains("Secret"));
    let err = theirs
        .update_proposal(pb::UpdateProposalRequest {
            id: p.id.clone(),
            expected_version: 1,
            title: Some("pwned".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = theirs
        .transition_proposal(pb::TransitionProposalRequest {
            id: p.id.clone(),
            to: ProposalStatus::Sent as i32,
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = theirs.request_pdf(pb::RequestPdfRequest { proposal_id: p.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let listed = theirs.list_proposals(pb::ListProposalsRequest::default()).await.unwrap().into_inner();
    assert!(listed.proposals.is_empty());
    let err =
        app.outsider.clients.clone().get_client(pb::GetClientRequest { id: client.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Using another agency's client in one's own proposal is refused like a missing one.
    let err = theirs
        .create_proposal(pb::CreateProposalRequest {
            client_id: client.id,
            title: "t".into(),
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let still = app.editor.proposals.clone().get_proposal(pb::GetProposalRequest { id: p.id }).await.unwrap();
    assert_eq!(still.into_inner().proposal.unwrap().version, 1);
}

#[tokio::test]
async fn viewer_reads_but_cannot_write() {
    let app = spawn_app().await;
    let client = create_client(&app.editor, "Viewed Co").await;
    let p = create_proposal(&app.editor, &client, "Read me", vec![]).await;
    let mut api = app.viewer.proposals.clone();
    api.get_proposal(pb::GetProposalRequest { id: p.id.clone() }).await.unwrap();
    let err = api
        .update_proposal(pb::UpdateProposalRequest {
            id: p.id.clone(),
            expected_version: 1,
            title: Some("no".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .viewer
        .clients
        .clone()
        .create_client(pb::CreateClientRequest { name: "n".into(), email: "a@b.co".into(), company: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .viewer
        .templates
        .clone()
        .create_template(pb::CreateTemplateRequest { name: "n".into(), body: "b".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn missing_or_invalid_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let caller = app.editor.caller;
    let forged = proposals_api::Authenticator::new(b"some-other-secret-some-other-secret")
        .issue(&caller, std::time::Duration::from_secs(60));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "sub": caller.user_id.to_string(), "agency_id": caller.agency_id.to_string(), "role": "editor",
        "iat": now - 7200, "exp": now - 3600,
    });
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::helpers::SECRET.as_bytes()),
    )
    .unwrap();
    for (what, header) in [
        ("missing", None),
        ("not bearer", Some("Basic dXNlcjpwYXNz".to_owned())),
        ("garbage", Some("Bearer not-a-jwt".to_owned())),
        ("forged", Some(format!("Bearer {forged}"))),
        ("expired", Some(format!("Bearer {expired}"))),
    ] {
        let session = app.session_with(caller, header);
        let err = session.proposals.clone().list_proposals(pb::ListProposalsRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }
}

#[tokio::test]
async fn a_currency_with_other_minor_units_cannot_relabel_priced_items() {
    let app = spawn_app().await;
    let mut api = app.editor.proposals.clone();
    let client = create_client(&app.editor, "Yen Co").await;
    let p = create_proposal(&app.editor, &client, "Priced", vec![item("x", 1_000, 1_000, 0)]).await;
    let err = api
        .update_proposal(pb::UpdateProposalRequest {
            id: p.id.clone(),
            expected_version: 1,
            currency: Some("JPY".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("EUR to JPY"), "{}", err.message());
    let same_exponent = api
        .update_proposal(pb::UpdateProposalRequest {
            id: p.id,
            expected_version: 1,
            currency: Some("USD".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(same_exponent.currency, "USD");
}

//! Concurrent edits of one proposal: no lost update, never a torn total.

use folio_domain::{LineItemAmounts, compute_totals};
use folio_proto::api::v1 as pb;

use crate::helpers::{create_client, create_proposal, item, spawn_app};

const TASKS: usize = 8;
const EDITS_PER_TASK: usize = 10;

#[tokio::test]
async fn eight_concurrent_editors_lose_nothing() {
    let app = spawn_app().await;
    let client = create_client(&app.editor, "Busy Co").await;
    let p = create_proposal(&app.editor, &client, "Contended", vec![]).await;

    // Half the tasks add line items blindly; the other half do read-modify-write on the content
    // with the version they read, retrying on ABORTED like a real client.
    let tasks = (0..TASKS).map(|task| {
        let mut api = app.editor.proposals.clone();
        let id = p.id.clone();
        tokio::spawn(async move {
            let mut retries = 0;
            for n in 0..EDITS_PER_TASK {
                if task % 2 == 0 {
                    let line =
                        item(&format!("task {task} item {n}"), 1_000 + n as i64 * 250, 1_999 + task as i64, 190_000);
                    api.add_line_item(pb::AddLineItemRequest {
                        proposal_id: id.clone(),
                        line_item: Some(line),
                        expected_version: 0,
                    })
                    .await
                    .expect("add line item");
                } else {
                    loop {
                        let current = api
                            .get_proposal(pb::GetProposalRequest { id: id.clone() })
                            .await
                            .unwrap()
                            .into_inner()
                            .proposal
                            .unwrap();
                        let content = format!("{} t{task}n{n};", current.content);
                        let result = api
                            .update_proposal(pb::UpdateProposalRequest {
                                id: id.clone(),
                                expected_version: current.version,
                                content: Some(content),
                                ..Default::default()
                            })
                            .await;
                        match result {
                            Ok(_) => break,
                            Err(e) if e.code() == tonic::Code::Aborted => retries += 1,
                            Err(e) => panic!("unexpected error {e:?}"),
                        }
                    }
                }
            }
            retries
        })
    });
    let retries: usize = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).sum();

    let writers = TASKS / 2;
    let final_p = app
        .editor
        .proposals
        .clone()
        .get_proposal(pb::GetProposalRequest { id: p.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .proposal
        .unwrap();
    assert_eq!(final_p.line_items.len(), writers * EDITS_PER_TASK, "every added line item is there");
    for task in (1..TASKS).step_by(2) {
        for n in 0..EDITS_PER_TASK {
            assert!(final_p.content.contains(&format!(" t{task}n{n};")), "content update t{task}n{n} lost");
        }
    }
    assert_eq!(
        final_p.version,
        1 + (TASKS * EDITS_PER_TASK) as i64,
        "one version per successful edit ({retries} retries)"
    );

    // The stored totals equal the totals of the stored items, computed by the one function.
    let amounts: Vec<_> = final_p
        .line_items
        .iter()
        .map(|i| LineItemAmounts::parse(i.quantity_milli, i.unit_price_minor, i.tax_rate_ppm).unwrap())
        .collect();
    let expected = compute_totals(&amounts).unwrap();
    let t = final_p.totals.unwrap();
    assert_eq!(
        (t.subtotal_minor, t.tax_minor, t.total_minor),
        (expected.subtotal_minor, expected.tax_minor, expected.total_minor)
    );
    let (sub, tax): (i64, i64) = sqlx::query_as(
        "SELECT p.subtotal_minor - sum(i.subtotal_minor)::bigint, p.tax_minor - sum(i.tax_minor)::bigint \
         FROM proposals p JOIN line_items i ON i.proposal_id = p.id WHERE p.id = $1::uuid GROUP BY p.id",
    )
    .bind(&p.id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((sub, tax), (0, 0), "no torn total in the database");
}

//! An event the notifier cannot read is parked on `<root>.dead.notifier` with its reason,
//! counted and logged, and the events after it are still delivered; before, it was dropped
//! with every notification it stood for (a mandatory "proposal sent" email included).

use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use folio_domain::ProposalStatus;
use folio_proto::events::v1::{Operation, column_value};
use serde_json::json;

use crate::helpers::World;

/// The header with the reason's label (`Folio-Error` has the whole reason).
const REASON: &str = "Folio-Reason";

/// The counter's value for `reason` in a Prometheus text exposition (0 when absent).
fn dead_letters_counted(metrics: &str, reason: &str) -> u64 {
    let series = format!("folio_notifier_dead_letters_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

async fn metrics(admin: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap()
}

fn header<'a>(m: &'a StreamMessage, name: &str) -> &'a str {
    m.headers.get(name).map(|v| v.as_str()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_goes_to_the_dead_letter_subject_instead_of_vanishing() {
    let w = World::new().await.unwrap();
    w.add_endpoint("/sent", &["proposal.sent"], json!({})).await;
    let notifier = w.spawn().await;
    let before = metrics(notifier.admin).await;
    let (undecodable_before, unreadable_before) =
        (dead_letters_counted(&before, "undecodable"), dead_letters_counted(&before, "unreadable_value"));

    // Nothing parked yet: the dead-letter stream is not even declared, which the backlog gauges
    // report as 0 rather than as an error.
    // (The notifier declares its consumer once it runs: measured from then on.)
    let backlog = folio_testkit::eventually("the notifier's consumer", || async {
        folio_bus::backlog::measure(&w.js, &w.stream, &w.consumer, &w.dead_letter_stream()).await.ok()
    })
    .await;
    assert_eq!(backlog.dead_letters, 0);

    // Not a ChangeEvent at all, on the proposals subject.
    let (garbage_id, _) = w.event(Operation::Update, Vec::new(), Vec::new());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(folio_bus::headers::MSG_ID, garbage_id.as_str());
    let subject = w.subjects().row("public", "proposals", Some(&w.agency.to_string()));
    let garbage: &[u8] = b"\xff\xff\xff not a protobuf message";
    w.js.publish_with_headers(subject, headers, garbage.into()).await.unwrap().await.unwrap();

    // A send whose row the notifier cannot map: Postgres accepts `infinity` as a date.
    let unreadable = w.created("Forever valid", None).await;
    let old = w.row(unreadable).await;
    let mut new = old.clone();
    for c in &mut new {
        match c.name.as_str() {
            "status" => c.value = Some(column_value::Value::Text("sent".into())),
            "valid_until" => c.value = Some(column_value::Value::Text("infinity".into())),
            _ => {}
        }
    }
    let (unreadable_id, event) = w.event(Operation::Update, old, new);
    w.publish(&unreadable_id, &event).await;

    // The next good event: another proposal sent, with its mandatory client email.
    let good = w.created("Good one", None).await;
    w.transition(good, ProposalStatus::Sent).await;

    folio_testkit::eventually("the good send's email and webhook", || async {
        (w.smtp.to(&w.client_email).len() == 1 && w.receiver.accepted("/sent").await.len() == 1).then_some(())
    })
    .await;
    w.settled().await;
    let mail = w.smtp.to(&w.client_email).remove(0);
    assert_eq!(mail.event(), "proposal.sent");
    assert!(mail.text().contains(&format!("/p/{good}")), "the email is the good proposal's");
    let hook = w.receiver.accepted("/sent").await.remove(0);
    assert_eq!(hook.payload.unwrap()["data"]["id"], good.to_string());

    // Both unreadable events are on the dead-letter subject, in order, with their reasons.
    let dead = w.js.get_stream(w.dead_letter_stream()).await.expect("the dead-letter stream");
    assert_eq!(
        dead.cached_info().config.subjects,
        [w.subjects().dead_letters("notifier")],
        "on the notifier's dead-letter subject"
    );
    let first = dead.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), w.subjects().dead_letters("notifier"));
    assert_eq!(header(&first, folio_bus::headers::MSG_ID), garbage_id);
    assert_eq!(header(&first, REASON), "undecodable");
    assert!(header(&first, folio_bus::headers::ERROR).starts_with("undecodable: "), "{:?}", first.headers);
    assert_eq!(first.payload.as_ref(), garbage, "the event as it arrived, for replay");
    let second = dead.get_raw_message(2).await.unwrap();
    assert_eq!(header(&second, folio_bus::headers::MSG_ID), unreadable_id);
    assert_eq!(header(&second, REASON), "unreadable_value");
    let error = header(&second, folio_bus::headers::ERROR);
    assert!(error.contains("valid_until") && error.contains("infinity"), "{error}");
    assert!(dead.get_raw_message(3).await.is_err(), "nothing else was parked");

    // Counted by reason.
    let after = folio_testkit::eventually("the dead letters counted", || async {
        let m = metrics(notifier.admin).await;
        (dead_letters_counted(&m, "undecodable") > undecodable_before).then_some(m)
    })
    .await;
    assert_eq!(dead_letters_counted(&after, "undecodable"), undecodable_before + 1, "{after}");
    assert_eq!(dead_letters_counted(&after, "unreadable_value"), unreadable_before + 1, "{after}");

    // Acked: nothing of the unreadable proposal's send went out, and nothing is redelivered.
    let sent = w.deliveries("proposal.sent").await;
    assert!(sent.iter().all(|d| d.event_id != unreadable_id), "{sent:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info =
        w.js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(&w.consumer, &w.stream);
    let mut consumer = info.await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0), "every event acknowledged");
    // What `folio_notifier_consumer_pending`, `…_ack_pending` and `…_dead_letter_messages`
    // export (the gauges themselves are process-wide, shared by this binary's other notifiers).
    let backlog = folio_bus::backlog::measure(&w.js, &w.stream, &w.consumer, &w.dead_letter_stream()).await.unwrap();
    assert_eq!(
        backlog,
        folio_bus::backlog::Backlog { pending: 0, ack_pending: 0, dead_letters: 2 },
        "the two parked events, nothing pending"
    );

    notifier.stop().await;
    w.cleanup().await;
}

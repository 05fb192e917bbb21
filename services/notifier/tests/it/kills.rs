//! Two notifier processes SIGKILLed in turn under load (issue 18's fault suite): proposals are
//! created and sent while one replica or the other is killed every 500 ms and started again.
//!
//! Neither HTTP nor SMTP can make a send and its record one atomic step, so a kill between a
//! receiver's answer and the notifier's record repeats that send once the lease runs out. What
//! must hold is what a receiver relies on: every event reaches every endpoint, every attempt of
//! one message carries one `webhook-id` and the same body, no event is delivered under two ids;
//! every mandatory email is sent, under one `Message-ID`; and every delivery ends delivered.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use folio_domain::ProposalStatus;
use serde_json::json;

use crate::helpers::World;

const PROPOSALS: usize = 16;
const ENDPOINTS: [&str; 2] = ["/kill-1", "/kill-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_in_turn_deliver_every_event_under_one_id() {
    let w = World::new().await.unwrap();
    for path in ENDPOINTS {
        w.add_endpoint(path, &[], json!({})).await;
    }
    let mut replicas = [w.spawn_process().unwrap(), w.spawn_process().unwrap()];

    let written = AtomicBool::new(false);
    let writer = async {
        for i in 0..PROPOSALS {
            let p = w.created(&format!("Under fire {i}"), None).await;
            w.transition(p, ProposalStatus::Sent).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        written.store(true, Ordering::SeqCst);
    };
    let killer = async {
        let mut kills = 0;
        while !written.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let replica = &mut replicas[kills % 2];
            replica.kill().await.unwrap();
            *replica = w.spawn_process().unwrap();
            kills += 1;
        }
        (kills, Instant::now())
    };
    let ((), (kills, last_kill)) = tokio::join!(writer, killer);
    assert!(kills >= 4, "only {kills} kills happened while events flowed");

    // Two webhook messages (created, sent) per proposal at each endpoint, and the client's email.
    let messages = 2 * PROPOSALS;
    folio_testkit::eventually("every delivery made after the last kill", || async {
        let mut done = w.smtp.to(&w.client_email).len() >= PROPOSALS;
        for path in ENDPOINTS {
            let ids: HashSet<_> = w.receiver.accepted(path).await.into_iter().filter_map(|h| h.webhook_id).collect();
            done &= ids.len() >= messages;
        }
        done.then_some(())
    })
    .await;
    let recovered = last_kill.elapsed();
    w.settled().await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut repeats = 0;
    for path in ENDPOINTS {
        let hooks = w.receiver.at(path).await;
        let mut by_id: HashMap<String, Vec<&crate::helpers::Hook>> = HashMap::new();
        for h in &hooks {
            let id = h.webhook_id.clone().unwrap_or_else(|| panic!("{path}: a request without webhook-id: {h:#?}"));
            by_id.entry(id).or_default().push(h);
        }
        assert_eq!(by_id.len(), messages, "{path}: distinct webhook-ids");
        let mut events = HashSet::new();
        for (id, attempts) in &by_id {
            assert!(attempts.iter().any(|h| h.outcome == "accepted"), "{path}: {id} never accepted: {attempts:#?}");
            let bodies: HashSet<String> =
                attempts.iter().map(|h| h.payload.clone().unwrap_or_default().to_string()).collect();
            assert_eq!(bodies.len(), 1, "{path}: {id} was sent with different bodies: {bodies:#?}");
            let payload = attempts[0].payload.as_ref().unwrap();
            let event = (payload["type"].as_str().unwrap().to_owned(), payload["data"]["event_id"].to_string());
            assert!(events.insert(event.clone()), "{path}: {event:?} delivered under two webhook-ids");
            repeats += attempts.iter().filter(|h| h.outcome == "accepted").count() - 1;
        }
    }

    let mails = w.smtp.to(&w.client_email);
    let mut by_message_id: HashMap<String, usize> = HashMap::new();
    for m in &mails {
        let id = m.header("message-id").expect("every email has a Message-ID").to_owned();
        *by_message_id.entry(id).or_default() += 1;
    }
    assert_eq!(by_message_id.len(), PROPOSALS, "one Message-ID per sent proposal: {by_message_id:#?}");
    let email_repeats = mails.len() - PROPOSALS;

    let open: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, status FROM notification_deliveries WHERE status <> 'delivered'")
            .fetch_all(&w.db.pool)
            .await
            .unwrap();
    assert!(open.is_empty(), "deliveries not delivered: {open:?}");
    println!(
        "{PROPOSALS} proposals created and sent while 2 notifier replicas were SIGKILLed {kills} times: \
         {} webhook messages and {PROPOSALS} emails, all delivered {:.1} s after the last kill; \
         repeated sends (same webhook-id / Message-ID): {repeats} webhooks, {email_repeats} emails",
        messages * ENDPOINTS.len(),
        recovered.as_secs_f64()
    );
    for mut replica in replicas {
        replica.kill().await.unwrap();
    }
    w.cleanup().await;
}

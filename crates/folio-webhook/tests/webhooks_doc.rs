//! `docs/webhooks.md` is generated from `folio_webhook::events` (the types the notifier
//! serialises and the API's ListEventTypes describes), so it cannot drift: this test fails when
//! the file differs, and rewrites it when run with `FOLIO_UPDATE_DOCS=1`.

use folio_webhook::events;

fn render() -> String {
    let mut out = String::from(
        "# Webhooks\n\n\
         Generated from `crates/folio-webhook/src/events.rs` by\n\
         `FOLIO_UPDATE_DOCS=1 cargo test -p folio-webhook --test webhooks_doc` (the test fails when\n\
         this file and the types disagree). The API serves the same catalogue: `WebhookService.ListEventTypes`\n\
         (`proto/folio/api/v1/admin.proto`).\n\n\
         Every request is a `POST` with a JSON body `{type, timestamp, data}`, signed as\n\
         [Standard Webhooks](https://www.standardwebhooks.com/) specifies: `webhook-id` (`msg_…`, the\n\
         same for every attempt, replay and recovery of one message, so a receiver can drop repeats),\n\
         `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256>` with the endpoint's\n\
         `whsec_` secret; during a rotation's grace period a second signature with the previous secret\n\
         follows, separated by a space). Endpoints are managed by an agency's admins through\n\
         `WebhookService`; URLs must reach the public internet (private, loopback, link-local, …\n\
         addresses are refused when registered and at every delivery).\n\n\
         Failed deliveries are retried 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h after the first\n\
         attempt (±20 %); an endpoint failing for 5 days is disabled and its admins are emailed. Messages\n\
         of a disabled endpoint are recorded as failed; `EnableWebhookEndpoint` then\n\
         `RecoverWebhookEndpoint(since)` delivers them again, one after the other in order of creation.\n\n\
         ## Event types\n\n| type | when |\n|---|---|\n",
    );
    let catalogue = events::catalogue();
    for t in &catalogue {
        out.push_str(&format!("| `{}` | {} |\n", t.name, t.description));
    }
    out.push_str("\n## Payload schemas\n\nJSON Schema (draft 2020-12) of each message body.\n");
    let mut shown: Vec<(String, Vec<&str>)> = Vec::new();
    for t in &catalogue {
        let schema = serde_json::to_string_pretty(&t.schema).expect("a schema serialises");
        match shown.iter_mut().find(|(s, _)| *s == schema) {
            Some((_, names)) => names.push(t.name),
            None => shown.push((schema, vec![t.name])),
        }
    }
    for (schema, names) in shown {
        let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        out.push_str(&format!("\n### {}\n\n```json\n{schema}\n```\n", names.join(", ")));
    }
    out
}

#[test]
fn docs_webhooks_md_matches_the_event_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/webhooks.md");
    let rendered = render();
    if std::env::var_os("FOLIO_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == rendered,
        "docs/webhooks.md is stale: run FOLIO_UPDATE_DOCS=1 cargo test -p folio-webhook --test webhooks_doc"
    );
}

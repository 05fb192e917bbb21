//! Every metric the Grafana dashboards and the Prometheus alert rules in `deploy/observability`
//! read is one the services export. The five services run in this process on port 0 and do a
//! little of everything (a proposal sent to its client, a PDF rendered, a shape read, a client
//! link refused, an unsubscribe without a token); then their `/metrics` must name every metric
//! the rules and dashboards reference. A metric that is renamed, or that only a dashboard
//! believes in, fails this test. (In one process the five share one registry, so this checks
//! the names, not which of the five exports each: the prefix `folio_<service>_` says that.)

use std::collections::BTreeSet;

use folio_proto::api::v1 as pb;
use folio_testkit::Sandbox;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::test]
async fn every_metric_the_dashboards_and_alert_rules_read_is_exported() {
    let referenced = referenced_metrics();
    assert!(referenced.len() >= 25, "deploy/observability names only {} metrics: {referenced:?}", referenced.len());

    let mut sandbox = Sandbox::new().await.unwrap();
    let pool = sandbox.db.pool.clone();
    let agency = proposals_api::tenancy::create_agency(&pool, "Northwind Studio", "#0b6e4f").await.unwrap();
    let editor =
        proposals_api::tenancy::create_user(&pool, agency, "ed@northwind.test", "Ed Itor", proposals_api::Role::Editor)
            .await
            .unwrap();
    // wal-ingest first: a write made before its slot exists never reaches the stream.
    let mut wal = sandbox.wal_ingest_config();
    wal.lag_interval = std::time::Duration::from_millis(200);
    sandbox.start_wal_ingest(wal).await.unwrap();
    let api = sandbox.start_api(sandbox.api_config()).await.unwrap();
    sandbox.start_pdf_render(sandbox.pdf_render_config()).await.unwrap();
    let edge = sandbox.start_edge(sandbox.edge_config()).await.unwrap();
    // No mail server where the notifier looks for one: the proposal.sent email is attempted and
    // fails, which is an attempt with an outcome all the same.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut notifier = sandbox.notifier_config();
    notifier.smtp_url = format!("smtp://{}", closed.local_addr().unwrap());
    drop(closed);
    let notifier = notifier::bind(notifier).await.unwrap();
    let (notifier_http, admin) = (notifier.http_addr(), notifier.admin_addr());
    let readiness = notifier.readiness();
    sandbox.keep("notifier", notifier.spawn());
    folio_testkit::eventually("the notifier to be ready", || {
        let readiness = readiness.clone();
        async move { readiness.is_ready().then_some(()) }
    })
    .await;

    let token =
        sandbox.token(&proposals_api::Caller { user_id: editor, agency_id: agency, role: proposals_api::Role::Editor });
    let mut client = folio_e2e::proposals_client(api, &token).unwrap();
    let draft = folio_e2e::draft_proposal(&mut client, &pool, agency, "Observed", 100_000).await.unwrap();
    client
        .transition_proposal(pb::TransitionProposalRequest {
            id: draft.id.clone(),
            to: pb::ProposalStatus::Sent as i32,
            expected_version: draft.version,
        })
        .await
        .unwrap();
    let requested =
        client.request_pdf(pb::RequestPdfRequest { proposal_id: draft.id.clone() }).await.unwrap().into_inner();
    folio_e2e::rendered_pdf(&client, &requested.rendition_id).await.unwrap();
    let shape = http_get(edge, "/v1/shape?table=proposals&offset=-1", Some(&token)).await;
    assert!(shape.starts_with("HTTP/1.1 200"), "the shape read: {shape}");
    let page = http_get(api, "/v1/client/not-a-link", None).await;
    assert!(page.starts_with("HTTP/1.1 404"), "a made-up client link: {page}");
    let unsubscribe = http_get(notifier_http, "/v1/unsubscribe", None).await;
    assert!(unsubscribe.starts_with("HTTP/1.1 4"), "an unsubscribe without a token: {unsubscribe}");

    // Gauges measured on a timer (slot lag, consumer lag) and the email attempt arrive a moment
    // later: scrape until nothing is missing or the patience (as folio_testkit::eventually's)
    // runs out, then name what is still missing.
    let patience = std::env::var("FOLIO_TEST_PATIENCE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(15_000);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(patience);
    let missing = loop {
        let exported = exported_names(&http_get(admin, "/metrics", None).await);
        let missing: Vec<String> = referenced.difference(&exported).cloned().collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(missing.is_empty(), "deploy/observability reads metrics no service exported: {missing:?}");
    sandbox.stop().await;
}

/// Every `folio_…` name in the alert rules and the dashboards' queries, as they appear in the
/// exposition (a histogram's `_bucket`, `_sum`, `_count` included).
fn referenced_metrics() -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability");
    let mut texts = vec![std::fs::read_to_string(root.join("alerts.yaml")).unwrap()];
    for entry in std::fs::read_dir(root.join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            collect_exprs(&dashboard, &mut texts);
        }
    }
    let mut names = BTreeSet::new();
    for text in &texts {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("folio_") {
            // Only whole identifiers: not the tail of another word.
            let before = text.len() - rest.len() + at;
            let starts = before == 0
                || !text.as_bytes()[before - 1].is_ascii_alphanumeric() && text.as_bytes()[before - 1] != b'_';
            let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if starts {
                names.insert(name.clone());
            }
            rest = &rest[at + name.len()..];
        }
    }
    names
}

fn collect_exprs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match v {
                    serde_json::Value::String(s) if key == "expr" => into.push(s.clone()),
                    _ => collect_exprs(v, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

/// The metric names of a Prometheus text exposition (each sample line's name).
fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// A plain HTTP/1.1 GET; the whole response, head and body.
async fn http_get(addr: std::net::SocketAddr, path: &str, bearer: Option<&str>) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

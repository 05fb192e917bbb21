//! The path-normalisation class of Electric's GHSA-m4f6-p2j8-rq76 (fixed in 1.7.12): there,
//! authentication matched the raw path while routing matched a decoded, slash-merged one, so
//! `/v1/shape/`, `/v1//shape` or `/v1/%73hape` reached the shape handler without the secret.
//! Here every spelling of the path, by every method, either is `/v1/shape` itself (whose
//! handler authenticates) or gets a 4xx JSON answer — never rows without a token.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::shapes::{Env, bearer};

/// Spellings of `/v1/shape` a server or proxy might normalise to it.
pub const LOOK_ALIKES: &[&str] = &[
    "/v1/shape/",
    "/v1/shape//",
    "/v1//shape",
    "//v1/shape",
    "/v1/%73hape",
    "/v1/%73%68%61%70%65",
    "/v1%2Fshape",
    "/v1/shape%2F",
    "/v1/./shape",
    "/./v1/shape",
    "/v1/shape/.",
    "/v1/shape/..",
    "/v1/shape/../shape",
    "/v1/x/../shape",
    "/V1/SHAPE",
    "/v1/Shape",
    "/v1/shape;jsessionid=x",
    "/v1/shape%00",
    "/v1/shape%20",
];

#[tokio::test]
async fn no_spelling_of_the_shape_path_answers_rows_without_a_token() -> anyhow::Result<()> {
    let env = Env::start().await?;
    let a = uuid::Uuid::new_v4().to_string();
    env.sql(&format!(
        "INSERT INTO agencies (id, name) VALUES ('{a}', 'A');
         INSERT INTO clients (id, agency_id, name, email) VALUES (gen_random_uuid(), '{a}', 'secret-client', 's@x.test')"
    ))
    .await?;
    let edge = env.edge(&[]).await?;
    let auth = bearer(&a);
    let queries = ["table=clients&offset=-1", "table=clients&offset=now&log=changes_only&subset__where=TRUE"];
    let methods = [Method::GET, Method::HEAD, Method::POST, Method::DELETE, Method::PUT, Method::PATCH];
    let mut checked = 0;
    for path in LOOK_ALIKES.iter().copied().chain(["/v1/shape"]) {
        for query in queries {
            for method in &methods {
                let body = if *method == Method::POST { Bytes::from(r#"{"where":"TRUE"}"#) } else { Bytes::new() };
                let uri = format!("{path}?{query}");
                let anonymous = edge.client.send(method.clone(), &uri, &[], body.clone()).await?;
                let what = format!("{method} {uri} without a token");
                assert!(anonymous.status.is_client_error(), "{what}: {} {}", anonymous.status, anonymous.text());
                assert!(!anonymous.text().contains("secret-client"), "{what}: {}", anonymous.text());
                if *method != Method::HEAD {
                    let json: serde_json::Value = serde_json::from_slice(&anonymous.body)
                        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", anonymous.text()));
                    assert!(json["message"].is_string(), "{what}: {json}");
                }
                if path == "/v1/shape" && matches!(*method, Method::GET | Method::HEAD | Method::POST) {
                    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{what}");
                }
                let authorised = edge.client.send(method.clone(), &uri, &[("authorization", &auth)], body).await?;
                let what = format!("{method} {uri} with a token");
                if path == "/v1/shape" && matches!(*method, Method::GET | Method::HEAD | Method::POST) {
                    assert_eq!(authorised.status, StatusCode::OK, "{what}: {}", authorised.text());
                } else {
                    // Not the shape route (or not a method it serves): no handler that could
                    // answer rows was reached.
                    assert!(
                        matches!(authorised.status, StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED),
                        "{what}: {} {}",
                        authorised.status,
                        authorised.text()
                    );
                    assert!(!authorised.text().contains("secret-client"), "{what}");
                }
                checked += 2;
            }
        }
    }
    eprintln!("path tricks: {checked} requests checked");
    edge.stop().await?;
    env.stop().await
}

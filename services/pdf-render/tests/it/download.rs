//! The API serves what pdf-render stored: gRPC server streaming and a plain HTTP GET.

use std::time::Duration;

use folio_proto::api::v1::{self as pb, proposal_service_client::ProposalServiceClient};
use proposals_api::{Authenticator, Caller, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::env;

use folio_testkit::sandbox::JWT_SECRET as SECRET;

async fn http_get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    (head, response[split + 4..].to_vec())
}

#[tokio::test]
async fn the_api_serves_the_rendered_pdf_over_grpc_and_http() {
    let env = env().await;
    let job = env.proposal("Downloadable", 4, None).await;
    let worker = env.start_worker().await;
    env.publish_job(&job).await;
    let ready = env.wait_status(&job.rendition_id, "ready").await;
    let sha = ready.pdf_sha256.clone().unwrap();
    let stored = env.pdf(&sha).await;

    let mut env = env;
    let api = env.sandbox.api_config();
    let addr = env.sandbox.start_api(api).await.expect("start the API");
    let caller = Caller { user_id: env.owner, agency_id: env.agency, role: Role::Viewer };
    let token = Authenticator::new(SECRET.as_bytes()).issue(&caller, Duration::from_secs(60));

    // gRPC server streaming.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
    let channel = folio_testkit::eventually("the API to accept connections", || {
        let channel = channel.clone();
        async move { channel.connect().await.ok() }
    })
    .await;
    let mut api = ProposalServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::DownloadPdfRequest { rendition_id: job.rendition_id.clone() });
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = api.download_pdf(request).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    let mut first = None;
    let mut messages = 0;
    while let Some(message) = stream.message().await.unwrap() {
        if messages == 0 {
            first = message.rendition;
        } else {
            assert!(message.rendition.is_none(), "only the first message carries the rendition");
        }
        messages += 1;
        bytes.extend_from_slice(&message.chunk);
    }
    assert_eq!(bytes, stored);
    let first = first.unwrap();
    assert_eq!((first.pdf_sha256.as_str(), first.size_bytes, first.page_count), (sha.as_str(), stored.len() as i64, 1));

    // Plain HTTP for browsers.
    let auth = format!("authorization: Bearer {token}\r\n");
    let path = format!("/v1/renditions/{}/pdf", job.rendition_id);
    let (head, body) = http_get(addr, &path, &auth).await;
    let lower = head.to_lowercase();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(lower.contains("content-type: application/pdf"), "{head}");
    assert!(lower.contains(&format!("content-length: {}", stored.len())), "{head}");
    assert!(lower.contains(&format!("etag: \"{sha}\"")), "{head}");
    assert!(lower.contains("cache-control: private,") && lower.contains("vary: authorization"), "{head}");
    assert_eq!(body, stored);

    let (head, body) = http_get(addr, &path, &format!("{auth}if-none-match: \"{sha}\"\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(body.is_empty());

    // Another agency, no token, a bad id: clear JSON errors.
    let outsider = Caller { user_id: env.owner, agency_id: folio_domain::AgencyId::new(), role: Role::Editor };
    let other = Authenticator::new(SECRET.as_bytes()).issue(&outsider, Duration::from_secs(60));
    let (head, body) = http_get(addr, &path, &format!("authorization: Bearer {other}\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "not_found");
    let (head, _) = http_get(addr, &path, "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, body) = http_get(addr, "/v1/renditions/nope/pdf", &auth).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"], "invalid_argument");

    worker.cancel();
    env.sandbox.stop().await;
}

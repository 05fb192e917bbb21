//! The same port serves browsers (gRPC-Web over HTTP/1.1), gRPC health and reflection.

use folio_proto::api::v1 as pb;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{create_client, spawn_app};

#[tokio::test]
async fn grpc_web_over_http1_answers_like_grpc() {
    let app = spawn_app().await;
    let client = create_client(&app.editor, "Browser Co").await;
    let token = app.session_token(app.editor.caller);
    let message = pb::GetClientRequest { id: client.id.clone() }.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let head = format!(
        "POST /folio.api.v1.ClientService/GetClient HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\n\
         x-grpc-web: 1\r\norigin: http://app.test\r\nauthorization: Bearer {token}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n",
        addr = app.addr,
        len = body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_lowercase().contains("access-control-allow-origin: *"), "{text}");
    assert!(text.contains("grpc-status:0"), "trailer frame with OK status: {text}");
    assert!(text.contains("Browser Co"), "the client came back in the data frame: {text}");
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let app = spawn_app().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "folio.api.v1.ProposalService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let first = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else { panic!("{first:?}") };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["folio.api.v1.ProposalService", "folio.api.v1.ClientService", "folio.api.v1.TemplateService"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
    }
}

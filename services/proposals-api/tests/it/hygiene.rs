//! What a stranger's malformed or made-up calls may cost (issue 13, findings 6 and 10): a clear
//! INVALID_ARGUMENT for input the server cannot store or parse, and no metric series per
//! made-up method name.

use folio_proto::api::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::helpers::{create_client, spawn_app};

/// One gRPC-Web call over HTTP/1.1 carrying `message` as its one frame; the raw response.
async fn grpc_web(addr: std::net::SocketAddr, method: &str, token: Option<&str>, message: &[u8]) -> String {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let authorization = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "POST {method} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
         {authorization}content-length: {len}\r\nconnection: close\r\n\r\n",
        len = body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_nul_byte_in_a_title_is_invalid_argument_naming_the_field_not_internal() {
    let app = spawn_app().await;
    let client = create_client(&app.editor, "Nul Co").await;
    let mut proposals = app.editor.proposals.clone();
    let status = proposals
        .create_proposal(pb::CreateProposalRequest {
            client_id: client.id.clone(),
            title: "Brand\0refresh".into(),
            currency: "EUR".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("title"), "{status:?}");

    let mut clients = app.editor.clients.clone();
    let status = clients
        .create_client(pb::CreateClientRequest {
            name: "Acme\0".into(),
            email: "buyer@acme.test".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn a_malformed_protobuf_message_is_invalid_argument_not_internal() {
    let app = spawn_app().await;
    let token = app.session_token(app.editor.caller);
    // A length-delimited field whose length runs past the end of the message.
    let garbage = [0x0a, 0x7f, b'x'];
    let response = grpc_web(app.addr, "/folio.api.v1.ClientService/GetClient", Some(&token), &garbage).await;
    assert!(response.contains("grpc-status: 3") || response.contains("grpc-status:3"), "{response}");
    assert!(response.contains("malformed%20protobuf%20message"), "{response}");
}

#[tokio::test]
async fn calls_to_made_up_method_names_mint_no_metric_series() {
    let app = spawn_app().await;
    for i in 0..200 {
        // Under a real service (answered UNAUTHENTICATED by its interceptor) and under none.
        let method = if i % 2 == 0 {
            format!("/folio.api.v1.ProposalService/MadeUp{i}")
        } else {
            format!("/evil.Service{i}/Method")
        };
        grpc_web(app.addr, &method, None, &[]).await;
    }
    let text = http_get(app.admin_addr, "/metrics").await;
    assert!(!text.contains("MadeUp"), "a made-up method name became a label");
    assert!(!text.contains("evil.Service"), "a made-up service name became a label");
    assert!(text.contains("rpc=\"unmatched\""), "the calls are counted under one label");
}

/// A plain HTTP/1.1 GET; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

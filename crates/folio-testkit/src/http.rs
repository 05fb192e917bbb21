//! A bare HTTP/1.0 `GET`, for tests that ask a service one thing (an admin endpoint, a shape
//! request) and want the answer exactly as sent, with no client library in between.

use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An answer, read to the end (HTTP/1.0: the server closes the connection).
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `GET path`; None when nothing answers within 30 s (a long-poll answers within its timeout).
pub async fn get(addr: SocketAddr, path: &str) -> Option<HttpAnswer> {
    get_with(addr, path, &[]).await
}

/// `GET path` with extra request headers (e.g. `("Authorization", "Bearer …")`).
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<HttpAnswer> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(HttpAnswer { status, headers, body: body.to_owned() })
    };
    tokio::time::timeout(Duration::from_secs(30), exchange).await.ok().flatten()
}

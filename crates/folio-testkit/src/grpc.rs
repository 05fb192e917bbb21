//! What every test's gRPC client sends: the caller's bearer token.

use anyhow::Context as _;
use tonic::metadata::{Ascii, MetadataValue};

/// An interceptor setting `authorization` (the whole header value, `Bearer <token>`) on every call.
#[derive(Clone)]
pub struct Bearer(pub MetadataValue<Ascii>);

impl Bearer {
    /// Sends `token` as `authorization: Bearer <token>`.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Self(format!("Bearer {token}").parse().context("a token is ASCII")?))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

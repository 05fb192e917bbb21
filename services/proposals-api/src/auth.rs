//! The API's side of `folio_auth`: a tonic interceptor that verifies the bearer token once per
//! call and attaches the `Caller`, which handlers then read.

pub use folio_auth::{AuthError, Authenticator, Caller, Role};

use crate::error::ApiError;

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthenticated(e.to_string())
    }
}

/// Viewers read; editors and admins write.
pub fn require_writer(caller: &Caller) -> Result<(), ApiError> {
    if caller.may_write() {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied("the viewer role cannot change data".into()))
    }
}

#[derive(Clone)]
pub struct AuthInterceptor(pub Authenticator);

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let header = request.metadata().get("authorization").map(|v| v.to_str().unwrap_or_default());
        let caller = self.0.verify_header(header).map_err(|e| {
            // The reason stays in the log; the caller gets the generic message.
            tracing::debug!(reason = ?e, "bearer token refused");
            ApiError::from(e)
        })?;
        let span = tracing::Span::current();
        span.record("agency_id", tracing::field::display(caller.agency_id));
        span.record("user_id", tracing::field::display(caller.user_id));
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor attached; absent only if a service was mounted without it.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, ApiError> {
    request.extensions().get::<Caller>().copied().ok_or_else(|| AuthError::Missing.into())
}

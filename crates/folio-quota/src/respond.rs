//! A refusal mapped once for each surface: HTTP (429 with the draft-ietf-httpapi-ratelimit-headers
//! fields and Folio's JSON error body) and gRPC (`RESOURCE_EXHAUSTED` with `RetryInfo` and
//! `QuotaFailure`). Both take their status from `folio_domain::ErrorCode`.

use std::time::Duration;

use folio_domain::ErrorCode;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{Decision, Outcome, QuotaError};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up: a client retrying after a rounded-down delay would be refused again.
fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Decision {
    /// The status a refusal is answered with, from the shared table.
    pub fn code(&self) -> ErrorCode {
        match self.outcome {
            Outcome::Unavailable => ErrorCode::Unavailable,
            Outcome::Allowed | Outcome::Limited => ErrorCode::ResourceExhausted,
        }
    }

    fn message(&self) -> String {
        let retry = self.retry_after.unwrap_or_default().as_secs_f64();
        match self.outcome {
            Outcome::Unavailable => {
                format!("rate limit {} cannot be checked, retry in {retry:.1} s", self.policy.name())
            }
            _ => format!(
                "rate limit {} of {}/s (burst {}) exceeded for {}, retry in {retry:.1} s",
                self.policy.name(),
                self.policy.rate(),
                self.policy.burst(),
                self.key
            ),
        }
    }

    /// `RateLimit-Policy: "<name>";q=<burst>;w=<seconds to refill>` and
    /// `RateLimit: "<name>";r=<remaining>;t=<seconds until full>`, for any response.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        let name = self.policy.name();
        let policy = format!("\"{name}\";q={};w={}", self.policy.burst(), secs(self.policy.window()).max(1));
        let state = format!("\"{name}\";r={};t={}", self.remaining, secs(self.reset));
        for (header, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(header, value);
            }
        }
    }

    /// The HTTP answer to a refused request: 429 (503 when NATS is down and the limit fails
    /// closed) with `Retry-After`, the RateLimit fields and `{"code", "message", "retry_after_ms"}`.
    pub fn to_http_response(&self) -> http::Response<String> {
        let code = self.code();
        let retry_after = self.retry_after.unwrap_or(Duration::from_secs(1));
        let body = serde_json::json!({
            "code": code.as_str(),
            "message": self.message(),
            "retry_after_ms": retry_after.as_millis() as u64,
        });
        let mut response = http::Response::new(body.to_string());
        *response.status_mut() = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs(retry_after)));
        self.add_headers(headers);
        response
    }

    /// The gRPC answer to a refused request: `RESOURCE_EXHAUSTED` (`UNAVAILABLE` when failing
    /// closed) with `RetryInfo` and a `QuotaFailure` naming the key.
    pub fn to_status(&self) -> tonic::Status {
        let mut details = ErrorDetails::with_retry_info(Some(self.retry_after.unwrap_or(Duration::from_secs(1))));
        if self.outcome != Outcome::Unavailable {
            details.add_quota_failure_violation(self.key.to_string(), self.message());
        }
        tonic::Status::with_error_details(tonic::Code::from(self.code().grpc_code()), self.message(), details)
    }
}

impl QuotaError {
    /// The status a refusal is answered with, from the shared table.
    pub fn code(&self) -> ErrorCode {
        match self {
            QuotaError::Exceeded { .. } => ErrorCode::ResourceExhausted,
            QuotaError::Unavailable { .. } => ErrorCode::Unavailable,
        }
    }

    /// `RESOURCE_EXHAUSTED` with a `QuotaFailure` (no `RetryInfo`: waiting does not free a
    /// counted quota), or `UNAVAILABLE` with a retry hint.
    pub fn to_status(&self) -> tonic::Status {
        let code = tonic::Code::from(self.code().grpc_code());
        match self {
            QuotaError::Exceeded { key, .. } => {
                let details = ErrorDetails::with_quota_failure_violation(key.to_string(), self.to_string());
                tonic::Status::with_error_details(code, self.to_string(), details)
            }
            QuotaError::Unavailable { .. } => {
                let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(1)));
                tonic::Status::with_error_details(code, self.to_string(), details)
            }
        }
    }

    /// 429 (or 503) with `{"code", "message"}`; a `Retry-After` only when retrying can help.
    pub fn to_http_response(&self) -> http::Response<String> {
        let code = self.code();
        let body = serde_json::json!({ "code": code.as_str(), "message": self.to_string() });
        let mut response = http::Response::new(body.to_string());
        *response.status_mut() = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if code == ErrorCode::Unavailable {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tonic_types::StatusExt;

    use crate::{Decision, Outcome, QuotaKey, RatePolicy};

    fn refused() -> Decision {
        Decision {
            outcome: Outcome::Limited,
            key: Arc::new(QuotaKey::agency("a1", "api-writes").unwrap()),
            policy: RatePolicy::per_second("api-writes", 50, 100),
            remaining: 0,
            reset: Duration::from_millis(2_000),
            retry_after: Some(Duration::from_millis(20)),
        }
    }

    #[test]
    fn a_refusal_over_http_is_429_with_retry_after_and_ratelimit_fields() {
        let response = refused().to_http_response();
        assert_eq!(response.status(), 429);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        // Rounded up: retrying after 0 s would be refused again.
        assert_eq!(header("retry-after"), "1");
        assert_eq!(header("ratelimit-policy"), "\"api-writes\";q=100;w=2");
        assert_eq!(header("ratelimit"), "\"api-writes\";r=0;t=2");
        let body: serde_json::Value = serde_json::from_str(response.body()).unwrap();
        assert_eq!(body["code"], "resource_exhausted");
        assert_eq!(body["retry_after_ms"], 20);
    }

    #[test]
    fn a_refusal_over_grpc_is_resource_exhausted_with_retry_info_and_quota_failure() {
        let status = refused().to_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(Duration::from_millis(20)));
        assert_eq!(details.quota_failure().unwrap().violations[0].subject, "agency:a1:api-writes");
    }
}

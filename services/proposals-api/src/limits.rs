//! Rate limits on API calls per agency and per caller, shared by every replica through NATS
//! (`folio_quota`). Reads (`Get*`, `List*`, `Download*`) and writes (everything else) have
//! separate budgets, so a flood of writes never blocks an agency's reads. A call over a limit
//! is answered `RESOURCE_EXHAUSTED` with `RetryInfo` and `QuotaFailure` before its handler runs.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use folio_quota::{Decision, QuotaArgs, QuotaKey, RateLimiter, RatePolicy};
use tonic::server::NamedService;

use crate::{Caller, Config};

#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Rate limits on API calls (`on`/`off`; off only for benchmarks and trusted setups).
    #[arg(
        long = "api-rate-limits",
        env = "FOLIO_API_RATE_LIMITS",
        default_value = "on",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set,
    )]
    pub rate_limits: bool,

    /// Writes a second per agency, all its users together (bursts of twice as many).
    #[arg(long, env = "FOLIO_API_AGENCY_WRITES_PER_SEC", default_value_t = 50)]
    pub agency_writes_per_sec: u32,

    /// Writes a second per caller (the user a token names; bursts of twice as many).
    #[arg(long, env = "FOLIO_API_USER_WRITES_PER_SEC", default_value_t = 20)]
    pub user_writes_per_sec: u32,

    /// Reads a second per agency (bursts of twice as many).
    #[arg(long, env = "FOLIO_API_AGENCY_READS_PER_SEC", default_value_t = 500)]
    pub agency_reads_per_sec: u32,

    /// Reads a second per caller (bursts of twice as many).
    #[arg(long, env = "FOLIO_API_USER_READS_PER_SEC", default_value_t = 200)]
    pub user_reads_per_sec: u32,

    #[command(flatten)]
    pub quota: QuotaArgs,
}

/// The API's four rate policies over the shared limiter.
#[derive(Clone)]
pub struct ApiLimits {
    rates: RateLimiter,
    writes: Budget,
    reads: Budget,
}

#[derive(Clone, Copy)]
struct Budget {
    agency: RatePolicy,
    user: RatePolicy,
    name: &'static str,
}

impl ApiLimits {
    /// The limits over the API's NATS connection (made with `retry_on_initial_connect`: the API
    /// starts while NATS is down, and the limits then hold per replica, see folio-quota's README).
    pub fn over(nats: async_nats::Client, config: &Config) -> Self {
        let js = async_nats::jetstream::new(nats);
        Self::new(RateLimiter::new(js, &config.limits.quota, config.bus.stream_replicas), &config.limits)
    }

    pub fn new(rates: RateLimiter, args: &LimitArgs) -> Self {
        let policy = |name, per_sec: u32| RatePolicy::per_second(name, per_sec, per_sec.saturating_mul(2));
        Self {
            rates,
            writes: Budget {
                agency: policy("agency-api-writes", args.agency_writes_per_sec),
                user: policy("user-api-writes", args.user_writes_per_sec),
                name: "api-writes",
            },
            reads: Budget {
                agency: policy("agency-api-reads", args.agency_reads_per_sec),
                user: policy("user-api-reads", args.user_reads_per_sec),
                name: "api-reads",
            },
        }
    }

    /// The shared limiter, for routes with policies of their own (the client's page).
    pub fn limiter(&self) -> &RateLimiter {
        &self.rates
    }

    /// Spends one call of `caller` on `method` (a gRPC path); the refusal if over a limit. The
    /// caller's own budget is checked first, so one noisy user does not spend the agency's.
    pub async fn check(&self, caller: &Caller, method: &str) -> Result<(), Decision> {
        let budget = if is_read(method) { self.reads } else { self.writes };
        // Ids are UUIDs: always valid key parts.
        let keys = [
            (QuotaKey::token(caller.user_id, budget.name), budget.user),
            (QuotaKey::agency(caller.agency_id, budget.name), budget.agency),
        ];
        for (key, policy) in keys {
            let Ok(key) = key else { continue };
            let decision = self.rates.check(&key, &policy).await;
            if !decision.is_allowed() {
                return Err(decision);
            }
        }
        Ok(())
    }
}

fn is_read(method: &str) -> bool {
    let name = method.rsplit('/').next().unwrap_or_default();
    ["Get", "List", "Download"].iter().any(|prefix| name.starts_with(prefix))
}

/// A gRPC service behind the API's rate limits. Sits inside the auth interceptor, which has
/// attached the [`Caller`] by then; calls without one are the interceptor's to refuse.
#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    limits: Option<ApiLimits>,
}

impl<S> Limited<S> {
    pub fn new(inner: S, limits: &Option<ApiLimits>) -> Self {
        Self { inner, limits: limits.clone() }
    }
}

impl<S: NamedService> NamedService for Limited<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B> tower::Service<http::Request<B>> for Limited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = request.extensions().get::<Caller>().copied();
        let (Some(limits), Some(caller)) = (self.limits.clone(), caller) else {
            return Box::pin(self.inner.call(request));
        };
        // The clone is not ready yet: call the instance poll_ready was called on.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            match limits.check(&caller, request.uri().path()).await {
                Ok(()) => inner.call(request).await,
                Err(refusal) => {
                    metrics::counter!("folio_api_rate_limited_total", "policy" => refusal.policy.name()).increment(1);
                    Ok(refusal.to_status().into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gets_lists_and_downloads_are_reads_everything_else_writes() {
        assert!(super::is_read("/folio.api.v1.ProposalService/GetProposal"));
        assert!(super::is_read("/folio.api.v1.ClientService/ListClients"));
        assert!(super::is_read("/folio.api.v1.ProposalService/DownloadPdf"));
        assert!(!super::is_read("/folio.api.v1.ProposalService/RequestPdf"));
        assert!(!super::is_read("/folio.api.v1.ProposalService/CreateProposal"));
    }
}

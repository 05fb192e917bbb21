//! The client's side: public HTTP routes a proposal's client reaches through the capability
//! link in their email, with no account (issue 20). Browsers call them through the gateway.
//!
//! - `GET  /v1/client/{token}`          the proposal as the client sees it
//! - `GET  /v1/client/{token}/pdf`      its PDF (the current version's)
//! - `POST /v1/client/{token}/view`     records an open (the first moves `sent → viewed`), answers as GET
//! - `POST /v1/client/{token}/accept`   `{signer_name, consent, proposal_version, pdf_sha256}`
//! - `POST /v1/client/{token}/decline`  `{reason?}`
//!
//! A token that is wrong, expired, revoked, tampered with or malformed, or whose proposal was
//! archived, gets one answer: 404 `{"code":"not_found","message":"this link is not valid"}`.
//! Answers carry no internal id: the token is the only name the client has. Every request
//! spends from two rate limits first: per link (the token's hash) and per address.

use std::{net::IpAddr, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use folio_auth::client_link::{ClientLinkArgs, TokenHash};
use folio_domain::{Currency, ErrorCode};
use folio_quota::{QuotaKey, RatePolicy};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::{
    AppState,
    error::ApiError,
    store::client_links::{self as links, ClientState, ClientView, Refusal, Signature},
};

#[derive(Debug, Clone, clap::Args)]
pub struct ClientPageArgs {
    #[command(flatten)]
    pub link: ClientLinkArgs,

    /// How long a client's proposal link stays valid after the proposal is sent.
    #[arg(long, env = "FOLIO_CLIENT_LINK_TTL", default_value = "60d", value_parser = humantime::parse_duration)]
    pub client_link_ttl: Duration,

    /// Requests a minute through one client link, all its routes together (with
    /// FOLIO_API_RATE_LIMITS on).
    #[arg(long, env = "FOLIO_CLIENT_LINK_REQUESTS_PER_MIN", default_value_t = 60)]
    pub client_link_requests_per_min: u32,

    /// Requests a minute to the client routes from one address, whatever the link (the
    /// address the gateway saw: the last `X-Forwarded-For` hop).
    #[arg(long, env = "FOLIO_CLIENT_ADDRESS_REQUESTS_PER_MIN", default_value_t = 120)]
    pub client_address_requests_per_min: u32,

    /// AcceptInvitation calls a minute from one address (with FOLIO_API_RATE_LIMITS on): the
    /// other public, account-less entry.
    #[arg(long, env = "FOLIO_INVITATION_REQUESTS_PER_MIN", default_value_t = 20)]
    pub invitation_requests_per_min: u32,
}

impl ClientPageArgs {
    pub fn issuer(&self) -> links::LinkIssuer {
        links::LinkIssuer { key: self.link.key(), ttl: self.client_link_ttl }
    }

    /// The limit on redeeming invitations from one address.
    pub fn invitation_policy(&self) -> RatePolicy {
        RatePolicy::per_window("invitation-address", self.invitation_requests_per_min.max(1), Duration::from_secs(60))
    }

    fn policies(&self) -> Policies {
        let window = Duration::from_secs(60);
        Policies {
            link: RatePolicy::per_window("client-link", self.client_link_requests_per_min.max(1), window),
            address: RatePolicy::per_window("client-address", self.client_address_requests_per_min.max(1), window),
        }
    }
}

#[derive(Clone, Copy)]
struct Policies {
    link: RatePolicy,
    address: RatePolicy,
}

#[derive(Clone)]
struct ClientRoutes {
    state: AppState,
    policies: Policies,
}

/// The public routes, to merge into the API's HTTP app.
pub fn routes(state: AppState) -> axum::Router {
    let policies = state.client.policies();
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/client/{token}", get(show))
        .route("/v1/client/{token}/pdf", get(pdf))
        .route("/v1/client/{token}/signed.pdf", get(signed_pdf))
        .route("/v1/client/{token}/view", post(view))
        .route("/v1/client/{token}/accept", post(accept))
        .route("/v1/client/{token}/decline", post(decline))
        .with_state(ClientRoutes { state, policies })
}

/// Every failure of a client route, answered once as `{code, message}` with a status from the
/// shared table. A store error's detail (which may name ids) goes to the log only.
#[derive(Debug)]
enum ClientError {
    Refused(Refusal),
    Invalid(String),
    PdfNotReady,
    /// Accepted, and pdf-render has not finished the signed copy yet.
    SignedCopyNotReady,
    /// Not accepted through this page: there is no signed copy to wait for.
    NoSignedCopy,
    Limited(folio_quota::Decision),
}

impl From<Refusal> for ClientError {
    fn from(r: Refusal) -> Self {
        ClientError::Refused(r)
    }
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Refused(Refusal::Store(e))
    }
}

impl From<sqlx::Error> for ClientError {
    fn from(e: sqlx::Error) -> Self {
        ClientError::Refused(e.into())
    }
}

impl IntoResponse for ClientError {
    fn into_response(self) -> Response {
        let (code, message) = match self {
            ClientError::Limited(decision) => return decision.to_http_response().into_response(),
            ClientError::Invalid(message) => (ErrorCode::InvalidArgument, message),
            ClientError::PdfNotReady => return preparing("the PDF is being prepared; retry in a moment"),
            ClientError::SignedCopyNotReady => {
                return preparing("the signed copy is being prepared; retry in a moment");
            }
            ClientError::NoSignedCopy => (ErrorCode::NotFound, "this proposal has no signed copy".to_owned()),
            ClientError::Refused(r) => match r {
                Refusal::NoLink => (ErrorCode::NotFound, r.to_string()),
                Refusal::Changed { .. } | Refusal::OtherPdf => (ErrorCode::Conflict, r.to_string()),
                Refusal::Answered(_) | Refusal::Expired(_) | Refusal::Withdrawn => {
                    (ErrorCode::FailedPrecondition, r.to_string())
                }
                // Two accepts that raced past the checks: the second finds the answer recorded.
                Refusal::Store(ApiError::StaleVersion { .. } | ApiError::IllegalTransition(_)) => {
                    (ErrorCode::FailedPrecondition, "this proposal was already answered".to_owned())
                }
                Refusal::Store(ApiError::Db(e)) if crate::error::is_unique_violation(&e) => {
                    (ErrorCode::FailedPrecondition, "this proposal was already answered".to_owned())
                }
                Refusal::Store(e) => {
                    let code = e.code();
                    tracing::error!(error = %folio_runtime::error_chain(&e), "client route failed");
                    (code, if code == ErrorCode::Unavailable { "busy, retry" } else { "internal error" }.to_owned())
                }
            },
        };
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(json!({ "code": code.as_str(), "message": message }))).into_response()
    }
}

fn preparing(message: &str) -> Response {
    let body = json!({"code": ErrorCode::Unavailable.as_str(), "message": message});
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "2")], Json(body)).into_response()
}

/// The address the gateway saw (it appends it to `X-Forwarded-For`); the API is reachable from
/// the gateway only (docs/security.md).
pub(crate) fn client_address(headers: &HeaderMap) -> Option<IpAddr> {
    let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>();
    forwarded.last()?.rsplit(',').next()?.trim().parse().ok()
}

fn user_agent(headers: &HeaderMap) -> String {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().chars().take(512).collect()
}

/// Spends one request of the address and of the link; parses the token. Limits come first, so a
/// guesser is limited whatever they guess.
async fn admit(routes: &ClientRoutes, token: &str, headers: &HeaderMap) -> Result<TokenHash, ClientError> {
    let hash = TokenHash::of(token);
    if let Some(limits) = &routes.state.limits {
        let address = client_address(headers).map(|ip| ip.to_string().replace(['.', ':'], "-"));
        let link = hash.as_ref().map(TokenHash::label).unwrap_or_else(|| "malformed".to_owned());
        let keys = [
            (
                QuotaKey::parse(&format!("addr:{}:client", address.as_deref().unwrap_or("unknown"))),
                routes.policies.address,
            ),
            (QuotaKey::parse(&format!("link:{link}:client")), routes.policies.link),
        ];
        for (key, policy) in keys {
            let Ok(key) = key else { continue };
            let decision = limits.limiter().check(&key, &policy).await;
            if !decision.is_allowed() {
                metrics::counter!("folio_api_rate_limited_total", "policy" => policy.name()).increment(1);
                return Err(ClientError::Limited(decision));
            }
        }
    }
    hash.ok_or(ClientError::Refused(Refusal::NoLink))
}

fn span(action: &'static str) -> tracing::Span {
    // No token in the span: it is a credential.
    tracing::info_span!("client_page", action)
}

/// The page's JSON. Ids stay out: the client has the token and nothing else.
fn page(view: &ClientView) -> Value {
    let p = &view.proposal;
    let today = time::OffsetDateTime::now_utc().date();
    let state = p.status().map(|s| ClientState::of(s, p.valid_until, today).as_str()).unwrap_or("withdrawn");
    let currency = Currency::parse(p.currency.trim()).ok();
    let format = |minor: i64| currency.map(|c| c.format_minor(minor)).unwrap_or_else(|| minor.to_string());
    let items: Vec<Value> = view
        .line_items
        .iter()
        .map(|i| {
            json!({
                "description": i.description,
                "quantity_milli": i.quantity_milli,
                "unit_price_minor": i.unit_price_minor,
                "tax_rate_ppm": i.tax_rate_ppm,
                "subtotal_minor": i.subtotal_minor,
                "tax_minor": i.tax_minor,
                "unit_price": format(i.unit_price_minor),
                "subtotal": format(i.subtotal_minor),
            })
        })
        .collect();
    let rfc3339 = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).ok();
    json!({
        "agency": { "name": view.agency_name, "brand_color": view.brand_color, "logo_svg": view.logo_svg },
        "title": p.title,
        "content": p.content,
        "terms": p.terms,
        "currency": p.currency.trim(),
        "valid_until": p.valid_until.map(|d| d.to_string()),
        "version": p.version,
        "state": state,
        "sent_at": p.sent_at.and_then(rfc3339),
        "line_items": items,
        "subtotal_minor": p.subtotal_minor,
        "tax_minor": p.tax_minor,
        "total_minor": p.total_minor,
        "subtotal": format(p.subtotal_minor),
        "tax": format(p.tax_minor),
        "total": format(p.total_minor),
        "pdf": view.pdf.as_ref().map(|(sha, size)| json!({ "sha256": sha, "size_bytes": size })),
        "signed_copy": view.signed_copy.as_ref().map(|(sha, size)| json!({ "sha256": sha, "size_bytes": size })),
        "response": view.response.as_ref().map(|r| json!({
            "decision": r.decision,
            "proposal_version": r.proposal_version,
            "signer_name": r.signer_name,
            "pdf_sha256": r.pdf_sha256,
            "decline_reason": r.decline_reason,
            "responded_at": rfc3339(r.responded_at),
        })),
    })
}

/// Queues the current version's PDF when there is none yet (keyed: asking twice renders once),
/// on behalf of the proposal's owner.
async fn ensure_pdf(state: &AppState, link: &links::Link, view: &ClientView) -> Result<(), ClientError> {
    if view.pdf.is_none() && state.pdfs.is_some() {
        links::request_pdf(&state.pool, link, view, state.pdf_requeue_after).await?;
    }
    Ok(())
}

fn answer(view: &ClientView, txid: u32) -> Response {
    let mut body = page(view);
    body["txid"] = json!(txid);
    // A page is the client's own: never stored by a shared cache.
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// The live link `token` names, admitted by the rate limits, and what its client sees now.
async fn current(
    routes: &ClientRoutes,
    token: &str,
    headers: &HeaderMap,
) -> Result<(links::Link, ClientView), ClientError> {
    let hash = admit(routes, token, headers).await?;
    let mut conn = routes.state.pool.acquire().await?;
    let link = links::find(&mut conn, &hash, false).await?.ok_or(Refusal::NoLink)?;
    let view = links::view(&mut conn, &link).await?;
    Ok((link, view))
}

async fn show(
    State(routes): State<ClientRoutes>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ClientError> {
    async {
        let (link, view) = current(&routes, &token, &headers).await?;
        ensure_pdf(&routes.state, &link, &view).await?;
        Ok(answer(&view, 0))
    }
    .instrument(span("show"))
    .await
}

async fn view(
    State(routes): State<ClientRoutes>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ClientError> {
    async {
        let hash = admit(&routes, &token, &headers).await?;
        let device = links::device_class(&user_agent(&headers));
        let committed = links::record_view(&routes.state.pool, &hash, device).await?;
        let (link, view) = &committed.value;
        ensure_pdf(&routes.state, link, view).await?;
        Ok(answer(view, committed.txid.0))
    }
    .instrument(span("view"))
    .await
}

async fn pdf(
    State(routes): State<ClientRoutes>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ClientError> {
    async {
        let (link, view) = current(&routes, &token, &headers).await?;
        let Some((sha, size)) = view.pdf.clone() else {
            ensure_pdf(&routes.state, &link, &view).await?;
            return Err(ClientError::PdfNotReady);
        };
        let filename =
            format!("{}-v{}.pdf", folio_domain::file_names::slug(&view.proposal.title), view.proposal.version);
        serve_pdf(&routes, sha, size, &filename).await
    }
    .instrument(span("pdf"))
    .await
}

/// The signed copy of the client's acceptance, once pdf-render has made it.
async fn signed_pdf(
    State(routes): State<ClientRoutes>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ClientError> {
    async {
        let (_, view) = current(&routes, &token, &headers).await?;
        let Some((sha, size)) = view.signed_copy.clone() else {
            let accepted = view.response.as_ref().is_some_and(|r| r.decision == "accepted");
            return Err(if accepted { ClientError::SignedCopyNotReady } else { ClientError::NoSignedCopy });
        };
        let version = view.response.as_ref().map_or(view.proposal.version, |r| r.proposal_version);
        let filename = folio_domain::file_names::signed_copy(&view.proposal.title, version);
        serve_pdf(&routes, sha, size, &filename).await
    }
    .instrument(span("signed_pdf"))
    .await
}

async fn serve_pdf(routes: &ClientRoutes, sha: String, size: i64, filename: &str) -> Result<Response, ClientError> {
    let object = crate::pdfs::pdf_store(&routes.state)?.open(&sha).await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(object));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/pdf".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, format!("inline; filename=\"{filename}\"")),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
            (header::HeaderName::from_static("folio-pdf-sha256"), sha),
        ],
        body,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct AcceptBody {
    #[serde(default)]
    signer_name: String,
    #[serde(default)]
    consent: bool,
    proposal_version: Option<i64>,
    #[serde(default)]
    pdf_sha256: String,
}

async fn accept(
    State(routes): State<ClientRoutes>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ClientError> {
    async {
        let hash = admit(&routes, &token, &headers).await?;
        let body: AcceptBody =
            serde_json::from_slice(&body).map_err(|e| ClientError::Invalid(format!("invalid request body: {e}")))?;
        let signer_name = body.signer_name.trim().to_owned();
        let mut problems = Vec::new();
        if signer_name.chars().count() < 2 || signer_name.chars().count() > 200 || signer_name.contains('\0') {
            problems.push("type your full name (2 to 200 characters) to sign");
        }
        if !body.consent {
            problems.push("tick the box to agree to sign this proposal electronically");
        }
        let pdf_sha256 = body.pdf_sha256.trim().to_ascii_lowercase();
        if pdf_sha256.len() != 64 || !pdf_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push("pdf_sha256 must be the SHA-256 (64 hex digits) of the PDF you were shown");
        }
        let Some(proposal_version) = body.proposal_version else {
            problems.push("proposal_version must be the version the page showed");
            return Err(ClientError::Invalid(problems.join("; ")));
        };
        if !problems.is_empty() {
            return Err(ClientError::Invalid(problems.join("; ")));
        }
        let signature = Signature {
            signer_name,
            proposal_version,
            pdf_sha256,
            ip_address: client_address(&headers),
            user_agent: user_agent(&headers),
        };
        let committed = links::accept(&routes.state.pool, &hash, &signature).await?;
        show_after(&routes, &hash, committed.txid.0).await
    }
    .instrument(span("accept"))
    .await
}

#[derive(Debug, Deserialize, Default)]
struct DeclineBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn decline(
    State(routes): State<ClientRoutes>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ClientError> {
    async {
        let hash = admit(&routes, &token, &headers).await?;
        let body: DeclineBody = if body.is_empty() {
            DeclineBody::default()
        } else {
            serde_json::from_slice(&body).map_err(|e| ClientError::Invalid(format!("invalid request body: {e}")))?
        };
        let reason = body.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        if reason.as_ref().is_some_and(|r| r.chars().count() > 2000 || r.contains('\0')) {
            return Err(ClientError::Invalid("the reason can be at most 2000 characters".into()));
        }
        let committed = links::decline(&routes.state.pool, &hash, reason.as_deref()).await?;
        show_after(&routes, &hash, committed.txid.0).await
    }
    .instrument(span("decline"))
    .await
}

async fn show_after(routes: &ClientRoutes, hash: &TokenHash, txid: u32) -> Result<Response, ClientError> {
    let mut conn = routes.state.pool.acquire().await?;
    let link = links::find(&mut conn, hash, false).await?.ok_or(Refusal::NoLink)?;
    let view = links::view(&mut conn, &link).await?;
    Ok(answer(&view, txid))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_address_is_the_last_forwarded_hop() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(super::client_address(&headers), None);
        headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        assert_eq!(super::client_address(&headers), Some("203.0.113.7".parse().unwrap()));
        headers.append("x-forwarded-for", "2001:db8::1".parse().unwrap());
        assert_eq!(super::client_address(&headers), Some("2001:db8::1".parse().unwrap()));
    }
}

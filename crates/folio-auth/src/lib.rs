//! Bearer JWTs (HS256): who the caller is, which agency they act for, and what they may do.
//! One implementation for the API (gRPC and HTTP), the notifier's API and the edge, so a
//! token means the same everywhere.

pub mod client_link;

use std::sync::Arc;

use folio_domain::{AgencyId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads everything in the agency, writes nothing.
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: UserId,
    pub agency_id: AgencyId,
    pub role: Role,
}

impl Caller {
    pub fn may_write(&self) -> bool {
        !matches!(self.role, Role::Viewer)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization: Bearer <token>")]
    Missing,
    #[error("authorization must be `Bearer <token>`")]
    NotBearer,
    /// The detail (which claim, what was wrong) is for the service's log: an unauthenticated
    /// caller learns only that the token was not accepted.
    #[error("invalid or expired bearer token")]
    Invalid(String),
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    agency_id: String,
    role: String,
    exp: u64,
    iat: u64,
}

/// Longest a token may stay valid from now: a token whose `exp` lies further ahead (e.g.
/// `2^63`) is refused, so a leaked token cannot be a key for ever.
pub const DEFAULT_MAX_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(31 * 24 * 3600);

/// Clock skew allowed between the issuer and the services, for `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// The built-in secret: public (it is in this file), for a local cluster only.
pub const DEVELOPMENT_SECRET: &str = "folio-local-development-secret-change-me";

/// The token secret, flattened into the configuration of every service that issues or checks
/// bearer tokens, so the flag, its default and its length rule are the same everywhere.
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// HS256 secret of callers' bearer tokens (at least 32 bytes; the same for every service).
    #[arg(
        long = "jwt-secret",
        env = "FOLIO_JWT_SECRET",
        default_value = DEVELOPMENT_SECRET,
        hide_env_values = true
    )]
    pub jwt_secret: String,
}

impl JwtArgs {
    /// The variable that sets the secret, for messages about it.
    pub const SECRET_VAR: &str = "FOLIO_JWT_SECRET";

    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.jwt_secret.as_bytes())
    }
}

#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<(EncodingKey, DecodingKey, Validation)>,
    max_lifetime: std::time::Duration,
}

impl Authenticator {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            keys: Arc::new((EncodingKey::from_secret(secret), DecodingKey::from_secret(secret), validation)),
            max_lifetime: DEFAULT_MAX_TOKEN_LIFETIME,
        }
    }

    /// Verifies an `Authorization` header value (`Bearer <token>`); `None` when absent.
    pub fn verify_header(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let token =
            value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(AuthError::NotBearer)?;
        self.verify(token.trim())
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.keys.1, &self.keys.2)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let bad = |what: &str| AuthError::Invalid(format!("bad {what} claim"));
        let latest_exp = unix_now().saturating_add(self.max_lifetime.as_secs() + LEEWAY_SECS);
        if claims.exp > latest_exp {
            return Err(bad("exp (further ahead than the longest token lifetime)"));
        }
        Ok(Caller {
            user_id: UserId::parse(&claims.sub).map_err(|_| bad("sub"))?,
            agency_id: AgencyId::parse(&claims.agency_id).map_err(|_| bad("agency_id"))?,
            role: Role::parse(&claims.role).ok_or_else(|| bad("role"))?,
        })
    }

    /// Signs a token for `caller`, valid for `ttl`; used by the demo seeder and tests.
    pub fn issue(&self, caller: &Caller, ttl: std::time::Duration) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: caller.user_id.to_string(),
            agency_id: caller.agency_id.to_string(),
            role: caller.role.as_str().to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.keys.0).expect("HS256 encoding cannot fail")
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_foreign_ones_do_not() {
        let auth = Authenticator::new(b"0123456789abcdef0123456789abcdef");
        let caller = Caller { user_id: UserId::new(), agency_id: AgencyId::new(), role: Role::Editor };
        let token = auth.issue(&caller, std::time::Duration::from_secs(60));
        let back = auth.verify_header(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!((back.user_id, back.agency_id, back.role), (caller.user_id, caller.agency_id, caller.role));

        let other = Authenticator::new(b"another-secret-another-secret-xx");
        assert!(matches!(other.verify(&token), Err(AuthError::Invalid(_))));
        assert!(auth.verify("not.a.jwt").is_err());
        assert_eq!(auth.verify_header(None).unwrap_err(), AuthError::Missing);
        assert_eq!(auth.verify_header(Some("Basic abc")).unwrap_err(), AuthError::NotBearer);
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A token with these claims on top of valid ones, signed with [`SECRET`].
    fn forged(extra: serde_json::Value) -> String {
        let mut claims = serde_json::json!({
            "sub": UserId::new().to_string(),
            "agency_id": AgencyId::new().to_string(),
            "role": "editor",
            "iat": unix_now(),
            "exp": unix_now() + 600,
        });
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn a_token_not_valid_before_next_hour_is_refused_now() {
        let auth = Authenticator::new(SECRET);
        assert!(auth.verify(&forged(serde_json::json!({ "nbf": unix_now() + 3600 }))).is_err());
        assert!(auth.verify(&forged(serde_json::json!({ "nbf": unix_now() - 10 }))).is_ok());
    }

    #[test]
    fn a_token_expiring_in_the_year_292_billion_is_refused() {
        let auth = Authenticator::new(SECRET);
        assert!(auth.verify(&forged(serde_json::json!({ "exp": 1u64 << 63 }))).is_err());
        let a_year = unix_now() + 365 * 24 * 3600;
        assert!(auth.verify(&forged(serde_json::json!({ "exp": a_year }))).is_err());
        let a_week = unix_now() + 7 * 24 * 3600;
        assert!(auth.verify(&forged(serde_json::json!({ "exp": a_week }))).is_ok());
    }

    #[test]
    fn an_unauthenticated_caller_is_not_told_which_claim_was_wrong() {
        let auth = Authenticator::new(SECRET);
        for token in [
            forged(serde_json::json!({ "role": "owner" })),
            forged(serde_json::json!({ "agency_id": "not-an-id" })),
            forged(serde_json::json!({ "exp": unix_now() - 3600 })),
            "not.a.jwt".to_owned(),
        ] {
            let e = auth.verify(&token).unwrap_err();
            assert_eq!(e.to_string(), "invalid or expired bearer token");
        }
    }
}

//! Bearer JWTs (HS256): who the caller is, which agency they act for, and what they may do.
//! One implementation for the API (gRPC and HTTP), the notifier's API and the edge, so a
//! token means the same everywhere.

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
    #[error("invalid bearer token: {0}")]
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

/// Shortest HS256 secret a service starts with.
pub const MIN_SECRET_BYTES: usize = 32;

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
    pub fn is_strong(&self) -> bool {
        self.jwt_secret.len() >= MIN_SECRET_BYTES
    }

    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.jwt_secret.as_bytes())
    }
}

#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<(EncodingKey, DecodingKey, Validation)>,
}

impl Authenticator {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Clock skew between issuer and services.
        validation.leeway = 30;
        Self { keys: Arc::new((EncodingKey::from_secret(secret), DecodingKey::from_secret(secret), validation)) }
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
        Ok(Caller {
            user_id: UserId::parse(&claims.sub).map_err(|_| bad("sub"))?,
            agency_id: AgencyId::parse(&claims.agency_id).map_err(|_| bad("agency_id"))?,
            role: Role::parse(&claims.role).ok_or_else(|| bad("role"))?,
        })
    }

    /// Signs a token for `caller`, valid for `ttl`; used by the demo seeder and tests.
    pub fn issue(&self, caller: &Caller, ttl: std::time::Duration) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
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
}

//! Bearer JWTs (HS256): who the caller is, which agency they act for, and what they may do.
//! Verified once per call by a tonic interceptor; handlers read the resulting `Caller`.

use std::sync::Arc;

use folio_domain::{AgencyId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::error::ApiError;

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
    pub fn require_writer(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Viewer => Err(ApiError::PermissionDenied("the viewer role cannot change data".into())),
            Role::Editor | Role::Admin => Ok(()),
        }
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Claims {
    sub: String,
    agency_id: String,
    role: String,
    exp: u64,
    iat: u64,
}

#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<(EncodingKey, DecodingKey, Validation)>,
}

impl Authenticator {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Self { keys: Arc::new((EncodingKey::from_secret(secret), DecodingKey::from_secret(secret), validation)) }
    }

    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.keys.1, &self.keys.2)
            .map_err(|e| ApiError::Unauthenticated(format!("invalid bearer token: {e}")))?;
        let claims = data.claims;
        let bad = |what: &str| ApiError::Unauthenticated(format!("invalid bearer token: bad {what} claim"));
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

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| ApiError::Unauthenticated("missing authorization: Bearer <token>".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| ApiError::Unauthenticated("authorization must be `Bearer <token>`".into()))?;
        let caller = self.verify(token.trim())?;
        let span = tracing::Span::current();
        span.record("agency_id", tracing::field::display(caller.agency_id));
        span.record("user_id", tracing::field::display(caller.user_id));
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor attached; absent only if a service was mounted without it.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, ApiError> {
    request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| ApiError::Unauthenticated("missing authorization: Bearer <token>".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_foreign_ones_do_not() {
        let auth = Authenticator::new(b"0123456789abcdef0123456789abcdef");
        let caller = Caller { user_id: UserId::new(), agency_id: AgencyId::new(), role: Role::Editor };
        let token = auth.issue(&caller, std::time::Duration::from_secs(60));
        let back = auth.verify(&token).unwrap();
        assert_eq!((back.user_id, back.agency_id, back.role), (caller.user_id, caller.agency_id, caller.role));

        let other = Authenticator::new(b"another-secret-another-secret-xx");
        assert!(matches!(other.verify(&token), Err(ApiError::Unauthenticated(_))));
        assert!(auth.verify("not.a.jwt").is_err());
    }
}

//! Who may do what on the streams surface.
//!
//! Every request names its caller with `Authorization: Bearer <token>`: the API's JWT (an
//! agency member with a role) or a service token from the configuration (another Folio
//! service, acting in every namespace). A member's streams are the paths under
//! `agencies/<their agency>/`; viewers read, editors also create, append and close, admins
//! also delete. `--ds-open` turns all of this off (the conformance suite), never the path
//! rules.

use axum::http::{HeaderMap, header};
use folio_auth::{AuthError, Authenticator, Caller, Role};
use folio_domain::AgencyId;
use sha2::{Digest, Sha256};

use super::{
    StreamsConfig,
    error::{Result, StreamError},
    path::StreamPath,
};

/// Shortest service token the edge starts with (as for the JWT secret).
pub const MIN_SERVICE_TOKEN_BYTES: usize = folio_runtime::MIN_SECRET_BYTES;

/// A configured secret; never printed (`Debug` of the configuration included).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// clap's parser: any value; the length rule is checked by `StreamsConfig::validate`, whose
    /// message never repeats the value (clap's own errors would).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        Ok(Secret(s.to_owned()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn digest(&self) -> [u8; 32] {
        digest(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The caller of one request.
#[derive(Debug, Clone, Copy)]
pub enum Principal {
    /// `--ds-open`: nobody is asked for a token and namespaces are off.
    Anyone,
    /// A configured service token: every namespace, every operation. Named by its place in
    /// `FOLIO_DS_SERVICE_TOKENS` (`service-0`, …), which keys its own append rate.
    Service(ServiceName),
    /// The `--ds-claim-token` of earlier releases: it claims pull wakes of shared (service or
    /// open-mode) subscriptions, as it always did, and nothing else.
    ClaimWorker,
    /// A member of an agency, by the API's JWT.
    Member(Caller),
}

/// A service token's name: `service-<its index in FOLIO_DS_SERVICE_TOKENS>`, never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceName(pub usize);

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service-{}", self.0)
    }
}

/// What a request does to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// GET (catch-up, long-poll, SSE) and HEAD.
    Read,
    /// PUT (create, fork), POST (append, close); managing subscriptions.
    Write,
    /// DELETE of a stream or a subscription.
    Delete,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
        }
    }

    fn allows(self, role: Role) -> bool {
        match self {
            Action::Read => true,
            Action::Write => matches!(role, Role::Editor | Role::Admin),
            Action::Delete => role == Role::Admin,
        }
    }
}

impl Principal {
    /// May this caller do `action` on the stream at `path`? A path outside the caller's
    /// namespace is refused before anything is looked up, so the answer never depends on
    /// whether the stream exists.
    pub fn authorize(&self, action: Action, path: &StreamPath) -> Result<()> {
        match self {
            Principal::Anyone => Ok(()),
            Principal::ClaimWorker => Err(StreamError::Forbidden("this token only claims pull wakes".into())),
            Principal::Service(_) => match path.namespace() {
                Some(_) => Ok(()),
                None => Err(StreamError::Forbidden("streams live under agencies/<agency-id>/".into())),
            },
            Principal::Member(caller) => {
                if path.namespace() != Some(caller.agency_id) {
                    return Err(outside_namespace(caller.agency_id));
                }
                self.require(action)
            }
        }
    }

    /// May this caller do `action` in its own scope (subscriptions)?
    pub fn require(&self, action: Action) -> Result<()> {
        match self {
            Principal::Anyone | Principal::Service(_) => Ok(()),
            Principal::ClaimWorker => Err(StreamError::Forbidden("this token only claims pull wakes".into())),
            Principal::Member(caller) if action.allows(caller.role) => Ok(()),
            Principal::Member(caller) => {
                Err(StreamError::Forbidden(format!("a {} may not {} here", caller.role.as_str(), action.verb())))
            }
        }
    }

    /// The agency whose namespace confines this caller; `None` acts in every namespace.
    pub fn agency(&self) -> Option<AgencyId> {
        match self {
            Principal::Member(caller) => Some(caller.agency_id),
            _ => None,
        }
    }
}

pub fn outside_namespace(agency: AgencyId) -> StreamError {
    StreamError::Forbidden(format!("outside your namespace: your streams live under agencies/{agency}/"))
}

/// Turns a request's `Authorization` header into its [`Principal`].
pub struct Gate {
    open: bool,
    auth: Authenticator,
    services: Vec<[u8; 32]>,
    claim_worker: Option<[u8; 32]>,
}

impl Gate {
    pub fn new(config: &StreamsConfig) -> Self {
        Gate {
            open: config.open,
            auth: config.jwt.authenticator(),
            services: config.service_tokens.iter().filter(|t| !t.is_empty()).map(Secret::digest).collect(),
            claim_worker: config.claim_token.as_ref().filter(|t| !t.is_empty()).map(Secret::digest),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The caller, or 401 with one message whatever was wrong with the token.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal> {
        if self.open {
            return Ok(Principal::Anyone);
        }
        let token = bearer(headers)?;
        let given = digest(token);
        // Every configured token is compared, each in constant time (over equal-length
        // digests), so the time taken says nothing about which one nearly matched.
        let service = self
            .services
            .iter()
            .enumerate()
            .fold(0usize, |hit, (i, d)| hit | (usize::from(constant_time_eq(d, &given)) * (i + 1)));
        if service > 0 {
            return Ok(Principal::Service(ServiceName(service - 1)));
        }
        if self.claim_worker.as_ref().is_some_and(|d| constant_time_eq(d, &given)) {
            return Ok(Principal::ClaimWorker);
        }
        Ok(Principal::Member(self.auth.verify(token)?))
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case, RFC 7235).
pub fn bearer(headers: &HeaderMap) -> std::result::Result<&str, AuthError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(AuthError::NotBearer),
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equality whose time does not depend on where two secrets first differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::HeaderValue;
    use clap::Parser;
    use folio_domain::UserId;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        streams: StreamsConfig,
    }

    fn gate(extra: &[&str]) -> (Gate, Authenticator) {
        let mut args = vec!["edge", "--jwt-secret", "gate-test-secret-gate-test-secret-000"];
        args.extend_from_slice(extra);
        let config = Args::parse_from(args).streams;
        (Gate::new(&config), config.jwt.authenticator())
    }

    fn with(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(token).unwrap());
        h
    }

    fn member(role: Role) -> Caller {
        Caller { user_id: UserId::new(), agency_id: AgencyId::new(), role }
    }

    #[test]
    fn tokens_name_their_callers_and_anything_else_is_unauthenticated() {
        let service = "s".repeat(40);
        let (gate, auth) = gate(&["--ds-service-token", &format!("{},{service}", "t".repeat(32))]);
        assert!(matches!(gate.authenticate(&with(&format!("Bearer {service}"))), Ok(Principal::Service(_))));
        assert!(matches!(gate.authenticate(&with(&format!("bearer {service}"))), Ok(Principal::Service(_))));
        let caller = member(Role::Viewer);
        let jwt = auth.issue(&caller, Duration::from_secs(60));
        let Ok(Principal::Member(back)) = gate.authenticate(&with(&format!("Bearer {jwt}"))) else {
            panic!("a JWT names a member")
        };
        assert_eq!(back.agency_id, caller.agency_id);
        for bad in
            [String::new(), "Basic abc".into(), "Bearer ".into(), format!("Bearer {service}x"), "Bearer a.b.c".into()]
        {
            let headers = if bad.is_empty() { HeaderMap::new() } else { with(&bad) };
            assert!(matches!(gate.authenticate(&headers), Err(StreamError::Unauthenticated(_))), "{bad:?}");
        }
    }

    #[test]
    fn open_mode_asks_nobody_and_the_claim_token_only_claims() {
        let (open, _) = gate(&["--ds-open"]);
        assert!(matches!(open.authenticate(&HeaderMap::new()), Ok(Principal::Anyone)));
        let (gate, _) = gate(&["--ds-claim-token", "short"]);
        let worker = gate.authenticate(&with("Bearer short")).unwrap();
        assert!(matches!(worker, Principal::ClaimWorker));
        let path = StreamPath::parse(&format!("agencies/{}/x", AgencyId::new())).unwrap();
        assert!(worker.authorize(Action::Read, &path).is_err());
    }

    #[test]
    fn members_act_in_their_namespace_by_role() {
        let viewer = Principal::Member(member(Role::Viewer));
        let own = StreamPath::parse(&format!("agencies/{}/x", viewer.agency().unwrap())).unwrap();
        let other = StreamPath::parse(&format!("agencies/{}/x", AgencyId::new())).unwrap();
        let global = StreamPath::parse("x").unwrap();
        assert!(viewer.authorize(Action::Read, &own).is_ok());
        assert!(viewer.authorize(Action::Write, &own).is_err());
        for path in [&other, &global] {
            assert!(matches!(viewer.authorize(Action::Read, path), Err(StreamError::Forbidden(_))));
        }
        let mut editor = member(Role::Editor);
        editor.agency_id = viewer.agency().unwrap();
        let editor = Principal::Member(editor);
        assert!(editor.authorize(Action::Write, &own).is_ok());
        assert!(editor.authorize(Action::Delete, &own).is_err());
        let mut admin = member(Role::Admin);
        admin.agency_id = viewer.agency().unwrap();
        assert!(Principal::Member(admin).authorize(Action::Delete, &own).is_ok());
        assert!(Principal::Service(ServiceName(0)).authorize(Action::Delete, &other).is_ok());
        assert!(Principal::Service(ServiceName(0)).authorize(Action::Read, &global).is_err());
        assert!(Principal::Anyone.authorize(Action::Delete, &global).is_ok());
    }

    #[test]
    fn secrets_are_not_printed() {
        let config = Args::parse_from(["edge", "--ds-service-token", &"p".repeat(32)]).streams;
        assert!(!format!("{config:?}").contains(&"p".repeat(32)));
    }

    #[test]
    fn the_edge_refuses_short_service_tokens_and_unauthenticated_claims_outside_open_mode() {
        let check = |args: &[&str]| {
            let mut all = vec!["edge"];
            all.extend_from_slice(args);
            Args::parse_from(all).streams.validate()
        };
        let short = check(&["--ds-service-token", &format!("{},tooshort", "t".repeat(32))]).unwrap_err();
        assert!(short.contains("at least 32 bytes") && !short.contains("tooshort"), "{short}");
        assert!(check(&["--ds-service-token", &"t".repeat(32)]).is_ok());
        assert!(check(&["--ds-allow-unauthenticated-claims"]).unwrap_err().contains("--ds-open"));
        assert!(check(&["--ds-allow-unauthenticated-claims", "--ds-open"]).is_ok());
        assert!(check(&[]).is_ok(), "the defaults start (closed, no service tokens, no origins)");
        // An empty variable (deployment templates write "none" that way) configures nothing.
        assert!(check(&["--ds-service-token", "", "--ds-allowed-origins", ""]).is_ok());
        let (gate, _) = gate(&["--ds-service-token", "", "--ds-claim-token", ""]);
        assert!(gate.services.is_empty() && gate.claim_worker.is_none());
    }
}

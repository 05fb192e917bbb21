//! Capability links: the URL a proposal's client opens, with no account, to see exactly one
//! proposal and act on it (view, accept, decline).
//!
//! A link is a row (`client_links`: proposal, recipient, expiry, revocation) whose random id
//! never leaves the database's own services. Its token is `base64url(HMAC-SHA256(secret,
//! "folio-client-link/v1:" ‖ link id))`: 32 bytes no one can tell from random without the
//! secret, which only proposals-api and the notifier hold (`FOLIO_CLIENT_LINK_SECRET`). The
//! database stores only the token's SHA-256.
//!
//! Why derived rather than drawn at random and handed over: the token has to reach the
//! notifier, which writes the "proposal sent" email. Everything between the API and the
//! notifier travels through the WAL (change events, `emit_job` messages, delivery rows), and
//! the WAL and `folio.changes.>` are read by other services and kept in backups; a token in a
//! job payload would sit there in clear for as long as the link is valid. A derivation sends
//! nothing secret anywhere: the notifier reads the link's id (not a secret) and recomputes the
//! token at the moment it renders the email. Someone who reads the database, the WAL or the
//! streams learns ids and hashes, from which no token follows without the secret.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The built-in secret: public (it is in this file), for a local cluster only; a production
/// process refuses to start with it (`Environment::check_secret`).
pub const DEVELOPMENT_CLIENT_LINK_SECRET: &str = "folio-local-client-link-secret-change-me";

/// What `Config::new` of the API and the notifier (tests, benchmarks) start with, so the two
/// agree without setting it. Public like the development secret: binaries never use it (their
/// flag's default is [`DEVELOPMENT_CLIENT_LINK_SECRET`], refused in production).
pub const TEST_CLIENT_LINK_SECRET: &str = "folio-test-client-link-secret-for-tests-only";

/// Length of a token in characters: 32 bytes, base64url without padding.
pub const TOKEN_LEN: usize = 43;

/// The one flag of every service that issues or mails client links.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientLinkArgs {
    /// Secret proposals-api and the notifier share to derive the tokens of clients' proposal
    /// links (at least 32 bytes; the same value on both). Changing it invalidates every link.
    #[arg(
        long,
        env = "FOLIO_CLIENT_LINK_SECRET",
        default_value = DEVELOPMENT_CLIENT_LINK_SECRET,
        hide_env_values = true
    )]
    pub client_link_secret: String,
}

impl ClientLinkArgs {
    pub const SECRET_VAR: &'static str = "FOLIO_CLIENT_LINK_SECRET";

    pub fn key(&self) -> ClientLinkKey {
        ClientLinkKey::new(self.client_link_secret.as_bytes())
    }
}

/// Derives link tokens. Cheap to clone.
#[derive(Clone)]
pub struct ClientLinkKey {
    key: Arc<[u8]>,
}

impl std::fmt::Debug for ClientLinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientLinkKey(..)")
    }
}

impl ClientLinkKey {
    pub fn new(secret: &[u8]) -> Self {
        Self { key: secret.into() }
    }

    /// The token of link `id`: what the client's URL carries after `/p/`.
    pub fn token(&self, id: Uuid) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"folio-client-link/v1:");
        mac.update(id.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }
}

/// SHA-256 of a token, what `client_links.token_sha256` holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash prefix is enough to tell links apart in logs.
        write!(f, "TokenHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

impl TokenHash {
    /// The hash of a token as it arrives in a URL, or `None` when it cannot be a token at all
    /// (wrong length or alphabet). Callers answer both cases alike.
    pub fn of(token: &str) -> Option<Self> {
        if token.len() != TOKEN_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok().filter(|b| b.len() == 32)?;
        // Decoding accepts a last character with stray low bits; re-encoding tells them apart,
        // so one token has exactly one spelling.
        if URL_SAFE_NO_PAD.encode(&bytes) != token {
            return None;
        }
        Some(Self::of_bytes(&bytes))
    }

    fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The hash of the token `key` derives for link `id`.
    pub fn issued(key: &ClientLinkKey, id: Uuid) -> Self {
        Self::of(&key.token(id)).expect("a derived token is well formed")
    }

    /// Constant-time: how many leading bytes match says nothing.
    pub fn matches(&self, stored: &[u8]) -> bool {
        stored.len() == 32 && bool::from(self.0.ct_eq(stored))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A short, non-reversible name for rate-limit keys and logs (the first 16 bytes, hex).
    pub fn label(&self) -> String {
        self.0[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_bytes_derived_per_link_and_per_secret() {
        let key = ClientLinkKey::new(b"0123456789abcdef0123456789abcdef");
        let id = Uuid::now_v7();
        let token = key.token(id);
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(URL_SAFE_NO_PAD.decode(&token).unwrap().len(), 32);
        assert_eq!(token, key.token(id), "deterministic");
        assert_ne!(token, key.token(Uuid::now_v7()), "per link");
        assert_ne!(token, ClientLinkKey::new(b"another-secret-another-secret-32b").token(id), "per secret");
    }

    #[test]
    fn only_the_exact_token_has_its_hash() {
        let key = ClientLinkKey::new(b"0123456789abcdef0123456789abcdef");
        let id = Uuid::now_v7();
        let token = key.token(id);
        let issued = TokenHash::issued(&key, id);
        assert!(TokenHash::of(&token).unwrap().matches(issued.as_bytes()));
        // One character changed, one dropped, one added, padding, another alphabet.
        let mut tampered = token.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(!TokenHash::of(&tampered).unwrap().matches(issued.as_bytes()));
        assert!(TokenHash::of(&token[1..]).is_none());
        assert!(TokenHash::of(&format!("{token}A")).is_none());
        assert!(TokenHash::of(&format!("{}=", &token[..42])).is_none());
        assert!(TokenHash::of(&format!("{}+", &token[..42])).is_none(), "another alphabet");
        assert!(!issued.matches(&issued.as_bytes()[..31]));
    }

    #[test]
    fn a_last_character_with_stray_bits_is_not_the_same_token() {
        let key = ClientLinkKey::new(b"0123456789abcdef0123456789abcdef");
        let token = key.token(Uuid::now_v7());
        // The 43rd character carries 4 bits of data and 2 unused ones: flip an unused one.
        let last = token.as_bytes()[42];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        let twin = format!("{}{}", &token[..42], alphabet[index ^ 1] as char);
        assert!(TokenHash::of(&twin).is_none());
    }
}

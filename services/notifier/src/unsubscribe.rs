//! Unsubscribe tokens: `<base64url(user id ":" event type)>.<base64url(HMAC-SHA256)>`. They are
//! stateless (nothing to store or expire) and cannot be forged without the secret; using one
//! twice is harmless, since opting out is idempotent.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

#[derive(Clone)]
pub struct UnsubscribeTokens {
    key: Vec<u8>,
}

impl UnsubscribeTokens {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, claim: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"folio-unsubscribe:");
        mac.update(claim);
        mac
    }

    pub fn issue(&self, user: Uuid, event_type: &str) -> String {
        let claim = format!("{user}:{event_type}");
        let tag = self.mac(claim.as_bytes()).finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(claim), URL_SAFE_NO_PAD.encode(tag))
    }

    /// The (user, event type) a genuine token names.
    pub fn verify(&self, token: &str) -> Option<(Uuid, String)> {
        let (claim, tag) = token.trim().split_once('.')?;
        let claim = URL_SAFE_NO_PAD.decode(claim).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(&claim).verify_slice(&tag).ok()?;
        let claim = String::from_utf8(claim).ok()?;
        let (user, event_type) = claim.split_once(':')?;
        Some((Uuid::parse_str(user).ok()?, event_type.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let tokens = UnsubscribeTokens::new(b"0123456789abcdef0123456789abcdef");
        let user = Uuid::now_v7();
        let t = tokens.issue(user, "proposal.viewed");
        assert_eq!(tokens.verify(&t), Some((user, "proposal.viewed".to_owned())));
        let other = UnsubscribeTokens::new(b"another-secret-another-secret-xx");
        assert_eq!(other.verify(&t), None);
        let (_, tag) = t.split_once('.').unwrap();
        let forged = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(format!("{user}:proposal.sent")));
        assert_eq!(tokens.verify(&forged), None);
        assert_eq!(tokens.verify("garbage"), None);
    }
}

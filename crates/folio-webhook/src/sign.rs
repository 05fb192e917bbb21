//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>), as Svix sends them:
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, the key being
//! the base64 after `whsec_`. During a rotation's grace period the old secret signs too, the
//! signatures separated by a space, so consumers still holding the old secret keep verifying.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A parsed endpoint secret: the raw key bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret must be `whsec_` followed by base64")]
    Format,
    #[error("a webhook secret must hold 24 to 64 bytes")]
    Length,
}

impl Secret {
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix(PREFIX).ok_or(SecretError::Format)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::Format)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length);
        }
        Ok(Self(key))
    }

    /// A fresh random secret in its text form (what an endpoint's `secret` column holds).
    pub fn generate() -> String {
        let mut key = [0u8; 24];
        rand::rng().fill_bytes(&mut key);
        format!("{PREFIX}{}", STANDARD.encode(key))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header value: the current secret, then the previous one while its
/// grace period lasts.
pub fn signature_header(
    current: &Secret,
    previous: Option<&Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut header = current.sign(msg_id, timestamp, body);
    if let Some(previous) = previous {
        header.push(' ');
        header.push_str(&previous.sign(msg_id, timestamp, body));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks reference libraries (spec repo, `libraries/`).
    #[test]
    fn matches_the_reference_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_both_and_generated_secrets_parse() {
        let a = Secret::parse(&Secret::generate()).unwrap();
        let b = Secret::parse(&Secret::generate()).unwrap();
        let header = signature_header(&a, Some(&b), "msg_1", 1, b"{}");
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts, vec![a.sign("msg_1", 1, b"{}"), b.sign("msg_1", 1, b"{}")]);
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_AAAA").is_err());
    }
}

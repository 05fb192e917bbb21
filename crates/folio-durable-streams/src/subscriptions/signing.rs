//! The Ed25519 key that signs webhook wakes, shared by every edge through the metadata bucket,
//! and its public half as a JWKS.

use async_nats::jetstream::kv;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StorageError;

const KEY: &str = "jwks.ed25519";

pub struct Signer {
    key: SigningKey,
    kid: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    seed: String,
}

impl Signer {
    /// Loads the deployment's signing key, creating it on first use (first edge wins).
    pub async fn load_or_create(kv: &kv::Store) -> Result<Self, StorageError> {
        for _ in 0..3 {
            if let Some(raw) = kv.get(KEY).await.map_err(|e| StorageError::new("read the webhook signing key", e))? {
                let stored: StoredKey =
                    serde_json::from_slice(&raw).map_err(|e| StorageError::new("decode the webhook signing key", e))?;
                let seed: [u8; 32] = URL_SAFE_NO_PAD
                    .decode(stored.seed)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| StorageError::new("decode the webhook signing key", "seed is not 32 bytes"))?;
                return Ok(Signer::from_seed(seed));
            }
            let seed: [u8; 32] = rand::random();
            let stored = serde_json::to_vec(&StoredKey { seed: URL_SAFE_NO_PAD.encode(seed) })
                .map_err(|e| StorageError::new("encode the webhook signing key", e))?;
            if kv.create(KEY, stored.into()).await.is_ok() {
                return Ok(Signer::from_seed(seed));
            }
        }
        Err(StorageError::new("create the webhook signing key", "lost the creation race repeatedly"))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let digest = Sha256::digest(key.verifying_key().as_bytes());
        let kid = format!("ds_{}", digest.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>());
        Signer { key, kid }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `Webhook-Signature` value: `t=<unix>,kid=<kid>,ed25519=<base64url(sig over "t.body")>`.
    pub fn signature_header(&self, unix: u64, body: &[u8]) -> String {
        let mut message = format!("{unix}.").into_bytes();
        message.extend_from_slice(body);
        let sig = self.key.sign(&message);
        format!("t={unix},kid={},ed25519={}", self.kid, URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
                "kid": self.kid,
                "use": "sig",
                "alg": "EdDSA",
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    use super::*;

    #[test]
    fn signature_verifies_against_the_published_key() {
        let signer = Signer::from_seed([7; 32]);
        let header = signer.signature_header(1_700_000_000, br#"{"a":1}"#);
        let sig_b64 = header.rsplit("ed25519=").next().unwrap();
        let sig = Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig_b64).unwrap()).unwrap();
        let x = signer.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
        let key = VerifyingKey::from_bytes(&URL_SAFE_NO_PAD.decode(x).unwrap().try_into().unwrap()).unwrap();
        assert!(key.verify(br#"1700000000.{"a":1}"#, &sig).is_ok());
        assert!(key.verify(br#"1700000001.{"a":1}"#, &sig).is_err());
        assert!(header.starts_with(&format!("t=1700000000,kid={},", signer.kid())));
    }
}

//! Signed messages to institutions: notices (quota exhausted, consumers
//! paused or resumed) and forwarded job status.
//!
//! Anything can arrive on an institution's notice subjects: another
//! institution may point the reply subject of its own pull requests there,
//! and the server then delivers that institution's messages to it. So every
//! message the gateway sends there carries a signature
//! ([`lclstream_nats::protocol::signing`]) by the gateway's notice key;
//! partners learn the public key from grants and usage replies
//! (`notices_key`) and drop whatever does not verify.

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use nkeys::KeyPair;

use lclstream_nats::protocol::signing::{sign, SIGNATURE_HEADER};

/// Publishes signed messages into institutions' inboxes.
pub struct Notifier {
    client: Client,
    signer: Option<KeyPair>,
}

impl Notifier {
    /// Publishes through `client`, signing with `signer` when given (without
    /// the auth callout there is no isolation to protect and no key).
    pub fn new(client: Client, signer: Option<KeyPair>) -> Notifier {
        Notifier { client, signer }
    }

    /// The public key partners verify with.
    pub fn public_key(&self) -> Option<String> {
        self.signer.as_ref().map(KeyPair::public_key)
    }

    /// Publishes `payload` on `subject` with its signature.
    pub async fn publish(&self, subject: String, payload: Bytes) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(signer) = &self.signer {
            headers.insert(SIGNATURE_HEADER, sign(signer, &subject, &payload)?.as_str());
        }
        self.client
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| e.to_string())
    }
}

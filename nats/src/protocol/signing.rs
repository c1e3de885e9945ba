//! Signatures on what the gateway sends into an institution's inbox outside
//! a request-reply exchange (notices, forwarded job status).
//!
//! An institution's notice subjects can receive messages the gateway never
//! sent (another institution may aim the replies of its own pull requests
//! there), so a partner accepts such a message only with a valid signature
//! by the gateway's notice key, which grants and usage replies announce as
//! `notices_key`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Header carrying the signature: `ed25519 <base64url signature>` over
/// [`signed_bytes`].
pub const SIGNATURE_HEADER: &str = "Lclstream-Signature";

/// The bytes a signature covers: the subject, a newline, the payload.
/// Binding the subject means a signed message cannot be replayed onto
/// another institution's subject.
pub fn signed_bytes(subject: &str, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(subject.len() + 1 + payload.len());
    bytes.extend_from_slice(subject.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(payload);
    bytes
}

/// Signs `payload` on `subject` with `key`: the [`SIGNATURE_HEADER`] value.
pub fn sign(key: &nkeys::KeyPair, subject: &str, payload: &[u8]) -> Result<String, String> {
    let signature = key
        .sign(&signed_bytes(subject, payload))
        .map_err(|e| e.to_string())?;
    Ok(format!("ed25519 {}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Checks `header` (the [`SIGNATURE_HEADER`] value, if any) against the
/// public key `key` for `payload` on `subject`; the error says why not.
pub fn verify(
    key: &str,
    subject: &str,
    payload: &[u8],
    header: Option<&str>,
) -> Result<(), String> {
    let header = header.ok_or("no signature header")?;
    let encoded = header
        .strip_prefix("ed25519 ")
        .ok_or("the signature is not of the form \"ed25519 <base64url>\"")?;
    if encoded.len() > 128 {
        return Err("the signature is too long".into());
    }
    let signature = URL_SAFE_NO_PAD
        .decode(encoded.trim())
        .map_err(|_| "the signature is not base64url")?;
    let public = nkeys::KeyPair::from_public_key(key)
        .map_err(|e| format!("notice key {key:?} is not a public nkey: {e}"))?;
    public
        .verify(&signed_bytes(subject, payload), &signature)
        .map_err(|_| "the signature does not verify with the gateway's notice key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_key_subject_and_payload() {
        let key = nkeys::KeyPair::new_user();
        let public = key.public_key();
        let header = sign(&key, "_INBOX.a.notices", b"{}").unwrap();
        assert!(verify(&public, "_INBOX.a.notices", b"{}", Some(&header)).is_ok());
        assert!(verify(&public, "_INBOX.b.notices", b"{}", Some(&header)).is_err());
        assert!(verify(&public, "_INBOX.a.notices", b"{ }", Some(&header)).is_err());
        assert!(verify(&public, "_INBOX.a.notices", b"{}", None).is_err());
        assert!(verify(&public, "_INBOX.a.notices", b"{}", Some("ed25519 !!")).is_err());
        assert!(verify(&public, "_INBOX.a.notices", b"{}", Some("rsa xyz")).is_err());
        let other = nkeys::KeyPair::new_user().public_key();
        assert!(verify(&other, "_INBOX.a.notices", b"{}", Some(&header)).is_err());
        assert!(verify("not-a-key", "_INBOX.a.notices", b"{}", Some(&header)).is_err());
    }
}

//! NATS JWTs (v2), encoded by hand: `base64url(header).base64url(claims).base64url(sig)`,
//! no padding, header `{"typ":"JWT","alg":"ed25519-nkey"}`, signed by the
//! issuer's nkey over the first two parts. `jti` is the base32 (no padding)
//! SHA-512/256 of the standard claims without `jti`, as nats-io/jwt does.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use nkeys::{KeyPair, KeyPairType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512_256};

/// The only header lclstream writes and accepts.
pub const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Largest token decoded (bytes); a request carrying client certificates stays far below.
pub const MAX_TOKEN_BYTES: usize = 256 * 1024;

/// Errors decoding or verifying a JWT.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JwtError {
    /// Not three dot-separated base64url parts, bad JSON, too large.
    #[error("malformed JWT: {0}")]
    Malformed(String),
    /// A header other than ours.
    #[error("unsupported JWT header {0}")]
    Header(String),
    /// The signature does not verify with the issuer key.
    #[error("JWT signature does not verify with issuer {0}")]
    BadSignature(String),
    /// The issuer is not a key of the expected type.
    #[error("JWT issuer {issuer} is not a {expected:?} key")]
    WrongIssuer {
        /// The `iss` claim.
        issuer: String,
        /// The required key type.
        expected: KeyPairType,
    },
    /// Past `exp`.
    #[error("JWT expired at {0} (unix seconds)")]
    Expired(i64),
    /// Before `nbf`.
    #[error("JWT not valid before {0} (unix seconds)")]
    NotYetValid(i64),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The standard claims, in nats-io/jwt's field order (which the `jti` hash depends on).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandardClaims {
    /// Audience.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// Expiry (unix seconds; 0 = never).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exp: i64,
    /// Claims hash.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    /// Issued at (unix seconds).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub iat: i64,
    /// Issuer public key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iss: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Not before (unix seconds).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nbf: i64,
    /// Subject public key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
}

/// A whole claim set: standard claims plus the `nats` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims<T> {
    /// The standard claims.
    #[serde(flatten)]
    pub standard: StandardClaims,
    /// The NATS-specific claims.
    pub nats: T,
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Signs `claims` with `issuer`, setting `iss`, `iat` (if zero) and `jti`.
pub fn encode<T: Serialize>(claims: &mut Claims<T>, issuer: &KeyPair) -> Result<String, JwtError> {
    claims.standard.iss = issuer.public_key();
    if claims.standard.iat == 0 {
        claims.standard.iat = unix_now();
    }
    claims.standard.jti.clear();
    let standard =
        serde_json::to_vec(&claims.standard).map_err(|e| JwtError::Sign(e.to_string()))?;
    claims.standard.jti = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(&standard));
    let payload = serde_json::to_vec(claims).map_err(|e| JwtError::Sign(e.to_string()))?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

#[derive(Deserialize)]
struct Header {
    typ: String,
    alg: String,
}

/// Longest excerpt of an untrusted string an error message carries.
pub const MAX_ERROR_EXCERPT: usize = 120;

/// `text` cut to at most `max` bytes (at a character boundary), with `...`
/// appended when cut: error messages quote untrusted input through this, so
/// that a hostile token cannot blow up a log line.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// A token split and parsed, its signature not yet checked: lets a caller
/// refuse implausible claims before the signature verification.
#[derive(Debug)]
pub struct Unverified<'a, T> {
    /// The claims, as the token states them (not yet trusted).
    pub claims: Claims<T>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Length of an ed25519 signature.
const SIGNATURE_BYTES: usize = 64;

/// Splits `token` into its three parts and parses header and claims,
/// without verifying anything but the shape.
pub fn parse<T: DeserializeOwned>(token: &str) -> Result<Unverified<'_, T>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed(format!(
            "{} bytes, more than {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    let token = token.trim();
    let mut parts = token.splitn(4, '.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(format!(
            "{} parts instead of 3",
            token.split('.').count()
        )));
    };
    let b64 = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| JwtError::Malformed(format!("{what}: {e}")))
    };
    // A signature is 86 characters; anything longer is not worth decoding.
    if signature.len() > 2 * SIGNATURE_BYTES {
        return Err(JwtError::Malformed(format!(
            "signature of {} characters",
            signature.len()
        )));
    }
    let signature = b64(signature, "signature")?;
    if signature.len() != SIGNATURE_BYTES {
        return Err(JwtError::Malformed(format!(
            "signature of {} bytes instead of {SIGNATURE_BYTES}",
            signature.len()
        )));
    }
    let header_bytes = b64(header, "header")?;
    let parsed: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| JwtError::Malformed(clip(&format!("header: {e}"), MAX_ERROR_EXCERPT)))?;
    if !parsed.typ.eq_ignore_ascii_case("jwt") || parsed.alg != "ed25519-nkey" {
        return Err(JwtError::Header(clip(
            &String::from_utf8_lossy(&header_bytes),
            MAX_ERROR_EXCERPT,
        )));
    }
    // serde_json quotes offending values in its errors: clip them.
    let claims: Claims<T> = serde_json::from_slice(&b64(payload, "claims")?)
        .map_err(|e| JwtError::Malformed(clip(&format!("claims: {e}"), MAX_ERROR_EXCERPT)))?;
    Ok(Unverified {
        claims,
        signing_input: &token[..header.len() + 1 + payload.len()],
        signature,
    })
}

impl<T> Unverified<'_, T> {
    /// Verifies the signature with the `iss` key (which must be of type
    /// `issuer_type`) and the time window at `now` (unix seconds).
    pub fn verify(self, issuer_type: KeyPairType, now: i64) -> Result<Claims<T>, JwtError> {
        let claims = self.claims;
        let issuer = clip(&claims.standard.iss, MAX_ERROR_EXCERPT);
        let key = KeyPair::from_public_key(&claims.standard.iss)
            .map_err(|_| JwtError::BadSignature(issuer.clone()))?;
        if key.key_pair_type() != issuer_type {
            return Err(JwtError::WrongIssuer {
                issuer,
                expected: issuer_type,
            });
        }
        key.verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature(issuer))?;
        if claims.standard.exp > 0 && now > claims.standard.exp {
            return Err(JwtError::Expired(claims.standard.exp));
        }
        if claims.standard.nbf > 0 && claims.standard.nbf > now {
            return Err(JwtError::NotYetValid(claims.standard.nbf));
        }
        Ok(claims)
    }
}

/// Decodes `token`, verifies its signature with its `iss` key (which must
/// be of type `issuer_type`) and its time window at `now` (unix seconds).
pub fn decode<T: DeserializeOwned>(
    token: &str,
    issuer_type: KeyPairType,
    now: i64,
) -> Result<Claims<T>, JwtError> {
    parse(token)?.verify(issuer_type, now)
}

/// Longest nonce signature accepted (characters): 64 bytes are 86 in
/// base64url, 88 in padded standard base64.
pub const MAX_NONCE_SIGNATURE_CHARS: usize = 128;

/// Verifies a client's signature over the server nonce with its public user nkey.
///
/// The signature is base64url without padding (what clients send); standard
/// base64 is accepted too, as nats-server does.
pub fn verify_nonce_signature(
    public_key: &str,
    nonce: &str,
    signature: &str,
) -> Result<(), String> {
    let key = KeyPair::from_public_key(public_key).map_err(|e| {
        format!(
            "{:?} is not a valid public nkey: {e}",
            clip(public_key, MAX_ERROR_EXCERPT)
        )
    })?;
    if key.key_pair_type() != KeyPairType::User {
        return Err(format!("{public_key} is not a user nkey"));
    }
    if nonce.is_empty() {
        return Err("the server sent no nonce to sign".into());
    }
    if signature.len() > MAX_NONCE_SIGNATURE_CHARS {
        return Err(format!(
            "the nonce signature has {} characters, more than {MAX_NONCE_SIGNATURE_CHARS}",
            signature.len()
        ));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(signature))
        .map_err(|_| "the nonce signature is not base64".to_string())?;
    key.verify(nonce.as_bytes(), &sig)
        .map_err(|_| format!("the nonce signature does not verify with {public_key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(exp: i64) -> Claims<serde_json::Value> {
        Claims {
            standard: StandardClaims {
                aud: "LCLS".into(),
                exp,
                name: "ucsd".into(),
                sub: KeyPair::new_user().public_key(),
                ..Default::default()
            },
            nats: json!({"type": "user", "version": 2, "pub": {"allow": ["a.>"]}}),
        }
    }

    #[test]
    fn round_trips_and_matches_the_nats_layout() {
        let issuer = KeyPair::new_account();
        let mut claims = sample(unix_now() + 60);
        let token = encode(&mut claims, &issuer).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!token.contains('='));
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), HEADER.as_bytes());
        let back: Claims<serde_json::Value> =
            decode(&token, KeyPairType::Account, unix_now()).unwrap();
        assert_eq!(back, claims);
        assert_eq!(back.standard.iss, issuer.public_key());
        // jti is the hash of the standard claims without jti.
        let mut without = back.standard.clone();
        without.jti.clear();
        let expected = data_encoding::BASE32_NOPAD
            .encode(&Sha512_256::digest(serde_json::to_vec(&without).unwrap()));
        assert_eq!(back.standard.jti, expected);
        assert_eq!(back.standard.jti.len(), 52);
    }

    #[test]
    fn refuses_bad_signature_wrong_issuer_and_expiry() {
        let issuer = KeyPair::new_account();
        let token = encode(&mut sample(unix_now() + 60), &issuer).unwrap();
        // Tamper with the claims: same signature, other payload.
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["name"] = json!("desy");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
            parts[2]
        );
        assert!(matches!(
            decode::<serde_json::Value>(&forged, KeyPairType::Account, unix_now()),
            Err(JwtError::BadSignature(_))
        ));
        assert!(matches!(
            decode::<serde_json::Value>(&token, KeyPairType::Server, unix_now()),
            Err(JwtError::WrongIssuer { .. })
        ));
        let expired = encode(&mut sample(unix_now() - 10), &issuer).unwrap();
        assert!(matches!(
            decode::<serde_json::Value>(&expired, KeyPairType::Account, unix_now()),
            Err(JwtError::Expired(_))
        ));
        assert!(matches!(
            decode::<serde_json::Value>("a.b", KeyPairType::Account, unix_now()),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn verifies_nonce_signatures() {
        let user = KeyPair::new_user();
        let nonce = "bm9uY2Utbm9uY2U";
        let sig = URL_SAFE_NO_PAD.encode(user.sign(nonce.as_bytes()).unwrap());
        verify_nonce_signature(&user.public_key(), nonce, &sig).unwrap();
        let std_sig = STANDARD.encode(user.sign(nonce.as_bytes()).unwrap());
        verify_nonce_signature(&user.public_key(), nonce, &std_sig).unwrap();
        let other = KeyPair::new_user();
        assert!(verify_nonce_signature(&other.public_key(), nonce, &sig).is_err());
        assert!(verify_nonce_signature(&user.public_key(), "other", &sig).is_err());
        assert!(verify_nonce_signature(&user.public_key(), nonce, "!!").is_err());
        assert!(verify_nonce_signature(&user.public_key(), "", &sig).is_err());
    }

    #[test]
    fn garbage_gives_bounded_errors_not_panics() {
        let user = KeyPair::new_user();
        let huge = "é".repeat(500_000);
        let account = KeyPair::new_account().public_key();
        for (key, nonce, sig) in [
            (huge.as_str(), "nonce", "sig"),
            ("", "nonce", "sig"),
            (account.as_str(), "nonce", "sig"),
            (&user.public_key(), "nonce", huge.as_str()),
            (&user.public_key(), "nonce", "===="),
            (&user.public_key(), "nonce", "AAAA"),
            (&user.public_key(), huge.as_str(), "AAAA"),
        ] {
            let err = verify_nonce_signature(key, nonce, sig).unwrap_err();
            assert!(err.len() < 400, "{} bytes", err.len());
        }
        // serde_json quotes the offending string: the error is clipped.
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(format!(
                r#"{{"nats": {{"n": 1}}, "iss": 5, "name": {}}}"#,
                1
            )),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        );
        let err = decode::<serde_json::Value>(&token, KeyPairType::Server, 0).unwrap_err();
        assert!(matches!(err, JwtError::Malformed(_)), "{err}");
        let long = format!(r#"{{"nats": 1, "exp": "{}"}}"#, "9".repeat(100_000));
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(long),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        );
        let err = decode::<serde_json::Value>(&token, KeyPairType::Server, 0).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        assert_eq!(clip("héllo", 2), "h...");
        assert_eq!(clip("héllo", 3), "hé...");
        assert_eq!(clip("héllo", 10), "héllo");
    }
}

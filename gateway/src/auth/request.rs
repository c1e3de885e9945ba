//! Reading nats-server's authorization requests: the payload published on
//! `$SYS.REQ.USER.AUTH` is a JWT signed by the server, sealed with the
//! callout's xkey when the callout is encrypted.
//!
//! The payload reaches the callout from the server, but most of its content
//! comes from the connecting client (its CONNECT options), before that client
//! is authenticated. [`read_authorization_request`] therefore refuses, before
//! any expensive work (opening the seal, verifying the signature), payloads
//! and fields larger than anything a real client or server produces, and
//! never panics: every refusal is a [`RequestError`] whose message is bounded
//! ([`MAX_REASON_BYTES`]) so that it can go to the audit log as is.

use std::fmt;

use nkeys::{KeyPair, KeyPairType, XKey};

use super::claims::{AuthorizationRequest, REQUEST_AUDIENCE};
use super::jwt::{self, clip, StandardClaims, MAX_ERROR_EXCERPT};

/// Largest request payload read (bytes, sealed or not). nats-server's
/// requests are a few KB: the CONNECT line they carry is limited by the
/// server's `max_control_line` (4 KiB by default); client certificates, when
/// TLS is used, add a few KB more.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest public key field (`iss`, `sub`, `user_nkey`, the client's `nkey`,
/// the server id and xkey). NATS public keys have 56 characters; this leaves
/// room for a malformed key that the decision then refuses with a reason.
pub const MAX_KEY_BYTES: usize = 128;

/// Largest nonce signature the client may send: see [`jwt::MAX_NONCE_SIGNATURE_CHARS`].
pub const MAX_SIGNATURE_BYTES: usize = jwt::MAX_NONCE_SIGNATURE_CHARS;

/// Largest server nonce (nats-server's are about 20 characters).
pub const MAX_NONCE_BYTES: usize = 128;

/// Largest name-like field: client and server names, hosts, user, versions,
/// language, kinds, claim type, `aud`, `jti`, `name`.
pub const MAX_NAME_BYTES: usize = 1024;

/// Largest user JWT a client may send in CONNECT (lclstream clients send
/// none; a NATS user JWT is well under 4 KiB).
pub const MAX_CLIENT_JWT_BYTES: usize = 8 * 1024;

/// Largest difference tolerated between the server's clock and ours (seconds).
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// Oldest request answered (seconds since its `iat`, beyond the clock skew):
/// the server waits for the answer for its auth timeout, a few seconds.
pub const MAX_REQUEST_AGE_SECS: i64 = 300;

/// Longest reason a [`RequestError`] carries (bytes).
pub const MAX_REASON_BYTES: usize = 512;

/// A request the callout could read (even if it then refuses the client).
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// The request's `nats` claims.
    pub request: AuthorizationRequest,
    /// The server's curve key, when the request was sealed: the response is
    /// sealed for it.
    pub server_xkey: Option<XKey>,
}

/// Why a request was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorKind {
    /// The payload exceeds [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The `Nats-Server-Xkey` header is not a curve public key, or does not
    /// match how the callout is configured.
    ServerXkey,
    /// The sealed payload does not open with our xkey.
    Sealed,
    /// Not UTF-8, not a JWT, bad base64 or JSON.
    Malformed,
    /// A field is longer than its limit.
    FieldTooLong,
    /// Negative times, or issued too far in the future or the past.
    BadTime,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// Not an authorization request (`aud` or `type`).
    NotARequest,
    /// The signature does not verify, or the issuer is not a server key or
    /// not the server the request names.
    Issuer,
    /// The `user_nkey` the response must be addressed to is not a user key.
    UserNkey,
}

/// A request refused before any decision; the message is at most
/// [`MAX_REASON_BYTES`] long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    kind: RequestErrorKind,
    reason: String,
}

impl RequestError {
    fn new(kind: RequestErrorKind, reason: impl AsRef<str>) -> RequestError {
        RequestError {
            kind,
            reason: clip(reason.as_ref(), MAX_REASON_BYTES),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> RequestErrorKind {
        self.kind
    }

    /// The reason, at most [`MAX_REASON_BYTES`] (plus `...`) long.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for RequestError {}

use RequestErrorKind as K;

/// Opens (if sealed), checks and verifies the authorization request in
/// `payload` at `now_unix` (unix seconds).
///
/// `server_xkey_header` is the `Nats-Server-Xkey` header, present when the
/// server sealed the request; `callout_xkey` is the callout's curve key (with
/// its seed), if the callout is encrypted. Refuses, in this order and before
/// the costlier steps: oversized payloads, a bad header, a seal that does not
/// open, a malformed token, oversized fields, implausible times, a token
/// that is not an authorization request; then a signature that does not
/// verify with a server key, an issuer other than the server the request
/// names, and a `user_nkey` that is not a user key.
pub fn read_authorization_request(
    payload: &[u8],
    server_xkey_header: Option<&str>,
    callout_xkey: Option<&XKey>,
    now_unix: i64,
) -> Result<ReadRequest, RequestError> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::new(
            K::TooLarge,
            format!(
                "the request has {} bytes, more than {MAX_REQUEST_BYTES}",
                payload.len()
            ),
        ));
    }
    let (opened, server_xkey) = match (callout_xkey, server_xkey_header) {
        (Some(ours), Some(theirs)) => {
            let theirs = server_xkey(theirs)?;
            let opened = ours.open(payload, &theirs).map_err(|e| {
                RequestError::new(K::Sealed, format!("cannot open the sealed request: {e}"))
            })?;
            (Some(opened), Some(theirs))
        }
        (None, Some(_)) => {
            return Err(RequestError::new(
                K::ServerXkey,
                "the request is sealed but the callout has no xkey configured",
            ))
        }
        (_, None) => (None, None),
    };
    let token = std::str::from_utf8(opened.as_deref().unwrap_or(payload))
        .map_err(|_| RequestError::new(K::Malformed, "the request is not UTF-8"))?;
    let unverified = jwt::parse::<AuthorizationRequest>(token)
        .map_err(|e| RequestError::new(K::Malformed, format!("the request: {e}")))?;
    check_fields(&unverified.claims.standard, &unverified.claims.nats)?;
    check_times(&unverified.claims.standard, now_unix)?;
    if unverified.claims.standard.aud != REQUEST_AUDIENCE {
        return Err(RequestError::new(
            K::NotARequest,
            format!(
                "request audience {:?} is not {REQUEST_AUDIENCE:?}",
                unverified.claims.standard.aud
            ),
        ));
    }
    let claim_type = &unverified.claims.nats.claim_type;
    if !claim_type.is_empty() && claim_type != "authorization_request" {
        return Err(RequestError::new(
            K::NotARequest,
            format!("claim type {claim_type:?} is not \"authorization_request\""),
        ));
    }
    let claims = unverified
        .verify(KeyPairType::Server, now_unix)
        .map_err(|e| match e {
            jwt::JwtError::Expired(_) => RequestError::new(K::Expired, e.to_string()),
            jwt::JwtError::NotYetValid(_) => RequestError::new(K::NotYetValid, e.to_string()),
            _ => RequestError::new(K::Issuer, e.to_string()),
        })?;
    // The issuing server must be the one the request says it comes from.
    if !claims.nats.server_id.id.is_empty() && claims.nats.server_id.id != claims.standard.iss {
        return Err(RequestError::new(
            K::Issuer,
            "request issuer differs from its server id",
        ));
    }
    if KeyPair::from_public_key(&claims.nats.user_nkey)
        .map(|k| k.key_pair_type() != KeyPairType::User)
        .unwrap_or(true)
    {
        return Err(RequestError::new(
            K::UserNkey,
            format!("bad user_nkey {:?}", claims.nats.user_nkey),
        ));
    }
    Ok(ReadRequest {
        request: claims.nats,
        server_xkey,
    })
}

/// The server's curve key from the `Nats-Server-Xkey` header.
fn server_xkey(header: &str) -> Result<XKey, RequestError> {
    if header.len() > MAX_KEY_BYTES {
        return Err(RequestError::new(
            K::ServerXkey,
            format!(
                "the server xkey header has {} bytes, more than {MAX_KEY_BYTES}",
                header.len()
            ),
        ));
    }
    XKey::from_public_key(header).map_err(|e| {
        RequestError::new(
            K::ServerXkey,
            format!("bad server xkey {:?}: {e}", clip(header, MAX_ERROR_EXCERPT)),
        )
    })
}

/// Refuses any field longer than its limit.
fn check_fields(
    standard: &StandardClaims,
    nats: &AuthorizationRequest,
) -> Result<(), RequestError> {
    let server = &nats.server_id;
    let client = &nats.client_info;
    let connect = &nats.connect_opts;
    let fields: [(&str, &str, usize); 26] = [
        ("aud", &standard.aud, MAX_NAME_BYTES),
        ("jti", &standard.jti, MAX_NAME_BYTES),
        ("iss", &standard.iss, MAX_KEY_BYTES),
        ("name", &standard.name, MAX_NAME_BYTES),
        ("sub", &standard.sub, MAX_KEY_BYTES),
        ("server_id.name", &server.name, MAX_NAME_BYTES),
        ("server_id.host", &server.host, MAX_NAME_BYTES),
        ("server_id.id", &server.id, MAX_KEY_BYTES),
        ("server_id.version", &server.version, MAX_NAME_BYTES),
        ("server_id.cluster", &server.cluster, MAX_NAME_BYTES),
        ("server_id.xkey", &server.xkey, MAX_KEY_BYTES),
        ("user_nkey", &nats.user_nkey, MAX_KEY_BYTES),
        ("client_info.host", &client.host, MAX_NAME_BYTES),
        ("client_info.user", &client.user, MAX_NAME_BYTES),
        ("client_info.name", &client.name, MAX_NAME_BYTES),
        ("client_info.kind", &client.kind, MAX_NAME_BYTES),
        ("client_info.type", &client.client_type, MAX_NAME_BYTES),
        ("client_info.nonce", &client.nonce, MAX_NONCE_BYTES),
        ("connect_opts.nkey", &connect.nkey, MAX_KEY_BYTES),
        ("connect_opts.sig", &connect.sig, MAX_SIGNATURE_BYTES),
        ("connect_opts.jwt", &connect.jwt, MAX_CLIENT_JWT_BYTES),
        ("connect_opts.user", &connect.user, MAX_NAME_BYTES),
        ("connect_opts.name", &connect.name, MAX_NAME_BYTES),
        ("connect_opts.lang", &connect.lang, MAX_NAME_BYTES),
        ("connect_opts.version", &connect.version, MAX_NAME_BYTES),
        ("type", &nats.claim_type, MAX_NAME_BYTES),
    ];
    for (name, value, max) in fields {
        if value.len() > max {
            return Err(RequestError::new(
                K::FieldTooLong,
                format!("{name} has {} bytes, more than {max}", value.len()),
            ));
        }
    }
    Ok(())
}

/// Refuses negative times, requests issued in the future or long ago, and
/// requests outside their `nbf`..`exp` window.
fn check_times(standard: &StandardClaims, now: i64) -> Result<(), RequestError> {
    let StandardClaims { exp, iat, nbf, .. } = *standard;
    if exp < 0 || iat < 0 || nbf < 0 {
        return Err(RequestError::new(
            K::BadTime,
            format!("negative time in the request (exp {exp}, iat {iat}, nbf {nbf})"),
        ));
    }
    if exp > 0 && now > exp {
        return Err(RequestError::new(
            K::Expired,
            format!("the request expired at {exp} (now {now})"),
        ));
    }
    if nbf > 0 && nbf > now {
        return Err(RequestError::new(
            K::NotYetValid,
            format!("the request is not valid before {nbf} (now {now})"),
        ));
    }
    if iat > 0 {
        // Saturating: both are attacker-controlled or clock values.
        let age = now.saturating_sub(iat);
        if age < -MAX_CLOCK_SKEW_SECS {
            return Err(RequestError::new(
                K::BadTime,
                format!("the request was issued in the future, at {iat} (now {now})"),
            ));
        }
        if age > MAX_REQUEST_AGE_SECS.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(RequestError::new(
                K::BadTime,
                format!("the request was issued at {iat}, {age} s ago"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::{ClientInformation, ConnectOptions, ServerId};
    use crate::auth::jwt::Claims;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use proptest::prelude::*;

    const NOW: i64 = 1_800_000_000;

    /// A request as nats-server builds it, issued by `server` at [`NOW`].
    fn claims(server: &KeyPair) -> Claims<AuthorizationRequest> {
        Claims {
            standard: StandardClaims {
                aud: REQUEST_AUDIENCE.into(),
                exp: NOW + 2,
                iat: NOW,
                sub: keys().account.clone(),
                ..Default::default()
            },
            nats: AuthorizationRequest {
                server_id: ServerId {
                    id: server.public_key(),
                    name: "n1".into(),
                    version: "2.15.1".into(),
                    ..Default::default()
                },
                user_nkey: keys().user_nkey.clone(),
                client_info: ClientInformation {
                    host: "127.0.0.1".into(),
                    id: 7,
                    nonce: "OWPy3GsTtWRB_tE".into(),
                    kind: "Client".into(),
                    client_type: "nats".into(),
                    ..Default::default()
                },
                connect_opts: ConnectOptions {
                    nkey: keys().client.clone(),
                    sig: URL_SAFE_NO_PAD.encode([7u8; 64]),
                    name: "ucsd-partner".into(),
                    lang: "rust".into(),
                    version: "0.51.0".into(),
                    ..Default::default()
                },
                claim_type: "authorization_request".into(),
                version: 2,
            },
        }
    }

    fn sign(mut claims: Claims<AuthorizationRequest>, signer: &KeyPair) -> String {
        jwt::encode(&mut claims, signer).unwrap()
    }

    fn read(token: &str) -> Result<ReadRequest, RequestError> {
        read_authorization_request(token.as_bytes(), None, None, NOW)
    }

    fn kind(token: &str) -> RequestErrorKind {
        read(token).unwrap_err().kind()
    }

    /// The error of `result`, checking that its reason is bounded.
    fn bounded<T: fmt::Debug>(result: Result<T, RequestError>) -> RequestError {
        let err = result.unwrap_err();
        assert!(
            err.reason().len() <= MAX_REASON_BYTES + 3 && !err.reason().is_empty(),
            "reason of {} bytes",
            err.reason().len()
        );
        assert_eq!(err.to_string(), err.reason());
        err
    }

    #[test]
    fn reads_a_valid_request_plain_and_sealed() {
        let server = KeyPair::new_server();
        let c = claims(&server);
        let token = sign(c.clone(), &server);
        let read = read(&token).unwrap();
        assert_eq!(read.request, c.nats);
        assert!(read.server_xkey.is_none());

        let ours = XKey::new();
        let theirs = XKey::new();
        let sealed = theirs
            .seal(
                token.as_bytes(),
                &XKey::from_public_key(&ours.public_key()).unwrap(),
            )
            .unwrap();
        let read =
            read_authorization_request(&sealed, Some(&theirs.public_key()), Some(&ours), NOW)
                .unwrap();
        assert_eq!(read.request, c.nats);
        assert_eq!(
            read.server_xkey.map(|x| x.public_key()),
            Some(theirs.public_key())
        );
        // The callout has an xkey but the server did not seal: still a signed request.
        assert!(read_authorization_request(token.as_bytes(), None, Some(&ours), NOW).is_ok());
    }

    #[test]
    fn refuses_oversized_payloads_before_anything_else() {
        let big = vec![b'a'; MAX_REQUEST_BYTES + 1];
        let err = bounded(read_authorization_request(
            &big,
            Some("not a key"),
            Some(&XKey::new()),
            NOW,
        ));
        assert_eq!(err.kind(), K::TooLarge);
        assert!(err.reason().contains("65537 bytes"), "{err}");
        // Exactly at the limit goes on to the next check.
        let at_limit = vec![b'a'; MAX_REQUEST_BYTES];
        assert_eq!(
            bounded(read_authorization_request(&at_limit, None, None, NOW)).kind(),
            K::Malformed
        );
    }

    #[test]
    fn refuses_bad_server_xkey_headers() {
        let server = KeyPair::new_server();
        let token = sign(claims(&server), &server);
        let ours = XKey::new();
        let huge = "X".repeat(100_000);
        let account = KeyPair::new_account().public_key();
        for header in ["", "XKEY", huge.as_str(), account.as_str(), "é"] {
            let err = bounded(read_authorization_request(
                token.as_bytes(),
                Some(header),
                Some(&ours),
                NOW,
            ));
            assert_eq!(err.kind(), K::ServerXkey, "{header:.20}: {err}");
        }
        // Sealed without an xkey of ours; unsealed bytes under a valid header.
        let theirs = XKey::new().public_key();
        let err = bounded(read_authorization_request(
            token.as_bytes(),
            Some(&theirs),
            None,
            NOW,
        ));
        assert_eq!(err.kind(), K::ServerXkey);
        let err = bounded(read_authorization_request(
            token.as_bytes(),
            Some(&theirs),
            Some(&ours),
            NOW,
        ));
        assert_eq!(err.kind(), K::Sealed);
        // Sealed for another callout.
        let sender = XKey::new();
        let sealed = sender
            .seal(
                token.as_bytes(),
                &XKey::from_public_key(&XKey::new().public_key()).unwrap(),
            )
            .unwrap();
        let err = bounded(read_authorization_request(
            &sealed,
            Some(&sender.public_key()),
            Some(&ours),
            NOW,
        ));
        assert_eq!(err.kind(), K::Sealed);
    }

    #[test]
    fn refuses_malformed_tokens() {
        let server = KeyPair::new_server();
        let token = sign(claims(&server), &server);
        let parts: Vec<&str> = token.split('.').collect();
        let claims_json =
            |json: &str| format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(json), parts[2]);
        let long_string = format!(r#"{{"nats": {{"version": "{}"}}}}"#, "v".repeat(40_000));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for bad in [
            String::new(),
            "...".into(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{token}.{}", parts[2]),
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], parts[1], "A".repeat(50_000)),
            format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40]),
            format!("e30.{}.{}", parts[1], parts[2]),
            claims_json("not json"),
            claims_json("{}"),
            claims_json(r#"{"nats": {"user_nkey": 5}}"#),
            claims_json(&long_string),
            claims_json(&deep),
            claims_json(r#"{"nats": {"user_nkey": "U", "client_info": {"id": -1}}}"#),
            claims_json(r#"{"exp": 1e400, "nats": {"user_nkey": "U"}}"#),
        ] {
            let err = bounded(read(&bad));
            assert_eq!(err.kind(), K::Malformed, "{bad:.60}: {err}");
        }
        let not_utf8 = [0xff, 0xfe, b'.', b'a', b'.', b'b'];
        assert_eq!(
            bounded(read_authorization_request(&not_utf8, None, None, NOW)).kind(),
            K::Malformed
        );
    }

    #[test]
    fn refuses_oversized_fields_with_a_bounded_reason() {
        let server = KeyPair::new_server();
        type Setter = fn(&mut Claims<AuthorizationRequest>, String);
        let cases: [(Setter, usize); 9] = [
            (|c, v| c.nats.connect_opts.nkey = v, MAX_KEY_BYTES),
            (|c, v| c.nats.connect_opts.sig = v, MAX_SIGNATURE_BYTES),
            (|c, v| c.nats.connect_opts.jwt = v, MAX_CLIENT_JWT_BYTES),
            (|c, v| c.nats.connect_opts.name = v, MAX_NAME_BYTES),
            (|c, v| c.nats.client_info.nonce = v, MAX_NONCE_BYTES),
            (|c, v| c.nats.client_info.host = v, MAX_NAME_BYTES),
            (|c, v| c.nats.server_id.name = v, MAX_NAME_BYTES),
            (|c, v| c.nats.user_nkey = v, MAX_KEY_BYTES),
            (|c, v| c.standard.name = v, MAX_NAME_BYTES),
        ];
        for (set, max) in cases {
            // At the limit: read (the user_nkey then fails its own check).
            let mut c = claims(&server);
            set(&mut c, "a".repeat(max));
            if let Err(e) = read(&sign(c, &server)) {
                assert_eq!(e.kind(), K::UserNkey, "{e}");
            }
            let mut c = claims(&server);
            set(&mut c, "a".repeat(max + 1));
            let err = bounded(read(&sign(c, &server)));
            assert_eq!(err.kind(), K::FieldTooLong, "{err}");
            assert!(err.reason().contains(&format!("more than {max}")), "{err}");
        }
        // A field larger than the payload limit is refused as a whole.
        let mut c = claims(&server);
        c.nats.connect_opts.name = "n".repeat(MAX_REQUEST_BYTES);
        assert_eq!(kind(&sign(c, &server)), K::TooLarge);
    }

    #[test]
    fn refuses_implausible_times_without_overflow() {
        let server = KeyPair::new_server();
        let with = |exp: i64, iat: i64, nbf: i64| {
            let mut c = claims(&server);
            c.standard.exp = exp;
            c.standard.iat = iat;
            c.standard.nbf = nbf;
            // encode sets iat when zero: build the token with iat kept.
            let token = sign(c, &server);
            bounded(read(&token)).kind()
        };
        assert_eq!(with(NOW - 1, NOW - 3, 0), K::Expired);
        assert_eq!(with(NOW + 2, NOW, NOW + 1), K::NotYetValid);
        assert_eq!(with(0, NOW + MAX_CLOCK_SKEW_SECS + 1, 0), K::BadTime);
        assert_eq!(
            with(0, NOW - MAX_REQUEST_AGE_SECS - MAX_CLOCK_SKEW_SECS - 1, 0),
            K::BadTime
        );
        assert_eq!(with(-1, NOW, 0), K::BadTime);
        assert_eq!(with(NOW + 2, NOW, -5), K::BadTime);
        assert_eq!(with(i64::MIN, NOW, 0), K::BadTime);
        assert_eq!(with(i64::MAX, i64::MAX, 0), K::BadTime);
        assert_eq!(with(i64::MAX, 1, 0), K::BadTime);
        assert_eq!(with(NOW + 2, NOW, i64::MAX), K::NotYetValid);
        // Within the skew: read.
        let mut c = claims(&server);
        c.standard.iat = NOW + MAX_CLOCK_SKEW_SECS;
        assert!(read(&sign(c, &server)).is_ok());
        // Far-from-now clocks do not overflow either.
        let token = sign(claims(&server), &server);
        for now in [i64::MIN, -1, 0, i64::MAX] {
            assert!(read_authorization_request(token.as_bytes(), None, None, now).is_err());
        }
    }

    #[test]
    fn refuses_requests_not_from_the_server_they_name() {
        let server = KeyPair::new_server();
        let mut c = claims(&server);
        c.standard.aud = "someone-else".into();
        assert_eq!(kind(&sign(c, &server)), K::NotARequest);
        let mut c = claims(&server);
        c.nats.claim_type = "user".into();
        assert_eq!(kind(&sign(c, &server)), K::NotARequest);
        // Signed by an account key, or by another server than the one named.
        let account = KeyPair::new_account();
        assert_eq!(kind(&sign(claims(&account), &account)), K::Issuer);
        assert_eq!(
            kind(&sign(claims(&server), &KeyPair::new_server())),
            K::Issuer
        );
        // A user_nkey that is not a user key.
        let mut c = claims(&server);
        c.nats.user_nkey = KeyPair::new_account().public_key();
        assert_eq!(kind(&sign(c, &server)), K::UserNkey);
        let mut c = claims(&server);
        c.nats.user_nkey = "U".repeat(56);
        assert_eq!(kind(&sign(c, &server)), K::UserNkey);
        // A signature over other claims.
        let token = sign(claims(&server), &server);
        let mut other = claims(&server);
        other.nats.connect_opts.name = "another client".into();
        let other = sign(other, &server);
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            other.split('.').nth(2).unwrap()
        );
        assert_eq!(kind(&forged), K::Issuer);
    }

    /// The fuzz target's seeds with a signed request (first byte 4, `iss`
    /// and `server_id.id` set to the signing server, as the target does) are
    /// readable requests: the fuzzer starts past the signature check.
    #[test]
    fn fuzz_seeds_are_readable_requests() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let server = KeyPair::new_server();
        let ours = XKey::new();
        let mut signed = 0;
        for entry in std::fs::read_dir(seeds).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let (&mode, body) = data.split_first().unwrap();
            if mode & 4 == 0 {
                continue;
            }
            let mut claims: serde_json::Value = serde_json::from_slice(body).unwrap();
            claims["iss"] = server.public_key().into();
            claims["nats"]["server_id"]["id"] = server.public_key().into();
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(jwt::HEADER),
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
            );
            let sig = URL_SAFE_NO_PAD.encode(server.sign(input.as_bytes()).unwrap());
            let token = format!("{input}.{sig}");
            let xkey = (mode & 1 != 0).then_some(&ours);
            read_authorization_request(token.as_bytes(), None, xkey, NOW).unwrap();
            signed += 1;
        }
        assert!(signed >= 2);
    }

    /// A fixed key set for the properties (generation is not what they test).
    struct Keys {
        server: KeyPair,
        ours: XKey,
        theirs: XKey,
        account: String,
        user_nkey: String,
        client: String,
        /// A valid token of `server`, plain.
        token: String,
    }

    fn keys() -> &'static Keys {
        static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| {
            let server = KeyPair::new_server();
            let mut keys = Keys {
                token: String::new(),
                ours: XKey::new(),
                theirs: XKey::new(),
                account: KeyPair::new_account().public_key(),
                user_nkey: KeyPair::new_user().public_key(),
                client: KeyPair::new_user().public_key(),
                server,
            };
            keys.token = {
                let mut c = Claims {
                    standard: StandardClaims {
                        aud: REQUEST_AUDIENCE.into(),
                        exp: NOW + 2,
                        iat: NOW,
                        sub: keys.account.clone(),
                        ..Default::default()
                    },
                    nats: AuthorizationRequest {
                        server_id: ServerId {
                            id: keys.server.public_key(),
                            ..Default::default()
                        },
                        user_nkey: keys.user_nkey.clone(),
                        ..Default::default()
                    },
                };
                jwt::encode(&mut c, &keys.server).unwrap()
            };
            keys
        })
    }

    /// The sealed form of `token` for our xkey.
    fn seal(token: &[u8]) -> Vec<u8> {
        let k = keys();
        k.theirs
            .seal(token, &XKey::from_public_key(&k.ours.public_key()).unwrap())
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_are_refused(
            payload in prop::collection::vec(any::<u8>(), 0..4096),
            header in prop::option::of(".{0,80}"),
            with_xkey in any::<bool>(),
        ) {
            let k = keys();
            let xkey = with_xkey.then_some(&k.ours);
            let err = bounded(read_authorization_request(&payload, header.as_deref(), xkey, NOW));
            if payload.len() <= MAX_REQUEST_BYTES && header.is_none() {
                prop_assert_ne!(err.kind(), K::TooLarge);
            }
        }

        #[test]
        fn mutated_tokens_are_refused(
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            sealed in any::<bool>(),
        ) {
            let k = keys();
            prop_assert!(read(&k.token).is_ok());
            let mut payload = if sealed { seal(k.token.as_bytes()) } else { k.token.clone().into_bytes() };
            let i = at.index(payload.len());
            payload[i] ^= flip;
            let header = sealed.then(|| k.theirs.public_key());
            let xkey = sealed.then_some(&k.ours);
            bounded(read_authorization_request(&payload, header.as_deref(), xkey, NOW));
        }

        #[test]
        fn truncated_or_extended_tokens_are_refused(
            cut in any::<prop::sample::Index>(),
            tail in prop::collection::vec(any::<u8>(), 1..64),
        ) {
            let k = keys();
            let token = k.token.as_bytes().to_vec();
            let i = cut.index(token.len());
            bounded(read_authorization_request(&token[..i], None, None, NOW));
            let mut longer = token.clone();
            // Trailing white space is trimmed by the reader (`str::trim`, which
            // also counts the vertical tab, unlike `is_ascii_whitespace`).
            longer.extend(tail.iter().map(|&b| if b.is_ascii() && (b as char).is_whitespace() { b'x' } else { b }));
            bounded(read_authorization_request(&longer, None, None, NOW));
        }

    }

    // Each case signs a token: fewer cases (ed25519 is slow in debug builds).
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Client-controlled fields of any content and size: read exactly
        /// when every field and the payload are within their limits.
        #[test]
        fn odd_and_huge_client_fields(
            field in 0usize..7,
            value in prop_oneof![
                ".{0,64}",
                "[\\x00-\\x1f\"\\\\\u{80}-\u{10ffff}]{0,300}",
                (0usize..70_000).prop_map(|n| "x".repeat(n)),
            ],
            sealed in any::<bool>(),
        ) {
            let k = keys();
            let mut c = claims(&k.server);
            let max = match field {
                0 => { c.nats.connect_opts.name = value.clone(); MAX_NAME_BYTES }
                1 => { c.nats.connect_opts.nkey = value.clone(); MAX_KEY_BYTES }
                2 => { c.nats.connect_opts.sig = value.clone(); MAX_SIGNATURE_BYTES }
                3 => { c.nats.connect_opts.jwt = value.clone(); MAX_CLIENT_JWT_BYTES }
                4 => { c.nats.connect_opts.user = value.clone(); MAX_NAME_BYTES }
                5 => { c.nats.client_info.nonce = value.clone(); MAX_NONCE_BYTES }
                _ => { c.nats.client_info.host = value.clone(); MAX_NAME_BYTES }
            };
            let token = sign(c, &k.server);
            let payload = if sealed { seal(token.as_bytes()) } else { token.into_bytes() };
            let header = sealed.then(|| k.theirs.public_key());
            let xkey = sealed.then_some(&k.ours);
            let result = read_authorization_request(&payload, header.as_deref(), xkey, NOW);
            if payload.len() > MAX_REQUEST_BYTES {
                prop_assert_eq!(bounded(result).kind(), K::TooLarge);
            } else if value.len() > max {
                prop_assert_eq!(bounded(result).kind(), K::FieldTooLong);
            } else {
                let read = result.unwrap();
                prop_assert_eq!(read.server_xkey.is_some(), sealed);
            }
        }

        /// Any times: no overflow, and a request is read only inside its window.
        #[test]
        fn arbitrary_times(
            exp in prop_oneof![any::<i64>(), (NOW - 10)..(NOW + 10), Just(0i64)],
            iat in prop_oneof![any::<i64>(), (NOW - 1000)..(NOW + 1000)]
                .prop_filter("encode replaces a zero iat", |t| *t != 0),
            nbf in prop_oneof![any::<i64>(), (NOW - 10)..(NOW + 10), Just(0i64)],
        ) {
            let k = keys();
            let mut c = claims(&k.server);
            c.standard.exp = exp;
            c.standard.iat = iat;
            c.standard.nbf = nbf;
            let token = sign(c, &k.server);
            let within = exp >= 0 && nbf >= 0 && iat >= 0
                && (exp == 0 || NOW <= exp)
                && nbf <= NOW
                && (iat == 0 || (iat - NOW <= MAX_CLOCK_SKEW_SECS
                    && NOW - iat <= MAX_REQUEST_AGE_SECS + MAX_CLOCK_SKEW_SECS));
            let result = read(&token);
            match result {
                Ok(_) => prop_assert!(within),
                Err(e) => {
                    prop_assert!(!within, "{}", e);
                    prop_assert!(e.reason().len() <= MAX_REASON_BYTES + 3);
                }
            }
        }
    }
}

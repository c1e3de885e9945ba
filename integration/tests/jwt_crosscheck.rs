//! Cross-checks the gateway's hand-written NATS JWTs against the official
//! JavaScript implementation, `@nats-io/jwt` (with `@nats-io/nkeys`), run by
//! `integration/js/jwt_check.mjs` under Node.js. `scripts/setup` installs the
//! pinned packages (`integration/js/package-lock.json`).
//!
//! Both directions, with the tokens built exactly as the callout builds them
//! (`Service::decide` for user JWTs, `Service::encode_response` for
//! authorization responses):
//!
//! - every kind of token the gateway issues (user JWTs of an institution, an
//!   agent and an operator; allowing and refusing authorization responses)
//!   decodes with the official library, signature verified, to exactly our
//!   claims, claim by claim; tampered tokens are rejected;
//! - user JWTs, authorization responses and an authorization request encoded
//!   by the official library decode with our `jwt::decode` to the same claims.
//!
//! `jti`: ours is nats-io/jwt's (Go, used by nats-server and nsc): base32 of
//! the SHA-512/256 of the standard claims without `jti`. The JavaScript
//! library uses another scheme (base64 of the SHA-512 of the whole claim set);
//! nats-server never checks `jti`, so the two need not agree. The test checks
//! ours against the Go scheme recomputed by the script from the officially
//! decoded claims, and the library's tokens against its own scheme.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lclstream_gateway::auth::callout::{response_claims, user_claims};
use lclstream_gateway::auth::claims::{
    AuthorizationRequest, AuthorizationResponse, ClientInformation, ConnectOptions, ServerId,
    UserClaims, REQUEST_AUDIENCE,
};
use lclstream_gateway::auth::jwt::{self, Claims, JwtError, StandardClaims, HEADER};
use lclstream_gateway::auth::permissions::{
    agent_permissions, institution_permissions, operator_permissions, Permissions,
    ResponsePermission, SubjectPermission,
};
use lclstream_gateway::auth::CalloutSettings;
use lclstream_gateway::policy::{Access, Identity, Principal, PrincipalKind};
use nkeys::{KeyPair, KeyPairType, XKey};
use serde_json::{json, Value};

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Runs `node integration/js/jwt_check.mjs` on `input`; returns its output.
fn official(input: &Value) -> Value {
    let dir = js_dir();
    let script = dir.join("jwt_check.mjs");
    let package = dir.join("node_modules/@nats-io/jwt/package.json");
    assert!(
        package.is_file(),
        "{} is missing: run scripts/setup (it runs npm ci in integration/js; \
         Node.js and npm come from the Debian packages nodejs and npm)",
        package.display()
    );
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run node ({e}): install Node.js and npm (Debian: nodejs npm), \
                 then run scripts/setup"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(input).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{} failed ({}): {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// One token for the official decoder, with the key type its issuer must have.
fn to_decode(label: &str, token: &str, issuer: &str) -> Value {
    json!({"label": label, "token": token, "issuer": issuer})
}

/// The official decoding of the token labelled `label`.
fn decoded<'a>(output: &'a Value, label: &str) -> &'a Value {
    output["decoded"]
        .as_array()
        .expect("decoded list")
        .iter()
        .find(|d| d["label"] == label)
        .unwrap_or_else(|| panic!("no decoding of {label}"))
}

/// The claims of an accepted token (fails if the library refused it).
fn accepted<'a>(output: &'a Value, label: &str) -> &'a Value {
    let d = decoded(output, label);
    assert_eq!(
        d["ok"], true,
        "the official library refused our {label}: {}",
        d["error"]
    );
    assert_eq!(
        d["header"],
        serde_json::from_str::<Value>(HEADER).unwrap(),
        "{label}: header"
    );
    &d["claims"]
}

/// Asserts the library refused `label` with `reason` in its error.
fn refused(output: &Value, label: &str, reason: &str) {
    let d = decoded(output, label);
    assert_eq!(
        d["ok"], false,
        "the official library accepted the {label}: {}",
        d["claims"]
    );
    let error = d["error"].as_str().unwrap();
    assert!(error.contains(reason), "{label}: error {error:?}");
}

const STANDARD: [&str; 8] = ["iss", "sub", "aud", "name", "exp", "nbf", "iat", "jti"];
const NATS: [&str; 10] = [
    "type", "version", "pub", "sub", "resp", "subs", "data", "payload", "jwt", "error",
];

/// Asserts the official decoding equals our claims, claim by claim, then as a whole.
fn assert_same_claims(label: &str, official: &Value, ours: Value) {
    for key in STANDARD {
        assert_eq!(official.get(key), ours.get(key), "{label}: claim {key}");
    }
    for key in NATS {
        assert_eq!(
            official["nats"].get(key),
            ours["nats"].get(key),
            "{label}: claim nats.{key}"
        );
    }
    assert_eq!(official, &ours, "{label}: whole claim set");
}

/// What nats-io/jwt (Go) would compute as `jti` for `label`'s claims.
fn assert_go_jti(output: &Value, label: &str) {
    let d = decoded(output, label);
    let jti = d["claims"]["jti"].as_str().unwrap();
    assert_eq!(jti, d["jti_go"], "{label}: jti is not nats-io/jwt's");
    assert_eq!(jti.len(), 52, "{label}: jti {jti}");
}

fn identity(kind: PrincipalKind, id: &str, access: Access) -> (Identity, KeyPair) {
    let key = KeyPair::new_user();
    let identity = Identity {
        principal: Principal {
            kind,
            id: id.into(),
        },
        name: id.to_uppercase(),
        public_key: key.public_key(),
        key_expires: None,
        access,
    };
    (identity, key)
}

/// A user JWT as `Service::decide` issues it (the callout's own `user_claims`).
fn user_jwt(
    issuer: &KeyPair,
    identity: &Identity,
    user_nkey: &str,
    now: i64,
) -> (Claims<UserClaims>, String) {
    let mut claims = user_claims(identity, user_nkey, &CalloutSettings::default(), now);
    let token = jwt::encode(&mut claims, issuer).unwrap();
    (claims, token)
}

/// An authorization response as `Service::encode_response` signs it.
fn response_jwt(
    issuer: &KeyPair,
    request: &AuthorizationRequest,
    response: AuthorizationResponse,
) -> (Claims<AuthorizationResponse>, String) {
    let mut claims = response_claims(request, response);
    let token = jwt::encode(&mut claims, issuer).unwrap();
    (claims, token)
}

/// `token` with its claims changed by `edit`, keeping the original signature.
fn tamper(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

/// An authorization request as nats-server 2.x fills it in.
fn server_request(server: &KeyPair, client: &KeyPair) -> AuthorizationRequest {
    AuthorizationRequest {
        server_id: ServerId {
            name: "n1".into(),
            host: "127.0.0.1".into(),
            id: server.public_key(),
            version: "2.15.1".into(),
            cluster: "lcls".into(),
            xkey: XKey::new().public_key(),
        },
        user_nkey: KeyPair::new_user().public_key(),
        client_info: ClientInformation {
            host: "127.0.0.1".into(),
            id: 42,
            user: client.public_key(),
            name: "partner \"ucsd\" <pull-0> & co".into(),
            kind: "Client".into(),
            client_type: "nats".into(),
            nonce: "ZtvBpp1hYUvtCew".into(),
        },
        connect_opts: ConnectOptions {
            nkey: client.public_key(),
            sig: URL_SAFE_NO_PAD.encode(client.sign(b"ZtvBpp1hYUvtCew").unwrap()),
            jwt: String::new(),
            user: String::new(),
            name: "partner \"ucsd\" <pull-0> & co".into(),
            lang: "rust".into(),
            version: "0.51.0".into(),
        },
        claim_type: "authorization_request".into(),
        version: 2,
    }
}

/// Permissions with every field set: deny lists and replies (the gateway's
/// roles use neither, but the claim structs carry them).
fn full_permissions() -> Permissions {
    Permissions {
        publish: SubjectPermission {
            allow: vec!["a.>".into(), "b.*.c".into()],
            deny: vec!["a.secret.>".into()],
        },
        subscribe: SubjectPermission {
            allow: vec!["_INBOX.>".into()],
            deny: vec!["_INBOX.other.*".into(), "x".into()],
        },
        responses: Some(ResponsePermission {
            max: 1,
            ttl: 5_000_000_000,
        }),
    }
}

#[test]
fn gateway_jwts_agree_with_the_official_nats_jwt_library() {
    let issuer = KeyPair::new_account();
    let server = KeyPair::new_server();
    let now = jwt::unix_now();
    let settings = CalloutSettings::default();

    let (institution, institution_key) = identity(
        PrincipalKind::Institution,
        "ucsd",
        Access::Institution {
            slots: 3,
            streams: vec!["LCLS_MFX".into()],
        },
    );
    let (agent, _) = identity(
        PrincipalKind::Agent,
        "mfx-agent",
        Access::Agent {
            instruments: vec!["mfx".into(), "cxi".into()],
        },
    );
    let (operator, _) = identity(PrincipalKind::Operator, "ops", Access::Operator);
    let mut expiring = institution.clone();
    expiring.key_expires = Some(time::OffsetDateTime::from_unix_timestamp(now + 600).unwrap());
    let request = server_request(&server, &institution_key);

    // The official library encodes: user JWTs with the gateway's permissions
    // (and every permission field), responses and a request.
    let official_users = [
        (
            "institution",
            institution_permissions("ucsd", 3, &["LCLS_MFX".to_string()]),
        ),
        (
            "agent",
            agent_permissions(
                "UAGENTKEYAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                &["mfx".to_string(), "cxi".to_string()],
            ),
        ),
        ("operator", operator_permissions()),
        ("full", full_permissions()),
    ];
    let refusal = "key UABC of institution \"ucsd\" is revoked\n<contact the facility> & retry";
    let encoded = official(&json!({
        "encode": {
            "account_seed": issuer.seed().unwrap(),
            "server_seed": server.seed().unwrap(),
            "user_public_key": request.user_nkey,
            "users": official_users.iter().map(|(label, permissions)| json!({
                "label": label,
                "name": institution.public_key,
                "aud": settings.account,
                "exp": now + 3600,
                "permissions": permissions,
            })).collect::<Vec<_>>(),
            "refusal": refusal,
            "request": {"exp": now + 2, "nats": request},
        }
    }))["encoded"]
        .clone();
    let official_token = |key: &str| encoded[key].as_str().unwrap().to_string();
    let official_user = |label: &str| encoded["users"][label].as_str().unwrap().to_string();

    // The request, as the callout reads it (`read_request_parts`).
    let read: Claims<AuthorizationRequest> =
        jwt::decode(&official_token("request"), KeyPairType::Server, now).unwrap();
    assert_eq!(read.nats, request);
    assert_eq!(read.standard.aud, REQUEST_AUDIENCE);
    assert_eq!(read.standard.iss, server.public_key());
    assert_eq!(read.nats.server_id.id, read.standard.iss);
    assert_eq!(read.standard.exp, now + 2);
    let request = read.nats;

    // Our tokens, built from the officially encoded request.
    let (institution_claims, institution_jwt) =
        user_jwt(&issuer, &institution, &request.user_nkey, now);
    let (agent_claims, agent_jwt) = user_jwt(&issuer, &agent, &request.user_nkey, now);
    let (operator_claims, operator_jwt) = user_jwt(&issuer, &operator, &request.user_nkey, now);
    let (expiring_claims, expiring_jwt) = user_jwt(&issuer, &expiring, &request.user_nkey, now);
    assert_eq!(expiring_claims.standard.exp, now + 600);
    let mut full_claims = Claims {
        standard: StandardClaims {
            aud: settings.account.clone(),
            exp: now + 60,
            nbf: now - 60,
            name: institution.public_key.clone(),
            sub: request.user_nkey.clone(),
            ..Default::default()
        },
        nats: UserClaims::new(full_permissions()),
    };
    let full_jwt = jwt::encode(&mut full_claims, &issuer).unwrap();
    let (allow_claims, allow_jwt) = response_jwt(
        &issuer,
        &request,
        AuthorizationResponse::allow(institution_jwt.clone()),
    );
    let (refuse_claims, refuse_jwt) = response_jwt(
        &issuer,
        &request,
        AuthorizationResponse::refuse(refusal.into()),
    );

    // Tampered tokens: same signature, other claims.
    let widened = tamper(&institution_jwt, |c| {
        c["nats"]["pub"]["allow"] = json!([">"])
    });
    let longer = tamper(&institution_jwt, |c| c["exp"] = json!(now + 86_400));
    let forged_refusal = tamper(&refuse_jwt, |c| c["nats"]["error"] = json!("other reason"));
    let operator_allow = serde_json::to_value(AuthorizationResponse::allow(operator_jwt.clone()));
    let swapped_allow = tamper(&refuse_jwt, |c| c["nats"] = operator_allow.unwrap());
    let parts: Vec<&str> = agent_jwt.split('.').collect();
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        operator_jwt.rsplit('.').next().unwrap()
    );
    let tampered = [
        ("widened permissions", &widened),
        ("extended expiry", &longer),
        ("forged refusal", &forged_refusal),
        ("refusal turned into an allow", &swapped_allow),
        ("spliced signature", &spliced),
    ];
    for (label, token) in tampered {
        assert!(
            matches!(
                jwt::decode::<Value>(token, KeyPairType::Account, now),
                Err(JwtError::BadSignature(_))
            ),
            "our decoder accepted the {label}"
        );
    }

    let mut queries = vec![
        to_decode("institution user JWT", &institution_jwt, "account"),
        to_decode("agent user JWT", &agent_jwt, "account"),
        to_decode("operator user JWT", &operator_jwt, "account"),
        to_decode("expiring-key user JWT", &expiring_jwt, "account"),
        to_decode("full user JWT", &full_jwt, "account"),
        to_decode("allowing response", &allow_jwt, "account"),
        to_decode("refusing response", &refuse_jwt, "account"),
        to_decode("user JWT as a server's", &institution_jwt, "server"),
    ];
    queries.extend(
        tampered
            .iter()
            .map(|(label, token)| to_decode(label, token, "account")),
    );
    for (label, _) in &official_users {
        queries.push(to_decode(
            &format!("official {label}"),
            &official_user(label),
            "account",
        ));
    }
    for key in ["allow", "refuse"] {
        queries.push(to_decode(
            &format!("official {key}"),
            &official_token(key),
            "account",
        ));
    }
    queries.push(to_decode(
        "official request",
        &official_token("request"),
        "server",
    ));
    let output = official(&json!({ "decode": queries }));

    // Our tokens decode officially to exactly our claims.
    let ours: [(&str, &Claims<UserClaims>); 5] = [
        ("institution user JWT", &institution_claims),
        ("agent user JWT", &agent_claims),
        ("operator user JWT", &operator_claims),
        ("expiring-key user JWT", &expiring_claims),
        ("full user JWT", &full_claims),
    ];
    for (label, claims) in ours {
        let official = accepted(&output, label);
        assert_same_claims(label, official, serde_json::to_value(claims).unwrap());
        assert_go_jti(&output, label);
        assert_eq!(official["iss"], issuer.public_key(), "{label}");
        assert_eq!(official["sub"], request.user_nkey, "{label}");
        let account = if label.contains("institution") || label.contains("expiring") {
            "PARTNERS"
        } else {
            "LCLS"
        };
        assert_eq!(official["aud"], account, "{label}");
        assert_eq!(official["nats"]["type"], "user", "{label}");
        assert_eq!(official["nats"]["version"], 2, "{label}");
        for limit in ["subs", "data", "payload"] {
            assert_eq!(official["nats"][limit], -1, "{label}: {limit}");
        }
        assert!(official["iat"].as_i64().unwrap() >= now, "{label}: iat");
        assert!(official["exp"].as_i64().unwrap() > now, "{label}: exp");
    }
    let official_institution = accepted(&output, "institution user JWT");
    let allowed: Vec<&str> = official_institution["nats"]["pub"]["allow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // 4 patterns x 3 slots x 2 streams (LCLS_MFX and the job data stream) + requests.
    assert_eq!(allowed.len(), 4 * 3 * 2 + 1);
    assert!(allowed.contains(&"$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.ucsd-c2"));
    assert!(allowed.contains(&"lclstream.gateway.ucsd.>"));
    assert_eq!(
        official_institution["nats"]["sub"]["allow"],
        json!(["_INBOX.ucsd.>"])
    );
    assert_eq!(official_institution["name"], institution.public_key);
    let official_agent = accepted(&output, "agent user JWT");
    assert!(official_agent["nats"]["pub"]["allow"]
        .as_array()
        .unwrap()
        .contains(&json!("$JS.API.STREAM.CREATE.LCLS_CXI")));
    assert_eq!(
        accepted(&output, "operator user JWT")["nats"]["pub"]["allow"],
        json!([">"])
    );
    let official_full = accepted(&output, "full user JWT");
    assert_eq!(
        official_full["nats"]["sub"]["deny"],
        json!(["_INBOX.other.*", "x"])
    );
    assert_eq!(
        official_full["nats"]["resp"],
        json!({"max": 1, "ttl": 5_000_000_000_i64})
    );
    assert_eq!(official_full["nbf"], now - 60);

    for (label, claims) in [
        ("allowing response", &allow_claims),
        ("refusing response", &refuse_claims),
    ] {
        let official = accepted(&output, label);
        assert_same_claims(label, official, serde_json::to_value(claims).unwrap());
        assert_go_jti(&output, label);
        assert_eq!(official["aud"], server.public_key(), "{label}");
        assert_eq!(official["sub"], request.user_nkey, "{label}");
        assert_eq!(
            official["nats"]["type"], "authorization_response",
            "{label}"
        );
        assert_eq!(official["nats"]["version"], 2, "{label}");
    }
    let official_allow = accepted(&output, "allowing response");
    assert_eq!(official_allow["nats"]["jwt"], institution_jwt);
    assert!(official_allow["nats"].get("error").is_none());
    let official_refuse = accepted(&output, "refusing response");
    assert_eq!(official_refuse["nats"]["error"], refusal);
    assert!(official_refuse["nats"].get("jwt").is_none());

    // Tampered tokens and a wrong issuer kind are refused, not decoded.
    for (label, _) in tampered {
        refused(&output, label, "sig verification failed");
    }
    refused(&output, "user JWT as a server's", "unexpected type A");

    // The official library's tokens decode with ours to the same claims.
    for (user, permissions) in &official_users {
        let label = format!("official {user}");
        let token = official_user(user);
        let claims: Claims<UserClaims> = jwt::decode(&token, KeyPairType::Account, now)
            .unwrap_or_else(|e| panic!("we cannot decode the {label}: {e}"));
        assert_eq!(claims.nats, UserClaims::new(permissions.clone()), "{label}");
        assert_eq!(claims.standard.iss, issuer.public_key(), "{label}");
        assert_eq!(claims.standard.sub, request.user_nkey, "{label}");
        assert_eq!(claims.standard.aud, "LCLS", "{label}");
        assert_eq!(claims.standard.name, institution.public_key, "{label}");
        assert_eq!(claims.standard.exp, now + 3600, "{label}");
        let ours = serde_json::to_value(&claims).unwrap();
        assert_same_claims(&label, accepted(&output, &label), ours);
        let d = decoded(&output, &label);
        assert_eq!(
            d["claims"]["jti"], d["jti_js"],
            "{label}: the library's own jti"
        );
        assert_ne!(d["claims"]["jti"], d["jti_go"], "{label}");
    }
    for (key, expected) in [
        (
            "allow",
            AuthorizationResponse::allow(official_user("institution")),
        ),
        ("refuse", AuthorizationResponse::refuse(refusal.into())),
    ] {
        let label = format!("official {key}");
        let claims: Claims<AuthorizationResponse> =
            jwt::decode(&official_token(key), KeyPairType::Account, now)
                .unwrap_or_else(|e| panic!("we cannot decode the {label}: {e}"));
        assert_eq!(claims.nats, expected, "{label}");
        assert_eq!(claims.standard.aud, server.public_key(), "{label}");
        assert_eq!(claims.standard.sub, request.user_nkey, "{label}");
        assert_eq!(claims.standard.iss, issuer.public_key(), "{label}");
        let ours = serde_json::to_value(&claims).unwrap();
        assert_same_claims(&label, accepted(&output, &label), ours);
    }
    let official_request = accepted(&output, "official request");
    assert_eq!(official_request["nats"]["user_nkey"], request.user_nkey);
    assert_eq!(
        official_request["jti"],
        decoded(&output, "official request")["jti_js"]
    );

    // A tampered official token is refused by our decoder too.
    let widened = tamper(&official_user("institution"), |c| {
        c["nats"]["pub"]["allow"] = json!([">"])
    });
    assert!(matches!(
        jwt::decode::<UserClaims>(&widened, KeyPairType::Account, now),
        Err(JwtError::BadSignature(_))
    ));
}

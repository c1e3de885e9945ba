//! Fuzzes the auth callout's reading of authorization requests.
//!
//! The first byte picks the mode, the rest is the input:
//! - bit 0: the callout has an xkey;
//! - bit 1: the input's first line is the `Nats-Server-Xkey` header;
//! - bit 2: the input is the claims of a token signed by a fixed server key
//!   (a JSON object gets that key as `iss` and `server_id.id`), so that the
//!   checks after the signature are reached;
//! - bit 3: the token is sealed for the callout's xkey by a fixed server
//!   xkey, named by the header unless bit 1 gives one;
//! - bit 4: the input is also three NUL-separated strings (key, nonce,
//!   signature) for the nonce signature check of the decision;
//! - bits 5-6: the clock (fixed, zero, minimum, maximum).
//!
//! Any input must give a request or an error with a bounded reason: never a panic.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use lclstream_gateway::auth::jwt;
use lclstream_gateway::auth::read_authorization_request;
use lclstream_gateway::auth::request::MAX_REASON_BYTES;
use libfuzzer_sys::fuzz_target;
use nkeys::{KeyPair, KeyPairType, XKey};

const NOW: i64 = 1_800_000_000;

struct Keys {
    server: KeyPair,
    server_xkey: XKey,
    callout_xkey: XKey,
    /// The callout's public xkey, as the server sees it.
    callout_public: XKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let callout_xkey = XKey::new_from_raw([2; 32]);
        Keys {
            server: KeyPair::new_from_raw(KeyPairType::Server, [1; 32]).unwrap(),
            server_xkey: XKey::new_from_raw([3; 32]),
            callout_public: XKey::from_public_key(&callout_xkey.public_key()).unwrap(),
            callout_xkey,
        }
    })
}

/// A token signed by the fixed server key over `claims`.
fn signed(claims: &[u8]) -> Vec<u8> {
    let k = keys();
    let claims = match serde_json::from_slice::<serde_json::Value>(claims) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.insert("iss".into(), k.server.public_key().into());
            if let Some(serde_json::Value::Object(nats)) = map.get_mut("nats") {
                if let Some(serde_json::Value::Object(server)) = nats.get_mut("server_id") {
                    server.insert("id".into(), k.server.public_key().into());
                }
            }
            serde_json::to_vec(&map).unwrap()
        }
        _ => claims.to_vec(),
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(jwt::HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = k.server.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)).into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let k = keys();
    let (mut header, body) = if mode & 2 != 0 {
        match input.iter().position(|&b| b == b'\n') {
            Some(at) => (
                Some(String::from_utf8_lossy(&input[..at]).into_owned()),
                &input[at + 1..],
            ),
            None => (None, input),
        }
    } else {
        (None, input)
    };
    let mut payload = if mode & 4 != 0 {
        signed(body)
    } else {
        body.to_vec()
    };
    if mode & 8 != 0 {
        payload = k.server_xkey.seal(&payload, &k.callout_public).unwrap();
        header.get_or_insert_with(|| k.server_xkey.public_key());
    }
    let callout_xkey = (mode & 1 != 0).then_some(&k.callout_xkey);
    let now = [NOW, 0, i64::MIN, i64::MAX][usize::from(mode >> 5 & 3)];
    match read_authorization_request(&payload, header.as_deref(), callout_xkey, now) {
        Ok(read) => {
            let opts = &read.request.connect_opts;
            let _ =
                jwt::verify_nonce_signature(&opts.nkey, &read.request.client_info.nonce, &opts.sig);
        }
        Err(e) => assert!(e.reason().len() <= MAX_REASON_BYTES + 3, "unbounded reason"),
    }
    if mode & 16 != 0 {
        let text = String::from_utf8_lossy(body);
        let mut parts = text.splitn(3, '\0');
        let (key, nonce, sig) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if let Err(e) = jwt::verify_nonce_signature(key, nonce, sig) {
            assert!(e.len() <= 1024, "unbounded nonce signature error");
        }
    }
});

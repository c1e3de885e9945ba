//! The auth callout against clients sending garbage in CONNECT, over a raw
//! TCP connection speaking the NATS text protocol to a real nats-server: a
//! huge name, keys that are not user nkeys, signatures that are not base64,
//! junk JWTs. Every such client is refused, the audit log stays bounded, and
//! afterwards an institution's key still connects: the callout is alive.

mod partner_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::StreamExt;
use lclstream_gateway::auth::request::{MAX_NAME_BYTES, MAX_REASON_BYTES, MAX_REQUEST_BYTES};
use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::Gateway;
use lclstream_gateway::keys::GatewayKeys;
use lclstream_nats::server::NatsServer;
use nkeys::KeyPair;
use partner_support::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// nats-server's default `max_control_line`.
const MAX_CONTROL_LINE: usize = 4096;

/// Bound on one raw connection attempt (a request the callout drops is
/// refused by the server after its auth timeout, a few seconds).
const ATTEMPT: Duration = Duration::from_secs(15);

/// Builds a CONNECT options object from the server's nonce.
type ConnectBuilder<'a> = Box<dyn FnOnce(&str) -> String + 'a>;

/// How a raw connection attempt ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// PONG: the connection is authorized.
    Accepted,
    /// `-ERR ...` from the server.
    Refused(String),
    /// The server closed the connection without an error line.
    Closed,
}

/// Reads from `stream` into `buffer` until it holds a whole line; returns
/// that line (without CRLF). At most 64 KiB are buffered.
async fn read_line(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    for _ in 0..1024 {
        if let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 2);
            return Some(line);
        }
        if buffer.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    None
}

/// Connects to `port`, reads INFO, sends `CONNECT <connect(nonce)>` and
/// PING, and reports what the server answers.
async fn attempt(port: u16, connect: impl FnOnce(&str) -> String) -> Outcome {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("TCP connect to the server");
        let mut buffer = Vec::new();
        let info = read_line(&mut stream, &mut buffer)
            .await
            .expect("INFO line");
        let info: Value = serde_json::from_str(info.strip_prefix("INFO ").expect("INFO first"))
            .expect("INFO is JSON");
        let nonce = info["nonce"].as_str().expect("the server sends a nonce");
        let line = format!("CONNECT {}\r\nPING\r\n", connect(nonce));
        stream
            .write_all(line.as_bytes())
            .await
            .expect("send CONNECT");
        for _ in 0..16 {
            match read_line(&mut stream, &mut buffer).await {
                None => return Outcome::Closed,
                Some(l) if l == "PONG" => return Outcome::Accepted,
                Some(l) if l.starts_with("-ERR") => return Outcome::Refused(l),
                Some(_) => continue, // +OK, PING, INFO updates
            }
        }
        Outcome::Closed
    };
    tokio::time::timeout(ATTEMPT, exchange)
        .await
        .expect("the server answers a connection attempt in time")
}

/// CONNECT options with `nkey`, the base64url signature of the nonce by
/// `signer` (if any) and the `extra` fields.
fn connect_json(nonce: &str, nkey: &str, signer: Option<&KeyPair>, extra: Value) -> String {
    let mut options = json!({
        "verbose": false,
        "pedantic": false,
        "lang": "raw",
        "version": "0",
        "protocol": 1,
        "nkey": nkey,
    });
    if let Some(signer) = signer {
        options["sig"] = URL_SAFE_NO_PAD
            .encode(signer.sign(nonce.as_bytes()).unwrap())
            .into();
    }
    for (k, v) in extra.as_object().unwrap() {
        options[k] = v.clone();
    }
    options.to_string()
}

#[tokio::test]
async fn garbage_connect_fields_are_refused_and_the_callout_survives() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true).expect("gateway keys");
    let settings = CalloutServerSettings::from_keys(&gateway_keys);
    let server = NatsServer::start_with(|c| c.blocks.extend(callout_server_blocks(&settings)))
        .expect("nats-server starts with the callout");
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas());
    let ucsd_key = add_new_key(&mut ucsd);
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    write_policies(&policies, &[ucsd]);
    let mut config = callout_config(&server.url(), &policies, &keys_dir);
    let audit_path = dir.path().join("audit.jsonl");
    config.audit.file = Some(audit_path.clone());
    let gateway = step("gateway", Gateway::start(config))
        .await
        .expect("gateway starts with the callout");

    // A second responder-side subscriber records the sizes of the real
    // requests the server sends (it never answers).
    let spy = step(
        "spy connects",
        async_nats::ConnectOptions::with_nkey(GatewayKeys::seed_of(&gateway_keys.callout_user))
            .connect(server.url()),
    )
    .await
    .expect("the callout user connects");
    let mut requests = step("spy subscribes", spy.subscribe("$SYS.REQ.USER.AUTH"))
        .await
        .unwrap();
    step("spy flush", spy.flush()).await.unwrap();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let spy_task = {
        let sizes = sizes.clone();
        tokio::spawn(async move {
            while let Some(message) = requests.next().await {
                sizes.lock().unwrap().push(message.payload.len());
            }
        })
    };

    let port = server.port();
    let stranger = KeyPair::new_user();
    let account = KeyPair::new_account();
    // The largest name that keeps the CONNECT line under the server's limit.
    let name_len = MAX_CONTROL_LINE - 400;
    assert!(name_len > MAX_NAME_BYTES);

    let cases: Vec<(&str, ConnectBuilder)> = vec![
        (
            "huge name with a valid key and signature",
            Box::new(|nonce| {
                connect_json(
                    nonce,
                    &ucsd_key.public_key(),
                    Some(&ucsd_key),
                    json!({ "name": "n".repeat(name_len) }),
                )
            }),
        ),
        (
            "nkey that is not a key",
            Box::new(|nonce| {
                connect_json(nonce, "not-an-nkey \u{1F4A5}", Some(&stranger), json!({}))
            }),
        ),
        (
            "nkey with a bad checksum",
            Box::new(|nonce| {
                let mut key = ucsd_key.public_key();
                let other = if key.as_bytes()[20] == b'A' { "B" } else { "A" };
                key.replace_range(20..21, other);
                connect_json(nonce, &key, Some(&ucsd_key), json!({}))
            }),
        ),
        (
            "nkey far too long",
            Box::new(|nonce| connect_json(nonce, &"U".repeat(2000), Some(&ucsd_key), json!({}))),
        ),
        (
            "signature that is not base64",
            Box::new(|nonce| {
                connect_json(
                    nonce,
                    &ucsd_key.public_key(),
                    None,
                    json!({ "sig": "!!! not base64 \u{0} ~~~" }),
                )
            }),
        ),
        (
            "signature of the wrong length",
            Box::new(|nonce| {
                connect_json(
                    nonce,
                    &ucsd_key.public_key(),
                    None,
                    json!({ "sig": "QUFB".repeat(30) }),
                )
            }),
        ),
        (
            "junk jwt and an unknown key",
            Box::new(|nonce| {
                connect_json(
                    nonce,
                    &stranger.public_key(),
                    Some(&stranger),
                    json!({ "jwt": format!("eyJ.{}.\u{7f}junk", "x".repeat(2000)) }),
                )
            }),
        ),
        (
            "junk jwt and no nkey",
            Box::new(|_| json!({ "jwt": "a.b.c.d", "user": "x", "pass": "y" }).to_string()),
        ),
        (
            "account key signing its own nonce",
            Box::new(|nonce| connect_json(nonce, &account.public_key(), Some(&account), json!({}))),
        ),
    ];
    let mut refusals = Vec::new();
    for (what, connect) in cases {
        let outcome = attempt(port, connect).await;
        assert_ne!(outcome, Outcome::Accepted, "{what} must be refused");
        refusals.push((what, outcome));
    }
    for (what, outcome) in &refusals {
        eprintln!("{what}: {outcome:?}");
    }

    // The callout is alive: the institution's key connects, raw and with a client.
    let outcome = attempt(port, |nonce| {
        connect_json(
            nonce,
            &ucsd_key.public_key(),
            Some(&ucsd_key),
            json!({ "name": "ucsd-raw" }),
        )
    })
    .await;
    assert_eq!(outcome, Outcome::Accepted);
    let client = step(
        "institution connects",
        async_nats::ConnectOptions::with_nkey(ucsd_key.seed().unwrap()).connect(server.url()),
    )
    .await
    .expect("the callout authorizes the institution's key after the garbage");
    step("flush", client.flush()).await.unwrap();

    // Every attempt reached the callout, in requests far below the limit.
    spy_task.abort();
    let sizes = sizes.lock().unwrap().clone();
    eprintln!("authorization request sizes (sealed): {sizes:?}");
    assert!(sizes.len() >= refusals.len(), "{sizes:?}");
    let largest = sizes.iter().copied().max().unwrap();
    assert!(largest > name_len, "the huge name reached the callout");
    assert!(largest < MAX_REQUEST_BYTES / 4, "{largest} bytes");

    gateway.shutdown().await;
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let connects: Vec<&Value> = lines.iter().filter(|l| l["action"] == "connect").collect();
    for line in &connects {
        let reason = line["reason"].as_str().unwrap();
        assert!(reason.len() <= MAX_REASON_BYTES + 64, "{reason}");
    }
    for line in audit.lines() {
        assert!(line.len() < 4096, "audit line of {} bytes", line.len());
    }
    // The request with the huge name was not read (the name is not logged):
    // the server timed the client out; the others were refused with a
    // reason; the institution was allowed twice.
    assert!(connects.iter().any(|l| l["decision"] == "deny"
        && l["reason"].as_str().unwrap().contains(&format!(
            "name has {name_len} bytes, more than {MAX_NAME_BYTES}"
        ))));
    for expected in ["not a valid public nkey", "not base64", "not a user nkey"] {
        assert!(
            connects.iter().any(
                |l| l["decision"] == "deny" && l["reason"].as_str().unwrap().contains(expected)
            ),
            "no refusal saying {expected:?} in {audit}"
        );
    }
    let allowed = connects
        .iter()
        .filter(|l| l["decision"] == "allow" && l["who"] == ucsd_key.public_key().as_str())
        .count();
    assert_eq!(allowed, 2, "{audit}");
}

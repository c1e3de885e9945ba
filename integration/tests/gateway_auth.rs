//! The gateway as nats-server's auth callout, against a real nats-server
//! configured with the rendered callout blocks and real nkeys.

use std::future::{Future, IntoFuture};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::{Client, ConnectOptions, Event};
use futures::StreamExt;
use lclstream_gateway::auth::{
    callout_server_blocks, AuthAction, AuthCallout, AuthDecision, CalloutServerSettings,
    CalloutSettings,
};
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::policy::PolicyStore;
use lclstream_nats::server::NatsServer;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition, StreamSettings};
use nkeys::KeyPair;
use tokio::sync::mpsc;

const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Every key of the test policies.
struct Keys {
    ucsd: KeyPair,
    ucsd_spare: KeyPair,
    ucsd_revoked: KeyPair,
    desy: KeyPair,
    agent: KeyPair,
    stranger: KeyPair,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            ucsd: KeyPair::new_user(),
            ucsd_spare: KeyPair::new_user(),
            ucsd_revoked: KeyPair::new_user(),
            desy: KeyPair::new_user(),
            agent: KeyPair::new_user(),
            stranger: KeyPair::new_user(),
        }
    }
}

fn ucsd_policy(keys: &Keys, spare_revoked: bool) -> String {
    format!(
        r#"
id = "ucsd"
name = "UC San Diego"

[[keys]]
public = "{}"
comment = "beamline workstation"

[[keys]]
public = "{}"
comment = "spare"
revoked = {spare_revoked}

[[keys]]
public = "{}"
comment = "lost laptop"
revoked = true

[[grants]]
stream = "LCLS_MFX"
subjects = ["lcls.mfx.mfxp1234.>"]

[quotas]
concurrent_consumers = 2
"#,
        keys.ucsd.public_key(),
        keys.ucsd_spare.public_key(),
        keys.ucsd_revoked.public_key()
    )
}

fn write_policies(dir: &Path, keys: &Keys) {
    std::fs::write(dir.join("ucsd.toml"), ucsd_policy(keys, false)).unwrap();
    std::fs::write(
        dir.join("desy.toml"),
        format!(
            r#"
id = "desy"
name = "DESY"
keys = [{{ public = "{}" }}]
[[grants]]
stream = "LCLS_MFX"
subjects = ["lcls.mfx.mfxp9999.>"]
"#,
            keys.desy.public_key()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("roles.toml"),
        format!(
            r#"
[[agent]]
id = "mfx-daq"
name = "MFX DAQ"
instruments = ["mfx"]
keys = [{{ public = "{}" }}]
"#,
            keys.agent.public_key()
        ),
    )
    .unwrap();
}

struct Env {
    server: NatsServer,
    keys: Keys,
    gateway_keys: GatewayKeys,
    policies: tempfile::TempDir,
    store: PolicyStore,
    decisions: Arc<Mutex<Vec<AuthDecision>>>,
    callout: Option<AuthCallout>,
    /// A facility administrator (static user in the facility account).
    service: Client,
    /// The gateway's partner-side user (partner account).
    front: Client,
    /// The administrator's public key (exempt from revocation sweeps).
    admin_key: String,
}

impl Env {
    /// Callout settings that leave the administrator connected, as a
    /// gateway configured with `auth.admin_keys` does.
    fn callout_settings(&self) -> CalloutSettings {
        CalloutSettings {
            exempt_users: vec![self.admin_key.clone()],
            ..Default::default()
        }
    }
}

impl Env {
    async fn start(encrypt: bool) -> Env {
        Self::start_with(encrypt, CalloutSettings::default()).await
    }

    async fn start_with(encrypt: bool, mut callout_settings: CalloutSettings) -> Env {
        let keys = Keys::new();
        let gateway_keys = GatewayKeys::generate(encrypt);
        let admin = KeyPair::new_user();
        let mut settings = CalloutServerSettings::from_keys(&gateway_keys);
        settings.admin_users.push(admin.public_key());
        callout_settings.exempt_users.push(admin.public_key());
        let server = NatsServer::start_with(|config| {
            config.blocks.extend(callout_server_blocks(&settings));
        })
        .expect("nats-server starts with the callout configuration");
        let policies = tempfile::tempdir().unwrap();
        write_policies(policies.path(), &keys);
        let store = PolicyStore::load(policies.path()).expect("test policies validate");
        let decisions = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let decisions = decisions.clone();
            Arc::new(move |d: AuthDecision| decisions.lock().unwrap().push(d))
        };
        let callout = within(
            "callout starts",
            AuthCallout::connect(
                &server.url(),
                &gateway_keys,
                store.clone(),
                callout_settings,
                sink,
            ),
        )
        .await
        .expect("callout connects");
        let service = within(
            "administrator connects",
            ConnectOptions::with_nkey(admin.seed().unwrap()).connect(server.url()),
        )
        .await
        .expect("the administrator bypasses the callout");
        let front = within(
            "front user connects",
            ConnectOptions::with_nkey(GatewayKeys::seed_of(&gateway_keys.front_user))
                .connect(server.url()),
        )
        .await
        .expect("the gateway's partner-side user bypasses the callout");
        Env {
            server,
            keys,
            gateway_keys,
            policies,
            store,
            decisions,
            callout: Some(callout),
            service,
            front,
            admin_key: admin.public_key(),
        }
    }

    /// Creates the MFX stream with one event and the consumer slots the
    /// request service would create (`ucsd-c0`, `desy-c0`).
    async fn create_stream_and_slots(&self) -> jetstream::Context {
        let js = jetstream::new(self.service.clone());
        let settings = StreamSettings::for_instrument("mfx");
        let stream = within("stream", js.get_or_create_stream(settings.to_config()))
            .await
            .unwrap();
        let ack = within(
            "publish",
            js.publish("lcls.mfx.mfxp1234.1.jungfrau", "event".into()),
        )
        .await
        .unwrap();
        within("publish ack", ack.into_future()).await.unwrap();
        for (slot, filter) in [
            ("ucsd-c0", "lcls.mfx.mfxp1234.>"),
            ("desy-c0", "lcls.mfx.mfxp9999.>"),
        ] {
            let config = pull_consumer_config(
                slot,
                vec![filter.to_string()],
                &StartPosition::All,
                &PullLimits::default(),
            );
            within("consumer", stream.create_consumer(config))
                .await
                .unwrap();
        }
        js
    }

    fn decisions(&self) -> Vec<AuthDecision> {
        self.decisions.lock().unwrap().clone()
    }
}

/// Connects with `key`; server errors and connection events go to the receiver.
async fn connect_as(
    env: &Env,
    key: &KeyPair,
    inbox: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<Event>), async_nats::ConnectError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = within(
        "connect",
        ConnectOptions::with_nkey(key.seed().unwrap())
            .custom_inbox_prefix(inbox)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            })
            .connect(env.server.url()),
    )
    .await?;
    Ok((client, rx))
}

/// Waits for a permissions violation mentioning `needle`.
async fn expect_violation(events: &mut mpsc::UnboundedReceiver<Event>, needle: &str) {
    within(&format!("permissions violation on {needle}"), async {
        // Bounded: a violation arrives within a few events.
        for _ in 0..100 {
            match events.recv().await {
                Some(Event::ServerError(e)) => {
                    let text = e.to_string();
                    if text.contains("Permissions Violation") && text.contains(needle) {
                        return;
                    }
                }
                Some(_) => {}
                None => panic!("event channel closed before a violation on {needle}"),
            }
        }
        panic!("no permissions violation on {needle}");
    })
    .await
}

/// Answers requests on `lclstream.gateway.*.*` with "pong", as the service
/// would (as the gateway's partner-side user).
async fn spawn_responder(service: &Client) -> tokio::task::JoinHandle<()> {
    let mut requests = service.subscribe("lclstream.gateway.*.*").await.unwrap();
    service.flush().await.unwrap();
    let service = service.clone();
    tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            if let Some(reply) = message.reply {
                let _ = service.publish(reply, "pong".into()).await;
            }
        }
    })
}

#[tokio::test]
async fn institution_can_request_and_pull_its_own_slot() {
    let env = Env::start(true).await;
    let js = env.create_stream_and_slots().await;
    let _responder = spawn_responder(&env.front).await;

    let (client, _events) = connect_as(&env, &env.keys.ucsd, "_INBOX.ucsd")
        .await
        .expect("a listed key connects");
    let reply = within(
        "gateway request",
        client.request("lclstream.gateway.ucsd.request", "ping".into()),
    )
    .await
    .expect("requests to the gateway and replies in the private inbox are allowed");
    assert_eq!(&reply.payload[..], b"pong");

    // Pull and ack from its own slot, through consumer info + next + ack,
    // with the JetStream API its account imports.
    let partner = jetstream::with_prefix(client.clone(), "$JS.lclstream.API");
    let consumer: PullConsumer = within(
        "consumer info",
        partner.get_consumer_from_stream("ucsd-c0", "LCLS_MFX"),
    )
    .await
    .expect("consumer info on its own slot is allowed");
    let mut batch = within(
        "fetch",
        consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages(),
    )
    .await
    .unwrap();
    let message = within("message", batch.next())
        .await
        .expect("one message")
        .expect("no error");
    assert_eq!(&message.payload[..], b"event");
    within("ack", message.double_ack())
        .await
        .expect("acks on its own slot are allowed");
    let info = within(
        "info",
        js.get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "ucsd-c0", "LCLS_MFX",
        ),
    )
    .await
    .unwrap()
    .cached_info()
    .clone();
    assert_eq!(
        info.ack_floor.stream_sequence, 1,
        "the ack reached the server"
    );

    let decisions = env.decisions();
    let allowed = decisions
        .iter()
        .find(|d| d.public_key == env.keys.ucsd.public_key())
        .expect("the connection was audited");
    assert!(allowed.allowed);
    assert_eq!(allowed.institution(), Some("ucsd"));
    assert!(allowed.expires.is_some());
    let line = allowed.audit_json();
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["action"], "connect");
    assert_eq!(line["institution"], "ucsd");
}

#[tokio::test]
async fn institution_is_confined_to_its_own_subjects() {
    let env = Env::start(false).await;
    let js = env.create_stream_and_slots().await;
    let (client, mut events) = connect_as(&env, &env.keys.ucsd, "_INBOX.ucsd")
        .await
        .expect("a listed key connects");

    // Another institution's inbox, and the shared one.
    let _other = client.subscribe("_INBOX.desy.>").await.unwrap();
    expect_violation(&mut events, "_INBOX.desy.>").await;
    let _shared = client.subscribe("_INBOX.>").await.unwrap();
    expect_violation(&mut events, "_INBOX.>").await;

    // Data subjects: nothing reaches the stream.
    client
        .publish("lcls.mfx.mfxp1234.2.jungfrau", "forged".into())
        .await
        .unwrap();
    expect_violation(&mut events, "lcls.mfx.mfxp1234.2.jungfrau").await;

    // Creating consumers is the gateway's job.
    for subject in [
        "$JS.lclstream.API.CONSUMER.CREATE.LCLS_MFX.mine",
        "$JS.lclstream.API.STREAM.INFO.LCLS_MFX",
        "$JS.API.CONSUMER.CREATE.LCLS_MFX.mine",
        "$JS.API.CONSUMER.CREATE.LCLS_MFX.mine.lcls.mfx.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.LCLS_MFX.mine",
        "$JS.API.STREAM.INFO.LCLS_MFX",
    ] {
        client.publish(subject, "{}".into()).await.unwrap();
        expect_violation(&mut events, subject).await;
    }

    // Another institution's slot, and its gateway subjects.
    for subject in [
        "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.desy-c0",
        "$JS.lclstream.API.CONSUMER.INFO.LCLS_MFX.desy-c0",
        "$JS.API.CONSUMER.MSG.NEXT.LCLS_MFX.ucsd-c0",
        "$JS.ACK.LCLS_MFX.desy-c0.1.1.1.1.0",
        "$JS.ACK.LCLS_MFX.desy-c0.1.ucsd-c0.1.1.0",
        "$JS.ACK.LCLS_MFX.ucsd-c0.1.1.1.1.0.0",
        "lclstream.gateway.desy.request",
    ] {
        client.publish(subject, "{}".into()).await.unwrap();
        expect_violation(&mut events, subject).await;
    }
    // Slots beyond its quota (concurrent_consumers = 2) are not granted.
    client
        .publish(
            "$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.ucsd-c2",
            "{}".into(),
        )
        .await
        .unwrap();
    expect_violation(&mut events, "ucsd-c2").await;

    within("flush", client.flush()).await.unwrap();
    let mut stream = within("stream", js.get_stream("LCLS_MFX")).await.unwrap();
    let info = within("stream info", stream.info()).await.unwrap();
    assert_eq!(info.state.messages, 1, "the forged event was not stored");
    assert!(
        within("consumer names", async {
            let mut names = stream.consumer_names();
            let mut all = Vec::new();
            while let Some(name) = names.next().await {
                all.push(name.unwrap());
            }
            all
        })
        .await
        .iter()
        .all(|n| n == "ucsd-c0" || n == "desy-c0"),
        "no consumer was created by the partner"
    );
}

/// The text of a refused connection, as the client sees it.
async fn refusal(env: &Env, key: &KeyPair) -> String {
    match connect_as(env, key, "_INBOX_x").await {
        Ok(_) => panic!("{} must be refused", key.public_key()),
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// Asserts that the client was refused and that the callout's reason reached
/// the server (nats-server logs it; to the client it always sends the fixed
/// `-ERR 'Authorization Violation'`).
async fn assert_refused_with(env: &Env, key: &KeyPair, reason: &str) {
    let client_text = refusal(env, key).await;
    assert!(
        client_text.contains("authorization violation"),
        "the client is told it is not authorized: {client_text}"
    );
    let needle = reason.to_string();
    let log = within("server log", async {
        // Bounded: the server logs the refusal right after answering.
        for _ in 0..200 {
            let log = env.server.log_tail(400);
            if log.contains(&needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        env.server.log_tail(400)
    })
    .await;
    assert!(
        log.contains(&needle),
        "the server log carries the callout's reason {needle:?}:\n{log}"
    );
}

#[tokio::test]
async fn unknown_and_revoked_keys_are_refused_with_the_reason() {
    let env = Env::start(true).await;
    let stranger = env.keys.stranger.public_key();
    let revoked = env.keys.ucsd_revoked.public_key();
    assert_refused_with(&env, &env.keys.stranger, &format!("unknown key {stranger}")).await;
    assert_refused_with(
        &env,
        &env.keys.ucsd_revoked,
        &format!("key {revoked} of institution ucsd is revoked"),
    )
    .await;
    let decisions = env.decisions();
    let reason_of = |key: &str| {
        decisions
            .iter()
            .find(|d| d.public_key == key)
            .map(|d| (d.allowed, d.reason.clone()))
            .expect("the refusal was audited")
    };
    let (allowed, reason) = reason_of(&stranger);
    assert!(!allowed);
    assert!(reason.contains("unknown key"), "{reason}");
    let (allowed, reason) = reason_of(&revoked);
    assert!(!allowed);
    assert!(reason.contains("revoked"), "{reason}");
}

#[tokio::test]
async fn revoking_a_key_in_the_policy_file_disconnects_it() {
    let env = Env::start(false).await;
    let _watcher = env.store.spawn_watcher(Duration::from_millis(200));
    let (spare, mut spare_events) = connect_as(&env, &env.keys.ucsd_spare, "_INBOX.ucsd")
        .await
        .expect("the spare key connects before revocation");
    let (other, _other_events) = connect_as(&env, &env.keys.ucsd, "_INBOX.ucsd")
        .await
        .expect("the main key connects");
    within("flush", spare.flush()).await.unwrap();

    std::fs::write(
        env.policies.path().join("ucsd.toml"),
        ucsd_policy(&env.keys, true),
    )
    .unwrap();

    within("the revoked connection is closed", async {
        for _ in 0..1000 {
            match spare_events.recv().await {
                Some(Event::Disconnected) | None => return,
                Some(_) => {}
            }
        }
        panic!("no disconnect");
    })
    .await;
    // It cannot come back: the callout refuses the key now.
    let spare_key = env.keys.ucsd_spare.public_key();
    assert_refused_with(
        &env,
        &env.keys.ucsd_spare,
        &format!("key {spare_key} of institution ucsd is revoked"),
    )
    .await;
    // The other key of the same institution stays connected.
    within("other key still works", other.flush())
        .await
        .expect("the unrevoked key keeps its connection");
    let kicked: Vec<AuthDecision> = env
        .decisions()
        .into_iter()
        .filter(|d| d.action == AuthAction::Disconnect)
        .collect();
    assert_eq!(kicked.len(), 1, "{kicked:?}");
    assert_eq!(kicked[0].public_key, env.keys.ucsd_spare.public_key());
    drop(spare);
}

#[tokio::test]
async fn agent_publishes_into_the_stream_but_reads_no_inbox_of_others() {
    let env = Env::start(true).await;
    env.create_stream_and_slots().await;
    let inbox = format!("_INBOX_{}", env.keys.agent.public_key());
    let (agent, mut events) = connect_as(&env, &env.keys.agent, &inbox)
        .await
        .expect("the agent key connects");
    let js = jetstream::new(agent.clone());
    let ack = within(
        "agent publish",
        js.publish("lcls.mfx.mfxp1234.2.jungfrau", "from the agent".into()),
    )
    .await
    .expect("publishing is allowed");
    let ack = within("agent ack", ack.into_future())
        .await
        .expect("the stream stored it");
    assert_eq!(ack.stream, "LCLS_MFX");
    assert_eq!(ack.sequence, 2);
    let _spy = agent.subscribe("_INBOX.ucsd.>").await.unwrap();
    expect_violation(&mut events, "_INBOX.ucsd.>").await;
    let _shared = agent.subscribe("_INBOX.>").await.unwrap();
    expect_violation(&mut events, "_INBOX.>").await;
    agent
        .publish("$JS.API.STREAM.DELETE.LCLS_MFX", "".into())
        .await
        .unwrap();
    expect_violation(&mut events, "$JS.API.STREAM.DELETE.LCLS_MFX").await;
    agent
        .publish("lcls.cxi.e1.1.det", "other instrument".into())
        .await
        .unwrap();
    expect_violation(&mut events, "lcls.cxi.e1.1.det").await;
}

#[tokio::test]
async fn connections_fail_while_the_callout_is_down_and_recover_after_restart() {
    let mut env = Env::start(false).await;
    if let Some(callout) = env.callout.take() {
        callout.shutdown().await;
    }
    // Without the callout, connections fail (the server times them out).
    assert!(connect_as(&env, &env.keys.ucsd, "_INBOX.ucsd")
        .await
        .is_err());
    let sink = Arc::new(|_: AuthDecision| {});
    let callout = within(
        "callout restarts",
        AuthCallout::connect(
            &env.server.url(),
            &env.gateway_keys,
            env.store.clone(),
            env.callout_settings(),
            sink,
        ),
    )
    .await
    .unwrap();
    connect_as(&env, &env.keys.ucsd, "_INBOX.ucsd")
        .await
        .expect("connects once the callout is back");
    callout.shutdown().await;
}

fn lclstream(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(args)
        .output()
        .expect("the lclstream binary runs")
}

#[test]
fn policy_check_accepts_the_examples_and_names_file_and_key_of_errors() {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");
    let ok = lclstream(&["policy", "check", examples]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2 institution(s)"));

    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::new_user().public_key();
    std::fs::write(
        dir.path().join("ucsd.toml"),
        format!(
            "id = \"ucsd\"\nname = \"U\"\nkeys = [{{ public = \"{key}\" }}]\n\
             [[grants]]\nstream = \"LCLS_MFX\"\nsubjects = [\"lcls.cxi.e1.>\"]\n\
             [quotas]\nrequests_per_hr = 3\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("desy.toml"),
        format!(
            "id = \"desy\"\nname = \"D\"\nkeys = [{{ public = \"{key}\" }}]\n\
             [[grants]]\nstream = \"LCLS_MFX\"\nsubjects = [\"lcls.cxi.e1.>\"]\n"
        ),
    )
    .unwrap();
    let bad = lclstream(&["policy", "check", dir.path().to_str().unwrap()]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("ucsd.toml") && stderr.contains("requests_per_hr"),
        "{stderr}"
    );
    assert!(
        stderr.contains("desy.toml: grants[0].subjects[0]") && stderr.contains("not within"),
        "{stderr}"
    );
}

#[test]
fn keygen_writes_a_private_seed_and_refuses_to_overwrite_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let first = lclstream(&[
        "keygen",
        "--kind",
        "institution",
        "--out",
        out,
        "--name",
        "ucsd",
    ]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let public = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert!(public.starts_with('U') && public.len() == 56, "{public}");
    let seed_path = dir.path().join("ucsd.nk");
    let mode = std::fs::metadata(&seed_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let seed = std::fs::read_to_string(&seed_path).unwrap();
    assert_eq!(
        KeyPair::from_seed(seed.trim()).unwrap().public_key(),
        public
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ucsd.pub"))
            .unwrap()
            .trim(),
        public
    );
    let again = lclstream(&["keygen", "--kind", "agent", "--out", out, "--name", "ucsd"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read_to_string(&seed_path).unwrap(),
        seed,
        "seed untouched"
    );
}

#[tokio::test]
async fn a_restarted_gateway_closes_connections_of_keys_withdrawn_meanwhile() {
    let mut env = Env::start(false).await;
    let (spare, mut spare_events) = connect_as(&env, &env.keys.ucsd_spare, "_INBOX.ucsd")
        .await
        .expect("the spare key connects");
    within("flush", spare.flush()).await.unwrap();
    if let Some(callout) = env.callout.take() {
        callout.shutdown().await;
    }
    std::fs::write(
        env.policies.path().join("ucsd.toml"),
        ucsd_policy(&env.keys, true),
    )
    .unwrap();
    let store = PolicyStore::load(env.policies.path()).unwrap();
    let decisions = env.decisions.clone();
    let sink = Arc::new(move |d: AuthDecision| decisions.lock().unwrap().push(d));
    let callout = within(
        "callout restarts",
        AuthCallout::connect(
            &env.server.url(),
            &env.gateway_keys,
            store,
            env.callout_settings(),
            sink,
        ),
    )
    .await
    .unwrap();
    within("the withdrawn key's connection is closed", async {
        for _ in 0..1000 {
            match spare_events.recv().await {
                Some(Event::Disconnected) | None => return,
                Some(_) => {}
            }
        }
        panic!("no disconnect");
    })
    .await;
    // The gateway's own users are never swept.
    within("service user still connected", env.service.flush())
        .await
        .expect("the service user keeps its connection");
    let kicked: Vec<String> = env
        .decisions()
        .into_iter()
        .filter(|d| d.action == AuthAction::Disconnect)
        .map(|d| d.public_key)
        .collect();
    assert_eq!(kicked, vec![env.keys.ucsd_spare.public_key()]);
    callout.shutdown().await;
}

#[tokio::test]
async fn short_lived_credentials_expire_and_are_renewed_by_reconnecting() {
    let settings = CalloutSettings {
        user_ttl: Duration::from_secs(2),
        ..Default::default()
    };
    let env = Env::start_with(false, settings).await;
    let (client, mut events) = connect_as(&env, &env.keys.ucsd, "_INBOX.ucsd")
        .await
        .expect("connects");
    within("expiry, disconnect and reconnect", async {
        let mut expired = false;
        for _ in 0..1000 {
            match events.recv().await {
                Some(Event::ServerError(e)) if e.to_string().contains("Expired") => expired = true,
                Some(Event::Connected) if expired => return,
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
        panic!("no expiry and reconnect");
    })
    .await;
    within("usable after renewal", client.flush())
        .await
        .expect("the renewed connection works");
    let authorizations = env
        .decisions()
        .iter()
        .filter(|d| d.allowed && d.public_key == env.keys.ucsd.public_key())
        .count();
    assert!(authorizations >= 2, "re-authorized through the callout");
}

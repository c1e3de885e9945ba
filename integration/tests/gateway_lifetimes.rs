//! How long an institution's connection lives, against real nats-server
//! processes: a user JWT's expiry closes the connection it authorized, and a
//! key withdrawn in its policy file loses a pull in flight within seconds.
//!
//! Connections are followed by their server-side id (`cid`) on the
//! monitoring endpoint `/connz`, which also keeps closed connections with
//! the reason and the time the server closed them. The measured times are
//! printed (`cargo test ... -- --nocapture`) and quoted in
//! `docs/gateway-protocol.md` ("Connection lifetime").

mod partner_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::pull};
use lclstream_gateway::auth::{
    callout_server_blocks, AuthAction, AuthCallout, AuthDecision, CalloutKeys,
    CalloutServerSettings, CalloutSettings,
};
use lclstream_gateway::gateway::{Gateway, GatewayHandle};
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::policy::{InstitutionPolicy, PolicyStore};
use lclstream_nats::server::{http_get, NatsServer};
use lclstream_nats::wire::Event;
use lclstream_partner::{
    BatchInfo, CallbackSink, DatasetGrant, DatasetRequest, PartnerClient, PullOptions, Start,
};
use partner_support::*;

/// The server closes a connection at most this long after its JWT's `exp`.
///
/// nats-server counts the remaining lifetime in whole seconds from the second
/// in which it authorized the connection, so the close comes between `exp`
/// and `exp` + 1 s (`exp` + the fraction of a second at authorization); the
/// rest is margin for a loaded machine.
const EXPIRY_BOUND: Duration = Duration::from_millis(1500);
/// A key withdrawn in its policy file loses its connections within this
/// long of the file being written (policy reload interval of 1 s included).
const REVOCATION_BOUND: Duration = Duration::from_secs(5);
/// Polling period of the monitoring endpoint.
const POLL: Duration = Duration::from_millis(20);
/// The experiment every test reads.
const FILTER: &str = "lcls.mfx.mfxp1234.>";
/// Simulated work per event in the partners' sinks, so that a backlog takes
/// seconds to drain and a pull is in flight when the connection ends.
const WORK_PER_EVENT: Duration = Duration::from_millis(5);

/// Seconds since the epoch, as the JWT `exp` and `/connz` times count them.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `GET /connz?<query>` on the server's monitoring port (off the async workers).
async fn connz(addr: SocketAddr, query: String) -> serde_json::Value {
    let path = format!("/connz?{query}");
    let (status, body) = step(
        "monitoring request",
        tokio::task::spawn_blocking(move || http_get(addr, &path, Duration::from_secs(5))),
    )
    .await
    .unwrap()
    .expect("the monitoring endpoint answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("/connz answers JSON")
}

/// A connection as the server reports it.
#[derive(Debug, Clone, PartialEq)]
enum ConnState {
    Open,
    /// Closed at `stop` (unix seconds) for `reason`.
    Closed {
        reason: String,
        stop: f64,
    },
    /// Neither open nor among the remembered closed connections.
    Unknown,
}

async fn connection_state(addr: SocketAddr, cid: u64) -> ConnState {
    let answer = connz(addr, format!("cid={cid}&state=all&auth=true")).await;
    let Some(connection) = answer["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["cid"].as_u64() == Some(cid))
    else {
        return ConnState::Unknown;
    };
    match connection["stop"].as_str() {
        None => ConnState::Open,
        Some(stop) => {
            let stop =
                time::OffsetDateTime::parse(stop, &time::format_description::well_known::Rfc3339)
                    .expect("/connz stop is RFC 3339");
            ConnState::Closed {
                reason: connection["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                stop: stop.unix_timestamp_nanos() as f64 / 1e9,
            }
        }
    }
}

/// The open connections authorized as `public_key` (the callout names each
/// connection's user after the client's key).
async fn open_cids(addr: SocketAddr, public_key: &str) -> Vec<u64> {
    let answer = connz(addr, format!("auth=true&state=open&user={public_key}")).await;
    answer["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["authorized_user"].as_str() == Some(public_key))
        .filter_map(|c| c["cid"].as_u64())
        .collect()
}

/// Polls until connection `cid` is closed; returns when the poll saw it
/// closed (unix seconds), the server's reason and the server's close time.
async fn wait_closed(addr: SocketAddr, cid: u64, limit: Duration) -> (f64, String, f64) {
    let started = Instant::now();
    // Bounded in count and in time.
    for _ in 0..(limit.as_millis() / POLL.as_millis() + 1) {
        match connection_state(addr, cid).await {
            ConnState::Closed { reason, stop } => return (unix_now(), reason, stop),
            ConnState::Open => {}
            ConnState::Unknown => panic!("connection {cid} is unknown to the server"),
        }
        if started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("connection {cid} still open after {limit:?}");
}

/// Polls `check` every [`POLL`] until it returns something, for at most `limit`.
async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    for _ in 0..(limit.as_millis() / POLL.as_millis() + 1) {
        if let Some(found) = check() {
            return found;
        }
        if started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{what}: not within {limit:?}");
}

/// Writes the server configuration's callout blocks for fresh gateway keys
/// in `keys_dir` and starts the server.
fn start_server(keys_dir: &Path) -> (NatsServer, GatewayKeys) {
    let keys = GatewayKeys::load_or_generate(keys_dir, true).expect("gateway keys");
    let mut settings = CalloutServerSettings::from_keys(&keys);
    settings.admin_users.push(admin_key(keys_dir).public_key());
    let server = NatsServer::start_with(|c| c.blocks.extend(callout_server_blocks(&settings)))
        .expect("nats-server starts with the callout");
    (server, keys)
}

/// A facility administrator's key, kept next to the gateway's keys.
fn admin_key(keys_dir: &Path) -> nkeys::KeyPair {
    let path = keys_dir.join("test-admin.nk");
    if let Ok(seed) = std::fs::read_to_string(&path) {
        return nkeys::KeyPair::from_seed(seed.trim()).unwrap();
    }
    let key = nkeys::KeyPair::new_user();
    std::fs::write(&path, key.seed().unwrap()).unwrap();
    key
}

/// A connection of the facility account (an administrator), which
/// publishes the backlog and reads consumer state.
async fn facility(server: &NatsServer, keys_dir: &Path) -> jetstream::Context {
    let client = step(
        "facility connect",
        async_nats::ConnectOptions::with_nkey(admin_key(keys_dir).seed().unwrap())
            .connect(server.url()),
    )
    .await
    .expect("the administrator bypasses the callout");
    jetstream::new(client)
}

/// Connects `institution` with `key` through the callout.
async fn connect_partner(
    server: &NatsServer,
    institution: &str,
    key: &nkeys::KeyPair,
) -> PartnerClient {
    connect_with_key(&server.url(), institution, key)
        .await
        .expect("the callout authorizes the key")
}

/// Events a pull wrote, with the time (unix seconds) each reached the sink.
type Received = Arc<Mutex<Vec<f64>>>;

/// Requests the experiment under `label` and pulls it in a task, a few
/// messages per pull request, with [`WORK_PER_EVENT`] spent on each event.
async fn start_pull(
    partner: &PartnerClient,
    label: &str,
) -> (DatasetGrant, Received, tokio::task::JoinHandle<String>) {
    let grant = step(
        "request",
        partner.request_dataset(&DatasetRequest {
            filters: vec![FILTER.to_string()],
            start: Start::All,
            end: None,
            label: Some(label.to_string()),
        }),
    )
    .await
    .expect("the dataset is granted");
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let mut sink = {
        let received = received.clone();
        CallbackSink::new(move |_: &BatchInfo, _: Event| {
            std::thread::sleep(WORK_PER_EVENT);
            received.lock().unwrap().push(unix_now());
            Ok(())
        })
    };
    let options = PullOptions {
        batch_messages: 2,
        idle_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let (partner, task_grant) = (partner.clone(), grant.clone());
    let task = tokio::spawn(async move {
        match partner.pull(&task_grant, &options, &mut sink).await {
            Ok(summary) => format!("ended: {summary:?}"),
            Err(e) => format!("failed: {e}"),
        }
    });
    (grant, received, task)
}

fn count(received: &Received) -> usize {
    received.lock().unwrap().len()
}

/// Messages the server has delivered from the grant's consumer (redeliveries included).
async fn delivered(js: &jetstream::Context, grant: &DatasetGrant) -> u64 {
    let mut consumer: jetstream::consumer::Consumer<pull::Config> = step(
        "consumer lookup",
        js.get_consumer_from_stream(&grant.consumer, &grant.stream),
    )
    .await
    .expect("the consumer exists");
    step("consumer info", consumer.info())
        .await
        .expect("consumer info")
        .delivered
        .consumer_sequence
}

/// The policy files' directory, created under `dir`.
fn policy_dir(dir: &Path, policies: &[InstitutionPolicy]) -> PathBuf {
    let path = dir.join("policies");
    std::fs::create_dir_all(&path).unwrap();
    write_policies(&path, policies);
    path
}

/// `policy` without any key: the institution stays, its key is gone.
fn without_keys(policy: &InstitutionPolicy) -> InstitutionPolicy {
    let mut policy = policy.clone();
    policy.keys.clear();
    policy
}

/// A server, a gateway (request service only) and an auth callout started
/// directly with a short user TTL and without a system client: nothing
/// disconnects withdrawn keys, only the JWT's expiry ends a connection.
struct ShortLived {
    server: NatsServer,
    gateway: GatewayHandle,
    _callout: AuthCallout,
    decisions: Arc<Mutex<Vec<AuthDecision>>>,
    facility: jetstream::Context,
    /// The policies the callout decides with (reloaded every 100 ms).
    store: PolicyStore,
    _watcher: lclstream_gateway::policy::WatcherHandle,
    policies: PathBuf,
    _dir: tempfile::TempDir,
}

impl ShortLived {
    async fn start(ttl: Duration, policies: &[InstitutionPolicy]) -> ShortLived {
        let dir = tempfile::tempdir().unwrap();
        let (server, keys) = start_server(&dir.path().join("keys"));
        let policy_dir = policy_dir(dir.path(), policies);
        // The gateway as its own users but without its callout (whose
        // user_ttl_secs is at least 60): the callout is started below.
        let mut config = callout_config(&server.url(), &policy_dir, &dir.path().join("keys"));
        if let Some(auth) = config.auth.as_mut() {
            auth.callout = false;
            auth.admin_keys
                .push(admin_key(&dir.path().join("keys")).public_key());
        }
        config.audit.file = Some(dir.path().join("audit.jsonl"));
        let gateway = step("gateway start", Gateway::start(config))
            .await
            .expect("gateway starts");

        // The callout's own view of the policy files, reloaded every 100 ms.
        let store = PolicyStore::load(&policy_dir).expect("policies validate");
        let watcher = store.spawn_watcher(Duration::from_millis(100));
        let decisions = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let decisions = decisions.clone();
            Arc::new(move |d: AuthDecision| decisions.lock().unwrap().push(d))
        };
        let callout_client = step(
            "callout connect",
            async_nats::ConnectOptions::with_nkey(GatewayKeys::seed_of(&keys.callout_user))
                .name("lifetimes-callout")
                .connect(server.url()),
        )
        .await
        .expect("the callout user connects");
        let callout = step(
            "callout start",
            AuthCallout::start(
                callout_client,
                None,
                CalloutKeys::from_gateway(&keys).unwrap(),
                store.clone(),
                CalloutSettings {
                    user_ttl: ttl,
                    exempt_users: vec![admin_key(&dir.path().join("keys")).public_key()],
                    ..Default::default()
                },
                sink,
            ),
        )
        .await
        .expect("the callout subscribes");
        let facility = facility(&server, &dir.path().join("keys")).await;
        ShortLived {
            server,
            gateway,
            _callout: callout,
            decisions,
            facility,
            store,
            _watcher: watcher,
            policies: policy_dir,
            _dir: dir,
        }
    }

    /// Connection decisions about `key`, oldest first.
    fn decisions_of(&self, key: &str) -> Vec<AuthDecision> {
        self.decisions
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.public_key == key && d.action == AuthAction::Connect)
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_user_jwt_closes_its_connection_and_the_client_renews() {
    let ttl = Duration::from_secs(2);
    let mut ucsd = policy("ucsd", &[FILTER], quick_quotas());
    let key = add_new_key(&mut ucsd);
    let env = ShortLived::start(ttl, &[ucsd]).await;
    let monitor = env.server.monitor_addr();
    let public = key.public_key();

    let connected_at = unix_now();
    let partner = connect_partner(&env.server, "ucsd", &key).await;
    let first = env.decisions_of(&public);
    assert_eq!(first.len(), 1, "one authorization so far: {first:?}");
    assert!(first[0].allowed);
    let cid = first[0].client_id;
    let exp = first[0]
        .expires
        .expect("an allowed connection has an expiry") as f64;
    let authorized = first[0].time.unix_timestamp_nanos() as f64 / 1e9;
    assert!(
        exp <= connected_at + ttl.as_secs_f64() + 1.0,
        "exp {exp} is within the TTL of the connection at {connected_at}"
    );
    assert_eq!(
        open_cids(monitor, &public).await,
        vec![cid],
        "the server knows the connection under the key and the callout's cid"
    );
    step("usable before expiry", partner.client().flush())
        .await
        .expect("the connection works");

    let limit = Duration::from_secs_f64((exp - unix_now()).max(0.0))
        + EXPIRY_BOUND
        + Duration::from_secs(3);
    let (seen, reason, stop) = wait_closed(monitor, cid, limit).await;
    eprintln!(
        "expiry: ttl {ttl:?}, exp {exp:.0}; server closed cid {cid} {:.3} s after exp \
         ({reason:?}), seen by polling {:.3} s after exp; authorized at {:.3} past a second",
        stop - exp,
        seen - exp,
        authorized.fract()
    );
    assert!(
        reason.contains("Expired"),
        "closed because the JWT expired: {reason:?}"
    );
    assert!(
        stop >= exp - 0.01,
        "not closed before exp: {:.3}",
        stop - exp
    );
    assert!(
        stop - exp <= EXPIRY_BOUND.as_secs_f64(),
        "closed {:.3} s after exp, bound {EXPIRY_BOUND:?}",
        stop - exp
    );
    assert!(
        seen - exp <= EXPIRY_BOUND.as_secs_f64() + 0.5,
        "closure seen {:.3} s after exp",
        seen - exp
    );

    // The client library reconnects through the callout and gets a fresh JWT.
    let renewed = wait_for("re-authorization", Duration::from_secs(10), || {
        env.decisions_of(&public)
            .into_iter()
            .find(|d| d.allowed && d.client_id != cid)
    })
    .await;
    let renewed_exp = renewed.expires.unwrap() as f64;
    eprintln!(
        "expiry: renewed as cid {} {:.3} s after the close, new exp {renewed_exp:.0}",
        renewed.client_id,
        renewed.time.unix_timestamp_nanos() as f64 / 1e9 - stop
    );
    assert!(renewed_exp > exp, "the new JWT expires later");
    assert_eq!(
        connection_state(monitor, cid).await,
        ConnState::Closed { reason, stop }
    );
    assert!(
        open_cids(monitor, &public)
            .await
            .contains(&renewed.client_id),
        "the renewed connection is open"
    );
    step("usable after renewal", partner.client().flush())
        .await
        .expect("the renewed connection works");
    env.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_withdrawn_without_a_kick_loses_access_at_expiry() {
    let ttl = Duration::from_secs(3);
    let mut ucsd = policy("ucsd", &[FILTER], quick_quotas());
    let key = add_new_key(&mut ucsd);
    let env = ShortLived::start(ttl, std::slice::from_ref(&ucsd)).await;
    let monitor = env.server.monitor_addr();
    let public = key.public_key();
    // 400 messages of 4 events: 8 s of sink work, far more than the TTL.
    let total = publish(&env.facility, "mfxp1234", 6, 400, 4, 8).await;

    let partner = connect_partner(&env.server, "ucsd", &key).await;
    let first = env.decisions_of(&public)[0].clone();
    let (cid, exp) = (first.client_id, first.expires.unwrap() as f64);
    let authorized = first.time.unix_timestamp_nanos() as f64 / 1e9;
    let (grant, received, pull) = start_pull(&partner, "expiry").await;
    wait_for("first events", Duration::from_secs(5), || {
        (count(&received) > 0).then_some(())
    })
    .await;

    // The key leaves the policy file; the callout reloads but kicks no one.
    write_policies(&env.policies, &[without_keys(&ucsd)]);
    wait_for(
        "the callout's policies drop the key",
        Duration::from_secs(5),
        || {
            env.store
                .current()
                .principal_of(&public)
                .is_none()
                .then_some(())
        },
    )
    .await;
    let withdrawn_at = unix_now();
    let at_withdrawal = count(&received);
    assert!(
        withdrawn_at < exp - 0.3,
        "the policy change must be in force well before exp (machine too slow?): \
         {withdrawn_at:.3} vs exp {exp:.0}"
    );
    assert_eq!(
        connection_state(monitor, cid).await,
        ConnState::Open,
        "without a system client nothing closes the connection early"
    );

    let limit = Duration::from_secs_f64((exp - unix_now()).max(0.0))
        + EXPIRY_BOUND
        + Duration::from_secs(3);
    let (seen, reason, stop) = wait_closed(monitor, cid, limit).await;
    assert!(reason.contains("Expired"), "closed by expiry: {reason:?}");
    assert!(
        stop >= exp - 0.01 && stop - exp <= EXPIRY_BOUND.as_secs_f64(),
        "closed {:.3} s after exp, bound {EXPIRY_BOUND:?}",
        stop - exp
    );
    let (before_exp, last_event) = {
        let times = received.lock().unwrap();
        (
            times.iter().filter(|&&t| t < exp).count(),
            times.last().copied().unwrap_or(0.0),
        )
    };
    assert!(
        before_exp > at_withdrawal,
        "the pull went on between the withdrawal and exp ({at_withdrawal} -> {before_exp} events): \
         expiry is what ended it"
    );

    // From exp + bound on, nothing more is pulled: neither the sink nor the
    // server's delivery counter moves.
    let settle = exp + EXPIRY_BOUND.as_secs_f64() - unix_now();
    if settle > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    }
    let (events_then, delivered_then) = (count(&received), delivered(&env.facility, &grant).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (events_later, delivered_later) =
        (count(&received), delivered(&env.facility, &grant).await);
    eprintln!(
        "expiry without kick: exp {exp:.0} (authorized at {:.3} past a second); closed {:.3} s \
         after exp (seen {:.3} s), last event {:.3} s after exp; {events_later} of {} events, \
         {delivered_later} of {total} messages delivered",
        authorized.fract(),
        stop - exp,
        seen - exp,
        last_event - exp,
        total * 4
    );
    assert_eq!(
        events_then, events_later,
        "no event after exp + {EXPIRY_BOUND:?}"
    );
    assert_eq!(
        delivered_then, delivered_later,
        "the server delivers nothing after exp + {EXPIRY_BOUND:?}"
    );
    assert!(
        last_event <= exp + EXPIRY_BOUND.as_secs_f64(),
        "last event {:.3} s after exp",
        last_event - exp
    );
    assert!(
        (delivered_later as usize) < total,
        "the backlog was cut short ({delivered_later} of {total})"
    );

    // The client library tries to come back; the callout refuses the key.
    let refused = wait_for("a refused reconnect", Duration::from_secs(10), || {
        env.decisions_of(&public).into_iter().find(|d| !d.allowed)
    })
    .await;
    assert!(
        refused.time.unix_timestamp_nanos() as f64 / 1e9 >= stop,
        "refused on reconnecting"
    );
    assert!(refused.reason.contains("unknown key"), "{}", refused.reason);
    assert!(
        env.decisions_of(&public)
            .iter()
            .filter(|d| d.allowed)
            .count()
            == 1,
        "never authorized again"
    );
    assert!(open_cids(monitor, &public).await.is_empty());
    pull.abort();
    env.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_withdrawn_mid_pull_is_cut_off_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let (server, _keys) = start_server(&keys_dir);
    let monitor = server.monitor_addr();
    let mut ucsd = policy("ucsd", &[FILTER], quick_quotas());
    let ucsd_key = add_new_key(&mut ucsd);
    let mut desy = policy("desy", &[FILTER], quick_quotas());
    let desy_key = add_new_key(&mut desy);
    let policies = policy_dir(dir.path(), &[ucsd.clone(), desy]);
    let audit_path = dir.path().join("audit.jsonl");
    let mut config = callout_config(&server.url(), &policies, &keys_dir);
    config.audit.file = Some(audit_path.clone());
    config.policies.reload_secs = 1;
    if let Some(auth) = config.auth.as_mut() {
        auth.admin_keys.push(admin_key(&keys_dir).public_key());
    }
    let gateway = step("gateway start", Gateway::start(config))
        .await
        .expect("gateway starts with the callout");
    let facility = facility(&server, &keys_dir).await;
    // 400 messages of 4 events: 8 s of sink work for each institution.
    let total = publish(&facility, "mfxp1234", 6, 400, 4, 8).await;

    let (ucsd_public, desy_public) = (ucsd_key.public_key(), desy_key.public_key());
    let ucsd_partner = connect_partner(&server, "ucsd", &ucsd_key).await;
    let desy_partner = connect_partner(&server, "desy", &desy_key).await;
    let ucsd_cids = open_cids(monitor, &ucsd_public).await;
    let desy_cids = open_cids(monitor, &desy_public).await;
    assert_eq!((ucsd_cids.len(), desy_cids.len()), (1, 1));
    let (ucsd_cid, desy_cid) = (ucsd_cids[0], desy_cids[0]);

    let (ucsd_grant, ucsd_received, ucsd_pull) = start_pull(&ucsd_partner, "revoke").await;
    let (_desy_grant, desy_received, desy_pull) = start_pull(&desy_partner, "revoke").await;
    wait_for("both pulls under way", Duration::from_secs(10), || {
        (count(&ucsd_received) >= 20 && count(&desy_received) >= 20).then_some(())
    })
    .await;

    // The key leaves ucsd's policy file while its pull is in flight.
    let written = Instant::now();
    let written_unix = unix_now();
    write_policies(&policies, &[without_keys(&ucsd)]);
    let (seen, reason, stop) =
        wait_closed(monitor, ucsd_cid, REVOCATION_BOUND + Duration::from_secs(5)).await;
    let to_close = written.elapsed();
    let delivered_at_close = delivered(&facility, &ucsd_grant).await;
    let events_at_close = count(&ucsd_received);
    assert!(
        reason.contains("Kicked"),
        "closed by the gateway through the system account: {reason:?}"
    );
    assert!(
        to_close <= REVOCATION_BOUND,
        "closed {to_close:?} after the policy file changed, bound {REVOCATION_BOUND:?}"
    );

    // Nothing more reaches ucsd; desy goes on.
    let desy_at_close = count(&desy_received);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered_later = delivered(&facility, &ucsd_grant).await;
    let (events_later, last_event) = {
        let times = ucsd_received.lock().unwrap();
        (times.len(), times.last().copied().unwrap_or(0.0))
    };
    let desy_later = count(&desy_received);
    eprintln!(
        "revocation: cid {ucsd_cid} closed {:.3} s after the policy file was written \
         (server close at +{:.3} s, {reason:?}); last ucsd event at +{:.3} s; \
         ucsd {events_later} events / {delivered_later} of {total} messages delivered; \
         desy {desy_at_close} -> {desy_later} events meanwhile",
        seen - written_unix,
        stop - written_unix,
        last_event - written_unix,
    );
    assert_eq!(
        delivered_at_close, delivered_later,
        "the server delivers nothing more to the withdrawn key"
    );
    assert!(
        events_later - events_at_close <= 2 * 4,
        "at most the messages already received (one pull request) reach the sink after the close"
    );
    assert!(
        last_event <= stop + 0.5,
        "last event {:.3} s after the close",
        last_event - stop
    );
    assert!(
        (delivered_later as usize) < total,
        "the backlog was cut short"
    );
    assert!(desy_later > desy_at_close, "desy keeps pulling");
    assert_eq!(
        open_cids(monitor, &desy_public).await,
        vec![desy_cid],
        "desy's connection is untouched"
    );

    // The client library's reconnect is refused, and the audit log tells.
    let audit = wait_for(
        "the refused reconnect in the audit log",
        Duration::from_secs(10),
        || {
            let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit_path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            lines
                .iter()
                .any(|l| {
                    l["action"] == "connect"
                        && l["decision"] == "deny"
                        && l["who"] == ucsd_public.as_str()
                })
                .then_some(lines)
        },
    )
    .await;
    assert!(
        open_cids(monitor, &ucsd_public).await.is_empty(),
        "ucsd is not back"
    );
    let disconnects: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|l| l["action"] == "disconnect")
        .collect();
    assert_eq!(disconnects.len(), 1, "{disconnects:?}");
    assert_eq!(disconnects[0]["who"], ucsd_public.as_str());
    assert_eq!(disconnects[0]["institution"], "ucsd");
    assert_eq!(disconnects[0]["details"]["client_id"], ucsd_cid);
    assert!(
        !audit
            .iter()
            .any(|l| l["who"] == desy_public.as_str() && l["decision"] == "deny"),
        "desy was never refused"
    );

    ucsd_pull.abort();
    desy_pull.abort();
    gateway.shutdown().await;
}

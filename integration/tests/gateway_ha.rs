//! Several gateways side by side (docs/operators.md "Several gateways"):
//! gateway processes of the `lclstream` binary share one server with the
//! auth callout, their quota counters, decision locks and meter leadership
//! live in JetStream key-value buckets, and one of them is killed -9 in the
//! middle of a burst of connects and requests.

mod partner_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::policy::InstitutionPolicy;
use lclstream_gateway::shared_state::{gateways, STATE_BUCKET};
use lclstream_nats::server::NatsServer;
use lclstream_partner::{DatasetRequest, PartnerError, Start};
use partner_support::*;

/// A deployment: one server with the callout, gateway processes over shared policies.
struct Deployment {
    server: NatsServer,
    dir: tempfile::TempDir,
    keys_dir: PathBuf,
    policies: PathBuf,
    admin: async_nats::Client,
    admin_seed: PathBuf,
    js: jetstream::Context,
    gateways: Vec<(String, Child)>,
    /// Each gateway's metrics/health listener port.
    metrics_ports: Vec<(String, u16)>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for (_, child) in &mut self.gateways {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn deploy(policies: &[InstitutionPolicy]) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true).expect("gateway keys");
    let admin_key = nkeys::KeyPair::new_user();
    let mut settings = CalloutServerSettings::from_keys(&gateway_keys);
    settings.admin_users.push(admin_key.public_key());
    let server = NatsServer::start_with(|c| c.blocks.extend(callout_server_blocks(&settings)))
        .expect("nats-server starts with the callout");
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    write_policies(&policy_dir, policies);
    let admin = async_nats::ConnectOptions::with_nkey(admin_key.seed().unwrap())
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(admin.clone());
    let admin_seed = dir.path().join("admin.seed");
    std::fs::write(&admin_seed, admin_key.seed().unwrap()).unwrap();
    Deployment {
        admin_seed,
        server,
        keys_dir,
        policies: policy_dir,
        admin,
        js,
        gateways: Vec::new(),
        metrics_ports: Vec::new(),
        dir,
    }
}

impl Deployment {
    /// Starts gateway process `id` (a `lclstream gateway --config` with `quota.shared`).
    fn start_gateway(&mut self, id: &str) {
        let mut config = callout_config(&self.server.url(), &self.policies, &self.keys_dir);
        config.policies.reload_secs = 1;
        config.audit.file = Some(self.audit_path(id));
        config.meter.interval_ms = 250;
        config.quota.shared = true;
        config.quota.gateway_id = Some(id.to_string());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        config.metrics.listen = Some(format!("127.0.0.1:{port}"));
        self.metrics_ports.retain(|(name, _)| name != id);
        self.metrics_ports.push((id.to_string(), port));
        let path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, toml::to_string(&config).expect("config serializes")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
            .args(["gateway", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("{id}.log")))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("lclstream gateway starts");
        self.gateways.push((id.to_string(), child));
    }

    fn audit_path(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("audit-{id}.jsonl"))
    }

    /// Kills gateway `id` with SIGKILL and reaps it.
    fn kill9(&mut self, id: &str) {
        let at = self
            .gateways
            .iter()
            .position(|(name, _)| name == id)
            .expect("a gateway of that id");
        let (_, mut child) = self.gateways.remove(at);
        child.kill().expect("SIGKILL delivered");
        child.wait().unwrap();
    }

    /// Stops gateway `id` with SIGTERM and waits (bounded) for it to exit.
    async fn terminate(&mut self, id: &str) {
        let at = self
            .gateways
            .iter()
            .position(|(name, _)| name == id)
            .expect("a gateway of that id");
        let (_, mut child) = self.gateways.remove(at);
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered to {id}");
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{id} exits cleanly on SIGTERM: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "{id} did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until the heartbeats name exactly `ids` and one of them meters.
    async fn wait_for_gateways(&self, ids: &[&str]) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok((beats, Some(leader))) = gateways(&self.js).await {
                let mut seen: Vec<&str> = beats.iter().map(|b| b.id.as_str()).collect();
                seen.sort();
                let mut want = ids.to_vec();
                want.sort();
                if seen == want && ids.contains(&leader.as_str()) {
                    return leader;
                }
            }
            if Instant::now() >= deadline {
                let logs: Vec<String> = ids
                    .iter()
                    .map(|id| {
                        std::fs::read_to_string(self.dir.path().join(format!("{id}.log")))
                            .unwrap_or_default()
                    })
                    .collect();
                panic!(
                    "gateways {ids:?} did not all show up (seen {:?}); logs: {logs:#?}",
                    gateways(&self.js).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /health` of gateway `id`: HTTP status line and JSON body.
    async fn health(&self, id: &str) -> (String, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = self
            .metrics_ports
            .iter()
            .find(|(name, _)| name == id)
            .expect("a gateway of that id")
            .1;
        let deadline = Instant::now() + STEP;
        let mut stream = loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{id} health endpoint: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        stream
            .write_all(b"GET /health HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        step("health answer", stream.read_to_string(&mut response))
            .await
            .unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        let status = head.lines().next().unwrap_or("").to_string();
        (
            status,
            serde_json::from_str(body.trim()).expect("health JSON"),
        )
    }

    /// The audit lines of every gateway.
    fn audit_lines(&self, ids: &[&str]) -> Vec<serde_json::Value> {
        ids.iter()
            .flat_map(|id| {
                std::fs::read_to_string(self.audit_path(id))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Requests counted in the shared bucket for `institution`.
    async fn counted_requests(&self, institution: &str) -> usize {
        let kv = self.js.get_key_value(STATE_BUCKET).await.unwrap();
        let value = kv
            .get(format!("usage.{institution}"))
            .await
            .unwrap()
            .unwrap();
        let usage: serde_json::Value = serde_json::from_slice(&value).unwrap();
        usage["requests"].as_array().unwrap().len()
    }
}

fn dataset(label: &str) -> DatasetRequest {
    DatasetRequest {
        filters: vec!["lcls.mfx.mfxp1234.>".into()],
        start: Start::All,
        end: None,
        label: Some(label.into()),
    }
}

/// What one connect-and-request got.
#[derive(Debug)]
enum Outcome {
    Granted,
    Refused(String),
    /// No answer (connect or request): only allowed for operations that
    /// were under way when a gateway died.
    Lost(String),
}

async fn connect_and_request(url: String, key: Arc<nkeys::KeyPair>, label: String) -> Outcome {
    match granted(&url, &key, &label).await {
        Ok(_) => Outcome::Granted,
        Err(outcome) => outcome,
    }
}

/// Connects and requests dataset `label`: the client and its grant, or what went wrong.
async fn granted(
    url: &str,
    key: &nkeys::KeyPair,
    label: &str,
) -> Result<
    (
        lclstream_partner::PartnerClient,
        lclstream_partner::DatasetGrant,
    ),
    Outcome,
> {
    let partner = connect_with_key(url, "ucsd", key)
        .await
        .map_err(|e| Outcome::Lost(format!("connect: {e}")))?;
    match partner.request_dataset(&dataset(label)).await {
        Ok(grant) => Ok((partner, grant)),
        Err(PartnerError::Refused(body)) => Err(Outcome::Refused(format!("{:?}", body.code))),
        Err(e) => Err(Outcome::Lost(format!("request: {e}"))),
    }
}

#[tokio::test]
async fn killing_the_metering_gateway_loses_no_answer_and_no_quota() {
    let mut quotas = quick_quotas();
    quotas.requests_per_hour = 6;
    quotas.concurrent_consumers = 4;
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas);
    let key = Arc::new(add_new_key(&mut ucsd));
    let mut d = deploy(&[ucsd]).await;
    publish(&d.js, "mfxp1234", 3, 10, 3, 16).await;
    d.start_gateway("gw-a");
    d.start_gateway("gw-b");
    let leader = d.wait_for_gateways(&["gw-a", "gw-b"]).await;
    let survivor = if leader == "gw-a" { "gw-b" } else { "gw-a" };

    // A partner connected and granted before the crash.
    let early = connect_with_key(&d.server.url(), "ucsd", &key)
        .await
        .expect("connects through either gateway");
    let early_grant = step("early request", early.request_dataset(&dataset("early")))
        .await
        .expect("granted");

    // A burst of connects and requests; the metering gateway dies in its middle.
    let mut before = Vec::new();
    for i in 0..6 {
        before.push(tokio::spawn(connect_and_request(
            d.server.url(),
            key.clone(),
            format!("before-{i}"),
        )));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    d.kill9(&leader);
    let killed_at = Instant::now();
    let mut after = Vec::new();
    for i in 0..10 {
        let url = d.server.url();
        let key = key.clone();
        after.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = connect_and_request(url, key, format!("after-{i}")).await;
            (outcome, started.elapsed())
        }));
    }
    let mut outcomes = Vec::new();
    for task in before {
        // Under way at the kill: may be lost, but never hangs past the client's timeouts.
        outcomes.push(step("burst before the kill", task).await.unwrap());
    }
    let mut slowest = Duration::ZERO;
    for task in after {
        let (outcome, took) = step("burst after the kill", task).await.unwrap();
        assert!(
            !matches!(outcome, Outcome::Lost(_)),
            "started after the kill but not answered: {outcome:?}"
        );
        slowest = slowest.max(took);
        outcomes.push(outcome);
    }
    eprintln!("slowest connect+request after the kill: {slowest:?}; outcomes: {outcomes:?}");

    // No quota exceeded: at most 4 consumers, at most 6 counted requests,
    // and never a consumer without its counted request. A request the killed
    // gateway was deciding may have been counted without an answer (counted
    // first, so a crash errs on the side of the quota).
    let granted = 1 + outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Granted))
        .count();
    let consumers = slot_consumers(&d.js, "ucsd").await;
    assert!(consumers.len() <= 4, "slots exceeded: {consumers:?}");
    assert!(consumers.len() >= granted, "every grant has its consumer");
    let counted = d.counted_requests("ucsd").await;
    assert!(counted <= 6, "{counted} requests counted against 6");
    assert!(counted >= consumers.len(), "a consumer was not counted");
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Refused(code) if code.contains("Quota"))));

    // The survivor takes over the meter within the documented bound.
    let took_over = d.wait_for_gateways(&[survivor]).await;
    assert_eq!(took_over, survivor);
    eprintln!("meter taken over {:?} after the kill", killed_at.elapsed());

    // The partner connected before the crash still pulls everything.
    let mut sink = lclstream_partner::CallbackSink::new(|_: &_, _| Ok(()));
    let options = lclstream_partner::PullOptions {
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let summary = step("pull", early.pull(&early_grant, &options, &mut sink))
        .await
        .expect("an already connected client is unaffected");
    assert_eq!(summary.events, 30);

    // One audit entry per decision: at least one per grant, at most one per consumer.
    let audit = d.audit_lines(&["gw-a", "gw-b"]);
    let allowed = audit
        .iter()
        .filter(|l| l["action"] == "request" && l["decision"] == "allow")
        .count();
    assert!(
        allowed >= granted && allowed <= consumers.len(),
        "{allowed} grants audited for {granted} answered and {} consumers",
        consumers.len()
    );

    // With every gateway down, new connections are refused cleanly ...
    d.kill9(survivor);
    let refused = connect_with_key(&d.server.url(), "ucsd", &key).await;
    assert!(refused.is_err(), "no gateway, no connection");
    // ... and the first gateway to come back serves them, no manual step.
    d.start_gateway("gw-c");
    let mut back = None;
    for _ in 0..100 {
        if let Ok(partner) = connect_with_key(&d.server.url(), "ucsd", &key).await {
            back = Some(partner);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("the returning gateway authorizes connections");
    let usage = step("usage", back.usage()).await.expect("answered");
    assert_eq!(usage.requests.used as usize, counted, "counters survived");
    let _ = d.admin.flush().await;
}

#[tokio::test]
async fn parallel_requests_across_gateways_never_exceed_the_quota() {
    let mut quotas = quick_quotas();
    quotas.requests_per_hour = 5;
    quotas.concurrent_consumers = 50;
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas);
    let key = Arc::new(add_new_key(&mut ucsd));
    let mut d = deploy(&[ucsd.clone()]).await;
    publish(&d.js, "mfxp1234", 3, 1, 1, 8).await;
    d.start_gateway("gw-a");
    d.start_gateway("gw-b");
    d.start_gateway("gw-c");
    d.wait_for_gateways(&["gw-a", "gw-b", "gw-c"]).await;

    let mut tasks = Vec::new();
    for i in 0..16 {
        tasks.push(tokio::spawn(connect_and_request(
            d.server.url(),
            key.clone(),
            format!("race-{i}"),
        )));
    }
    let mut granted = 0;
    for task in tasks {
        match step("racing request", task).await.unwrap() {
            Outcome::Granted => granted += 1,
            Outcome::Refused(code) => assert!(code.contains("QuotaRequests"), "{code}"),
            Outcome::Lost(e) => panic!("unanswered: {e}"),
        }
    }
    assert_eq!(granted, 5, "exactly the quota is granted");
    assert_eq!(d.counted_requests("ucsd").await, 5);
    assert_eq!(slot_consumers(&d.js, "ucsd").await.len(), 5);
    let audit = d.audit_lines(&["gw-a", "gw-b", "gw-c"]);
    let requests: Vec<_> = audit.iter().filter(|l| l["action"] == "request").collect();
    assert_eq!(requests.len(), 16, "each request decided exactly once");
    let connects = audit
        .iter()
        .filter(|l| l["action"] == "connect" && l["decision"] == "allow")
        .count();
    assert_eq!(connects, 16, "each connection authorized exactly once");

    // Revocation (a policy reload) is enforced by every gateway: connect
    // until each gateway's audit log shows it refusing the key (bounded).
    ucsd.keys[0].revoked = true;
    write_policies(&d.policies, &[ucsd]);
    let revoked_key = key.public_key();
    let refused_by = |d: &Deployment, id: &str| {
        d.audit_lines(&[id]).iter().any(|l| {
            l["action"] == "connect" && l["decision"] == "deny" && l["who"] == revoked_key.as_str()
        })
    };
    // A reload period for each gateway to see the change.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut attempts = 0;
    while !["gw-a", "gw-b", "gw-c"].iter().all(|id| refused_by(&d, id)) {
        attempts += 1;
        assert!(attempts <= 200, "not every gateway refused the revoked key");
        assert!(
            connect_with_key(&d.server.url(), "ucsd", &key)
                .await
                .is_err(),
            "a revoked key connected"
        );
    }
    assert!(Path::new(&d.audit_path("gw-a")).exists());
}

#[tokio::test]
async fn shared_counters_locks_and_meter_lease_hold_under_contention() {
    use lclstream_gateway::quota::{QuotaBook, SystemClock};
    use lclstream_gateway::shared_state::SharedState;
    let server = NatsServer::start_default().expect("nats-server starts");
    let mut states = Vec::new();
    let mut books = Vec::new();
    for id in ["one", "two", "three"] {
        // A connection per "gateway", as with separate processes.
        let client = async_nats::connect(server.url()).await.unwrap();
        let state = SharedState::open(&client, id.into(), 1, Duration::from_secs(1))
            .await
            .expect("buckets open");
        let book = Arc::new(QuotaBook::new(Arc::new(SystemClock)));
        book.attach_shared(state.usage());
        states.push(state);
        books.push(book);
    }

    // 3 x 40 concurrent increments from three books: none lost.
    let mut tasks = Vec::new();
    for book in &books {
        for _ in 0..40 {
            let book = book.clone();
            tasks.push(tokio::spawn(async move {
                book.meter_bytes("ucsd", 7).await.expect("counted");
                book.count_request("ucsd").await.expect("counted");
            }));
        }
    }
    for task in tasks {
        step("increment", task).await.unwrap();
    }
    books[0].refresh("ucsd").await.unwrap();
    let snapshot = books[0].snapshot("ucsd");
    assert_eq!(snapshot.bytes_today, 3 * 40 * 7);
    assert_eq!(snapshot.requests_last_hour, 3 * 40);
    // Only one gateway is told to notify the day's exhaustion.
    let mut firsts = 0;
    for book in &books {
        if book.claim_exhaustion_notice("ucsd").await.unwrap() {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);

    // The decision lock excludes the other gateways until released.
    let held = states[0].lock("ucsd").await.expect("free lock taken");
    let contender = {
        let state = states[1].clone();
        tokio::spawn(async move { state.lock("ucsd").await.map(|_| Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!contender.is_finished(), "a held lock was taken");
    let released = Instant::now();
    drop(held);
    let taken = step("contender", contender)
        .await
        .unwrap()
        .expect("lock taken");
    assert!(taken >= released);

    // One meter; when it stops renewing, another takes over after the lease.
    assert!(states[0].lead().await.unwrap());
    assert!(!states[1].lead().await.unwrap());
    assert!(states[0].lead().await.unwrap(), "the meter renews");
    let stopped = Instant::now();
    let deadline = stopped + STEP;
    while !states[1].lead().await.unwrap() {
        assert!(Instant::now() < deadline, "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("meter lease (1 s) taken over after {:?}", stopped.elapsed());
    assert!(
        !states[0].lead().await.unwrap(),
        "the old meter stands down"
    );
    assert!(!states[2].lead().await.unwrap());
}

/// `lclstream gateways --seed FILE [--json]` as `seed`'s user: exit success and stdout.
fn gateways_command(url: &str, seed: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["gateways", "--json", "--url", url, "--seed"])
        .arg(seed)
        .stdin(Stdio::null())
        .output()
        .expect("lclstream gateways runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn gateway_status_shows_every_gateway_to_the_facility_and_nothing_to_partners() {
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas());
    let key = add_new_key(&mut ucsd);
    let mut d = deploy(&[ucsd]).await;
    d.start_gateway("gw-a");
    d.start_gateway("gw-b");
    let leader = d.wait_for_gateways(&["gw-a", "gw-b"]).await;

    // A facility user sees both gateways and the one that meters.
    let url = d.server.url();
    let seed = d.admin_seed.clone();
    let (ok, stdout, stderr) = step(
        "gateways command",
        tokio::task::spawn_blocking(move || gateways_command(&url, &seed)),
    )
    .await
    .unwrap();
    assert!(ok, "lclstream gateways failed: {stderr}");
    let status: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON status");
    assert_eq!(status["meter"], leader.as_str());
    let rows = status["gateways"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gw-a", "gw-b"]);
    for row in rows {
        assert_eq!(row["metering"], row["id"] == leader.as_str());
        assert!(!row["version"].as_str().unwrap().is_empty());
        assert!(row["last_beat_secs"].as_f64().unwrap() >= 0.0);
    }

    // Each gateway's /health says it is up, answers the callout, and
    // whether it meters: exactly the leader does.
    for id in ["gw-a", "gw-b"] {
        let (status, health) = d.health(id).await;
        assert!(status.contains("200"), "{id}: {status}");
        assert_eq!(health["gateway_id"], id);
        assert_eq!(health["up"], true);
        assert_eq!(health["nats_connected"], true);
        assert_eq!(health["callout"], true);
        assert_eq!(health["metering"], id == leader, "{id}: {health}");
    }

    // A partner institution, through the callout, reads neither bucket:
    // not with the command, not through its JetStream prefix, not through
    // the facility's API subjects, not by subscribing to the KV subjects.
    let partner_seed = d.dir.path().join("ucsd.seed");
    std::fs::write(&partner_seed, key.seed().unwrap()).unwrap();
    let url = d.server.url();
    let (ok, stdout, _) = step(
        "gateways command as a partner",
        tokio::task::spawn_blocking(move || gateways_command(&url, &partner_seed)),
    )
    .await
    .unwrap();
    assert!(!ok, "a partner read the gateway status: {stdout}");
    assert!(!stdout.contains("gw-a"), "{stdout}");

    let partner = connect_with_key(&d.server.url(), "ucsd", &key)
        .await
        .expect("partner connects");
    // Short API timeouts: a denied request is never answered.
    let quick = || jetstream::ContextBuilder::new().timeout(Duration::from_secs(1));
    for js in [
        quick()
            .api_prefix("$JS.lclstream.API")
            .build(partner.client().clone()),
        quick().build(partner.client().clone()),
    ] {
        let read = step("partner reads gateway buckets", gateways(&js)).await;
        assert!(read.is_err(), "a partner listed the gateways: {read:?}");
        for bucket in ["lclstream-gateway-live", "lclstream-gateway-state"] {
            let opened = step("partner opens a bucket", js.get_key_value(bucket)).await;
            assert!(opened.is_err(), "a partner opened {bucket}");
        }
    }
    for subject in [
        "$JS.API.DIRECT.GET.KV_lclstream-gateway-live.$KV.lclstream-gateway-live.meter.leader",
        "$JS.API.DIRECT.GET.KV_lclstream-gateway-state.$KV.lclstream-gateway-state.usage.ucsd",
        "$JS.lclstream.API.DIRECT.GET.KV_lclstream-gateway-state.$KV.lclstream-gateway-state.usage.ucsd",
    ] {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            partner.client().request(subject, "".into()),
        )
        .await;
        assert!(
            !matches!(answer, Ok(Ok(ref m)) if !m.payload.is_empty()),
            "a partner got an answer on {subject}"
        );
    }
    let mut watch = partner
        .client()
        .subscribe("$KV.lclstream-gateway-live.>")
        .await
        .unwrap();
    let heard =
        tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut watch)).await;
    assert!(
        !matches!(heard, Ok(Some(_))),
        "a partner heard a gateway heartbeat"
    );
}

/// One round of the rolling-restart client: connect, request a dataset,
/// release its consumer (each step answered by whichever gateway the server picks).
async fn connect_request_and_release(url: String, key: Arc<nkeys::KeyPair>, i: usize) -> Outcome {
    let (partner, grant) = match granted(&url, &key, &format!("roll-{i}")).await {
        Ok(granted) => granted,
        Err(outcome) => return outcome,
    };
    let release = lclstream_nats::protocol::requests::ReleaseRequest {
        consumer: Some(grant.consumer),
        label: None,
    };
    match partner.release(&release).await {
        Ok(_) => Outcome::Granted,
        Err(e) => Outcome::Lost(format!("release: {e}")),
    }
}

#[tokio::test]
async fn rolling_restart_of_three_gateways_answers_every_connect_and_request() {
    let mut quotas = quick_quotas();
    quotas.requests_per_hour = 1000;
    // Each round releases the consumer it was granted, so the loop's rounds
    // never run into the slot cap however long the restarts take.
    quotas.concurrent_consumers = 8;
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas);
    let key = Arc::new(add_new_key(&mut ucsd));
    let mut d = deploy(&[ucsd]).await;
    assert_eq!(publish(&d.js, "mfxp1234", 3, 3, 1, 8).await, 3);
    // Three gateways, as `auth.gateways = { facility = 3 }` lays out.
    let all = ["gw-a", "gw-b", "gw-c"];
    for id in all {
        d.start_gateway(id);
    }
    let first_leader = d.wait_for_gateways(&all).await;
    // A client connected and granted before the restart pulls after it.
    let steady = connect_with_key(&d.server.url(), "ucsd", &key)
        .await
        .expect("connects");
    let steady_grant = step("steady request", steady.request_dataset(&dataset("steady")))
        .await
        .expect("granted");

    // A bounded client loop: one connect + data request after another
    // (at most 600, paced 100 ms apart, at most 180 s: three restarts under
    // a loaded CI machine take longer than two on a quiet one), until told
    // to stop; each round releases its consumer, so the count is free.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let url = d.server.url();
    let loop_key = key.clone();
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loop_rounds = rounds.clone();
    let client_loop = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let until = Instant::now() + Duration::from_secs(180);
        for i in 0..600 {
            if *stop_rx.borrow() || Instant::now() > until {
                break;
            }
            let began = Instant::now();
            let outcome = connect_request_and_release(url.clone(), loop_key.clone(), i).await;
            outcomes.push((outcome, began.elapsed()));
            loop_rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        outcomes
    });

    // Lets the loop make `n` more rounds (bounded) in the current phase.
    let rounds_pass = |n: usize| {
        let rounds = rounds.clone();
        async move {
            let target = rounds.load(std::sync::atomic::Ordering::SeqCst) + n;
            let deadline = Instant::now() + STEP;
            while rounds.load(std::sync::atomic::Ordering::SeqCst) < target {
                assert!(
                    Instant::now() < deadline,
                    "the client loop stalled at round {} (waiting for {target}) after {:?}",
                    rounds.load(std::sync::atomic::Ordering::SeqCst),
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    rounds_pass(3).await;
    // Restart one gateway at a time: the meter first, then the others; the
    // loop keeps going while two gateways run and after each return.
    let mut order = vec![first_leader.as_str()];
    order.extend(all.iter().copied().filter(|id| *id != first_leader));
    for id in order {
        d.terminate(id).await;
        let survivors: Vec<&str> = all.iter().copied().filter(|s| *s != id).collect();
        let leader = d.wait_for_gateways(&survivors).await;
        assert!(
            survivors.contains(&leader.as_str()),
            "the meter role is held by a gateway still running ({leader})"
        );
        rounds_pass(5).await;
        d.start_gateway(id);
        d.wait_for_gateways(&all).await;
        rounds_pass(3).await;
    }
    let _ = stop_tx.send(true);
    let timed = step("client loop", client_loop).await.unwrap();
    let slowest = timed
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    let outcomes: Vec<Outcome> = timed.into_iter().map(|(o, _)| o).collect();
    let granted = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Granted))
        .count();
    let unanswered: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Granted))
        .collect();
    eprintln!(
        "rolling restart: {} connect+request rounds, {granted} granted, {} not, slowest round {slowest:?}",
        outcomes.len(),
        unanswered.len()
    );
    assert!(
        outcomes.len() >= 2,
        "the client loop ran during the restart"
    );
    assert!(
        unanswered.is_empty(),
        "not answered during the restart: {unanswered:?}"
    );
    // Counted once each (the loop's and the steady client's): no request
    // lost or double counted across the handovers.
    assert_eq!(d.counted_requests("ucsd").await, granted + 1);

    // The client connected before the restart still pulls every event.
    let mut sink = lclstream_partner::CallbackSink::new(|_: &_, _| Ok(()));
    let options = lclstream_partner::PullOptions {
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let summary = step(
        "steady pull",
        steady.pull(&steady_grant, &options, &mut sink),
    )
    .await
    .expect("an already connected client keeps pulling");
    assert_eq!(summary.events, 3);
}

#[tokio::test]
async fn a_lowered_quota_is_applied_by_every_gateway() {
    let mut quotas = quick_quotas();
    quotas.requests_per_hour = 100;
    quotas.concurrent_consumers = 64;
    let mut ucsd = policy("ucsd", &["lcls.mfx.mfxp1234.>"], quotas);
    let key = Arc::new(add_new_key(&mut ucsd));
    let mut d = deploy(&[ucsd.clone()]).await;
    publish(&d.js, "mfxp1234", 3, 1, 1, 8).await;
    let ids = ["gw-a", "gw-b", "gw-c"];
    for id in ids {
        d.start_gateway(id);
    }
    d.wait_for_gateways(&ids).await;
    for i in 0..3 {
        let outcome = connect_and_request(d.server.url(), key.clone(), format!("before-{i}")).await;
        assert!(matches!(outcome, Outcome::Granted), "{outcome:?}");
    }

    // Lower the hourly quota to what is already used: every gateway must
    // refuse from its next reload on, whichever one a request lands on.
    ucsd.quotas.requests_per_hour = 3;
    write_policies(&d.policies, &[ucsd]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused_by = |d: &Deployment, id: &str| {
        d.audit_lines(&[id])
            .iter()
            .any(|l| l["action"] == "request" && l["decision"] == "deny")
    };
    let mut attempts = 0;
    while !ids.iter().all(|id| refused_by(&d, id)) {
        attempts += 1;
        assert!(
            attempts <= 60,
            "not every gateway applied the lowered quota"
        );
        match connect_and_request(d.server.url(), key.clone(), format!("after-{attempts}")).await {
            Outcome::Refused(code) => assert!(code.contains("QuotaRequests"), "{code}"),
            other => panic!("a request beyond the lowered quota got {other:?}"),
        }
    }
    assert_eq!(d.counted_requests("ucsd").await, 3);
}

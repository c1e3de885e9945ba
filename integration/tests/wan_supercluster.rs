//! The rendered multi-site topology over an emulated WAN, with the auth
//! callout, and exactly-once at the partner across a partition.
//!
//! The 3-node facility cluster (R3 facility stream, the agent as a process)
//! runs in one network namespace, the partner cluster (the mirror, the
//! partner's `lclstream pull`) in another. Both render the gateway's callout
//! (`auth.callout_sites = ["facility", "partner"]`); the gateway service
//! runs on the facility's side. Every NATS gateway link crosses the WAN: a
//! 20 Mbit/s `tc tbf` cap and 0.5 % random loss on the partner's link, and
//! 70 ms ± 5 ms one-way delay from user-space relays (no `netem` on this
//! kernel; see `wan_support/relay.rs`). So the mirror's traffic, the
//! partner's authorization (its server asks the callout at the facility) and
//! the gateway's consumer creation on the partner's mirror all cross it.
//!
//! Mid-run the two sites are partitioned for 12 s while the agent keeps
//! publishing: the facility keeps ingesting, the mirror stands still, and the
//! partner site cannot authorize new connections (its callout is across the
//! WAN). After the heal the mirror catches up and the partner, rerunning its
//! pull with the same label whenever it stops, ends with every event exactly
//! once.
//!
//! A second test lays out a gateway at each site (`auth.gateways`) and runs
//! the files `lclstream nats render --gateway-keys` writes for them (sharing
//! quota state in the facility's key-value buckets): cut off, the partner
//! site still admits its institutions through its own gateway, a dataset
//! request that needs the shared state is refused with a clear `internal`
//! error instead of waiting, and after the heal the same request succeeds.
//!
//! Needs root, iproute2 and iptables; otherwise skipped with a message.

mod partner_support;
mod wan_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::{Gateway, GatewayConfig};
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::policy::Quotas;
use lclstream_nats::protocol::requests::ErrorCode;
use lclstream_nats::topology::run::ConnectFn;
use lclstream_nats::topology::{facility_stream_name, partner_stream_name};
use lclstream_partner::{
    BatchInfo, CallbackSink, DatasetRequest, PartnerClient, PartnerConfig, PartnerError,
    PullOptions, Start,
};
use partner_support::*;
use wan_support::supercluster::{
    start_supercluster_over_wan, SuperclusterOverWan, FACILITY, PARTNER,
};
use wan_support::*;

const EVENTS: u64 = 1200;
const INSTITUTION: &str = "ucsd";
const INSTRUMENT: &str = "mfx";
const SUBJECTS: &str = "lcls.mfx.mfxp1234.>";

/// The two clusters across the WAN with the callout in both, the
/// institution's policy and keys. Fields drop in order: servers before the lab.
struct Wan {
    deployment: SuperclusterOverWan,
    _lab: Lab,
    work: tempfile::TempDir,
    started: Instant,
    ready_at: f64,
    keys_dir: PathBuf,
    policies: PathBuf,
    admin_file: PathBuf,
    partner_key: nkeys::KeyPair,
    facility_url: String,
    partner_url: String,
    /// The partner's mirror, which the institution's grant names.
    mirror: String,
    /// The facility stream the agent writes.
    origin: String,
}

impl Wan {
    /// Starts the deployment, or `None` when `test` is skipped; `gateways`
    /// lays out lclstream gateways per site (`auth.gateways`) for
    /// `lclstream nats render` to write.
    async fn start(test: &str, gateways: &[(&str, u32)]) -> Option<Wan> {
        let mut lab = lab_or_skip(test)?;
        let started = Instant::now();
        let work = tempfile::tempdir().unwrap();
        let keys_dir = work.path().join("keys");
        let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true).expect("gateway keys");
        // Streams and the agent use a facility administrator: a static user of
        // the facility account on every site.
        let admin = nkeys::KeyPair::new_user();
        let mut settings = CalloutServerSettings::from_keys(&gateway_keys);
        settings.admin_users.push(admin.public_key());
        let admin_seed = admin.seed().unwrap();
        let connect: ConnectFn = {
            let seed = admin_seed.clone();
            Arc::new(move || async_nats::ConnectOptions::with_nkey(seed.clone()))
        };
        let deployment = start_supercluster_over_wan(
            &mut lab,
            LinkShape {
                rate_mbit: Some(20),
                loss: 0.005,
            },
            Delay::transcontinental(),
            |topology| {
                // As `lclstream nats render --gateway-keys` does for the sites
                // the topology lists.
                topology.auth.callout_sites = vec![FACILITY.into(), PARTNER.into()];
                for (site, count) in gateways {
                    topology.auth.gateways.insert(site.to_string(), *count);
                }
                for site in topology.auth.callout_sites.clone() {
                    topology.add_blocks(Some(&site), callout_server_blocks(&settings));
                }
            },
            connect,
        )
        .await;
        let ready_at = started.elapsed().as_secs_f64();
        let facility_url = deployment.running.facility_urls().join(",");
        let partner_url = deployment.running.partner_urls(Some(PARTNER)).unwrap()[0].clone();
        let mirror = partner_stream_name(INSTRUMENT, PARTNER);
        let origin = facility_stream_name(INSTRUMENT);

        // The institution reads its site's mirror.
        let mut policy = policy(INSTITUTION, &[SUBJECTS], Quotas::default());
        policy.grants[0].stream = mirror.clone();
        policy.quotas.pull.max_batch = 16;
        policy.quotas.pull.ack_wait_secs = 5;
        let partner_key = add_new_key(&mut policy);
        let policies = work.path().join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        write_policies(&policies, &[policy]);
        let admin_file = work.path().join("admin.nk");
        std::fs::write(&admin_file, &admin_seed).unwrap();
        Some(Wan {
            deployment,
            _lab: lab,
            work,
            started,
            ready_at,
            keys_dir,
            policies,
            admin_file,
            partner_key,
            facility_url,
            partner_url,
            mirror,
            origin,
        })
    }

    /// A gateway (callout, requests, meter) connected to `url`.
    fn gateway_config(&self, url: &str) -> GatewayConfig {
        callout_config(url, &self.policies, &self.keys_dir)
    }

    /// Messages stored in `stream` at `site`, from the servers' monitoring
    /// endpoints (which the test reaches directly, also during a partition).
    async fn stored(&self, site: &str, stream: &str) -> Option<u64> {
        let status = self.deployment.running.status().await;
        status.stream(site, stream).map(|s| s.messages)
    }

    /// The agent, as a process in the facility namespace, writing `EVENTS`
    /// synthetic events at 80 Hz into the existing R3 facility stream.
    fn agent(&self) -> WanAgent<'_> {
        WanAgent {
            url: &self.facility_url,
            seed_file: &self.admin_file,
            dir: self.work.path(),
            events: EVENTS,
            stream_exists: true,
        }
    }

    /// A partner client at the partner's site, through the callout, bounded.
    async fn partner(&self, timeout: Duration) -> Result<PartnerClient, String> {
        connect_partner(&self.partner_url, &self.partner_key, timeout).await
    }
}

/// Connects `key` as the institution at `url` within `timeout` (the callout
/// must answer for it).
async fn connect_partner(
    url: &str,
    key: &nkeys::KeyPair,
    timeout: Duration,
) -> Result<PartnerClient, String> {
    let config = PartnerConfig {
        url: url.to_string(),
        institution: INSTITUTION.to_string(),
        seed: Some(key.seed().unwrap()),
    };
    match tokio::time::timeout(timeout, PartnerClient::connect(&config)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_topology_gives_every_event_exactly_once_across_a_partition() {
    let Some(wan) = Wan::start(
        "callout_topology_gives_every_event_exactly_once_across_a_partition",
        &[],
    )
    .await
    else {
        return;
    };
    let gateway = step(
        "gateway",
        Gateway::start(wan.gateway_config(&wan.facility_url)),
    )
    .await
    .expect("gateway starts with the callout at the facility");
    assert!(
        wan.partner(Duration::from_secs(20)).await.is_ok(),
        "the partner's server authorizes the institution through the callout across the WAN"
    );
    let stranger = nkeys::KeyPair::new_user();
    assert!(
        connect_partner(&wan.partner_url, &stranger, Duration::from_secs(10))
            .await
            .is_err(),
        "an unknown key is refused at the partner site"
    );

    let mut agent = wan.agent().spawn(&wan.deployment.facility);
    // The partner pulls from its own site's server; the gateway it asks for
    // the dataset, and the callout that admits it, are across the WAN.
    let seed_file = wan.work.path().join("ucsd.nk");
    std::fs::write(&seed_file, wan.partner_key.seed().unwrap()).unwrap();
    let out = wan.work.path().join("events.jsonl");
    let puller = PullLoop::spawn(
        env!("CARGO_BIN_EXE_lclstream-e2e"),
        PullSpec {
            site: wan.deployment.partner.clone(),
            url: wan.partner_url.clone(),
            institution: INSTITUTION.into(),
            seed_file,
            subject: SUBJECTS.into(),
            label: "wan-topology".into(),
            out: out.clone(),
            logs: wan.work.path().to_path_buf(),
            events: EVENTS,
        },
    );
    assert!(
        wait_until(Duration::from_secs(60), || written_indices(&out).len()
            >= 200)
        .await,
        "the partner receives events through the mirror across the WAN"
    );

    // A second reader of the institution, connected and granted before the cut.
    let early = wan
        .partner(Duration::from_secs(20))
        .await
        .expect("connects before the cut");
    let early_grant = step(
        "request before the cut",
        early.request_dataset(&DatasetRequest {
            filters: vec![SUBJECTS.into()],
            start: Start::All,
            end: None,
            label: Some("already-connected".into()),
        }),
    )
    .await
    .expect("granted before the cut");

    // The partition.
    wan.deployment.partition();
    let cut_at = Instant::now();
    // What was already past the cut lands within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mirror_before = wan.stored(PARTNER, &wan.mirror).await;
    let origin_before = wan.stored(FACILITY, &wan.origin).await;
    // Already authorized, it keeps reading its consumer on the site's mirror.
    let mut early_events = 0u64;
    let early_pull = {
        let mut sink = CallbackSink::new(|_: &BatchInfo, _| {
            early_events += 1;
            Ok(())
        });
        let options = PullOptions {
            idle_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        tokio::time::timeout(
            Duration::from_secs(20),
            early.pull(&early_grant, &options, &mut sink),
        )
        .await
    };
    let while_cut = wan.partner(Duration::from_secs(8)).await;
    tokio::time::sleep(
        (cut_at + Duration::from_secs(12)).saturating_duration_since(Instant::now()),
    )
    .await;
    let mirror_during = wan.stored(PARTNER, &wan.mirror).await;
    let origin_during = wan.stored(FACILITY, &wan.origin).await;
    wan.deployment.heal();
    let healed_at = Instant::now();
    assert!(
        mirror_before.is_some(),
        "the partner's server reports its mirror"
    );
    assert_eq!(
        mirror_during, mirror_before,
        "nothing reaches the mirror across the partition"
    );
    assert!(
        origin_during > origin_before,
        "the facility keeps ingesting while cut off ({origin_before:?} -> {origin_during:?})"
    );
    assert!(
        mirror_before < origin_during,
        "the partition happened before the mirror had everything"
    );
    assert!(
        while_cut.is_err(),
        "a new connection at the partner site needs the callout at the facility"
    );
    assert!(
        matches!(early_pull, Ok(Ok(_))) && early_events > 0,
        "a connection authorized before the cut keeps pulling the site's mirror \
         ({early_events} events: {early_pull:?})"
    );

    wan.agent().wait(&mut agent);
    let complete = wait_until(Duration::from_secs(70), || {
        written_indices(&out).len() as u64 >= EVENTS
    })
    .await;
    let caught_up = healed_at.elapsed().as_secs_f64();
    let runs = puller.runs();
    let failures = puller.finish().await;
    if !complete {
        let logs: Vec<String> = wan
            .deployment
            .running
            .servers()
            .map(|(p, s)| format!("{}:\n{}", p.name, s.log_tail(10)))
            .collect();
        eprintln!("server logs:\n{}", logs.join("\n"));
    }
    assert_exactly_once(&out, EVENTS, &failures);
    let origin_final = wan.stored(FACILITY, &wan.origin).await;
    assert!(origin_final.is_some());
    assert_eq!(
        wan.stored(PARTNER, &wan.mirror).await,
        origin_final,
        "the mirror caught up with every message of the facility stream"
    );
    assert!(
        wan.partner(Duration::from_secs(20)).await.is_ok(),
        "after the heal the partner site authorizes through the callout again"
    );
    let (to_listeners, back) = wan.deployment.forwarded();
    eprintln!(
        "WAN topology: servers ready in {:.1} s; {EVENTS} events exactly once after {runs} \
         pull runs ({} ended in an error; a reader connected before the cut pulled \
         {early_events} events from the mirror while cut off), complete {caught_up:.1} s \
         after the heal; \
         {to_listeners} + {back} bytes through the gateway relays; total {:.1} s",
        wan.ready_at,
        failures.len(),
        wan.started.elapsed().as_secs_f64()
    );
    for failure in &failures {
        eprintln!("pull {failure}");
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_site_gateway_admits_its_institutions_while_cut_off() {
    // One gateway per site, as the topology lays them out; the gateways
    // share counters, locks and the meter through the facility's buckets.
    let Some(wan) = Wan::start(
        "partner_site_gateway_admits_its_institutions_while_cut_off",
        &[(FACILITY, 1), (PARTNER, 1)],
    )
    .await
    else {
        return;
    };
    // The gateway files `lclstream nats render --gateway-keys` writes for the
    // running topology, run as `lclstream gateway` processes.
    let binary = env!("CARGO_BIN_EXE_lclstream-e2e");
    let rendered = wan.work.path().join("rendered");
    let render = std::process::Command::new(binary)
        .args(["nats", "render"])
        .arg(wan.deployment.dir.path().join("topology.resolved.toml"))
        .arg("--out")
        .arg(&rendered)
        .arg("--gateway-keys")
        .arg(&wan.keys_dir)
        .arg("--policies")
        .arg(&wan.policies)
        .output()
        .expect("lclstream nats render runs");
    assert!(
        render.status.success(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
    let files = rendered.join("gateways");
    let mut gateways = Vec::new();
    for id in ["facility-gw1", "partner-gw1"] {
        let config = files.join(format!("{id}.toml"));
        let text = std::fs::read_to_string(&config).expect("a gateway file per laid-out gateway");
        let site_url = if id.starts_with("facility") {
            &wan.facility_url
        } else {
            &wan.partner_url
        };
        assert!(
            text.contains(&format!("url = \"{site_url}\"")),
            "{id} connects to its own site's servers: {text}"
        );
        gateways.push(Guarded(
            std::process::Command::new(binary)
                .args(["gateway", "--config"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(wan.work.path().join(format!("{id}.log"))).unwrap())
                .spawn()
                .expect("lclstream gateway starts"),
        ));
    }
    wait_for_gateways(&wan, &["facility-gw1", "partner-gw1"]).await;
    let audit = |id: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(files.join(format!("log/audit-{id}.jsonl")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let admitted = |id: &str| {
        audit(id)
            .iter()
            .filter(|l| l["action"] == "connect" && l["decision"] == "allow")
            .count()
    };
    let request = DatasetRequest {
        filters: vec![SUBJECTS.into()],
        start: Start::All,
        end: None,
        label: Some("cut-off".into()),
    };

    let partner = wan
        .partner(Duration::from_secs(20))
        .await
        .expect("the partner connects at its site");
    let before = step("request", partner.request_dataset(&request))
        .await
        .expect("the gateway grants the dataset");
    assert_eq!(before.stream, wan.mirror);
    drop(partner);

    wan.deployment.partition();
    let cut_at = Instant::now();
    let admitted_before = admitted("partner-gw1");
    let while_cut = wan.partner(Duration::from_secs(10)).await;
    let admitted_while_cut = admitted("partner-gw1") - admitted_before;
    // A request needs the shared state, which lives in the facility cluster.
    let refusal = match &while_cut {
        Ok(partner) => {
            let asked = Instant::now();
            let answer =
                tokio::time::timeout(Duration::from_secs(30), partner.request_dataset(&request))
                    .await;
            Some((answer, asked.elapsed()))
        }
        Err(_) => None,
    };
    tokio::time::sleep(
        (cut_at + Duration::from_secs(12)).saturating_duration_since(Instant::now()),
    )
    .await;
    wan.deployment.heal();

    let while_cut = while_cut.expect(
        "cut off from the facility, the partner site still admits the institution \
         through its own gateway",
    );
    assert_eq!(
        admitted_while_cut, 1,
        "the partner site's gateway answered the callout"
    );
    let (answer, took) = refusal.expect("asked while cut off");
    match answer {
        Ok(Err(PartnerError::Refused(body))) => {
            assert_eq!(body.code, ErrorCode::Internal, "{body:?}");
            assert!(body.reason.contains("did not answer"), "{body:?}");
            eprintln!(
                "request while cut off refused after {took:.1?}: {}",
                body.reason
            );
        }
        other => panic!(
            "a request that needs the facility's shared state must be refused clearly \
             while cut off, got {other:?} after {took:?}"
        ),
    }
    drop(while_cut);

    // Healed: the same request is granted again, on the same consumer.
    let after = wait_for_grant(&wan, &request).await;
    assert_eq!(
        after.consumer, before.consumer,
        "the label keeps its consumer"
    );
    assert!(after.resumed, "the grant resumes the labelled consumer");
    drop(gateways);
    eprintln!(
        "per-site gateways across the WAN: admitted while cut off, request refused, \
         granted after the heal; total {:.1} s",
        wan.started.elapsed().as_secs_f64()
    );
}

/// Waits until every gateway of `ids` beats in the shared bucket (bounded).
async fn wait_for_gateways(wan: &Wan, ids: &[&str]) {
    let client = wan
        .deployment
        .running
        .connect(FACILITY)
        .await
        .expect("an administrator connects at the facility");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = lclstream_gateway::shared_state::gateways(&js).await;
        if let Ok((beats, _)) = &live {
            if ids.iter().all(|id| beats.iter().any(|b| b.id == *id)) {
                return;
            }
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = ids
                .iter()
                .map(|id| {
                    std::fs::read_to_string(wan.work.path().join(format!("{id}.log")))
                        .unwrap_or_default()
                })
                .collect();
            panic!("gateways {ids:?} not all live ({live:?}); logs: {logs:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries the request (new connections, bounded) until the gateway grants it.
async fn wait_for_grant(
    wan: &Wan,
    request: &DatasetRequest,
) -> lclstream_nats::protocol::requests::DatasetGrant {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match wan.partner(Duration::from_secs(10)).await {
            Ok(partner) => match tokio::time::timeout(
                Duration::from_secs(20),
                partner.request_dataset(request),
            )
            .await
            {
                Ok(Ok(grant)) => return grant,
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "request timed out".into(),
            },
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("no grant within 60 s after the heal: {last}");
}

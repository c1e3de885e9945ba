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
//! Needs root, iproute2 and iptables; otherwise skipped with a message.

mod partner_support;
mod wan_support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::Gateway;
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::policy::Quotas;
use lclstream_nats::topology::run::ConnectFn;
use lclstream_nats::topology::{facility_stream_name, partner_stream_name};
use lclstream_partner::{PartnerClient, PartnerConfig};
use partner_support::*;
use wan_support::supercluster::{start_supercluster_over_wan, SuperclusterOverWan, FACILITY};
use wan_support::*;

const EVENTS: u64 = 1200;
const INSTITUTION: &str = "ucsd";
const INSTRUMENT: &str = "mfx";

/// Messages stored in `stream` at `site`, from the servers' monitoring
/// endpoints (which the test reaches directly, also during a partition).
async fn stored(deployment: &SuperclusterOverWan, site: &str, stream: &str) -> Option<u64> {
    let status = deployment.running.status().await;
    status.stream(site, stream).map(|s| s.messages)
}

/// Whether `key` gets a connection at `url` within `timeout` (the callout
/// must answer for it).
async fn connects(url: &str, key: &nkeys::KeyPair, timeout: Duration) -> bool {
    let config = PartnerConfig {
        url: url.to_string(),
        institution: INSTITUTION.to_string(),
        seed: Some(key.seed().unwrap()),
    };
    matches!(
        tokio::time::timeout(timeout, PartnerClient::connect(&config)).await,
        Ok(Ok(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callout_topology_gives_every_event_exactly_once_across_a_partition() {
    let Some(mut lab) =
        lab_or_skip("callout_topology_gives_every_event_exactly_once_across_a_partition")
    else {
        return;
    };
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
            topology.auth.callout_sites = vec![FACILITY.into(), "partner".into()];
            for site in topology.auth.callout_sites.clone() {
                topology.add_blocks(Some(&site), callout_server_blocks(&settings));
            }
        },
        connect,
    )
    .await;
    let ready_at = started.elapsed().as_secs_f64();
    let facility_url = deployment.running.facility_urls().join(",");
    let partner_url = deployment.running.partner_urls(Some("partner")).unwrap()[0].clone();
    let mirror = partner_stream_name(INSTRUMENT, "partner");
    let origin = facility_stream_name(INSTRUMENT);

    // The gateway, on the facility's side; the institution reads its site's mirror.
    let mut policy = policy(INSTITUTION, &["lcls.mfx.mfxp1234.>"], Quotas::default());
    policy.grants[0].stream = mirror.clone();
    policy.quotas.pull.max_batch = 16;
    policy.quotas.pull.ack_wait_secs = 5;
    let partner_key = add_new_key(&mut policy);
    let policies = work.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    write_policies(&policies, &[policy]);
    let gateway = step(
        "gateway",
        Gateway::start(callout_config(&facility_url, &policies, &keys_dir)),
    )
    .await
    .expect("gateway starts with the callout at the facility");
    assert!(
        connects(&partner_url, &partner_key, Duration::from_secs(20)).await,
        "the partner's server authorizes the institution through the callout across the WAN"
    );
    let stranger = nkeys::KeyPair::new_user();
    assert!(
        !connects(&partner_url, &stranger, Duration::from_secs(10)).await,
        "an unknown key is refused at the partner site"
    );

    // The agent, as a process in the facility namespace, into the existing R3 stream.
    let admin_file = work.path().join("admin.nk");
    std::fs::write(&admin_file, &admin_seed).unwrap();
    let agent_config = work.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            r#"
instrument = "{INSTRUMENT}"
experiment = "mfxp1234"
[nats]
url = "{facility_url}"
nkey_seed_file = "{seed}"
[stream]
create = false
duplicate_window_secs = 600
[spool]
dir = "{spool}"
[batch]
max_events = 16
max_linger_ms = 50
[[sources]]
name = "jungfrau"
run = 12
[sources.synthetic]
height = 32
width = 32
rate_hz = 80.0
events = {EVENTS}
"#,
            seed = admin_file.display(),
            spool = work.path().join("spool").display(),
        ),
    )
    .unwrap();
    let binary = env!("CARGO_BIN_EXE_lclstream-e2e");
    let mut agent = Guarded(
        deployment
            .facility
            .command(binary)
            .args(["agent", "--config"])
            .arg(&agent_config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("agent.log")).unwrap())
            .spawn()
            .expect("agent starts"),
    );

    // The partner pulls from its own site's server; the gateway it asks for
    // the dataset, and the callout that admits it, are across the WAN.
    let seed_file = work.path().join("ucsd.nk");
    std::fs::write(&seed_file, partner_key.seed().unwrap()).unwrap();
    let out = work.path().join("events.jsonl");
    let puller = PullLoop::spawn(
        binary,
        PullSpec {
            site: deployment.partner.clone(),
            url: partner_url.clone(),
            institution: INSTITUTION.into(),
            seed_file,
            subject: "lcls.mfx.mfxp1234.>".into(),
            label: "wan-topology".into(),
            out: out.clone(),
            logs: work.path().to_path_buf(),
            events: EVENTS,
        },
    );
    assert!(
        wait_until(Duration::from_secs(60), || written_indices(&out).len()
            >= 200)
        .await,
        "the partner receives events through the mirror across the WAN"
    );

    // The partition.
    deployment.partition();
    let cut_at = Instant::now();
    // What was already past the cut lands within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mirror_before = stored(&deployment, "partner", &mirror).await;
    let origin_before = stored(&deployment, FACILITY, &origin).await;
    let refused_while_cut = !connects(&partner_url, &partner_key, Duration::from_secs(8)).await;
    tokio::time::sleep(
        (cut_at + Duration::from_secs(12)).saturating_duration_since(Instant::now()),
    )
    .await;
    let mirror_during = stored(&deployment, "partner", &mirror).await;
    let origin_during = stored(&deployment, FACILITY, &origin).await;
    deployment.heal();
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
        refused_while_cut,
        "a new connection at the partner site needs the callout at the facility"
    );

    let agent_status = tokio::task::block_in_place(|| agent.wait_timeout(Duration::from_secs(60)));
    assert!(
        agent_status.is_some_and(|s| s.success()),
        "the agent finishes its run ({agent_status:?}): {}",
        std::fs::read_to_string(work.path().join("agent.log")).unwrap_or_default()
    );
    let complete = wait_until(Duration::from_secs(70), || {
        written_indices(&out).len() as u64 >= EVENTS
    })
    .await;
    let caught_up = healed_at.elapsed().as_secs_f64();
    let runs = puller.runs();
    let failures = puller.finish().await;
    if !complete {
        let logs: Vec<String> = deployment
            .running
            .servers()
            .map(|(p, s)| format!("{}:\n{}", p.name, s.log_tail(10)))
            .collect();
        eprintln!("server logs:\n{}", logs.join("\n"));
    }
    assert_exactly_once(&out, EVENTS, &failures);
    let origin_final = stored(&deployment, FACILITY, &origin).await;
    assert!(origin_final.is_some());
    assert_eq!(
        stored(&deployment, "partner", &mirror).await,
        origin_final,
        "the mirror caught up with every message of the facility stream"
    );
    assert!(
        connects(&partner_url, &partner_key, Duration::from_secs(20)).await,
        "after the heal the partner site authorizes through the callout again"
    );
    let (to_listeners, back) = deployment.forwarded();
    eprintln!(
        "WAN topology: servers ready in {ready_at:.1} s; {EVENTS} events exactly once after \
         {runs} pull runs ({} ended in an error), complete {caught_up:.1} s after the heal; \
         {to_listeners} + {back} bytes through the gateway relays; total {:.1} s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for failure in &failures {
        eprintln!("pull {failure}");
    }
    gateway.shutdown().await;
}

//! Exactly-once at the partner across a facility-to-partner partition, over an
//! emulated WAN.
//!
//! The facility (a nats-server with the auth callout, and the agent as a
//! process) runs in one network namespace, the partner's `lclstream pull` in
//! another. The partner reaches the facility only across the WAN: a 20 Mbit/s
//! `tc tbf` cap and 0.5 % random packet loss each way (`iptables` statistic
//! match) on the partner's link, and 70 ms ± 5 ms one-way delay added by a
//! user-space relay in the root namespace, because this kernel has no `netem`
//! (see `wan_support/relay.rs` for what the relay does and does not emulate).
//! The gateway runs in the test process, on the facility's side.
//!
//! Mid-run the partner site is partitioned (every packet of its link dropped
//! by `iptables`, connections left to stall) for 12 s while the agent keeps
//! publishing, then healed. The partner reruns its pull with the same label
//! whenever it stops, as an operator's service manager would, and must end up
//! with every event exactly once in its JSON lines file.
//!
//! Needs root, iproute2 and iptables; otherwise skipped with a message.

mod partner_support;
mod wan_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::Gateway;
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::policy::Quotas;
use lclstream_nats::server::{free_port, NatsServer, ServerConfig};
use partner_support::*;
use wan_support::*;

const EVENTS: u64 = 1200;
const INSTITUTION: &str = "ucsd";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_gets_every_event_exactly_once_across_a_partition() {
    let Some(mut lab) = lab_or_skip("partner_gets_every_event_exactly_once_across_a_partition")
    else {
        return;
    };
    let started = Instant::now();
    let facility = lab
        .add_site("fac", LinkShape::clean())
        .expect("facility site");
    let partner_site = lab
        .add_site(
            "ptn",
            LinkShape {
                rate_mbit: Some(20),
                loss: 0.005,
            },
        )
        .expect("partner site");
    let dir = tempfile::tempdir().unwrap();

    // The facility broker, with the auth callout, inside the facility namespace.
    let keys_dir = dir.path().join("keys");
    let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true).expect("gateway keys");
    let admin = nkeys::KeyPair::new_user();
    let mut settings = CalloutServerSettings::from_keys(&gateway_keys);
    settings.admin_users.push(admin.public_key());
    let mut config = ServerConfig::loopback(
        "facility",
        free_port().unwrap(),
        free_port().unwrap(),
        dir.path().join("jetstream"),
    );
    config.host = facility.addr.to_string();
    config.blocks.extend(callout_server_blocks(&settings));
    let server =
        NatsServer::start_launched(config, &dir.path().join("server"), facility.launcher())
            .expect("nats-server starts in the facility namespace");

    // The gateway, on the facility's side of the WAN.
    let mut policy = policy(INSTITUTION, &["lcls.mfx.mfxp1234.>"], Quotas::default());
    // Pull requests small enough that a batch is acknowledged (one round trip
    // per message) well within ack_wait, and ack_wait short enough that
    // messages a killed pull held come back within the test.
    policy.quotas.pull.max_batch = 16;
    policy.quotas.pull.ack_wait_secs = 5;
    let partner_key = add_new_key(&mut policy);
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    write_policies(&policies, &[policy]);
    let gateway = step(
        "gateway",
        Gateway::start(callout_config(&server.url(), &policies, &keys_dir)),
    )
    .await
    .expect("gateway starts with the callout");

    // The agent, as a process in the facility namespace.
    let admin_seed = dir.path().join("admin.nk");
    std::fs::write(&admin_seed, admin.seed().unwrap()).unwrap();
    let agent_run = WanAgent {
        url: &server.url(),
        seed_file: &admin_seed,
        dir: dir.path(),
        events: EVENTS,
        stream_exists: false,
    };
    let mut agent = agent_run.spawn(&facility);

    // The WAN: the partner reaches the facility's client port only through the relay.
    let target = SocketAddr::new(facility.addr.into(), server.port());
    let relay = DelayRelay::start(
        partner_site.router.into(),
        target,
        Delay::transcontinental(),
    )
    .await
    .expect("relay listens");

    // The partner: `lclstream pull` in its namespace, rerun whenever it stops.
    let seed_file = dir.path().join("ucsd.nk");
    std::fs::write(&seed_file, partner_key.seed().unwrap()).unwrap();
    let out = dir.path().join("events.jsonl");
    let puller = PullLoop::spawn(
        env!("CARGO_BIN_EXE_lclstream-e2e"),
        PullSpec {
            site: partner_site.clone(),
            url: relay.url("nats"),
            institution: INSTITUTION.into(),
            seed_file,
            subject: "lcls.mfx.mfxp1234.>".into(),
            label: "wan".into(),
            out: out.clone(),
            logs: dir.path().to_path_buf(),
            events: EVENTS,
        },
    );

    assert!(
        wait_until(Duration::from_secs(60), || written_indices(&out).len()
            >= 200)
        .await,
        "the partner receives events across the WAN"
    );
    partition_and_heal(&partner_site, &out).await;

    agent_run.wait(&mut agent);
    wait_until(Duration::from_secs(70), || {
        written_indices(&out).len() as u64 >= EVENTS
    })
    .await;
    let runs = puller.runs();
    let failures = puller.finish().await;
    assert_exactly_once(&out, EVENTS, &failures);
    // A pull cannot outlast the partition (its acks or its idle timeout end
    // it), so the dataset was completed by a later run resuming the consumer.
    assert!(runs >= 2, "the partition interrupted the pull");
    let (up, down) = relay.forwarded();
    eprintln!(
        "WAN partition: {EVENTS} events exactly once after {} pull runs ({} ended in an error), \
         {up} bytes up and {down} down through the relay, {:.1} s",
        runs,
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    for failure in &failures {
        eprintln!("pull {failure}");
    }
    gateway.shutdown().await;
}

/// Partitions the partner's link for 12 s and checks that nothing arrives meanwhile.
async fn partition_and_heal(partner: &Site, out: &Path) {
    partner.partition().expect("partition");
    // What was already in flight past the partition lands within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = written_indices(out).len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = written_indices(out).len();
    partner.heal().expect("heal");
    assert_eq!(
        during, before,
        "nothing crosses the partitioned link ({before} -> {during} events)"
    );
    assert!(
        (before as u64) < EVENTS,
        "the partition happened before the partner had everything"
    );
}

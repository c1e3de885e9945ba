//! A leaf node WAN cut under loss: the facility edge leaf node keeps
//! accepting data while its link to the facility is partitioned, and after
//! the heal the facility stream holds every event exactly once.
//!
//! The edge leaf and the facility run in separate network namespaces. The
//! leaf node link crosses an emulated WAN: a 20 Mbit/s `tc tbf` cap and 0.5 %
//! random loss each way (`iptables` statistic match) on the edge's link, and
//! 70 ms ± 5 ms one-way delay added by a user-space relay, because this kernel
//! has no `netem` (see `wan_support/relay.rs`). The cut is silent: `iptables`
//! drops every packet of the edge's link, so the open leaf connection stalls
//! rather than closes, as when a router loses the path.
//!
//! Needs root, iproute2 and iptables; otherwise skipped with a message.

mod topology_support;
mod wan_support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition};
use lclstream_nats::topology::{edge_stream_name, facility_stream_name};
use topology_support::{
    read, read_leftovers, wait_for, Deployment, PublishOptions, Publisher, ReadOptions, Received,
    INSTRUMENT,
};
use wan_support::leaf::{start_leaf_over_wan, EDGE, FACILITY};
use wan_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_link_partitioned_under_loss_loses_and_duplicates_nothing() {
    let Some(mut lab) =
        lab_or_skip("leaf_link_partitioned_under_loss_loses_and_duplicates_nothing")
    else {
        return;
    };
    let started = Instant::now();
    let link = LinkShape {
        rate_mbit: Some(20),
        loss: 0.005,
    };
    let wan = start_leaf_over_wan(&mut lab, link, Delay::transcontinental(), |_| {}).await;
    let edge = wan.edge.clone();
    let relay = wan.relay;
    let deployment = Deployment {
        running: wan.running,
        dir: wan.dir,
    };
    let facility_count = || async {
        deployment
            .try_stream_state(FACILITY, &facility_stream_name(INSTRUMENT))
            .await
            .map(|i| i.state.messages)
    };

    let n = 1000;
    let options = PublishOptions {
        rate: Some(100.0),
        ..Default::default()
    };
    // The publisher stands for the agent on the edge's LAN.
    let publisher = Publisher::spawn(deployment.edge_url(), 0..n, options);
    wait_for(
        "100 events at the facility",
        Duration::from_secs(30),
        || async { facility_count().await.unwrap_or(0) >= 100 },
    )
    .await;

    edge.partition().expect("partition");
    // Let what crossed before the cut (up to one delay) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_cut = publisher.progress();
    let facility_at_cut = facility_count().await.expect("facility readable");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = publisher.progress();
    let edge_during = deployment
        .stream_state(EDGE, &edge_stream_name(INSTRUMENT))
        .await
        .state
        .messages;
    let facility_during = facility_count().await.expect("facility readable");
    edge.heal().expect("heal");
    assert!(
        during > at_cut + 200,
        "the edge accepts data during the cut ({at_cut} -> {during})"
    );
    assert!(edge_during >= during, "the edge stream stores it");
    assert_eq!(
        facility_during, facility_at_cut,
        "nothing crosses the partitioned link"
    );

    publisher.finish(Duration::from_secs(30)).await;
    // Up to 90 s: a source consumer create request lost to the outage is
    // retried by nats-server only after 30 s plus a backoff.
    wait_for(
        "the facility to catch up",
        Duration::from_secs(90),
        || async { facility_count().await == Some(n) },
    )
    .await;
    let caught_up = started.elapsed().as_secs_f64();

    let client = deployment.running.connect(FACILITY).await.expect("connect");
    let stream = jetstream::new(client)
        .get_stream(facility_stream_name(INSTRUMENT))
        .await
        .expect("facility stream");
    let limits = PullLimits {
        ack_wait: Duration::from_secs(10),
        ..PullLimits::default()
    };
    let config = pull_consumer_config("after-cut", Vec::new(), &StartPosition::All, &limits);
    let consumer = stream
        .get_or_create_consumer("after-cut", config)
        .await
        .expect("consumer");
    let mut received = Received::new(n);
    read(
        &consumer,
        &mut received,
        ReadOptions::until(n, Duration::from_secs(30)),
    )
    .await;
    read_leftovers(&consumer, &mut received).await;
    received.assert_exactly_once(0..n);
    let (up, down) = relay.forwarded();
    eprintln!(
        "leaf WAN cut under loss: edge took {} events during the 7 s cut, facility caught up \
         at {caught_up:.1} s, {up} bytes up and {down} down through the relay, {:.1} s in all",
        during - at_cut,
        started.elapsed().as_secs_f64()
    );
}

//! Faults across a real topology (edge leaf, 3-node facility cluster, 1-node
//! partner): a WAN cut between leaf and hub, a facility node killed with
//! SIGKILL, a publisher restart that republishes, a partner consumer that
//! drops and resumes. Each checks that every event reaches the partner
//! consumer exactly once.

mod topology_support;

use std::time::{Duration, Instant};

use lclstream_nats::topology::{facility_stream_name, PortMode, Topology};
use topology_support::*;

#[tokio::test]
async fn wan_cut_between_edge_and_facility_loses_nothing() {
    let _serial = serial().await;
    let started = Instant::now();
    let topology = Topology::load(topology_file("test-small.toml")).unwrap();
    let mut plan = topology.plan(PortMode::FreeWhereMissing).unwrap();
    // The leaf reaches the hub only through a link the test can cut.
    let link = CuttableLink::start(plan.hub_leafnode_addrs(EDGE)).await;
    plan.set_leaf_remotes(EDGE, vec![link.leaf_url()]);
    let deployment = start_plan(plan).await;
    let n = 600;
    let options = PublishOptions {
        rate: Some(100.0),
        ..Default::default()
    };
    let publisher = Publisher::spawn(deployment.edge_url(), 0..n, options);
    wait_for("100 events published", Duration::from_secs(20), || async {
        publisher.progress() >= 100
    })
    .await;

    link.cut();
    wait_for("the leaf link to drop", Duration::from_secs(10), || async {
        edge_leaf_links(&deployment) == 0
    })
    .await;
    // Let whatever crossed before the cut settle in the facility stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_cut = publisher.progress();
    let (_, facility_at_cut, _) = deployment.copy_counts().await;
    // Several seconds of outage while the edge keeps accepting data.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = publisher.progress();
    let (edge_during, facility_during, _) = deployment.copy_counts().await;
    assert!(
        during > at_cut + 100,
        "the edge accepts data during the cut ({at_cut} -> {during})"
    );
    assert!(edge_during >= during, "the edge stream stores it");
    assert_eq!(
        facility_during, facility_at_cut,
        "nothing crosses a cut link"
    );

    link.restore();
    wait_for(
        "the leaf link to come back",
        Duration::from_secs(15),
        || async { edge_leaf_links(&deployment) == 1 },
    )
    .await;
    publisher.finish(Duration::from_secs(30)).await;
    let consumer = partner_consumer(&deployment, "after-cut", Duration::from_secs(10)).await;
    let mut received = Received::new(n);
    read(
        &consumer,
        &mut received,
        ReadOptions::until(n, Duration::from_secs(40)),
    )
    .await;
    read_leftovers(&consumer, &mut received).await;
    received.assert_exactly_once(0..n);
    assert_eq!(deployment.copy_counts().await, (n, n, n));
    eprintln!("WAN cut: {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facility_node_killed_during_publishing_loses_nothing() {
    let _serial = serial().await;
    let started = Instant::now();
    let mut deployment = start_small(|_| {}).await;
    let n = 600;
    let options = PublishOptions {
        rate: Some(60.0),
        ..Default::default()
    };
    let publisher = Publisher::spawn(deployment.edge_url(), 0..n, options);
    let consumer = partner_consumer(&deployment, "kill", Duration::from_secs(5)).await;
    let mut received = Received::new(n);
    read(
        &consumer,
        &mut received,
        ReadOptions::until(100, Duration::from_secs(20)),
    )
    .await;

    // Kill the facility stream's leader, the hardest node to lose, mid-publishing.
    let info = deployment
        .stream_state("facility", &facility_stream_name(INSTRUMENT))
        .await;
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the R3 facility stream has a leader");
    let at_kill = publisher.progress();
    deployment.running.kill(&leader).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = &mut deployment.running;
    tokio::task::block_in_place(|| running.restart(&leader)).unwrap();
    deployment
        .running
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("topology ready after restart");
    let restarted = started.elapsed().as_secs_f64();
    assert!(
        at_kill < n,
        "the kill happened while publishing ({at_kill} of {n})"
    );

    publisher.finish(Duration::from_secs(30)).await;
    // After a leader change the partner mirror notices the stall and resumes
    // on its own (about 10 to 20 s with nats-server 2.15); the wait allows for it.
    read(
        &consumer,
        &mut received,
        ReadOptions::until(n, Duration::from_secs(60)),
    )
    .await;
    let complete = started.elapsed().as_secs_f64();
    read_leftovers(&consumer, &mut received).await;
    received.assert_exactly_once(0..n);
    wait_for(
        "every copy to hold each event once",
        Duration::from_secs(20),
        || async { deployment.try_copy_counts().await == Some((n, n, n)) },
    )
    .await;
    eprintln!(
        "facility SIGKILL of {leader} after {at_kill} events: restarted at {restarted:.1} s, \
         partner complete at {complete:.1} s, total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn publisher_restart_and_partner_consumer_drop_lose_and_duplicate_nothing() {
    let _serial = serial().await;
    let started = Instant::now();
    let deployment = start_small(|_| {}).await;
    let n = 500;
    let options = PublishOptions {
        rate: Some(150.0),
        ..Default::default()
    };
    let first = Publisher::spawn(deployment.edge_url(), 0..n, options);
    wait_for(
        "half the events published",
        Duration::from_secs(20),
        || async { first.progress() >= n / 2 },
    )
    .await;
    let acked = first.progress();
    first.kill();
    // Like an agent restarted from its spool: resume from a checkpoint before
    // the crash, republishing events the edge already has (same ids).
    let resume_from = acked.saturating_sub(100);
    let second = Publisher::spawn(deployment.edge_url(), resume_from..n, options);

    let ack_wait = Duration::from_secs(2);
    let mut received = Received::new(n);
    {
        let consumer = partner_consumer(&deployment, "resume", ack_wait).await;
        let mut options = ReadOptions::until(n, Duration::from_secs(20));
        options.stop_after_acks = Some(150);
        read(&consumer, &mut received, options).await;
        assert_eq!(received.total(), 150, "the consumer stops after 150 acks");
        // Dropped here with a fetched message unacknowledged.
    }
    second.finish(Duration::from_secs(30)).await;
    let consumer = partner_consumer(&deployment, "resume", ack_wait).await;
    read(
        &consumer,
        &mut received,
        ReadOptions::until(n, Duration::from_secs(40)),
    )
    .await;
    read_leftovers(&consumer, &mut received).await;
    received.assert_exactly_once(0..n);
    assert_eq!(
        deployment.copy_counts().await,
        (n, n, n),
        "republished events were deduplicated at the edge"
    );
    eprintln!(
        "publisher restart (resumed at {resume_from} after {acked} acked) + consumer drop: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

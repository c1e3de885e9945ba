//! A partner consumer ten times slower than the producer: server memory
//! stays bounded (the backlog waits in the file store, not in memory) and the
//! partner mirror's retention limit (`max_msgs`) discards the oldest messages
//! as configured while the edge and facility copies keep everything.
//!
//! The memory bound, [`MEM_BOUND`] per server, is the sum of what a server
//! legitimately holds, not of the backlog: an idle nats-server is about
//! 20 MiB; the write path holds a publisher window (16 x 256 KiB) per replica;
//! a pull consumer has at most `max_ack_pending` (64 x 256 KiB = 16 MiB)
//! outstanding; the file store caches recently written blocks; and Go's
//! collector lets the heap grow to twice the live set before collecting.
//! That is about 2 x (20 + 12 + 16 + 16) MiB = 128 MiB; 192 MiB leaves room
//! for a noisy machine. The default run has a 30 MiB backlog per copy (a
//! check against runaway growth). The ignored heavy run has a 400 MiB backlog
//! per copy, twice the bound: the partner servers, where the slow consumer
//! reads, must still stay under [`MEM_BOUND`], showing that memory does not
//! follow the backlog. The ingest side (edge and facility) is held to
//! [`INGEST_BOUND`] there instead: under 16 s of sustained 25 MiB/s
//! incompressible ingest its file store write caches grow with the ingest
//! rate (330 to 375 MiB measured), whatever the consumer does.
//! `cargo test -p lclstream-integration --test topology_slow -- --ignored`.

mod topology_support;

use std::time::{Duration, Instant};

use lclstream_nats::topology::partner_stream_name;
use topology_support::*;

const MIB: u64 = 1024 * 1024;

/// Largest resident memory of any server during the slow phase; see the module docs.
const MEM_BOUND: u64 = 192 * MIB;

/// Largest resident memory of an edge or facility server during sustained heavy ingest.
const INGEST_BOUND: u64 = 512 * MIB;

/// Pixel bytes per event in the slow phase.
const BIG: usize = 256 * 1024;

struct Scenario {
    /// Events of the slow phase.
    n1: u64,
    /// How long the consumer stays slow; it catches up at full speed afterwards.
    slow_for: Duration,
    /// Memory bound of edge and facility servers (partner servers: [`MEM_BOUND`]).
    ingest_bound: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_partner_consumer_keeps_memory_bounded_and_mirror_limits_apply() {
    // 120 events at 100/s take 1.2 s; the consumer needs 12 s for them.
    run(Scenario {
        n1: 120,
        slow_for: Duration::from_secs(45),
        ingest_bound: MEM_BOUND,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: 400 MiB per stream copy; run in CI with --ignored"]
async fn slow_partner_consumer_with_backlog_larger_than_the_memory_bound() {
    // 1600 events of 256 KiB at 100/s: 16 s of production, a 400 MiB backlog.
    run(Scenario {
        n1: 1600,
        slow_for: Duration::from_secs(16),
        ingest_bound: INGEST_BOUND,
    })
    .await;
}

async fn run(scenario: Scenario) {
    let _serial = serial().await;
    let started = Instant::now();
    let retained: u64 = 300;
    let n1 = scenario.n1;
    let n2: u64 = 400;
    let n = n1 + n2;
    let deployment = start_small(|t| {
        // The slow phase alone must fit the mirror; the limit applies in phase 2.
        t.streams[0].partner_limits.max_msgs = Some(retained.max(n1) as i64);
    })
    .await;
    let limit = retained.max(n1);
    let sampler = MemorySampler::start(&deployment);

    // Phase 1: big events at 100/s; the consumer takes 100 ms per event (10x slower).
    let options = PublishOptions {
        payload_bytes: BIG,
        rate: Some(100.0),
        window: 16,
    };
    let publisher = Publisher::spawn(deployment.edge_url(), 0..n1, options);
    let consumer = partner_consumer(&deployment, "slow", Duration::from_secs(30)).await;
    let mut received = Received::new(n);
    let mut slow = ReadOptions::until(n1, scenario.slow_for);
    slow.delay = Some(Duration::from_millis(100));
    slow.batch = 4;
    read(&consumer, &mut received, slow).await;
    let slowly = received.distinct();
    publisher.finish(Duration::from_secs(60)).await;
    let peaks = sampler.stop().await;
    read(
        &consumer,
        &mut received,
        ReadOptions::until(n1, Duration::from_secs(60)),
    )
    .await;
    received.assert_exactly_once(0..n1);
    let phase1 = started.elapsed().as_secs_f64();
    eprintln!(
        "slow phase: {slowly} of {n1} events read slowly, backlog {} MiB per copy, peak mem {:?} MiB",
        n1 * BIG as u64 / MIB,
        peaks.iter().map(|(s, m)| (s.as_str(), m / MIB)).collect::<Vec<_>>()
    );
    for (server, peak) in &peaks {
        let bound = if server.starts_with(PARTNER) {
            MEM_BOUND
        } else {
            scenario.ingest_bound
        };
        assert!(*peak > 0, "memory of {server} was sampled");
        assert!(
            *peak < bound,
            "{server} reached {} MiB, above the {} MiB bound",
            peak / MIB,
            bound / MIB
        );
    }

    // Phase 2: small events while the consumer is away; the mirror keeps `limit`.
    Publisher::spawn(deployment.edge_url(), n1..n, PublishOptions::default())
        .finish(Duration::from_secs(30))
        .await;
    let mirror = partner_stream_name(INSTRUMENT, PARTNER);
    wait_for(
        "the mirror to catch up",
        Duration::from_secs(30),
        || async {
            deployment
                .try_stream_state(PARTNER, &mirror)
                .await
                .is_some_and(|info| info.state.last_sequence == n)
        },
    )
    .await;
    let info = deployment.stream_state(PARTNER, &mirror).await;
    assert_eq!(info.state.messages, limit, "max_msgs bounds the mirror");
    assert_eq!(
        info.state.first_sequence,
        n - limit + 1,
        "the oldest were discarded"
    );
    let (edge, facility, _) = deployment.copy_counts().await;
    assert_eq!(
        (edge, facility),
        (n, n),
        "edge and facility keep everything"
    );

    // The consumer comes back: it gets exactly what the mirror still holds.
    let first_kept = n - limit;
    read(
        &consumer,
        &mut received,
        ReadOptions::until(n1 + (n - first_kept.max(n1)), Duration::from_secs(30)),
    )
    .await;
    read_leftovers(&consumer, &mut received).await;
    received.assert_exactly_once_in(&[0..n1, first_kept.max(n1)..n]);
    eprintln!(
        "slow consumer: phase 1 {phase1:.1} s, total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

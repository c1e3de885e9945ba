//! Benchmarks, opt-in (ignored by default; see docs/benchmarks.md): how fast
//! the facility stream catches up with an edge leaf node after an outage,
//! and a partner site's mirror with the facility stream across NATS gateway
//! links, as a fraction of the link's capacity.
//!
//! ```sh
//! cargo test --release -p lclstream-integration --test wan_bench -- --ignored --nocapture
//! ```
//!
//! Each row starts an edge leaf and the 3-node facility in separate network
//! namespaces, the leaf link capped each way (`tc tbf`, 50 or 200 Mbit/s), with
//! the row's one-way delay (user-space relay: the kernel here has no `netem`)
//! and random loss (`iptables`). It then:
//! 1. measures the link's TCP capacity in the same shape: one connection
//!    from the edge's namespace through a relay with the same delay;
//! 2. cuts the leaf link (the relay closes it), publishes about 66 MB of
//!    incompressible events into the edge, restores the link, and times the
//!    facility stream: when the leaf link is back, when the first event
//!    arrives, when it holds every event.
//!
//! Catch-up throughput is stored bytes over the time from the first event to
//! the last, reported against the nominal cap and against the measured TCP
//! capacity. The wait before the first event is reported apart: after an
//! outage nats-server re-creates the source consumer, and a create request
//! lost during the outage is retried only after 30 s plus a backoff
//! (`srcConsumerWaitTime`, `calculateRetryBackoff` in server/stream.go).

mod topology_support;
mod wan_support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lclstream_nats::topology::run::ConnectFn;
use lclstream_nats::topology::{edge_stream_name, facility_stream_name, partner_stream_name};
use tokio::io::AsyncReadExt;
use topology_support::{
    edge_leaf_links, wait_for, Deployment, PublishOptions, Publisher, INSTRUMENT,
};
use wan_support::leaf::{start_leaf_over_wan, EDGE, FACILITY};
use wan_support::supercluster::{start_supercluster_over_wan, PARTNER};
use wan_support::*;

const EVENTS: u64 = 1000;
const PAYLOAD_BYTES: usize = 64 * 1024;
const RAW_BYTES: usize = 32 << 20;

/// Seconds to move `RAW_BYTES` over one TCP connection opened in `site`,
/// through a relay with `delay`, into a sink in the root namespace.
async fn raw_transfer_secs(site: &Site, delay: Delay) -> f64 {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let drain = tokio::spawn(async move {
        let (mut socket, _) = sink.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
        Instant::now()
    });
    let relay = DelayRelay::start(site.router.into(), sink_addr, delay)
        .await
        .unwrap();
    let target: SocketAddr = relay.addr();
    let start = Instant::now();
    let sender = site.clone();
    tokio::task::spawn_blocking(move || {
        sender.within(move || {
            let mut socket = std::net::TcpStream::connect(target).expect("connect through relay");
            // Incompressible, like the detector payloads.
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            let chunk: Vec<u8> = (0..1 << 20)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            for _ in 0..RAW_BYTES / chunk.len() {
                socket.write_all(&chunk).expect("send");
            }
            socket.shutdown(std::net::Shutdown::Write).ok();
        })
    })
    .await
    .unwrap()
    .expect("sender runs in the site's namespace");
    let end = tokio::time::timeout(Duration::from_secs(120), drain)
        .await
        .expect("raw transfer completes")
        .unwrap();
    assert_eq!(received.load(Ordering::Relaxed), RAW_BYTES as u64);
    (end - start).as_secs_f64()
}

/// A copy of the stream catching up after an outage.
struct CatchUp {
    /// When its first new message was seen.
    first_data: Instant,
    /// When it held every event.
    done: Instant,
    /// Bytes it stores then.
    stored: u64,
}

impl CatchUp {
    /// Bytes per second once data flows.
    fn throughput(&self) -> f64 {
        self.stored as f64 / (self.done - self.first_data).as_secs_f64().max(0.05)
    }

    /// The columns both tables share, up to "of TCP" (ending in `|`).
    fn columns(&self, row: &Row, raw: f64) -> String {
        let cap = f64::from(row.cap_mbit) * 1e6 / 8.0;
        let throughput = self.throughput();
        format!(
            "| {} Mbit/s, {} | {:.2} | {:.2} | {:.1} | {:.2} | {:.0} % | {:.0} % |",
            row.cap_mbit,
            row.name,
            cap / 1e6,
            raw / 1e6,
            self.stored as f64 / 1e6,
            throughput / 1e6,
            100.0 * throughput / cap,
            100.0 * throughput / raw,
        )
    }
}

/// Polls `stream` at `site` every 50 ms until it holds `EVENTS`, up to `deadline`.
async fn time_catch_up(
    deployment: &Deployment,
    site: &str,
    stream: &str,
    deadline: Instant,
) -> CatchUp {
    let mut first_data: Option<Instant> = None;
    let stored = loop {
        if let Some(info) = deployment.try_stream_state(site, stream).await {
            if info.state.messages > 0 && first_data.is_none() {
                first_data = Some(Instant::now());
            }
            if info.state.messages >= EVENTS {
                break info.state.bytes;
            }
        }
        assert!(Instant::now() < deadline, "{stream} at {site} catches up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let done = Instant::now();
    CatchUp {
        first_data: first_data.unwrap_or(done),
        done,
        stored,
    }
}

struct Row {
    name: &'static str,
    cap_mbit: u32,
    delay: Delay,
    loss: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture, see docs/benchmarks.md"]
async fn leaf_catch_up_throughput_against_link_capacity() {
    if lab_or_skip("leaf_catch_up_throughput_against_link_capacity").is_none() {
        return;
    }
    let rows = [
        Row {
            name: "no added delay",
            cap_mbit: 50,
            delay: Delay::none(),
            loss: 0.0,
        },
        Row {
            name: "70 ms one way",
            cap_mbit: 50,
            delay: Delay::transcontinental(),
            loss: 0.0,
        },
        Row {
            name: "70 ms one way, 0.5 % loss",
            cap_mbit: 50,
            delay: Delay::transcontinental(),
            loss: 0.005,
        },
        Row {
            name: "no added delay",
            cap_mbit: 200,
            delay: Delay::none(),
            loss: 0.0,
        },
        Row {
            name: "70 ms one way",
            cap_mbit: 200,
            delay: Delay::transcontinental(),
            loss: 0.0,
        },
    ];
    let mut lines = Vec::new();
    for row in rows {
        let mut lab = Lab::new().expect("lab");
        let link = LinkShape {
            rate_mbit: Some(row.cap_mbit),
            loss: row.loss,
        };
        let wan = start_leaf_over_wan(&mut lab, link, row.delay, |_| {}).await;
        let raw = RAW_BYTES as f64 / raw_transfer_secs(&wan.edge, row.delay).await;

        let relay = wan.relay;
        let deployment = Deployment {
            running: wan.running,
            dir: wan.dir,
        };
        relay.cut();
        wait_for("the leaf link to drop", Duration::from_secs(10), || async {
            edge_leaf_links(&deployment) == 0
        })
        .await;
        let options = PublishOptions {
            payload_bytes: PAYLOAD_BYTES,
            rate: None,
            window: 32,
        };
        Publisher::spawn(deployment.edge_url(), 0..EVENTS, options)
            .finish(Duration::from_secs(120))
            .await;
        let edge = deployment
            .stream_state(EDGE, &edge_stream_name(INSTRUMENT))
            .await;
        assert_eq!(edge.state.messages, EVENTS);

        relay.restore();
        let restored = Instant::now();
        wait_for(
            "the leaf link to come back",
            Duration::from_secs(30),
            || async { edge_leaf_links(&deployment) == 1 },
        )
        .await;
        let link_up = Instant::now();
        let facility = facility_stream_name(INSTRUMENT);
        let catch_up = time_catch_up(
            &deployment,
            FACILITY,
            &facility,
            link_up + Duration::from_secs(180),
        )
        .await;
        // The wait before data flows is reported apart (nats-server's retry
        // of the source consumer, not the link).
        let line = format!(
            "{} {:.1} | {:.1} |",
            catch_up.columns(&row, raw),
            (link_up - restored).as_secs_f64(),
            (catch_up.first_data - link_up).as_secs_f64(),
        );
        eprintln!("{line}");
        lines.push(line);
        drop(deployment);
        drop(relay);
    }
    eprintln!(
        "\n| link (tbf cap, delay, loss) | cap MB/s | TCP MB/s | stored MB | catch-up MB/s | of cap | of TCP | link back after s | first data after s |\n|---|---|---|---|---|---|---|---|---|"
    );
    for line in lines {
        eprintln!("{line}");
    }
}

/// The partner's mirror after an outage of the NATS gateway links: the
/// facility (3 nodes) and the partner site (1 node) in their own namespaces,
/// the partner's link capped (`tc tbf`) with the row's delay on every gateway
/// link (relays) and the row's loss on both sites' WAN connections. The
/// gateway links are cut (relays close them), about 66 MB of incompressible
/// events go into the facility stream, the links are restored, and the
/// mirror is timed from its first new message to its last. The link's TCP
/// capacity is measured in the same shape (one connection from the partner
/// site through a relay with the same delay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture, see docs/benchmarks.md"]
async fn partner_mirror_catch_up_throughput_against_link_capacity() {
    if lab_or_skip("partner_mirror_catch_up_throughput_against_link_capacity").is_none() {
        return;
    }
    let rows = [
        Row {
            name: "70 ms one way",
            cap_mbit: 50,
            delay: Delay::transcontinental(),
            loss: 0.0,
        },
        Row {
            name: "70 ms one way, 0.5 % loss",
            cap_mbit: 50,
            delay: Delay::transcontinental(),
            loss: 0.005,
        },
        Row {
            name: "70 ms one way",
            cap_mbit: 200,
            delay: Delay::transcontinental(),
            loss: 0.0,
        },
    ];
    let mut lines = Vec::new();
    for row in rows {
        let mut lab = Lab::new().expect("lab");
        let link = LinkShape {
            rate_mbit: Some(row.cap_mbit),
            loss: row.loss,
        };
        let connect: ConnectFn = Arc::new(async_nats::ConnectOptions::new);
        let wan = start_supercluster_over_wan(&mut lab, link, row.delay, |_| {}, connect).await;
        // Mirror data flows on the facility's own gateway connections.
        wan.facility.set_loss(row.loss).expect("facility loss");
        let raw = RAW_BYTES as f64 / raw_transfer_secs(&wan.partner, row.delay).await;

        let relays = wan.relays;
        let deployment = Deployment {
            running: wan.running,
            dir: wan.dir,
        };
        for relay in &relays {
            relay.cut();
        }
        let facility_url = deployment.running.facility_urls().join(",");
        let options = PublishOptions {
            payload_bytes: PAYLOAD_BYTES,
            rate: None,
            window: 32,
        };
        Publisher::spawn(facility_url, 0..EVENTS, options)
            .finish(Duration::from_secs(120))
            .await;
        let origin = deployment
            .stream_state(FACILITY, &facility_stream_name(INSTRUMENT))
            .await;
        assert_eq!(origin.state.messages, EVENTS);
        let mirror = partner_stream_name(INSTRUMENT, PARTNER);
        let before = deployment
            .try_stream_state(PARTNER, &mirror)
            .await
            .map(|i| i.state.messages)
            .unwrap_or(0);
        assert_eq!(before, 0, "nothing crossed the cut links");

        for relay in &relays {
            relay.restore();
        }
        let restored = Instant::now();
        let catch_up = time_catch_up(
            &deployment,
            PARTNER,
            &mirror,
            restored + Duration::from_secs(240),
        )
        .await;
        let line = format!(
            "{} {:.1} |",
            catch_up.columns(&row, raw),
            (catch_up.first_data - restored).as_secs_f64(),
        );
        eprintln!("{line}");
        lines.push(line);
        drop(deployment);
        drop(relays);
    }
    eprintln!(
        "\n| link (tbf cap, delay, loss) | cap MB/s | TCP MB/s | stored MB | catch-up MB/s | of cap | of TCP | first data after restore, s |\n|---|---|---|---|---|---|---|---|"
    );
    for line in lines {
        eprintln!("{line}");
    }
}

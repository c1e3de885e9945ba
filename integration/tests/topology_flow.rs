//! Data flow across a real topology: edge leaf -> facility cluster -> partner
//! cluster, and the health report of `lclstream nats status`.

mod topology_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lclstream_nats::topology::{facility_stream_name, partner_stream_name};
use topology_support::*;

#[tokio::test]
async fn events_published_at_the_edge_reach_the_partner_consumer_exactly_once() {
    let _serial = serial().await;
    let started = Instant::now();
    let deployment = start_small(|_| {}).await;
    let n = 300;
    let publisher = Publisher::spawn(deployment.edge_url(), 0..n, PublishOptions::default());
    // The consumer starts while data is still flowing.
    let consumer = partner_consumer(&deployment, "happy", Duration::from_secs(10)).await;
    let mut received = Received::new(n);
    publisher.finish(Duration::from_secs(30)).await;
    read(
        &consumer,
        &mut received,
        ReadOptions::until(n, Duration::from_secs(30)),
    )
    .await;
    read_leftovers(&consumer, &mut received).await;
    received.assert_exactly_once(0..n);
    // Every copy holds each event once: dedup at the edge, no doubling by source or mirror.
    assert_eq!(deployment.copy_counts().await, (n, n, n));
    let facility = deployment
        .stream_state("facility", &facility_stream_name(INSTRUMENT))
        .await;
    assert_eq!(facility.config.num_replicas, 3, "facility stream is R3");
    assert_eq!(facility.sources.len(), 1);
    eprintln!("happy path: {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn status_reports_sites_links_streams_and_consumer_lag() {
    let _serial = serial().await;
    let deployment = start_small(|_| {}).await;
    let n = 50;
    Publisher::spawn(deployment.edge_url(), 0..n, PublishOptions::default())
        .finish(Duration::from_secs(30))
        .await;
    // A consumer that has read nothing: its lag is the whole stream.
    let _consumer = partner_consumer(&deployment, "idle", Duration::from_secs(10)).await;
    let mirror = partner_stream_name(INSTRUMENT, PARTNER);
    wait_for("mirror to catch up", Duration::from_secs(20), || async {
        deployment.copy_counts().await.2 == n
    })
    .await;

    // The library view.
    let status = deployment.running.status().await;
    assert!(status.all_healthy(), "{}", status.render());
    assert_eq!(status.sites(), ["edge", "facility", "partner"]);
    let partner = status.stream(PARTNER, &mirror).expect("mirror reported");
    assert_eq!(partner.messages, n);
    let origin = partner.mirror.as_ref().expect("mirror origin");
    assert_eq!(origin.lag, 0);
    let idle = partner.consumers.iter().find(|c| c.name == "idle").unwrap();
    assert_eq!(idle.num_pending, n);
    let facility = status
        .stream("facility", &facility_stream_name(INSTRUMENT))
        .unwrap();
    assert!(
        facility.sources[0].name.contains("$JS.edge.API"),
        "{facility:?}"
    );
    assert_eq!(facility.replicas, 3);

    // The command line, on the resolved topology written at start.
    let resolved = deployment.dir.path().join("topology.resolved.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["nats", "status"])
        .arg(&resolved)
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "site edge: 1/1 servers up",
        "site facility: 3/3 servers up",
        "site partner: 1/1 servers up",
        "leaf links: edge (account LCLS)",
        "gateways: out facility",
        &format!("stream {mirror}: {n} msgs"),
        "mirror of LCLS_MFX: lag 0",
        "source LCLS_MFX via $JS.edge.API: lag 0",
        &format!("consumer idle: pending {n}, ack pending 0"),
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // The same servers by monitoring URL: sites come from each server's cluster name.
    let monitor_urls: Vec<String> = deployment
        .running
        .plan()
        .servers
        .iter()
        .map(|s| s.monitor_url())
        .collect();
    let mut args = vec!["nats".to_string(), "status".to_string()];
    for url in &monitor_urls {
        args.push("--url".into());
        args.push(url.clone());
    }
    let output = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(&args)
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("site facility: 3/3 servers up"), "{text}");
    assert!(text.contains("site edge: 1/1 servers up"), "{text}");

    // With one facility server down the report says so and the command fails.
    let mut deployment = deployment;
    deployment.running.stop("facility-2").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["nats", "status"])
        .arg(&resolved)
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "a down server fails the status command"
    );
    assert!(text.contains("site facility: 2/3 servers up"), "{text}");
    assert!(text.contains("facility-2 (http://"), "{text}");
    assert!(text.contains("DOWN"), "{text}");
}

#[tokio::test]
async fn nats_up_runs_a_topology_until_interrupted() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["nats", "up", "--free-ports", "--dir"])
        .arg(dir.path())
        .arg(topology_file("test-small.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("lclstream nats up starts");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !printed.iter().any(|l: &String| l.contains("press Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "`nats up` did not get ready; printed:\n{}",
                    printed.join("\n")
                );
            }
        }
    }
    let text = printed.join("\n");
    assert!(
        text.contains("site edge (edge leaf node, JetStream domain edge):"),
        "{text}"
    );
    assert!(text.contains("  facility-3: nats://127.0.0.1:"), "{text}");
    assert!(
        text.contains("streams: LCLS_MFX@edge, LCLS_MFX@facility, LCLS_MFX_PARTNER@partner"),
        "{text}"
    );

    let resolved = dir.path().join("topology.resolved.toml");
    let status = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["nats", "status"])
        .arg(&resolved)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    // Ctrl-C stops every server.
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`nats up` did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "{exit:?}");
    let status = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["nats", "status"])
        .arg(&resolved)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&status.stdout);
    assert!(!status.status.success(), "servers are gone: {report}");
    assert!(report.contains("site facility: 0/3 servers up"), "{report}");
}

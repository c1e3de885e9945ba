//! The real agent across sites: the `lclstream-e2e agent` process publishes
//! HDF5 sample files and a paced synthetic detector into the edge leaf's
//! existing stream; the events travel edge -> 3-node facility cluster ->
//! partner mirror, where a durable pull consumer checks that every event
//! index of every source arrives exactly once. Faults: the agent SIGKILLed
//! mid-run and restarted from its spool; the WAN between edge and facility
//! cut while the agent publishes.

mod agent_support;
mod topology_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agent_support::{config_head, write_run};
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::topology::{edge_stream_name, facility_stream_name, PortMode, Topology};
use topology_support::*;

/// Run number of every source.
const RUN: u32 = 9;

/// An agent set-up: HDF5 files, a spool and a config file, in a temp dir.
struct AgentRun {
    work: tempfile::TempDir,
    config: PathBuf,
    /// Events of the HDF5 source (`jungfrau`).
    hdf5_events: u64,
    /// Events of the paced synthetic source (`synthetic`).
    synthetic_events: u64,
}

impl AgentRun {
    /// Writes `files` x `per_file` HDF5 events and a config publishing them plus
    /// `synthetic_events` synthetic events at `rate_hz` into the edge at `url`.
    ///
    /// The edge stream already exists (created by the topology), so the agent
    /// only checks it (`create = false`); the duplicate window is the edge's.
    fn new(url: &str, files: usize, per_file: u64, synthetic_events: u64, rate_hz: f64) -> Self {
        let work = tempfile::Builder::new()
            .prefix("lclstream-topology-agent-")
            .tempdir()
            .unwrap();
        let data = work.path().join("data");
        std::fs::create_dir(&data).unwrap();
        write_run(&data, files, per_file, 64);
        let config = work.path().join("agent.toml");
        let text = format!(
            r#"{}
[stream]
create = false
duplicate_window_secs = 600

[[sources]]
name = "jungfrau"
run = {RUN}
[sources.hdf5]
glob = "{}/*.h5"
preset = "sample"
read_chunk_events = 4

[[sources]]
name = "synthetic"
run = {RUN}
[sources.synthetic]
height = 32
width = 32
rate_hz = {rate_hz}
events = {synthetic_events}
"#,
            config_head(url, &work.path().join("spool")),
            data.display()
        );
        std::fs::write(&config, text).unwrap();
        AgentRun {
            work,
            config,
            hdf5_events: files as u64 * per_file,
            synthetic_events,
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// Starts the agent process, logging to `log`.
    fn spawn(&self, log: &str) -> AgentProcess {
        let log = std::fs::File::create(self.log_path(log)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
            .args(["agent", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        AgentProcess(child)
    }

    /// What the partner consumer must see: every event of both sources once.
    fn expected(&self) -> PerSubject {
        let subject = |source: &str| {
            DataSubject::new("mfx", "mfxp1234", RUN, source)
                .unwrap()
                .to_string()
        };
        PerSubject::new(&[
            (subject("jungfrau"), self.hdf5_events),
            (subject("synthetic"), self.synthetic_events),
        ])
    }

    fn total_events(&self) -> u64 {
        self.hdf5_events + self.synthetic_events
    }
}

/// An agent process, SIGKILLed when dropped so that a failing test leaves none behind.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits (bounded) for the agent to exit; kills it and fails if it does not.
async fn wait_exit(agent: &mut AgentProcess, timeout: Duration, log: &Path) -> ExitStatus {
    let child = &mut agent.0;
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "agent did not finish within {timeout:?}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Messages in the edge stream now (0 if unreadable).
async fn edge_messages(deployment: &Deployment) -> u64 {
    deployment
        .try_stream_state(EDGE, &edge_stream_name(INSTRUMENT))
        .await
        .map(|i| i.state.messages)
        .unwrap_or(0)
}

/// Reads the partner mirror until every expected event arrived, then checks
/// that nothing more comes and that each event was processed exactly once.
async fn check_partner(deployment: &Deployment, run: &AgentRun, durable: &str) -> PerSubject {
    let consumer = partner_consumer(deployment, durable, Duration::from_secs(10)).await;
    let mut received = run.expected();
    let mut options = ReadOptions::until(run.total_events(), Duration::from_secs(40));
    options.batch = 64;
    read(&consumer, &mut received, options).await;
    read_leftovers(&consumer, &mut received).await;
    received.assert_exactly_once();
    // The copies agree too: each message stored once at every site.
    wait_for(
        "edge, facility and partner copies to agree",
        Duration::from_secs(20),
        || async {
            matches!(deployment.try_copy_counts().await, Some((e, f, p)) if e == f && f == p && e > 0)
        },
    )
    .await;
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_mid_run_and_restarted_delivers_each_event_once_to_the_partner() {
    let _serial = serial().await;
    let started = Instant::now();
    let deployment = start_small(|_| {}).await;
    // 240 HDF5 events and 800 synthetic ones paced over 4 s: the run is
    // still going when the first agent is killed.
    let run = AgentRun::new(&deployment.edge_url(), 3, 80, 800, 200.0);

    let mut first = run.spawn("agent-1.log");
    wait_for(
        "the first agent to publish at the edge",
        Duration::from_secs(20),
        || async { edge_messages(&deployment).await >= 20 },
    )
    .await;
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first agent is still running when killed"
    );
    first.0.kill().expect("SIGKILL");
    first.0.wait().unwrap();
    let at_kill = edge_messages(&deployment).await;
    let killed_at = started.elapsed().as_secs_f64();

    let mut second = run.spawn("agent-2.log");
    let log = run.log_path("agent-2.log");
    let status = wait_exit(&mut second, Duration::from_secs(60), &log).await;
    assert!(
        status.success(),
        "restarted agent failed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let at_end = edge_messages(&deployment).await;
    assert!(
        at_end > at_kill,
        "the restarted agent published the rest ({at_kill} -> {at_end} messages)"
    );
    let agent_done = started.elapsed().as_secs_f64();

    check_partner(&deployment, &run, "agent-restart").await;
    eprintln!(
        "agent SIGKILL at {killed_at:.1} s with {at_kill} messages at the edge, restarted agent \
         done at {agent_done:.1} s ({at_end} messages), partner complete, total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wan_cut_while_the_agent_publishes_loses_nothing() {
    let _serial = serial().await;
    let started = Instant::now();
    let topology = Topology::load(topology_file("test-small.toml")).unwrap();
    let mut plan = topology.plan(PortMode::FreeWhereMissing).unwrap();
    // The leaf reaches the hub only through a link the test can cut.
    let link = CuttableLink::start(plan.hub_leafnode_addrs(EDGE)).await;
    plan.set_leaf_remotes(EDGE, vec![link.leaf_url()]);
    let deployment = start_plan(plan).await;
    // 100 HDF5 events and 1200 synthetic ones paced over 8 s.
    let run = AgentRun::new(&deployment.edge_url(), 2, 50, 1200, 150.0);
    let mut agent = run.spawn("agent.log");
    // Cut once the agent's data is flowing all the way to the facility.
    wait_for(
        "the agent's data to reach the facility",
        Duration::from_secs(20),
        || async {
            deployment
                .try_stream_state("facility", &facility_stream_name(INSTRUMENT))
                .await
                .is_some_and(|i| i.state.messages >= 5)
        },
    )
    .await;
    let cut_at = started.elapsed().as_secs_f64();
    link.cut();
    wait_for("the leaf link to drop", Duration::from_secs(10), || async {
        edge_leaf_links(&deployment) == 0
    })
    .await;
    // Let whatever crossed before the cut settle in the facility stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let edge_at_cut = edge_messages(&deployment).await;
    let facility_at_cut = deployment
        .stream_state("facility", &facility_stream_name(INSTRUMENT))
        .await
        .state
        .messages;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let edge_during = edge_messages(&deployment).await;
    let facility_during = deployment
        .stream_state("facility", &facility_stream_name(INSTRUMENT))
        .await
        .state
        .messages;
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent was still publishing during the cut"
    );
    assert!(
        edge_during > edge_at_cut,
        "the edge accepts the agent's data during the cut ({edge_at_cut} -> {edge_during})"
    );
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
    let restored_at = started.elapsed().as_secs_f64();
    let log = run.log_path("agent.log");
    let status = wait_exit(&mut agent, Duration::from_secs(60), &log).await;
    let agent_done = started.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "agent failed: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    check_partner(&deployment, &run, "after-cut").await;
    eprintln!(
        "WAN cut under the agent at {cut_at:.1} s: edge {edge_at_cut} -> {edge_during} messages \
         during the cut, facility held at {facility_at_cut}; link back at {restored_at:.1} s, \
         agent done at {agent_done:.1} s, partner complete, total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

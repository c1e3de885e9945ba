//! Shared set-up of the publish-job tests: sample runs on disk, worker
//! configurations, workers in-process or as separate processes, job calls.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lclstream_agent::config::Preset;
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_agent::worker::{Worker, WorkerConfig, WorkerReport};
use lclstream_gateway::jobs::protocol::{
    JobBatch, JobProcessing, JobRecord, JobRef, JobRequest, JobState, JobView, VERB_GET,
    VERB_SUBMIT,
};
use lclstream_nats::wire::Event;
use lclstream_partner::{CallbackSink, PartnerClient, PartnerError, PullOptions, PullSummary};

use crate::partner_support::{setup, step, Setup};

/// Serializes writing HDF5 files and starting processes in one test binary.
///
/// A child process inherits the open file descriptors of its parent, and
/// with them the HDF5 file lock of a file another test thread is writing at
/// that moment: the child (nats-server, a worker) would then hold the lock
/// for its whole life and readers of that file would fail.
static FORK_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// [`setup`] (server and gateway) without racing a file being written.
pub async fn setup_jobs(policies: &[lclstream_gateway::policy::InstitutionPolicy]) -> Setup {
    let _guard = FORK_LOCK.lock().await;
    setup(policies).await
}

/// Starts a nats-server without racing a file being written.
pub async fn start_server(
    customize: impl Fn(&mut lclstream_nats::server::ServerConfig),
) -> lclstream_nats::server::NatsServer {
    let _guard = FORK_LOCK.lock().await;
    lclstream_nats::server::NatsServer::start_with(customize).expect("nats-server starts")
}

/// Writes sample smalldata files `<root>/<experiment>/run<NNNN>-s<k>.h5` with
/// the given event counts (seed `k + 1` each); returns their paths.
pub async fn write_run(root: &Path, experiment: &str, run: u32, events: &[u64]) -> Vec<PathBuf> {
    let _guard = FORK_LOCK.lock().await;
    let dir = root.join(experiment);
    std::fs::create_dir_all(&dir).unwrap();
    events
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let path = dir.join(format!("run{run:04}-s{k:02}.h5"));
            let mut spec = SampleSpec::new(Preset::Sample, n);
            spec.seed = k as u64 + 1;
            write_sample(&path, &spec).expect("sample written");
            path
        })
        .collect()
}

/// A worker configuration (TOML) for `url` reading smalldata files under `root`.
pub fn worker_toml(url: &str, root: &Path, name: &str, rate: f64) -> String {
    format!(
        r#"
name = "{name}"
instruments = ["mfx"]
[nats]
url = "{url}"
[storage]
root = "{}"
preset = "sample"
read_chunk_events = 4
max_events_per_sec = {rate:.1}
[queue]
ack_wait_secs = 2
heartbeat_ms = 400
max_deliver = 4
progress_ms = 100
"#,
        root.display()
    )
}

/// [`worker_toml`] for a worker that authenticates with the agent nkey seed
/// in `seed_file` (behind the auth callout).
pub fn worker_toml_with_key(
    url: &str,
    root: &Path,
    name: &str,
    rate: f64,
    seed_file: &Path,
) -> String {
    worker_toml(url, root, name, rate).replace(
        &format!("url = \"{url}\""),
        &format!(
            "url = \"{url}\"\nnkey_seed_file = \"{}\"",
            seed_file.display()
        ),
    )
}

/// A worker running in this process until the returned sender is dropped or sent.
pub struct InProcessWorker {
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<Result<WorkerReport, lclstream_agent::AgentError>>,
}

/// Starts an in-process worker.
pub fn start_worker(toml: &str) -> InProcessWorker {
    let config = WorkerConfig::from_toml(toml).expect("worker config is valid");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Worker::new(config).run(async move {
        let _ = stopped.await;
    }));
    InProcessWorker { stop, task }
}

impl InProcessWorker {
    /// Stops the worker and returns its report.
    pub async fn stop(self) -> WorkerReport {
        let _ = self.stop.send(());
        step("worker stop", self.task)
            .await
            .expect("worker task")
            .expect("worker ran")
    }
}

/// A worker running as a separate `lclstream worker` process.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts `lclstream worker --config <dir>/<name>.toml`.
    pub async fn start(dir: &Path, name: &str, toml: &str) -> WorkerProcess {
        let _guard = FORK_LOCK.lock().await;
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
            .arg("worker")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("worker process starts");
        WorkerProcess { child, log }
    }

    /// SIGKILL: no goodbye, no negative ack, no record update.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The worker's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A job request for run `run` of `mfx/<experiment>` with default processing.
pub fn job(experiment: &str, run: u32) -> JobRequest {
    JobRequest {
        instrument: "mfx".into(),
        experiment: experiment.into(),
        run,
        run_end: None,
        fields: Vec::new(),
        processing: JobProcessing::default(),
        batch: JobBatch::default(),
        events: None,
        label: None,
    }
}

/// Submits a job.
pub async fn submit(client: &PartnerClient, request: &JobRequest) -> Result<JobView, PartnerError> {
    step(
        "jobs.submit",
        client.call_raw(VERB_SUBMIT, serde_json::to_vec(request).unwrap()),
    )
    .await
}

/// Reads a job's view.
pub async fn get(client: &PartnerClient, job: &str) -> JobView {
    step(
        "jobs.get",
        client.call_raw(
            VERB_GET,
            serde_json::to_vec(&JobRef { job: job.into() }).unwrap(),
        ),
    )
    .await
    .expect("job on record")
}

/// Polls the record (every 100 ms, at most `limit`) until `done` holds.
pub async fn wait_record(
    client: &PartnerClient,
    job: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&JobRecord) -> bool,
) -> JobRecord {
    let rounds = (limit.as_millis() / 100).max(1);
    let mut last = None;
    for _ in 0..rounds {
        let record = get(client, job).await.record;
        if done(&record) {
            return record;
        }
        last = Some(record);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {job}: {what} not reached within {limit:?}; last record {last:#?}");
}

/// Whether a record is in `state`.
pub fn is(state: JobState) -> impl Fn(&JobRecord) -> bool {
    move |r| r.state == state
}

/// Events received, by (run, index), with how often each arrived.
pub type Received = Arc<Mutex<BTreeMap<(u32, u64), (usize, Event)>>>;

/// Pulls a job's consumer into a map until `max_events` or `idle`.
pub async fn pull_job(
    client: &PartnerClient,
    view: &JobView,
    max_events: u64,
    idle: Duration,
) -> (PullSummary, Received) {
    let received: Received = Arc::default();
    let sink_map = received.clone();
    let mut sink = CallbackSink::new(move |batch: &lclstream_partner::BatchInfo, event: Event| {
        let mut map = sink_map.lock().unwrap();
        let slot = map.entry((batch.run, event.index)).or_insert((0, event));
        slot.0 += 1;
        Ok(())
    });
    let grant = view.grant.clone().expect("a job has a consumer");
    let options = PullOptions {
        max_events: Some(max_events),
        idle_timeout: idle,
        ..Default::default()
    };
    let summary = tokio::time::timeout(
        idle * 4 + Duration::from_secs(30),
        client.pull(&grant, &options, &mut sink),
    )
    .await
    .expect("pull ends")
    .expect("pull succeeds");
    (summary, received)
}

//! The publish-job worker: takes jobs from the `LCLS_JOBS` work queue and
//! streams runs from facility storage into each job's subject.
//!
//! ```text
//! LCLS_JOBS (work queue) ──pull, one job per slot──▶ claim record (running)
//!     ▲   AckProgress heartbeats while the job runs      │
//!     │                                                  ▼
//!     └── ack when done/failed/cancelled      read files ─▶ process ─▶ batch ─▶ encode
//!         (a dead worker's job is                                              │
//!          redelivered after ack_wait)     lclstream.jobs.data.<job> ◀─publish─┘
//!                                          (Nats-Msg-Id <job>:<batch id>)
//! ```
//!
//! Use [`Worker::new`] and [`Worker::run`] in-process, or `lclstream worker --config`.

pub mod config;
pub mod job;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, AckKind};
use futures::StreamExt;
use lclstream_nats::protocol::job_stores::{self, update_record, JobStores, Updated};
use lclstream_nats::protocol::jobs::{now, queue_subject, JobSpec, JobState, QUEUE_STREAM};

pub use config::WorkerConfig;
use job::{finish, JobRun, Outcome};

use crate::AgentError;

/// How long one pull request waits for a job.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);

/// What a worker did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Jobs completed.
    pub done: u64,
    /// Jobs that failed.
    pub failed: u64,
    /// Jobs found cancelled.
    pub cancelled: u64,
    /// Jobs handed back to the queue (shutdown or publish failure).
    pub requeued: u64,
}

/// A publish-job worker.
pub struct Worker {
    config: WorkerConfig,
}

struct Shared {
    config: WorkerConfig,
    name: String,
    client: async_nats::Client,
    js: jetstream::Context,
    records: kv::Store,
    stop: Arc<AtomicBool>,
}

impl Worker {
    /// A worker for a validated configuration.
    pub fn new(config: WorkerConfig) -> Worker {
        Worker { config }
    }

    /// The durable work-queue consumer of an instrument (shared by all its workers).
    pub fn consumer_name(instrument: &str) -> String {
        lclstream_nats::protocol::jobs::worker_consumer_name(instrument)
    }

    /// Takes and runs jobs until `shutdown` resolves. A job running at
    /// shutdown is handed back to the queue (negative ack) for another worker.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, AgentError> {
        let client = crate::agent::connect(&self.config.nats, &self.config.worker_name()).await?;
        let js = jetstream::new(client.clone());
        let records = job_stores::ensure(&js, &JobStores::default())
            .await
            .map_err(|e| AgentError::Nats(format!("job streams: {e}")))?;
        let queue = js
            .get_stream(QUEUE_STREAM)
            .await
            .map_err(|e| AgentError::Nats(format!("stream {QUEUE_STREAM}: {e}")))?;
        let q = &self.config.queue;
        let mut consumers = Vec::new();
        for instrument in &self.config.instruments {
            let name = Self::consumer_name(instrument);
            let consumer: consumer::PullConsumer = queue
                .get_or_create_consumer(
                    &name,
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        filter_subject: queue_subject(instrument),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: q.ack_wait(),
                        max_deliver: q.max_deliver,
                        description: Some(format!("lclstream workers of {instrument}")),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| AgentError::Nats(format!("work-queue consumer {name}: {e}")))?;
            consumers.push(consumer);
        }
        let shared = Arc::new(Shared {
            name: self.config.worker_name(),
            config: self.config,
            client,
            js,
            records,
            stop: Arc::new(AtomicBool::new(false)),
        });
        tracing::info!(worker = %shared.name, instruments = ?shared.config.instruments,
            concurrency = shared.config.concurrency, "worker taking jobs");
        let mut slots = Vec::new();
        for _ in 0..shared.config.concurrency {
            let shared = shared.clone();
            let consumers = consumers.clone();
            slots.push(tokio::spawn(async move { slot(shared, consumers).await }));
        }
        shutdown.await;
        tracing::info!(worker = %shared.name, "stopping: handing running jobs back");
        shared.stop.store(true, Ordering::Relaxed);
        let mut report = WorkerReport::default();
        for s in slots {
            if let Ok(r) = s.await {
                report.done += r.done;
                report.failed += r.failed;
                report.cancelled += r.cancelled;
                report.requeued += r.requeued;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.client.flush()).await;
        Ok(report)
    }
}

/// One job at a time, from whichever instrument has one.
async fn slot(shared: Arc<Shared>, consumers: Vec<consumer::PullConsumer>) -> WorkerReport {
    let mut report = WorkerReport::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for consumer in &consumers {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let batch = consumer
                .fetch()
                .max_messages(1)
                .expires(FETCH_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("fetching a job: {e}");
                    continue;
                }
            };
            while let Some(message) = batch.next().await {
                match message {
                    Ok(message) => {
                        idle = false;
                        handle(&shared, message, &mut report).await;
                    }
                    Err(e) => tracing::debug!("fetching a job: {e}"),
                }
            }
        }
        if idle {
            // An error or an empty queue: the fetch already waited; avoid spinning on errors.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    report
}

/// Claims, runs and acknowledges one job message.
async fn handle(shared: &Arc<Shared>, message: jetstream::Message, report: &mut WorkerReport) {
    let spec: JobSpec = match serde_json::from_slice(&message.payload) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("dropping a malformed job message: {e}");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let claimed = update_record(&shared.records, &spec.institution, &spec.job, |r| {
        if r.state.is_terminal() {
            return false;
        }
        r.state = JobState::Running;
        r.worker = Some(shared.name.clone());
        r.attempts += 1;
        r.started = Some(now());
        r.events = 0;
        r.batches = 0;
        r.files = 0;
        true
    })
    .await;
    let record = match claimed {
        Ok(Updated::Stored(r)) => r,
        Ok(Updated::Unchanged(r)) => {
            tracing::info!(job = %spec.job, state = %r.state, "skipping a job that already ended");
            if r.state == JobState::Cancelled {
                report.cancelled += 1;
            }
            let _ = message.double_ack().await;
            return;
        }
        Ok(Updated::Missing) => {
            tracing::warn!(job = %spec.job, "skipping a job without record (expired?)");
            let _ = message.double_ack().await;
            return;
        }
        Err(e) => {
            tracing::warn!(job = %spec.job, "cannot claim the job: {e}; handing it back");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            report.requeued += 1;
            return;
        }
    };
    tracing::info!(job = %spec.job, attempt = record.attempts, "running job");
    JobRun::send_status(&shared.client, &record).await;
    let message = Arc::new(message);
    let heartbeat = {
        let message = message.clone();
        let every = shared.config.queue.heartbeat();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!("heartbeat: {e}");
                }
            }
        })
    };
    let (outcome, record) = JobRun {
        config: &shared.config,
        js: &shared.js,
        client: &shared.client,
        records: &shared.records,
        spec: &spec,
        record,
        shutdown: shared.stop.clone(),
    }
    .run()
    .await;
    heartbeat.abort();
    tracing::info!(job = %spec.job, ?outcome, events = record.events, bytes = record.bytes, "job ended");
    match outcome {
        Outcome::Done => {
            finish(
                &shared.client,
                &shared.records,
                record,
                JobState::Done,
                None,
            )
            .await;
            report.done += 1;
            let _ = message.double_ack().await;
        }
        Outcome::Failed(e) => {
            finish(
                &shared.client,
                &shared.records,
                record,
                JobState::Failed,
                Some(e),
            )
            .await;
            report.failed += 1;
            let _ = message.double_ack().await;
        }
        Outcome::Cancelled => {
            report.cancelled += 1;
            let current =
                job_stores::read_record(&shared.records, &spec.institution, &spec.job).await;
            if let Ok(Some((current, _))) = current {
                JobRun::send_status(&shared.client, &current).await;
            }
            let _ = message.double_ack().await;
        }
        Outcome::Retry(e)
            if message
                .info()
                .is_ok_and(|i| i.delivered >= shared.config.queue.max_deliver) =>
        {
            let error = format!("giving up after {} attempts: {e}", record.attempts);
            finish(
                &shared.client,
                &shared.records,
                record,
                JobState::Failed,
                Some(error),
            )
            .await;
            report.failed += 1;
            let _ = message.double_ack().await;
        }
        Outcome::Interrupted | Outcome::Retry(_) => {
            report.requeued += 1;
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

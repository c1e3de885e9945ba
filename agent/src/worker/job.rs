//! Running one publish job: resolve the run's files, read, process, batch,
//! encode and publish them on the job's subject.
//!
//! Batching has no time component (no linger), so the same job always cuts
//! the same batches: a worker that retries a job after another died
//! produces the same message ids (`<job-id>:<batch id>`), and the data
//! stream drops what was already stored.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use lclstream_nats::protocol::job_stores::{update_record, Updated};
use lclstream_nats::protocol::jobs::{
    now, status_subject, EventRange, JobRecord, JobSpec, JobState, JOB_HEADER,
};
use lclstream_nats::wire::{
    self, headers as h, Batch, Compression, EncodeOptions, Event, FilterPolicy,
};
use tokio::sync::mpsc;

use super::config::WorkerConfig;
use crate::batcher::Batcher;
use crate::config::{BatchConfig, ProcessingConfig, PsanaConfig};
use crate::hdf5_source::{Hdf5Reader, Layout};
use crate::process::Processor;
use crate::spool::Position;

/// How a job ended on this worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every event was published.
    Done,
    /// The job cannot be done (no files, unreadable file, bad processing).
    Failed(String),
    /// The record says cancelled.
    Cancelled,
    /// The worker is stopping; the job goes back to the queue.
    Interrupted,
    /// Publishing failed; the job should be retried (by this or another worker).
    Retry(String),
}

/// What the reader thread sends.
enum Item {
    Event(u32, Box<Event>),
    RunEnd(u32),
    FileDone,
    Failed(String),
}

/// The runs of a job with their files, in order.
fn resolve(config: &WorkerConfig, spec: &JobSpec) -> Result<Vec<(u32, Vec<PathBuf>)>, String> {
    let r = &spec.request;
    let mut plan = Vec::new();
    for run in r.runs() {
        let pattern = config.run_glob(&r.instrument, &r.experiment, run);
        let mut files: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|e| format!("file pattern {pattern:?}: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!(
                "run {run} of {}: no file matches {pattern}",
                r.experiment
            ));
        }
        plan.push((run, files));
    }
    Ok(plan)
}

/// The part `[start, end)` of a file with `n` events at run offset `offset` inside `range`.
fn overlap(offset: u64, n: u64, range: Option<EventRange>) -> (u64, u64) {
    match range {
        None => (0, n),
        Some(r) => {
            let start = r.first.max(offset).min(offset + n) - offset;
            let end = r.last.saturating_add(1).clamp(offset, offset + n) - offset;
            (start, end.max(start))
        }
    }
}

/// Opens every file once to count the events the job will publish.
fn count_events(
    layout: &Layout,
    plan: &[(u32, Vec<PathBuf>)],
    range: Option<EventRange>,
) -> Result<u64, String> {
    let mut total = 0;
    for (_, files) in plan {
        let mut offset = 0;
        for file in files {
            let n = Hdf5Reader::open(file, layout)
                .map_err(|e| e.to_string())?
                .events();
            let (a, b) = overlap(offset, n, range);
            total += b - a;
            offset += n;
        }
    }
    Ok(total)
}

/// Holds events back to a target rate (events per second; 0 = as fast as read).
struct Pacer {
    rate: f64,
    started: Instant,
    sent: u64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Pacer {
            rate,
            started: Instant::now(),
            sent: 0,
        }
    }

    /// Waits until the next event is due; false when `stop` was raised meanwhile.
    fn wait(&mut self, stop: &AtomicBool) -> bool {
        if self.rate > 0.0 {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / self.rate);
            while Instant::now() < due {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep((due - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        self.sent += 1;
        true
    }
}

/// Reads every run of the plan, processed, into `tx` (a blocking thread).
#[allow(clippy::too_many_arguments)]
fn read_all(
    plan: Vec<(u32, Vec<PathBuf>)>,
    layout: Layout,
    chunk: u64,
    rate: f64,
    range: Option<EventRange>,
    processor: Processor,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Item>,
) {
    let send = |item: Item| tx.blocking_send(item).is_ok();
    let mut pacer = Pacer::new(rate);
    for (run, files) in plan {
        let mut offset = 0u64;
        for file in files {
            let reader = match Hdf5Reader::open(&file, &layout) {
                Ok(r) => r,
                Err(e) => {
                    send(Item::Failed(e.to_string()));
                    return;
                }
            };
            let n = reader.events();
            let (mut at, end) = overlap(offset, n, range);
            while at < end {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let to = (at + chunk).min(end);
                let events = match reader.read(at, to, offset + at) {
                    Ok(e) => e,
                    Err(e) => {
                        send(Item::Failed(e.to_string()));
                        return;
                    }
                };
                for mut event in events {
                    if !pacer.wait(&stop) {
                        return;
                    }
                    if let Err(e) = processor.apply(&mut event) {
                        send(Item::Failed(format!("{}: processing {e}", file.display())));
                        return;
                    }
                    if !send(Item::Event(run, Box::new(event))) {
                        return;
                    }
                }
                at = to;
            }
            offset += n;
            if !send(Item::FileDone) {
                return;
            }
        }
        if !send(Item::RunEnd(run)) {
            return;
        }
    }
}

/// Reads every run of the plan through psana, processed, into `tx` (a blocking thread).
/// A run's files are one psana DataSource; its event index is psana's.
fn read_all_psana(
    plan: Vec<(u32, Vec<PathBuf>)>,
    psana: PsanaConfig,
    rate: f64,
    range: Option<EventRange>,
    processor: Processor,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Item>,
) {
    let send = |item: Item| tx.blocking_send(item).is_ok();
    let mut pacer = Pacer::new(rate);
    for (run, files) in plan {
        let n_files = files.len();
        let config = PsanaConfig {
            files,
            max_events: range.map(|r| r.last.saturating_add(1)),
            ..psana.clone()
        };
        let start = range.map(|r| r.first).unwrap_or(0);
        let mut failed = None;
        let mut deliver = |mut event: Event| {
            if !pacer.wait(&stop) {
                return false;
            }
            if let Err(e) = processor.apply(&mut event) {
                failed = Some(format!("run {run}: processing {e}"));
                return false;
            }
            send(Item::Event(run, Box::new(event)))
        };
        let stopping = || stop.load(Ordering::Relaxed);
        match crate::psana_source::read_events(&config, run, start, &stopping, &mut deliver) {
            Ok(true) => {}
            Ok(false) => {
                if let Some(e) = failed {
                    send(Item::Failed(e));
                }
                return;
            }
            Err(e) => {
                send(Item::Failed(format!("run {run}: {e}")));
                return;
            }
        }
        for _ in 0..n_files {
            if !send(Item::FileDone) {
                return;
            }
        }
        if !send(Item::RunEnd(run)) {
            return;
        }
    }
}

/// Runs one job to its end; the record and status are updated on the way.
pub struct JobRun<'a> {
    /// Worker configuration.
    pub config: &'a WorkerConfig,
    /// JetStream.
    pub js: &'a jetstream::Context,
    /// Core client (status messages).
    pub client: &'a async_nats::Client,
    /// Job records.
    pub records: &'a kv::Store,
    /// The job.
    pub spec: &'a JobSpec,
    /// The record as claimed by this worker.
    pub record: JobRecord,
    /// Set when the worker shuts down.
    pub shutdown: Arc<AtomicBool>,
}

impl JobRun<'_> {
    /// Publishes the current record on the job's status subject.
    pub async fn send_status(client: &async_nats::Client, record: &JobRecord) {
        if let Ok(payload) = serde_json::to_vec(record) {
            if let Err(e) = client
                .publish(status_subject(&record.job), payload.into())
                .await
            {
                tracing::debug!(job = %record.job, "cannot publish status: {e}");
            }
        }
    }

    /// Stores progress; returns `Some(Outcome::Cancelled)` when the job was cancelled.
    async fn progress(&mut self) -> Option<Outcome> {
        let snapshot = self.record.clone();
        let result = update_record(self.records, &snapshot.institution, &snapshot.job, |r| {
            if r.state != JobState::Running {
                return false;
            }
            r.events = snapshot.events;
            r.batches = snapshot.batches;
            r.bytes = snapshot.bytes;
            r.files = snapshot.files;
            r.events_total = snapshot.events_total;
            true
        })
        .await;
        match result {
            Ok(Updated::Stored(r)) => {
                Self::send_status(self.client, &r).await;
                None
            }
            Ok(Updated::Unchanged(r)) if r.state == JobState::Cancelled => Some(Outcome::Cancelled),
            Ok(Updated::Unchanged(_)) => None,
            Ok(Updated::Missing) => Some(Outcome::Cancelled),
            Err(e) => {
                // Progress is advisory; the job goes on and the next update retries.
                tracing::warn!(job = %snapshot.job, "cannot update the job record: {e}");
                None
            }
        }
    }

    /// Encodes and publishes one batch, waiting for its acks.
    async fn publish(&mut self, run: u32, events: Vec<Event>) -> Result<(), String> {
        let spec = self.spec;
        let r = &spec.request;
        let count = events.len() as u64;
        let batch = Batch::new(&r.experiment, run, &self.config.source, events)
            .map_err(|e| format!("building a batch: {e}"))?;
        let options = EncodeOptions {
            compression: if spec.encoding.lz4 {
                Compression::Lz4
            } else {
                Compression::None
            },
            filters: if spec.encoding.shuffle {
                FilterPolicy::default()
            } else {
                FilterPolicy::none()
            },
            max_payload: spec.encoding.max_payload,
        };
        let encoded = wire::encode(batch, &options).map_err(|e| format!("encoding: {e}"))?;
        let mut acks = Vec::with_capacity(encoded.messages.len());
        for message in encoded.messages {
            let mut headers = message.headers;
            let id = h::get(&headers, h::MSG_ID).unwrap_or_default().to_string();
            headers.insert(h::MSG_ID, format!("{}:{id}", spec.job).as_str());
            headers.insert(JOB_HEADER, spec.job.as_str());
            let size = message.payload.len() as u64;
            let publish = jetstream::message::PublishMessage::build()
                .headers(headers)
                .payload(message.payload);
            let ack = self
                .js
                .send_publish(spec.subject.clone(), publish)
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            acks.push((ack, size));
        }
        for (ack, size) in acks {
            let ack = ack.await.map_err(|e| format!("publish ack: {e}"))?;
            if !ack.duplicate {
                self.record.bytes += size;
            }
        }
        self.record.events += count;
        self.record.batches += 1;
        Ok(())
    }

    /// Runs the job.
    pub async fn run(mut self) -> (Outcome, JobRecord) {
        let outcome = self.execute().await;
        (outcome, self.record)
    }

    async fn execute(&mut self) -> Outcome {
        let config = self.config;
        let request = &self.spec.request;
        let plan = match resolve(config, self.spec) {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(e),
        };
        let layout = Layout::from_config(&config.hdf5_layout_config());
        let range = request.events;
        // psana runs are counted only by reading them: their total stays unknown.
        if config.storage.psana.is_none() {
            let (layout, plan) = (layout.clone(), plan.clone());
            let counted =
                tokio::task::spawn_blocking(move || count_events(&layout, &plan, range)).await;
            match counted {
                Ok(Ok(total)) => self.record.events_total = Some(total),
                Ok(Err(e)) => return Outcome::Failed(e),
                Err(e) => return Outcome::Failed(format!("counting events: {e}")),
            }
        }
        if let Some(o) = self.progress().await {
            return o;
        }
        let processor = Processor::new(&ProcessingConfig {
            fields: request.processing.apply_to.clone(),
            roi: request.processing.roi,
            bin: request.processing.bin,
            threshold: request.processing.threshold,
            dtype: request.processing.dtype.clone(),
            include: request.fields.clone(),
            exclude: Vec::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel(32);
        let reader = {
            let stop = stop.clone();
            let chunk = config.storage.read_chunk_events as u64;
            let rate = config.storage.max_events_per_sec;
            let psana = config.storage.psana.clone();
            tokio::task::spawn_blocking(move || match psana {
                Some(psana) => read_all_psana(plan, psana, rate, range, processor, stop, tx),
                None => read_all(plan, layout, chunk, rate, range, processor, stop, tx),
            })
        };
        let limits = BatchConfig {
            max_events: request.batch.max_events,
            max_bytes: request.batch.max_bytes,
            max_linger_ms: u64::MAX / 2,
            low_latency: false,
        };
        let mut batcher = Batcher::new(limits);
        let mut current_run = request.run;
        let last_run = request.last_run();
        let mut finished = false;
        let progress_every = std::time::Duration::from_millis(config.queue.progress_ms);
        let mut last_progress = Instant::now();
        let outcome = loop {
            if self.shutdown.load(Ordering::Relaxed) {
                break Outcome::Interrupted;
            }
            let Some(item) = rx.recv().await else {
                break if finished {
                    Outcome::Done
                } else if self.shutdown.load(Ordering::Relaxed) {
                    Outcome::Interrupted
                } else {
                    Outcome::Retry("the file reader stopped unexpectedly".into())
                };
            };
            let ready = match item {
                Item::Event(run, event) => {
                    current_run = run;
                    batcher.push(*event, Position::default(), Instant::now())
                }
                Item::RunEnd(run) => {
                    current_run = run;
                    finished = run == last_run;
                    batcher.take().into_iter().collect()
                }
                Item::FileDone => {
                    self.record.files += 1;
                    Vec::new()
                }
                Item::Failed(e) => break Outcome::Failed(e),
            };
            let mut failed = None;
            for (events, _) in ready {
                if let Err(e) = self.publish(current_run, events).await {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(e) = failed {
                break Outcome::Retry(e);
            }
            if last_progress.elapsed() >= progress_every {
                last_progress = Instant::now();
                if let Some(o) = self.progress().await {
                    break o;
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        rx.close();
        let _ = reader.await;
        if outcome == Outcome::Done {
            // A cancellation after the last batch still wins.
            if let Some(o) = self.progress().await {
                return o;
            }
        }
        outcome
    }
}

/// Marks the record of a job that ended (done or failed) and publishes its final status.
pub async fn finish(
    client: &async_nats::Client,
    records: &kv::Store,
    mut record: JobRecord,
    state: JobState,
    error: Option<String>,
) -> JobRecord {
    let snapshot = record.clone();
    let result = update_record(records, &record.institution, &record.job, |r| {
        if r.state.is_terminal() {
            return false;
        }
        r.state = state;
        r.error = error.clone();
        r.finished = Some(now());
        r.events = snapshot.events;
        r.batches = snapshot.batches;
        r.bytes = snapshot.bytes;
        r.files = snapshot.files;
        r.events_total = snapshot.events_total;
        true
    })
    .await;
    match result {
        Ok(Updated::Stored(r)) | Ok(Updated::Unchanged(r)) => record = r,
        Ok(Updated::Missing) => {}
        Err(e) => tracing::warn!(job = %record.job, "cannot store the end of the job: {e}"),
    }
    JobRun::send_status(client, &record).await;
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_clips_to_the_event_range() {
        assert_eq!(overlap(0, 10, None), (0, 10));
        let r = Some(EventRange { first: 5, last: 12 });
        assert_eq!(overlap(0, 10, r), (5, 10));
        assert_eq!(overlap(10, 10, r), (0, 3));
        let (a, b) = overlap(20, 10, r);
        assert_eq!(b - a, 0);
        let (a, b) = overlap(
            0,
            10,
            Some(EventRange {
                first: 25,
                last: 40,
            }),
        );
        assert_eq!(b - a, 0);
    }
}

//! The agent: wires sources, batchers, the spool and the publisher together.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::batcher::{run_batcher, BatchSink};
use crate::config::{AgentConfig, NatsConfig};
use crate::hdf5_source::run_hdf5;
use crate::metrics::{self, Metrics};
use crate::process::Processor;
use crate::psana_source::run_psana;
use crate::publisher::{ensure_stream, Mode, Publisher};
use crate::resume;
use crate::source::{run_synthetic, ReaderContext};
use crate::spool::{Spool, SpoolOptions, SpoolSync};
use crate::AgentError;

/// Events buffered between a reader and its batcher.
const READER_QUEUE: usize = 16;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// Events read from sources.
    pub events_read: u64,
    /// Events acknowledged by JetStream (including republished ones).
    pub events_published: u64,
    /// Batches spooled.
    pub batches_spooled: u64,
    /// Batches acknowledged.
    pub batches_published: u64,
    /// Batches republished from a previous run's spool.
    pub batches_republished: u64,
    /// Messages acknowledged (chunks counted separately).
    pub messages: u64,
    /// Acks that reported a duplicate.
    pub duplicates: u64,
    /// Uncompressed bytes of acknowledged batches.
    pub raw_bytes: u64,
    /// Wire bytes of acknowledged batches.
    pub wire_bytes: u64,
    /// Files read completely.
    pub files_done: u64,
    /// Files skipped after an error.
    pub files_skipped: u64,
    /// Publish failures that were retried.
    pub publish_errors: u64,
    /// Batches still spooled and unacknowledged at exit.
    pub spooled_at_exit: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunReport {
    fn from_metrics(m: &Metrics, spooled_at_exit: u64, elapsed: Duration) -> RunReport {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        RunReport {
            events_read: get(&m.events_read),
            events_published: get(&m.events_published),
            batches_spooled: get(&m.batches_spooled),
            batches_published: get(&m.batches_published),
            batches_republished: get(&m.batches_republished),
            messages: get(&m.messages_published),
            duplicates: get(&m.duplicates),
            raw_bytes: get(&m.bytes_raw),
            wire_bytes: get(&m.bytes_wire),
            files_done: get(&m.files_done),
            files_skipped: get(&m.files_skipped),
            publish_errors: get(&m.publish_errors),
            spooled_at_exit,
            elapsed,
        }
    }
}

/// The facility agent.
pub struct Agent {
    config: AgentConfig,
    metrics: Arc<Metrics>,
    progress: bool,
}

impl Agent {
    /// An agent for a validated configuration.
    pub fn new(config: AgentConfig) -> Agent {
        Agent {
            config,
            metrics: Metrics::new(),
            progress: false,
        }
    }

    /// Shows a progress bar on stderr while backfilling finite sources.
    pub fn with_progress(mut self, progress: bool) -> Agent {
        self.progress = progress;
        self
    }

    /// The live metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Whether every source ends by itself (files, glob, counted synthetic).
    pub fn is_finite(&self) -> bool {
        self.config
            .sources
            .iter()
            .all(|s| match (&s.hdf5, &s.synthetic) {
                (Some(h), _) => h.watch_dir.is_none(),
                (_, Some(syn)) => syn.events.is_some(),
                _ => true,
            })
    }

    /// Runs until `shutdown` resolves, or, when every source is finite and
    /// `exit_when_done` is set, until every event is read and acknowledged.
    ///
    /// On shutdown, readers stop, pending events are batched and spooled, and
    /// spooled batches are published for up to `publish.drain_timeout_ms`;
    /// whatever is left stays in the spool for the next start.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<RunReport, AgentError> {
        let started = Instant::now();
        let config = self.config.clone();
        let spool_options = SpoolOptions {
            max_bytes: config.spool.max_bytes,
            segment_bytes: config.spool.segment_bytes,
            sync: config.spool_sync(),
        };
        let (spool, recovery) = Spool::open(&config.spool.dir, spool_options)?;
        let spool = Arc::new(spool);
        spool.report_depth_to(self.metrics.clone());
        let replay_below = spool.next_seq();
        if recovery.pending_batches > 0 {
            tracing::info!(
                batches = recovery.pending_batches,
                bytes = recovery.pending_bytes,
                "republishing batches spooled before the last stop"
            );
        }
        let metrics_task = match &config.metrics.listen {
            Some(addr) => {
                let listener =
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| AgentError::Io {
                            context: format!("metrics.listen {addr}"),
                            source: e,
                        })?;
                tracing::info!(%addr, "metrics endpoint listening");
                Some(tokio::spawn(metrics::serve(listener, self.metrics.clone())))
            }
            None => None,
        };
        let client = connect(&self.config.nats, &self.config.nats.name).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(config.publish.ack_timeout_ms))
            .build(client);
        tokio::pin!(shutdown);
        // Without fsync, a machine crash may lose the spool's tail: files are
        // re-read from after the last batch JetStream stores.
        let mut stored = std::collections::HashMap::new();
        if config.spool_sync() == SpoolSync::Off {
            let stream = config.stream_settings().name;
            for source in config.sources.iter().filter(|s| s.hdf5.is_some()) {
                let subject = config
                    .subject(source)
                    .map_err(|message| AgentError::Source {
                        source_name: source.name.clone(),
                        message,
                    })?
                    .to_string();
                let ids = (config.experiment.as_str(), source.name.as_str(), source.run);
                let tail = tokio::select! {
                    t = resume::stored_tail(&js, &stream, &subject, ids) => t?,
                    _ = &mut shutdown => {
                        return Ok(RunReport::from_metrics(&self.metrics, spool.depth().0, started.elapsed()));
                    }
                };
                stored.insert(source.name.clone(), tail);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let finite = self.is_finite();
        let progress = (self.progress && finite).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {pos}/{len} events {per_sec} [{elapsed_precise}] eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });

        // Sources: one reader and one batcher thread each.
        let mut subjects = Vec::new();
        let mut readers: Vec<JoinHandle<()>> = Vec::new();
        let mut batchers: FuturesUnordered<JoinHandle<Result<(), AgentError>>> =
            FuturesUnordered::new();
        for source in &config.sources {
            let subject = config
                .subject(source)
                .map_err(|message| AgentError::Source {
                    source_name: source.name.clone(),
                    message,
                })?
                .to_string();
            subjects.push(subject.clone());
            let (tx, rx) = sync_channel(READER_QUEUE);
            let ctx = ReaderContext {
                name: source.name.clone(),
                stop: stop.clone(),
                metrics: self.metrics.clone(),
                processor: Processor::new(&source.processing),
                progress: progress.clone(),
            };
            let mut resume = recovery.positions.get(&source.name).cloned();
            if let Some(tail) = stored.get(&source.name).copied().flatten() {
                let merged = resume::merge(resume.clone(), Some(tail));
                if merged != resume {
                    tracing::info!(source = %source.name, next_index = tail.next_index(),
                        "JetStream stores more than the spool: re-reading from there");
                }
                resume = merged;
            }
            if let Some(p) = &resume {
                tracing::info!(source = %source.name, file = ?p.file, file_event = p.file_event,
                    next_index = p.next_index, "resuming after the last spooled batch");
            }
            let source_config = source.clone();
            readers.push(tokio::task::spawn_blocking(move || {
                if let Some(h) = &source_config.hdf5 {
                    run_hdf5(h, &ctx, resume, tx);
                } else if let Some(s) = &source_config.synthetic {
                    run_synthetic(s, &ctx, resume, tx);
                } else if let Some(p) = &source_config.psana {
                    run_psana(p, source_config.run, &ctx, resume, tx);
                }
            }));
            let sink = BatchSink {
                experiment: config.experiment.clone(),
                run: source.run,
                source: source.name.clone(),
                subject,
                encode: config.encode_options(),
                threads: config.encode.threads,
                spool: spool.clone(),
                metrics: self.metrics.clone(),
            };
            let limits = config.batch.clone();
            batchers.push(tokio::task::spawn_blocking(move || {
                run_batcher(rx, limits, sink)
            }));
        }

        // Publisher.
        let (mode_tx, mode_rx) = watch::channel(Mode::Run);
        let publisher = {
            let js = js.clone();
            let spool = spool.clone();
            let metrics = self.metrics.clone();
            let publish = config.publish.clone();
            let settings = config.stream_settings();
            let create = config.stream.create;
            let interval = Duration::from_millis(config.spool.checkpoint_interval_ms.max(1));
            let mut mode = mode_rx;
            tokio::spawn(async move {
                if !ensure_stream(&js, &settings, create, &subjects, &mut mode, &publish).await? {
                    return Ok(());
                }
                tracing::info!(stream = %settings.name, "stream ready");
                Publisher::new(js, spool, publish, metrics, interval, replay_below)
                    .run(mode)
                    .await
            })
        };
        let mut publisher = publisher;
        let drain = Duration::from_millis(config.publish.drain_timeout_ms);

        let mut first_error: Option<AgentError> = None;
        let mut shutting_down = false;
        let mut publisher_result: Option<Result<(), AgentError>> = None;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        // Phase 1: read until the sources end, the signal arrives or something fails.
        loop {
            if batchers.is_empty() && (shutting_down || config.exit_when_done) {
                break;
            }
            let deadline = drain_deadline;
            tokio::select! {
                _ = &mut shutdown, if !shutting_down => {
                    tracing::info!("shutting down: stopping readers and draining");
                    shutting_down = true;
                    stop.store(true, Ordering::Relaxed);
                    drain_deadline = Some(tokio::time::Instant::now() + drain);
                }
                Some(result) = batchers.next(), if !batchers.is_empty() => {
                    let error = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(join) => Some(AgentError::Source {
                            source_name: "?".into(),
                            message: format!("batcher failed: {join}"),
                        }),
                    };
                    if let Some(e) = error {
                        tracing::error!(error = %e, "stopping");
                        first_error.get_or_insert(e);
                        if !shutting_down {
                            shutting_down = true;
                            stop.store(true, Ordering::Relaxed);
                            drain_deadline = Some(tokio::time::Instant::now() + drain);
                        }
                    }
                }
                result = &mut publisher, if publisher_result.is_none() => {
                    let result = result.unwrap_or_else(|join| Err(AgentError::Nats(format!("publisher failed: {join}"))));
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "publisher stopped");
                    }
                    publisher_result = Some(result);
                    // Nothing can be published any more: stop reading.
                    shutting_down = true;
                    stop.store(true, Ordering::Relaxed);
                    spool.close();
                }
                _ = async move {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    // Batchers blocked on a full spool with the broker away: release them.
                    spool.close();
                }
            }
        }
        if let Some(p) = &progress {
            p.finish_and_clear();
        }
        // Phase 2: publish what is spooled.
        if publisher_result.is_none() {
            let _ = mode_tx.send(Mode::Finish);
            let deadline = if shutting_down {
                Some(drain_deadline.unwrap_or_else(|| tokio::time::Instant::now() + drain))
            } else {
                None
            };
            let result = loop {
                let stopping = shutting_down;
                tokio::select! {
                    r = &mut publisher => break r,
                    _ = &mut shutdown, if !shutting_down => {
                        shutting_down = true;
                    }
                    _ = async move {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None if stopping => tokio::time::sleep(drain).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        tracing::warn!("drain timeout: leaving unacknowledged batches in the spool");
                        let _ = mode_tx.send(Mode::Abort);
                        break (&mut publisher).await;
                    }
                }
            };
            publisher_result =
                Some(result.unwrap_or_else(|join| {
                    Err(AgentError::Nats(format!("publisher failed: {join}")))
                }));
        }
        stop.store(true, Ordering::Relaxed);
        spool.close();
        for reader in readers {
            let _ = reader.await;
        }
        while batchers.next().await.is_some() {}
        spool.checkpoint()?;
        if let Some(task) = metrics_task {
            task.abort();
        }
        let (spooled_at_exit, _) = spool.depth();
        let report = RunReport::from_metrics(&self.metrics, spooled_at_exit, started.elapsed());
        tracing::info!(?report, "agent stopped");
        if let Some(e) = first_error {
            return Err(e);
        }
        publisher_result.unwrap_or(Ok(()))?;
        Ok(report)
    }
}

/// Connects to NATS as configured (credentials file or nkey seed file),
/// retrying the first connection and reconnecting forever: a broker outage
/// must pause an agent or worker, never end it.
pub async fn connect(nats: &NatsConfig, name: &str) -> Result<async_nats::Client, AgentError> {
    let mut options = lclstream_nats::connection_events::log_events_with_url(
        async_nats::ConnectOptions::new(),
        &nats.url,
        name,
    )
    .name(name)
    .retry_on_initial_connect()
    .max_reconnects(None)
    .reconnect_delay_callback(|attempts| Duration::from_millis((100 * attempts as u64).min(1000)));
    if let Some(path) = &nats.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| AgentError::Io {
                context: format!("nats.credentials_file {}", path.display()),
                source: e,
            })?;
    }
    if let Some(path) = &nats.nkey_seed_file {
        let seed = std::fs::read_to_string(path).map_err(|e| AgentError::Io {
            context: format!("nats.nkey_seed_file {}", path.display()),
            source: e,
        })?;
        let seed = seed.trim().to_string();
        // Behind the auth callout a facility key may subscribe only to its
        // own inbox, `_INBOX_<public key>`.
        let key = nkeys::KeyPair::from_seed(&seed).map_err(|e| {
            AgentError::Nats(format!(
                "nats.nkey_seed_file {} does not hold a user nkey seed: {e}",
                path.display()
            ))
        })?;
        options = options.nkey(seed).custom_inbox_prefix(
            lclstream_nats::protocol::naming::key_inbox_prefix(&key.public_key()),
        );
    }
    options
        .connect(lclstream_nats::server_urls::server_urls(&nats.url))
        .await
        .map_err(|e| AgentError::Nats(format!("connecting to {}: {e}", nats.url)))
}

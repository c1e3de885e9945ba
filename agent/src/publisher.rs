//! Publishing spooled batches into JetStream with pipelined acks.
//!
//! Messages are published in spool order while up to `max_in_flight` acks
//! are awaited concurrently. A batch is acknowledged in the spool once every
//! message of it is acknowledged. On any failure (timeout, disconnection,
//! rejection) the publisher stops sending, collects the acks still in
//! flight, waits with exponential backoff and resumes from the first
//! unacknowledged batch, in order; the batch ids make JetStream drop what it
//! already stored.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::Context;
use futures::stream::{FuturesOrdered, StreamExt};
use lclstream_nats::streams::StreamSettings;
use lclstream_nats::subjects::subject_within;
use tokio::sync::watch;

use crate::config::PublishConfig;
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolRecord};
use crate::AgentError;

/// What the agent asks of the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Publish whatever is spooled, forever.
    Run,
    /// Publish until every spooled batch is acknowledged, then return.
    Finish,
    /// Return now (what is spooled stays for the next start).
    Abort,
}

type AckFuture = Pin<Box<dyn Future<Output = AckResult> + Send>>;

struct AckResult {
    seq: u64,
    last_of_batch: bool,
    first_of_batch: bool,
    sent: Instant,
    outcome: Result<bool, String>,
    meta: Option<Arc<BatchMeta>>,
}

struct BatchMeta {
    events: u64,
    raw: u64,
    wire: u64,
    messages: u64,
}

/// Creates or checks the stream, retrying until it succeeds or `mode` becomes `Abort`.
pub async fn ensure_stream(
    js: &Context,
    settings: &StreamSettings,
    create: bool,
    subjects: &[String],
    mode: &mut watch::Receiver<Mode>,
    retry: &PublishConfig,
) -> Result<bool, AgentError> {
    let mut delay = Duration::from_millis(retry.retry_initial_ms);
    loop {
        let request = async {
            if create {
                js.get_or_create_stream(settings.to_config())
                    .await
                    .map_err(|e| e.to_string())
            } else {
                js.get_stream(&settings.name)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let result = tokio::select! {
            r = request => r,
            _ = aborted(mode) => return Ok(false),
        };
        match result {
            Ok(stream) => {
                let info = stream.cached_info();
                for subject in subjects {
                    if !info
                        .config
                        .subjects
                        .iter()
                        .any(|s| subject_within(subject, s))
                    {
                        return Err(AgentError::Nats(format!(
                            "stream {} captures {:?}, not the subject {subject}",
                            settings.name, info.config.subjects
                        )));
                    }
                }
                if info.config.duplicate_window < settings.duplicate_window {
                    tracing::warn!(stream = %settings.name,
                        window = ?info.config.duplicate_window, wanted = ?settings.duplicate_window,
                        "the stream's duplicate window is shorter than configured: a replay after a long outage may duplicate");
                }
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(stream = %settings.name, error = %e, retry_in = ?delay,
                    "cannot create or check the stream");
            }
        }
        if wait_or_abort(mode, delay).await {
            return Ok(false);
        }
        delay = (delay * 2).min(Duration::from_millis(retry.retry_max_ms));
    }
}

/// Resolves once the mode is `Abort` (or its sender is gone).
async fn aborted(mode: &mut watch::Receiver<Mode>) {
    while *mode.borrow() != Mode::Abort {
        if mode.changed().await.is_err() {
            return;
        }
    }
}

/// Sleeps for `delay`; `true` when the mode became `Abort` meanwhile.
async fn wait_or_abort(mode: &mut watch::Receiver<Mode>, delay: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        if *mode.borrow() == Mode::Abort {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return *mode.borrow() == Mode::Abort,
            changed = mode.changed() => if changed.is_err() { return true },
        }
    }
}

/// The publisher's state.
pub struct Publisher {
    js: Context,
    spool: Arc<Spool>,
    config: PublishConfig,
    metrics: Arc<Metrics>,
    checkpoint_interval: Duration,
    /// Records below this seq were spooled before start: republished.
    replay_below: u64,
}

impl Publisher {
    /// A publisher of `spool` into `js`; batches below seq `replay_below`
    /// were spooled by an earlier run and count as republished.
    pub fn new(
        js: Context,
        spool: Arc<Spool>,
        config: PublishConfig,
        metrics: Arc<Metrics>,
        checkpoint_interval: Duration,
        replay_below: u64,
    ) -> Publisher {
        Publisher {
            js,
            spool,
            config,
            metrics,
            checkpoint_interval,
            replay_below,
        }
    }

    fn update_depth(&self) {
        let (batches, bytes) = self.spool.depth();
        self.metrics.spool_batches.store(batches, Ordering::Relaxed);
        self.metrics.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    async fn publish_one(
        &self,
        record: &mut SpoolRecord,
        index: usize,
    ) -> Result<AckFuture, (bool, String)> {
        // Take the payload out: each message is published once per read of the record.
        let message = std::mem::replace(
            &mut record.messages[index],
            crate::spool::SpoolMessage {
                headers: Vec::new(),
                payload: Vec::new(),
            },
        )
        .into_wire();
        let sent = Instant::now();
        let publish =
            self.js
                .publish_with_headers(record.subject.clone(), message.headers, message.payload);
        let ack: PublishAckFuture =
            match tokio::time::timeout(Duration::from_millis(self.config.ack_timeout_ms), publish)
                .await
            {
                Ok(Ok(ack)) => ack,
                Ok(Err(e)) => {
                    let fatal = e.kind() == PublishErrorKind::MaxPayloadExceeded;
                    return Err((fatal, format!("batch {}: {e}", record.batch_id)));
                }
                Err(_) => {
                    return Err((
                        false,
                        format!("batch {}: publish timed out", record.batch_id),
                    ))
                }
            };
        let seq = record.seq;
        let last_of_batch = index + 1 == record.messages.len();
        let meta = last_of_batch.then(|| {
            Arc::new(BatchMeta {
                events: record.events as u64,
                raw: record.raw_size,
                wire: record.wire_size,
                messages: record.messages.len() as u64,
            })
        });
        let id = record.batch_id.clone();
        Ok(Box::pin(async move {
            let outcome = ack
                .await
                .map(|a| a.duplicate)
                .map_err(|e| format!("batch {id}: {e}"));
            AckResult {
                seq,
                last_of_batch,
                first_of_batch: index == 0,
                sent,
                outcome,
                meta,
            }
        }))
    }

    /// Publishes until `mode` says stop; returns on `Finish` once everything
    /// spooled is acknowledged, on `Abort` at once, or on a fatal error.
    pub async fn run(self, mut mode: watch::Receiver<Mode>) -> Result<(), AgentError> {
        let mut reader = self.spool.reader(self.spool.first_unacked());
        let mut in_flight: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        // The record being published and the index of its next message.
        let mut current: VecDeque<(SpoolRecord, usize)> = VecDeque::new();
        let mut failed = false;
        let mut batch_failed = false;
        let mut delay = Duration::from_millis(self.config.retry_initial_ms);
        let mut last_checkpoint = Instant::now();
        loop {
            let m = *mode.borrow();
            if m == Mode::Abort {
                return self.spool.checkpoint();
            }
            // Fill the window. Nothing is handed to the client while it is
            // disconnected: it would queue in memory for the reconnect.
            let connected = self.js.client().connection_state() == State::Connected;
            if !connected
                && !failed
                && in_flight.is_empty()
                && (!current.is_empty() || reader.position() < self.spool.next_seq())
            {
                failed = true;
            }
            while connected && !failed && in_flight.len() < self.config.max_in_flight {
                if current.is_empty() {
                    match reader.next_record()? {
                        Some(record) => current.push_back((record, 0)),
                        None => break,
                    }
                }
                let (record, index) = current.front_mut().expect("a record");
                match self.publish_one(record, *index).await {
                    Ok(fut) => {
                        in_flight.push_back(fut);
                        *index += 1;
                        if *index == record.messages.len() {
                            current.pop_front();
                        }
                    }
                    Err((true, message)) => {
                        return Err(AgentError::Nats(format!(
                            "{message}; lower encode.max_payload to the server's max_payload"
                        )));
                    }
                    Err((false, message)) => {
                        tracing::warn!(error = %message, "publish failed");
                        self.metrics.publish_errors.fetch_add(1, Ordering::Relaxed);
                        failed = true;
                    }
                }
            }
            if last_checkpoint.elapsed() >= self.checkpoint_interval {
                self.spool.checkpoint()?;
                last_checkpoint = Instant::now();
            }
            if in_flight.is_empty() {
                if failed {
                    tracing::info!(retry_in = ?delay, from = self.spool.first_unacked(),
                        "republishing from the first unacknowledged batch");
                    if wait_or_abort(&mut mode, delay).await {
                        return self.spool.checkpoint();
                    }
                    delay = (delay * 2).min(Duration::from_millis(self.config.retry_max_ms));
                    reader.seek(self.spool.first_unacked());
                    current.clear();
                    failed = false;
                    continue;
                }
                if m == Mode::Finish && self.spool.first_unacked() >= self.spool.next_seq() {
                    return self.spool.checkpoint();
                }
                self.update_depth();
                tokio::select! {
                    _ = self.spool.wait_appended() => {}
                    _ = mode.changed() => {}
                    _ = tokio::time::sleep(self.checkpoint_interval) => {}
                }
                continue;
            }
            let can_send = !failed && in_flight.len() < self.config.max_in_flight;
            tokio::select! {
                result = in_flight.next() => {
                    let Some(result) = result else { continue };
                    if result.first_of_batch {
                        batch_failed = false;
                    }
                    match result.outcome {
                        Ok(duplicate) => {
                            self.metrics.observe_ack(result.sent.elapsed());
                            if duplicate {
                                self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            if !failed {
                                delay = Duration::from_millis(self.config.retry_initial_ms);
                            }
                        }
                        Err(message) => {
                            tracing::warn!(error = %message, "publish not acknowledged");
                            self.metrics.publish_errors.fetch_add(1, Ordering::Relaxed);
                            batch_failed = true;
                            failed = true;
                        }
                    }
                    if result.last_of_batch && !batch_failed && self.spool.ack(result.seq) {
                        if let Some(meta) = result.meta {
                            let m = &self.metrics;
                            m.batches_published.fetch_add(1, Ordering::Relaxed);
                            m.events_published.fetch_add(meta.events, Ordering::Relaxed);
                            m.bytes_raw.fetch_add(meta.raw, Ordering::Relaxed);
                            m.bytes_wire.fetch_add(meta.wire, Ordering::Relaxed);
                            m.messages_published.fetch_add(meta.messages, Ordering::Relaxed);
                            if result.seq < self.replay_below {
                                m.batches_republished.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        self.update_depth();
                    }
                }
                _ = self.spool.wait_appended(), if can_send => {}
                _ = mode.changed() => {}
            }
        }
    }
}

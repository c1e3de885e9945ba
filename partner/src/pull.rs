//! Pulling a granted dataset: batches within the pull limits, reassembly,
//! decoding, writing, then acknowledging.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use lclstream_nats::wire::{self, headers as h, DecodeLimits, Reassembler};

use crate::client::{PartnerClient, PartnerError};
use crate::sink::{BatchInfo, EventSink};
use lclstream_nats::protocol::requests::{DatasetGrant, End};

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Messages per pull request; 0 takes the grant's limit.
    pub batch_messages: usize,
    /// Bytes per pull request; 0 takes the grant's limit.
    pub batch_bytes: usize,
    /// Stop after this many events.
    pub max_events: Option<u64>,
    /// Stop after this long without a message.
    pub idle_timeout: Duration,
    /// How long one pull request waits on the server.
    pub expires: Duration,
    /// Limits protecting the decoder.
    pub decode_limits: DecodeLimits,
    /// Batches decoded at once on blocking threads (1: decode inline).
    /// Events still reach the sink in arrival order, so order per subject is
    /// kept, and messages are acknowledged only after the sink flushed them.
    pub decode_threads: usize,
}

/// The default number of decode threads: the available cores.
pub fn default_decode_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            batch_messages: 0,
            batch_bytes: 0,
            max_events: None,
            idle_timeout: Duration::from_secs(30),
            expires: Duration::from_secs(2),
            decode_limits: DecodeLimits::default(),
            decode_threads: default_decode_threads(),
        }
    }
}

/// Why a pull ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_events` events were written.
    MaxEvents,
    /// No message arrived within the idle timeout.
    Idle,
    /// A message beyond the dataset's end arrived.
    EndOfDataset,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSummary {
    /// Events written to the sink.
    pub events: u64,
    /// Events skipped because the sink already had them (redeliveries).
    pub duplicates: u64,
    /// Complete batches processed.
    pub batches: u64,
    /// Messages received (chunks count one each).
    pub messages: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Messages that could not be decoded and were terminated.
    pub rejected: u64,
    /// Why the pull ended.
    pub stop: StopReason,
}

fn beyond_end(end: &Option<End>, info: &jetstream::message::Info<'_>) -> bool {
    match end {
        Some(End::Sequence(last)) => info.stream_sequence > *last,
        Some(End::Time(t)) => info.published > *t,
        None => false,
    }
}

impl PartnerClient {
    /// Pulls `grant`'s consumer into `sink` until `max_events`, the idle
    /// timeout or the dataset's end. Safe to call again after a crash: the
    /// consumer remembers what was acknowledged.
    pub async fn pull(
        &self,
        grant: &DatasetGrant,
        options: &PullOptions,
        sink: &mut dyn EventSink,
    ) -> Result<PullSummary, PartnerError> {
        // Consumer info only: partners may not read stream info or create consumers.
        let consumer: PullConsumer = self
            .jetstream(&grant.api_prefix)
            .get_consumer_from_stream(&grant.consumer, &grant.stream)
            .await
            .map_err(|e| {
                PartnerError::Nats(format!(
                    "looking up consumer {} on {}: {e}",
                    grant.consumer, grant.stream
                ))
            })?;
        let limit = |asked: usize, granted: i64| {
            let granted = if granted > 0 {
                granted as usize
            } else {
                usize::MAX
            };
            if asked == 0 {
                granted
            } else {
                asked.min(granted)
            }
        };
        let batch_messages = limit(options.batch_messages, grant.pull.max_batch).min(4096);
        let batch_bytes = limit(options.batch_bytes, grant.pull.max_bytes).min(1 << 30);
        let mut reassembler = Reassembler::new(options.decode_limits);
        let mut held: HashMap<String, Vec<jetstream::Message>> = HashMap::new();
        let threads = options.decode_threads.max(1);
        let mut pending: VecDeque<PendingBatch> = VecDeque::new();
        let summary = PullSummary {
            events: 0,
            duplicates: 0,
            batches: 0,
            messages: 0,
            bytes: 0,
            rejected: 0,
            stop: StopReason::Idle,
        };
        let mut delivery = Delivery {
            sink,
            summary,
            options,
            client: &self.client,
            acks: VecDeque::new(),
        };
        let mut last_message = Instant::now();
        loop {
            if options
                .max_events
                .is_some_and(|max| delivery.summary.events >= max)
            {
                delivery.summary.stop = StopReason::MaxEvents;
                break;
            }
            let idle_left = options.idle_timeout.saturating_sub(last_message.elapsed());
            if idle_left.is_zero() {
                delivery.summary.stop = StopReason::Idle;
                break;
            }
            let expires = options
                .expires
                .min(idle_left)
                .max(Duration::from_millis(100));
            let mut batch = consumer
                .batch()
                .max_messages(batch_messages)
                .max_bytes(batch_bytes)
                .expires(expires)
                .messages()
                .await
                .map_err(|e| PartnerError::Nats(format!("pull request: {e}")))?;
            // The batch ends on its own at `expires`; the outer timeout only guards a lost server.
            let deadline = expires + Duration::from_secs(10);
            // Once stopping, messages still arriving for this pull request are handed back.
            let mut stopping: Option<StopReason> = None;
            let mut delivered = 0u64;
            loop {
                // While the oldest batch decodes, also take the next message;
                // once it is decoded, deliver it without waiting for more
                // messages (acks must not wait for the pull request to end).
                let received = match pending.front_mut().map(|f| &mut f.decoding) {
                    Some(Decoding::Started(handle)) => tokio::select! {
                        joined = handle => {
                            let front = pending.front_mut().expect("a pending batch");
                            front.decoding = match joined {
                                Ok(result) => Decoding::Done(Box::new(result)),
                                Err(e) => Decoding::Failed(e.to_string()),
                            };
                            None
                        }
                        next = tokio::time::timeout(deadline, batch.next()) => Some(next),
                    },
                    Some(_) => None,
                    None => Some(tokio::time::timeout(deadline, batch.next()).await),
                };
                let Some(received) = received else {
                    while pending.front().is_some_and(PendingBatch::is_decoded) {
                        let front = pending.pop_front().expect("a pending batch");
                        delivery.complete(front, &mut stopping).await?;
                    }
                    continue;
                };
                let next = match received {
                    Ok(Some(next)) => next,
                    Ok(None) | Err(_) => break,
                };
                let message = match next {
                    Ok(m) => m,
                    Err(e) => {
                        let text = e.to_string();
                        // The server also ends a request that delivered messages
                        // with this status when the next one does not fit in the
                        // bytes left: pull again. Fatal only if nothing fits.
                        if text.contains("Exceeds MaxBytes") && delivered > 0 {
                            break;
                        }
                        if text.contains("Exceeds MaxBytes")
                            || text.contains("Exceeded MaxRequest")
                            || text.contains("Consumer Deleted")
                        {
                            return Err(PartnerError::Nats(format!("pull: {text}")));
                        }
                        // Paused consumer, leadership change...: try again shortly.
                        tracing::debug!("pull: {text}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                };
                delivered += 1;
                if stopping.is_some() {
                    // Redeliveries come in the order of the naks: hand back
                    // what is held in stream order before anything newer.
                    hand_back(&mut delivery, &mut pending, &mut held, &mut stopping).await?;
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    continue;
                }
                last_message = Instant::now();
                let info = message
                    .info()
                    .map_err(|e| PartnerError::Protocol(format!("message metadata: {e}")))?;
                let sequence = info.stream_sequence;
                if beyond_end(&grant.end, &info) {
                    // Batches before it belong to the dataset: deliver them first.
                    while let Some(front) = pending.pop_front() {
                        delivery.complete(front, &mut stopping).await?;
                    }
                    // Not part of the dataset: leave it to whoever reads on.
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    stopping = Some(StopReason::EndOfDataset);
                    continue;
                }
                delivery.summary.messages += 1;
                delivery.summary.bytes += message.payload.len() as u64;
                let headers = message.headers.clone().unwrap_or_default();
                let whole = match reassembler.push(&headers, message.payload.clone()) {
                    Ok(Some(whole)) => whole,
                    Ok(None) => {
                        let id = h::get(&headers, h::BATCH_ID)
                            .unwrap_or_default()
                            .to_string();
                        held.entry(id).or_default().push(message);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("dropping message {sequence} on {}: {e}", message.subject);
                        delivery.summary.rejected += 1;
                        let _ = message.ack_with(AckKind::Term).await;
                        continue;
                    }
                };
                let id = h::get(&headers, h::BATCH_ID)
                    .unwrap_or_default()
                    .to_string();
                let mut messages = held.remove(&id).unwrap_or_default();
                messages.push(message);
                let limits = options.decode_limits;
                let wire_bytes = whole.payload.len() as u64;
                let decoding = if threads > 1 {
                    Decoding::Started(tokio::task::spawn_blocking(move || {
                        wire::decode(Some(&whole.headers), &whole.payload, &limits)
                    }))
                } else {
                    Decoding::Done(Box::new(wire::decode(
                        Some(&whole.headers),
                        &whole.payload,
                        &limits,
                    )))
                };
                pending.push_back(PendingBatch {
                    id,
                    sequence,
                    wire_bytes,
                    messages,
                    decoding,
                });
                // Hand batches to the sink in arrival order: wait for the
                // oldest when the window is full, else take the finished ones.
                while pending.len() > threads
                    || pending.front().is_some_and(PendingBatch::is_decoded)
                {
                    let front = pending.pop_front().expect("a pending batch");
                    delivery.complete(front, &mut stopping).await?;
                }
            }
            while let Some(front) = pending.pop_front() {
                delivery.complete(front, &mut stopping).await?;
            }
            if let Some(reason) = stopping {
                delivery.summary.stop = reason;
                break;
            }
        }
        // Chunks of incomplete batches: give them back rather than wait for ack_wait.
        nak_held(&mut held).await;
        // Every written batch's ack is confirmed before the pull reports it.
        delivery.settle_acks(0).await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
        Ok(delivery.summary)
    }
}

/// Naks the chunks of incomplete batches in stream order.
async fn nak_held(held: &mut HashMap<String, Vec<jetstream::Message>>) {
    let mut messages: Vec<(u64, jetstream::Message)> = held
        .drain()
        .flat_map(|(_, m)| m)
        .map(|m| (m.info().map(|i| i.stream_sequence).unwrap_or(0), m))
        .collect();
    messages.sort_by_key(|(seq, _)| *seq);
    for (_, m) in messages {
        let _ = m.ack_with(AckKind::Nak(None)).await;
    }
}

/// Once stopping: every pending batch is handed back (or, at the dataset's
/// end, delivered), then the held chunks, so redeliveries keep stream order.
async fn hand_back(
    delivery: &mut Delivery<'_>,
    pending: &mut VecDeque<PendingBatch>,
    held: &mut HashMap<String, Vec<jetstream::Message>>,
    stopping: &mut Option<StopReason>,
) -> Result<(), PartnerError> {
    while let Some(front) = pending.pop_front() {
        delivery.complete(front, stopping).await?;
    }
    nak_held(held).await;
    Ok(())
}

/// A decode that runs on a blocking thread, or that already ran inline.
enum Decoding {
    Started(tokio::task::JoinHandle<Result<wire::Batch, wire::WireError>>),
    Done(Box<Result<wire::Batch, wire::WireError>>),
    /// The decoding thread panicked.
    Failed(String),
}

/// A complete batch (all its chunks received) on its way to the sink.
struct PendingBatch {
    id: String,
    sequence: u64,
    /// Payload bytes as they crossed the wire (all chunks).
    wire_bytes: u64,
    messages: Vec<jetstream::Message>,
    decoding: Decoding,
}

impl PendingBatch {
    fn is_decoded(&self) -> bool {
        match &self.decoding {
            Decoding::Started(handle) => handle.is_finished(),
            Decoding::Done(_) | Decoding::Failed(_) => true,
        }
    }
}

/// The sink side of a pull: writes decoded batches in arrival order, flushes,
/// then acknowledges (never before the sink has the events).
struct Delivery<'a> {
    sink: &'a mut dyn EventSink,
    summary: PullSummary,
    options: &'a PullOptions,
    client: &'a async_nats::Client,
    /// Confirmed acks still waiting for the server's reply, oldest first.
    /// They run concurrently so that receiving and decoding never wait one
    /// round trip per message; a dropped handle lets its ack finish.
    acks: VecDeque<tokio::task::JoinHandle<Result<(), PartnerError>>>,
}

/// Confirmed acks allowed in flight before the next batch waits for the oldest.
const MAX_ACKS_IN_FLIGHT: usize = 256;

impl Delivery<'_> {
    /// Collects finished acks, then waits for the oldest until at most
    /// `keep` are in flight; the first failed ack is the pull's error.
    async fn settle_acks(&mut self, keep: usize) -> Result<(), PartnerError> {
        while let Some(front) = self.acks.front() {
            if !front.is_finished() && self.acks.len() <= keep {
                break;
            }
            let handle = self.acks.pop_front().expect("an ack in flight");
            handle
                .await
                .map_err(|e| PartnerError::Nats(format!("ack task: {e}")))??;
        }
        Ok(())
    }

    async fn complete(
        &mut self,
        batch: PendingBatch,
        stopping: &mut Option<StopReason>,
    ) -> Result<(), PartnerError> {
        let PendingBatch {
            id,
            sequence,
            wire_bytes,
            messages,
            decoding,
        } = batch;
        if *stopping == Some(StopReason::MaxEvents) {
            // Received before the stop, behind a batch that reached the limit:
            // hand it back for the next pull.
            for m in &messages {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
            return Ok(());
        }
        let decoded = match decoding {
            Decoding::Started(handle) => handle
                .await
                .map_err(|e| PartnerError::Protocol(format!("decoding batch {id}: {e}")))?,
            Decoding::Done(result) => *result,
            Decoding::Failed(e) => {
                return Err(PartnerError::Protocol(format!("decoding batch {id}: {e}")))
            }
        };
        let decoded = match decoded {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("dropping undecodable batch {id} at {sequence}: {e}");
                self.summary.rejected += messages.len() as u64;
                for m in messages {
                    let _ = m.ack_with(AckKind::Term).await;
                }
                return Ok(());
            }
        };
        let batch_info = BatchInfo {
            experiment: decoded.experiment.clone(),
            run: decoded.run,
            source: decoded.source.clone(),
            subject: messages[messages.len() - 1].subject.to_string(),
            stream_sequence: sequence,
            wire_bytes,
        };
        let room = self
            .options
            .max_events
            .map(|max| max.saturating_sub(self.summary.events))
            .unwrap_or(u64::MAX);
        let mut fresh = Vec::new();
        let mut complete = true;
        for event in decoded.events {
            if self.sink.contains(&batch_info.key(event.index)) {
                self.summary.duplicates += 1;
            } else if (fresh.len() as u64) < room {
                fresh.push(event);
            } else {
                complete = false;
            }
        }
        let written = fresh.len() as u64;
        if written > 0 {
            if let Err(e) = self
                .sink
                .write(&batch_info, fresh)
                .and_then(|_| self.sink.flush())
            {
                // Hand the batch back at once (a rerun gets it again and
                // reports the same error, never "complete") and stop:
                // retrying here would fail the same way forever. Batches
                // behind it come back after the ack wait.
                for m in &messages {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await;
                return Err(PartnerError::Sink(format!(
                    "batch {id} (stream sequence {sequence}, {}) cannot be written: {e:#}; \
                     it was handed back and is delivered again on the next pull",
                    batch_info.subject
                )));
            }
        }
        self.summary.events += written;
        if complete {
            self.summary.batches += 1;
            for m in messages {
                // Confirmed ack: once it returns the server will not redeliver.
                self.acks.push_back(tokio::spawn(async move {
                    m.double_ack()
                        .await
                        .map_err(|e| PartnerError::Nats(format!("ack of {sequence}: {e}")))
                }));
            }
            self.settle_acks(MAX_ACKS_IN_FLIGHT).await?;
        } else {
            // Only part of the batch was wanted: hand it back at once
            // (the written part is skipped on redelivery by a sink that remembers).
            for m in &messages {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
            *stopping = Some(StopReason::MaxEvents);
            return Ok(());
        }
        if self
            .options
            .max_events
            .is_some_and(|max| self.summary.events >= max)
        {
            *stopping = Some(StopReason::MaxEvents);
        }
        Ok(())
    }
}

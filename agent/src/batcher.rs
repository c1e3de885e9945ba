//! Batching events by count, bytes and linger time, then encoding and spooling them.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lclstream_nats::wire::{self, Batch, EncodeOptions, Event};

use crate::config::BatchConfig;
use crate::metrics::Metrics;
use crate::source::SourceMessage;
use crate::spool::{Position, Spool, SpoolRecord};
use crate::AgentError;

/// Accumulates events until a limit is reached.
#[derive(Debug)]
pub struct Batcher {
    limits: BatchConfig,
    events: Vec<Event>,
    bytes: usize,
    position: Option<Position>,
    started: Option<Instant>,
}

impl Batcher {
    /// An empty batcher with these limits.
    pub fn new(limits: BatchConfig) -> Batcher {
        Batcher {
            limits,
            events: Vec::new(),
            bytes: 0,
            position: None,
            started: None,
        }
    }

    /// Adds an event; returns a full batch to flush first when the event
    /// would push the pending one over `max_bytes`, and/or after adding.
    pub fn push(
        &mut self,
        event: Event,
        position: Position,
        now: Instant,
    ) -> Vec<(Vec<Event>, Position)> {
        let mut ready = Vec::new();
        let size = event.payload_bytes();
        if !self.events.is_empty() && self.bytes + size > self.limits.max_bytes {
            ready.extend(self.take());
        }
        if self.events.is_empty() {
            self.started = Some(now);
        }
        self.bytes += size;
        self.events.push(event);
        self.position = Some(position);
        if self.events.len() >= self.limits.max_events || self.bytes >= self.limits.max_bytes {
            ready.extend(self.take());
        }
        ready
    }

    /// When the pending batch must be flushed because of its linger time.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.limits.linger())
    }

    /// Takes the pending batch, if any.
    pub fn take(&mut self) -> Option<(Vec<Event>, Position)> {
        if self.events.is_empty() {
            return None;
        }
        self.bytes = 0;
        self.started = None;
        let position = self.position.take().unwrap_or_default();
        Some((std::mem::take(&mut self.events), position))
    }
}

/// What a batcher needs to encode and spool batches.
pub struct BatchSink {
    /// Experiment.
    pub experiment: String,
    /// Run.
    pub run: u32,
    /// Source name.
    pub source: String,
    /// Subject.
    pub subject: String,
    /// Codec options.
    pub encode: EncodeOptions,
    /// Encoding threads (batches are encoded in parallel, spooled in order).
    pub threads: usize,
    /// The spool.
    pub spool: Arc<Spool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// What an encoding thread needs.
struct EncodeContext {
    experiment: String,
    run: u32,
    source: String,
    subject: String,
    encode: EncodeOptions,
}

impl EncodeContext {
    /// Encodes one batch into a spool record (seq assigned on append).
    fn record(&self, events: Vec<Event>, position: Position) -> Result<SpoolRecord, AgentError> {
        let count = events.len() as u32;
        let batch = Batch::new(&self.experiment, self.run, &self.source, events).map_err(|e| {
            AgentError::Source {
                source_name: self.source.clone(),
                message: format!("building a batch: {e}"),
            }
        })?;
        let (first, last) = (batch.first, batch.last);
        let encoded = wire::encode(batch, &self.encode).map_err(|e| AgentError::Source {
            source_name: self.source.clone(),
            message: format!("encoding events {first}..={last}: {e}"),
        })?;
        Ok(SpoolRecord::new(
            &self.source,
            &self.subject,
            &encoded,
            first,
            last,
            count,
            position,
        ))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Encodes batches on worker threads and appends them to the spool in submission order.
struct OrderedEncoder {
    context: Arc<EncodeContext>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<std::thread::JoinHandle<()>>,
    in_flight: VecDeque<Receiver<Result<SpoolRecord, AgentError>>>,
    limit: usize,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
}

impl OrderedEncoder {
    fn new(sink: BatchSink) -> OrderedEncoder {
        let threads = sink.threads.max(1);
        let (tx, rx) = sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("encode-{}-{i}", sink.source))
                    .spawn(move || loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    })
                    .expect("spawning an encoding thread")
            })
            .collect();
        OrderedEncoder {
            context: Arc::new(EncodeContext {
                experiment: sink.experiment,
                run: sink.run,
                source: sink.source,
                subject: sink.subject,
                encode: sink.encode,
            }),
            jobs: Some(tx),
            workers,
            in_flight: VecDeque::new(),
            limit: threads + 1,
            spool: sink.spool,
            metrics: sink.metrics,
        }
    }

    /// Queues a batch; appends finished ones. `false` when the spool was closed.
    fn submit(&mut self, events: Vec<Event>, position: Position) -> Result<bool, AgentError> {
        while self.in_flight.len() >= self.limit {
            if !self.append_front()? {
                return Ok(false);
            }
        }
        let (tx, rx) = sync_channel(1);
        let context = self.context.clone();
        let job: Job = Box::new(move || {
            let _ = tx.send(context.record(events, position));
        });
        self.jobs
            .as_ref()
            .expect("encoder open")
            .send(job)
            .map_err(|_| AgentError::Source {
                source_name: self.context.source.clone(),
                message: "encoding threads stopped".into(),
            })?;
        self.in_flight.push_back(rx);
        self.append_ready()
    }

    /// Appends the oldest batch, waiting for its encoding.
    fn append_front(&mut self) -> Result<bool, AgentError> {
        let Some(rx) = self.in_flight.pop_front() else {
            return Ok(true);
        };
        let record = rx.recv().map_err(|_| AgentError::Source {
            source_name: self.context.source.clone(),
            message: "an encoding thread stopped".into(),
        })??;
        match self.spool.append(record)? {
            Some(_) => {
                self.metrics.batches_spooled.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            None => {
                self.in_flight.clear();
                Ok(false)
            }
        }
    }

    /// Appends finished batches at the front without waiting.
    fn append_ready(&mut self) -> Result<bool, AgentError> {
        while let Some(front) = self.in_flight.front() {
            match front.try_recv() {
                Ok(result) => {
                    self.in_flight.pop_front();
                    let record = result?;
                    match self.spool.append(record)? {
                        Some(_) => {
                            self.metrics.batches_spooled.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            self.in_flight.clear();
                            return Ok(false);
                        }
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(AgentError::Source {
                        source_name: self.context.source.clone(),
                        message: "an encoding thread stopped".into(),
                    })
                }
            }
        }
        Ok(true)
    }

    /// Appends every queued batch.
    fn finish(&mut self) -> Result<bool, AgentError> {
        while !self.in_flight.is_empty() {
            if !self.append_front()? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl Drop for OrderedEncoder {
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Runs a batcher until its reader is done; returns the reader's error, if any.
pub fn run_batcher(
    rx: Receiver<SourceMessage>,
    limits: BatchConfig,
    sink: BatchSink,
) -> Result<(), AgentError> {
    let low_latency = limits.low_latency;
    let mut batcher = Batcher::new(limits);
    let mut encoder = OrderedEncoder::new(sink);
    // Low latency looks one message ahead to tell whether the source is idle.
    let mut ahead: Option<SourceMessage> = None;
    loop {
        let timeout = match batcher.deadline() {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None if !encoder.in_flight.is_empty() => Duration::from_millis(5),
            None => Duration::from_millis(500),
        };
        let message = match ahead.take() {
            Some(m) => Some(m),
            None => match rx.recv_timeout(timeout) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(SourceMessage::Done),
            },
        };
        let event_handled = matches!(message, Some(SourceMessage::Event(..)));
        match message {
            None => {
                if batcher.deadline().is_some_and(|d| d <= Instant::now()) {
                    if let Some((events, position)) = batcher.take() {
                        if !encoder.submit(events, position)? {
                            return Ok(());
                        }
                    }
                }
                // Idle: nothing encoded waits longer than necessary.
                if !encoder.finish()? {
                    return Ok(());
                }
            }
            Some(SourceMessage::Event(event, position)) => {
                for (events, position) in batcher.push(*event, position, Instant::now()) {
                    if !encoder.submit(events, position)? {
                        return Ok(());
                    }
                }
            }
            Some(SourceMessage::Done) => {
                if let Some((events, position)) = batcher.take() {
                    encoder.submit(events, position)?;
                }
                encoder.finish()?;
                return Ok(());
            }
            Some(SourceMessage::Failed(error)) => {
                // Events read before the failure are complete and valid.
                if let Some((events, position)) = batcher.take() {
                    encoder.submit(events, position)?;
                }
                encoder.finish()?;
                return Err(error);
            }
        }
        if low_latency && event_handled {
            match rx.try_recv() {
                Ok(m) => ahead = Some(m),
                Err(TryRecvError::Disconnected) => ahead = Some(SourceMessage::Done),
                Err(TryRecvError::Empty) => {
                    // The source is idle: send what is pending now.
                    if let Some((events, position)) = batcher.take() {
                        if !encoder.submit(events, position)? {
                            return Ok(());
                        }
                    }
                    if !encoder.finish()? {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lclstream_nats::wire::Array;

    fn event(index: u64, pixels: usize) -> Event {
        let mut e = Event {
            index,
            ..Default::default()
        };
        e.arrays.insert(
            "d".into(),
            Array::from_u16(vec![pixels as u64], &vec![1; pixels]).unwrap(),
        );
        e
    }

    fn pos(i: u64) -> Position {
        Position {
            file: None,
            file_event: i + 1,
            next_index: i + 1,
        }
    }

    #[test]
    fn flushes_at_max_events_with_the_last_position() {
        let mut b = Batcher::new(BatchConfig {
            max_events: 3,
            max_bytes: 1 << 20,
            max_linger_ms: 1000,
            low_latency: false,
        });
        let now = Instant::now();
        assert!(b.push(event(0, 10), pos(0), now).is_empty());
        assert!(b.push(event(1, 10), pos(1), now).is_empty());
        let ready = b.push(event(2, 10), pos(2), now);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].0.len(), 3);
        assert_eq!(ready[0].1.next_index, 3);
        assert!(b.take().is_none());
    }

    #[test]
    fn flushes_before_exceeding_max_bytes_and_big_events_go_alone() {
        let mut b = Batcher::new(BatchConfig {
            max_events: 100,
            max_bytes: 1200,
            max_linger_ms: 1000,
            low_latency: false,
        });
        let now = Instant::now();
        assert!(b.push(event(0, 200), pos(0), now).is_empty());
        // Events of ~450 and ~650 bytes fit in 1200; a third does not.
        let ready = b.push(event(1, 300), pos(1), now);
        assert!(ready.is_empty(), "{} bytes still fit", b.bytes);
        let ready = b.push(event(2, 300), pos(2), now);
        assert_eq!(ready.len(), 1);
        assert_eq!(
            ready[0].0.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        // An event larger than max_bytes flushes the pending one and then itself.
        let ready = b.push(event(3, 5000), pos(3), now);
        assert_eq!(ready.len(), 2);
        assert_eq!(ready[0].0[0].index, 2);
        assert_eq!(ready[1].0[0].index, 3);
        assert_eq!(ready[1].1.next_index, 4);
    }

    #[test]
    fn linger_deadline_starts_with_the_first_event() {
        let mut b = Batcher::new(BatchConfig {
            max_events: 100,
            max_bytes: 1 << 20,
            max_linger_ms: 50,
            low_latency: false,
        });
        assert!(b.deadline().is_none());
        let t0 = Instant::now();
        b.push(event(0, 1), pos(0), t0);
        b.push(event(1, 1), pos(1), t0 + Duration::from_millis(30));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(b.take().unwrap().0.len(), 2);
        assert!(b.deadline().is_none());
    }
}

//! Sources: what a reader thread sends to its batcher, and the synthetic detector.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lclstream_nats::synthetic::{DetectorModel, FrameMode};
use lclstream_nats::wire::{Array, DType, Event};

use crate::config::SyntheticConfig;
use crate::metrics::Metrics;
use crate::process::{from_f64, to_f64, Processor};
use crate::spool::Position;
use crate::AgentError;

/// What a reader sends to its batcher.
#[derive(Debug)]
pub enum SourceMessage {
    /// One processed event and the source position after it.
    Event(Box<Event>, Position),
    /// The source is exhausted (finite sources only).
    Done,
    /// The source failed and stops; events sent before remain valid.
    Failed(AgentError),
}

/// Shared context of a reader thread.
#[derive(Clone)]
pub struct ReaderContext {
    /// Source name (for errors and logs).
    pub name: String,
    /// Set when the agent shuts down.
    pub stop: Arc<AtomicBool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Processing steps.
    pub processor: Processor,
    /// Progress bar when backfilling in a terminal.
    pub progress: Option<indicatif::ProgressBar>,
}

impl ReaderContext {
    /// Whether the agent is shutting down.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Processes and sends one event; `false` when the batcher is gone.
    pub fn send(
        &self,
        tx: &SyncSender<SourceMessage>,
        mut event: Event,
        position: Position,
    ) -> bool {
        if let Err(message) = self.processor.apply(&mut event) {
            let _ = tx.send(SourceMessage::Failed(AgentError::Source {
                source_name: self.name.clone(),
                message: format!("processing: {message}"),
            }));
            return false;
        }
        self.metrics.events_read.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .bytes_read
            .fetch_add(event.payload_bytes() as u64, Ordering::Relaxed);
        if let Some(p) = &self.progress {
            p.inc(1);
        }
        tx.send(SourceMessage::Event(Box::new(event), position))
            .is_ok()
    }
}

/// Sleeps up to `duration` in short steps, returning early when stopping.
pub fn sleep_unless_stopped(ctx: &ReaderContext, duration: Duration) {
    let deadline = Instant::now() + duration;
    while !ctx.stopping() {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The synthetic detector model of a configuration.
pub fn detector_model(config: &SyntheticConfig) -> DetectorModel {
    DetectorModel {
        height: config.height,
        width: config.width,
        photon_density: config.photon_density,
        peaks: config.peaks,
        seed: config.seed,
        read_noise: config.read_noise,
        mode: if config.mode == "photon_counts" {
            FrameMode::PhotonCounts
        } else {
            FrameMode::Adu
        },
        ..Default::default()
    }
}

/// The synthetic event `index` of a configuration (before processing).
pub fn synthetic_event(
    config: &SyntheticConfig,
    model: &DetectorModel,
    index: u64,
    time_ns: u64,
) -> Event {
    let mut event = model.event(&config.field, index, time_ns);
    let dtype = DType::parse(&config.dtype).unwrap_or(DType::U16);
    if dtype != DType::U16 {
        if let Some(array) = event.arrays.get_mut(&config.field) {
            let values = to_f64(array);
            *array = Array::new(dtype, array.shape.clone(), from_f64(&values, dtype))
                .expect("converted array matches its shape");
        }
    }
    event
}

/// Runs a synthetic detector until its event count is reached or the agent stops.
pub fn run_synthetic(
    config: &SyntheticConfig,
    ctx: &ReaderContext,
    resume: Option<Position>,
    tx: SyncSender<SourceMessage>,
) {
    let model = detector_model(config);
    let mut index = resume.map(|p| p.next_index).unwrap_or(0);
    if let (Some(p), Some(total)) = (&ctx.progress, config.events) {
        p.inc_length(total.saturating_sub(index));
    }
    let started = Instant::now();
    let first = index;
    loop {
        if ctx.stopping() {
            return;
        }
        if config.events.is_some_and(|total| index >= total) {
            let _ = tx.send(SourceMessage::Done);
            return;
        }
        if config.rate_hz > 0.0 {
            let due = started + Duration::from_secs_f64((index - first) as f64 / config.rate_hz);
            let now = Instant::now();
            if due > now {
                sleep_unless_stopped(ctx, due - now);
                if ctx.stopping() {
                    return;
                }
            }
        }
        let event = synthetic_event(config, &model, index, now_ns());
        index += 1;
        let position = Position {
            file: None,
            file_event: index,
            next_index: index,
        };
        if !ctx.send(&tx, event, position) {
            return;
        }
    }
}

//! What the viewer knows, bounded: the latest frame, the last N events'
//! trends and a few seconds of rate samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lclstream_nats::wire::{Array, Event, Scalar};
use serde::Serialize;

use crate::frame;

/// Events kept for the trend plots.
pub const TREND_EVENTS: usize = 600;
/// Window over which rates are measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// The latest frame of the chosen field.
pub struct Frame {
    /// Increases with every new frame.
    pub seq: u64,
    /// Full-resolution array as received (for `.npy` download).
    pub array: Array,
    /// Preview width and height after downsampling.
    pub width: usize,
    pub height: usize,
    /// Preview values.
    pub preview: Vec<f32>,
}

/// One event's point on the trend plots.
#[derive(Serialize, Clone)]
pub struct TrendPoint {
    /// Event time, seconds since the Unix epoch.
    pub t: f64,
    /// Sum of the chosen field inside the ROI.
    pub roi: Option<f64>,
    /// Numeric scalars.
    pub scalars: BTreeMap<String, f64>,
}

/// A snapshot for browsers (the frame itself is fetched separately).
#[derive(Serialize)]
pub struct Status {
    pub source: String,
    pub mode: String,
    pub paused: bool,
    pub error: Option<String>,
    pub field: Option<String>,
    pub fields: Vec<String>,
    pub roi: [usize; 4],
    pub frame_seq: u64,
    pub frame_shape: Vec<u64>,
    pub frame_dtype: Option<String>,
    pub events: u64,
    pub event_rate_hz: f64,
    pub raw_bytes_per_s: f64,
    pub wire_bytes_per_s: f64,
    pub compression_ratio: Option<f64>,
    pub lag_events: Option<u64>,
    pub trend: Vec<TrendPoint>,
}

#[derive(Default)]
struct Inner {
    source: String,
    mode: String,
    paused: bool,
    error: Option<String>,
    field: Option<String>,
    fields: Vec<String>,
    roi: Option<[usize; 4]>,
    frame: Option<std::sync::Arc<Frame>>,
    frame_seq: u64,
    events: u64,
    trend: VecDeque<TrendPoint>,
    /// (when, events, raw bytes, wire bytes) of recent batches.
    samples: VecDeque<(Instant, u64, u64, u64)>,
    lag: Option<u64>,
}

/// Shared, bounded viewer state.
#[derive(Default)]
pub struct ViewState {
    inner: Mutex<Inner>,
}

impl ViewState {
    /// A state for `mode` ("partner" or "operator") showing `source`.
    pub fn new(mode: &str, source: &str, field: Option<String>) -> ViewState {
        let state = ViewState::default();
        {
            let mut s = state.lock();
            s.mode = mode.into();
            s.source = source.into();
            s.field = field;
        }
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts over on a new source: clears the frame, trends and rates.
    pub fn reset(&self, source: &str) {
        let mut s = self.lock();
        s.source = source.into();
        s.error = None;
        s.frame = None;
        s.fields.clear();
        s.trend.clear();
        s.samples.clear();
        s.events = 0;
        s.lag = None;
    }

    pub fn source(&self) -> String {
        self.lock().source.clone()
    }

    pub fn set_error(&self, error: Option<String>) {
        self.lock().error = error;
    }

    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    pub fn set_field(&self, field: &str) {
        let mut s = self.lock();
        s.field = Some(field.into());
        s.frame = None;
    }

    pub fn set_roi(&self, roi: [usize; 4]) {
        self.lock().roi = Some(roi);
    }

    pub fn set_lag(&self, lag: u64) {
        self.lock().lag = Some(lag);
    }

    /// Takes in one batch: counts it for the rates, and (unless paused)
    /// keeps the last event's frame and every event's trend point.
    pub fn ingest(&self, events: &[Event], wire_bytes: u64) {
        let raw: u64 = events
            .iter()
            .map(|e| e.arrays.values().map(|a| a.data.len() as u64).sum::<u64>())
            .sum();
        let now = Instant::now();
        let mut s = self.lock();
        s.events += events.len() as u64;
        s.samples
            .push_back((now, events.len() as u64, raw, wire_bytes));
        while s
            .samples
            .front()
            .is_some_and(|(t, ..)| now.duration_since(*t) > RATE_WINDOW)
        {
            s.samples.pop_front();
        }
        if s.paused || events.is_empty() {
            return;
        }
        if let Some(last) = events.last() {
            let fields: Vec<String> = last
                .arrays
                .iter()
                .filter(|(_, a)| a.shape.len() >= 2)
                .map(|(k, _)| k.clone())
                .collect();
            if s.field.as_ref().is_none_or(|f| !fields.contains(f)) {
                s.field = fields.first().cloned();
            }
            s.fields = fields;
        }
        let field = s.field.clone();
        for (i, event) in events.iter().enumerate() {
            let image = field
                .as_ref()
                .and_then(|f| event.arrays.get(f))
                .and_then(|a| frame::to_f32(a).map(|img| (a, img)));
            let mut roi_value = None;
            if let Some((array, (w, h, values))) = image {
                let roi = *s.roi.get_or_insert([w / 4, h / 4, w - w / 4, h - h / 4]);
                roi_value = Some(frame::roi_sum(w, h, &values, roi));
                // Only the batch's last frame is shown; the others feed trends.
                if i + 1 == events.len() {
                    let (pw, ph, preview) = frame::downsample(w, h, &values);
                    s.frame_seq += 1;
                    s.frame = Some(std::sync::Arc::new(Frame {
                        seq: s.frame_seq,
                        array: array.clone(),
                        width: pw,
                        height: ph,
                        preview,
                    }));
                }
            }
            let scalars = event
                .scalars
                .iter()
                .filter_map(|(k, v)| {
                    let x = match v {
                        Scalar::Int(i) => *i as f64,
                        Scalar::UInt(u) => *u as f64,
                        Scalar::Float(f) => *f,
                        Scalar::Float32(f) => *f as f64,
                        Scalar::Bool(b) => *b as u8 as f64,
                        Scalar::Text(_) => return None,
                    };
                    Some((k.clone(), x))
                })
                .collect();
            if s.trend.len() == TREND_EVENTS {
                s.trend.pop_front();
            }
            s.trend.push_back(TrendPoint {
                t: event.time_ns as f64 / 1e9,
                roi: roi_value,
                scalars,
            });
        }
    }

    /// The latest frame, if any.
    pub fn frame(&self) -> Option<std::sync::Arc<Frame>> {
        self.lock().frame.clone()
    }

    /// A snapshot for browsers.
    pub fn status(&self) -> Status {
        let s = self.lock();
        let now = Instant::now();
        let recent: Vec<_> = s
            .samples
            .iter()
            .filter(|(t, ..)| now.duration_since(*t) <= RATE_WINDOW)
            .collect();
        // Rates over the span the samples cover, at least one second so that
        // the first batch does not read as a huge rate.
        let span = recent
            .first()
            .map(|(t, ..)| now.duration_since(*t).as_secs_f64())
            .unwrap_or(0.0)
            .max(1.0);
        let (events, raw, wire) = recent.iter().fold((0, 0, 0), |acc, (_, e, r, w)| {
            (acc.0 + e, acc.1 + r, acc.2 + w)
        });
        let frame = s.frame.as_ref();
        Status {
            source: s.source.clone(),
            mode: s.mode.clone(),
            paused: s.paused,
            error: s.error.clone(),
            field: s.field.clone(),
            fields: s.fields.clone(),
            roi: s.roi.unwrap_or_default(),
            frame_seq: frame.map(|f| f.seq).unwrap_or(0),
            frame_shape: frame.map(|f| f.array.shape.clone()).unwrap_or_default(),
            frame_dtype: frame.map(|f| f.array.dtype.short_name().to_string()),
            events: s.events,
            event_rate_hz: events as f64 / span,
            raw_bytes_per_s: raw as f64 / span,
            wire_bytes_per_s: wire as f64 / span,
            compression_ratio: (wire > 0).then(|| raw as f64 / wire as f64),
            lag_events: s.lag,
            trend: s.trend.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lclstream_nats::wire::{Array, Scalar};

    #[test]
    fn memory_stays_bounded_however_long_the_stream() {
        let state = ViewState::new("operator", "lcls.mfx.>", None);
        let frame = Array::from_u16(vec![8, 8], &[7; 64]).unwrap();
        for batch in 0..(TREND_EVENTS as u64 / 10 + 50) {
            let events: Vec<Event> = (0..10)
                .map(|i| Event {
                    index: batch * 10 + i,
                    time_ns: 1_000_000_000 + batch * 10 + i,
                    scalars: [("gas".to_string(), Scalar::Float(1.0))].into(),
                    arrays: [("jungfrau".to_string(), frame.clone())].into(),
                })
                .collect();
            state.ingest(&events, 100);
        }
        let status = state.status();
        assert_eq!(status.trend.len(), TREND_EVENTS);
        assert_eq!(status.events, (TREND_EVENTS as u64 / 10 + 50) * 10);
        // The newest events are kept, the oldest dropped.
        let last = status.trend.last().unwrap();
        assert_eq!(last.roi, Some(7.0 * 16.0));
        assert!(state.frame().is_some_and(|f| f.width == 8));
    }
}

//! Where pulled events go.

use lclstream_nats::wire::Event;

/// Identity of one event: the same event delivered twice has the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    /// Experiment.
    pub experiment: String,
    /// Run number.
    pub run: u32,
    /// Source.
    pub source: String,
    /// Event index within the run.
    pub index: u64,
}

/// What the events of one batch share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// Experiment.
    pub experiment: String,
    /// Run number.
    pub run: u32,
    /// Source.
    pub source: String,
    /// Subject the batch was published on.
    pub subject: String,
    /// Stream sequence of the batch's (last) message.
    pub stream_sequence: u64,
    /// Bytes of the batch's payload as it crossed the wire (all chunks).
    pub wire_bytes: u64,
}

impl BatchInfo {
    /// The key of one of the batch's events.
    pub fn key(&self, index: u64) -> EventKey {
        EventKey {
            experiment: self.experiment.clone(),
            run: self.run,
            source: self.source.clone(),
            index,
        }
    }
}

/// A destination for events. The puller writes a batch, flushes, then acknowledges.
pub trait EventSink: Send {
    /// Whether this event was already written (so a redelivery is skipped).
    fn contains(&self, _key: &EventKey) -> bool {
        false
    }

    /// Writes events of one batch (already stripped of events the sink contains).
    fn write(&mut self, batch: &BatchInfo, events: Vec<Event>) -> anyhow::Result<()>;

    /// Makes everything written durable; called before acknowledging.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A sink that calls a function for each event (no deduplication).
pub struct CallbackSink<F> {
    callback: F,
}

impl<F> CallbackSink<F>
where
    F: FnMut(&BatchInfo, Event) -> anyhow::Result<()> + Send,
{
    /// A sink calling `callback` for every event.
    pub fn new(callback: F) -> Self {
        CallbackSink { callback }
    }
}

impl<F> EventSink for CallbackSink<F>
where
    F: FnMut(&BatchInfo, Event) -> anyhow::Result<()> + Send,
{
    fn write(&mut self, batch: &BatchInfo, events: Vec<Event>) -> anyhow::Result<()> {
        for event in events {
            (self.callback)(batch, event)?;
        }
        Ok(())
    }
}

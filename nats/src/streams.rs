//! Default JetStream stream and consumer settings.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use crate::subjects::{stream_name, stream_subjects};

/// Settings of an instrument's data stream.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// Subjects the stream captures.
    pub subjects: Vec<String>,
    /// Oldest data kept; zero keeps data until `max_bytes` discards it.
    pub max_age: Duration,
    /// Largest stream size in bytes (oldest batches are discarded beyond it); -1 for no limit.
    pub max_bytes: i64,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
    /// Largest message the stream accepts.
    pub max_message_size: i32,
    /// Number of replicas (1 on a single server, 3 in a cluster).
    pub replicas: usize,
}

impl StreamSettings {
    /// The defaults for an instrument: file storage, 7 days or 8 GiB, 20-minute duplicate window.
    ///
    /// The duplicate window is long so that an agent restarted after a crash
    /// or a long broker outage still has its republished batches deduplicated.
    pub fn for_instrument(instrument: &str) -> StreamSettings {
        StreamSettings {
            name: stream_name(instrument),
            subjects: vec![stream_subjects(instrument)],
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 8 * 1024 * 1024 * 1024,
            duplicate_window: Duration::from_secs(20 * 60),
            max_message_size: 16 * 1024 * 1024,
            replicas: 1,
        }
    }

    /// The async-nats stream configuration for these settings.
    pub fn to_config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            max_message_size: self.max_message_size,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// Where a partner consumer starts reading.
#[derive(Debug, Clone, PartialEq)]
pub enum StartPosition {
    /// The first message still in the stream.
    All,
    /// Only messages published after the consumer is created.
    New,
    /// From a stream sequence number.
    Sequence(u64),
    /// From a point in time (Unix seconds).
    Time(i64),
}

/// Pull limits applied to a partner's durable consumer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PullLimits {
    /// Largest number of messages in one pull request.
    pub max_batch: i64,
    /// Largest number of bytes in one pull request.
    pub max_bytes: i64,
    /// Largest number of unacknowledged messages.
    pub max_ack_pending: i64,
    /// The consumer is deleted after this long without activity.
    pub inactive_threshold: Duration,
    /// Time before an unacknowledged message is redelivered.
    pub ack_wait: Duration,
}

impl Default for PullLimits {
    fn default() -> Self {
        PullLimits {
            max_batch: 64,
            max_bytes: 64 * 1024 * 1024,
            max_ack_pending: 256,
            inactive_threshold: Duration::from_secs(24 * 3600),
            ack_wait: Duration::from_secs(60),
        }
    }
}

/// A durable pull consumer with explicit acks, filtered to `filters`.
pub fn pull_consumer_config(
    durable: &str,
    filters: Vec<String>,
    start: &StartPosition,
    limits: &PullLimits,
) -> consumer::pull::Config {
    let deliver_policy = match start {
        StartPosition::All => consumer::DeliverPolicy::All,
        StartPosition::New => consumer::DeliverPolicy::New,
        StartPosition::Sequence(s) => {
            consumer::DeliverPolicy::ByStartSequence { start_sequence: *s }
        }
        StartPosition::Time(t) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp(*t)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        },
    };
    let (filter_subject, filter_subjects) = if filters.len() == 1 {
        (filters[0].clone(), Vec::new())
    } else {
        (String::new(), filters)
    };
    consumer::pull::Config {
        durable_name: Some(durable.to_string()),
        name: Some(durable.to_string()),
        deliver_policy,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: limits.ack_wait,
        max_ack_pending: limits.max_ack_pending,
        max_batch: limits.max_batch,
        max_bytes: limits.max_bytes,
        inactive_threshold: limits.inactive_threshold,
        filter_subject,
        filter_subjects,
        ..Default::default()
    }
}

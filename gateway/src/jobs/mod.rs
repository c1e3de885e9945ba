//! Publish jobs: on-demand streaming of runs that are on facility storage.
//!
//! A partner submits a job (`lclstream.gateway.<institution>.jobs.submit`);
//! the gateway checks it against the institution's grants and quotas, takes
//! one of the institution's consumer slots for the job's data, records the
//! job in a key-value bucket and puts it on a JetStream work queue. Facility
//! workers (`lclstream worker`) take jobs from the queue, read the run's
//! HDF5 files, process and batch the events, and publish them on the job's
//! own subject with deterministic message ids, so that a job retried after
//! a worker died does not duplicate anything. See `docs/jobs.md`.
//!
//! - [`protocol`]: request, record and status types, subjects and names.
//! - [`store`]: the streams, the records bucket and record updates.
//! - [`service`]: the gateway endpoints and the status relay.

pub use lclstream_nats::protocol::jobs as protocol;
pub mod service;
pub use lclstream_nats::protocol::job_stores as store;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use service::{JobsHandle, JobsService};

use protocol::JobEncoding;
use store::JobStores;

/// The `[jobs]` section of the gateway configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Answer job requests.
    pub enabled: bool,
    /// Seconds job data stays in `LCLS_JOBS_DATA`.
    pub data_max_age_secs: u64,
    /// Largest size of `LCLS_JOBS_DATA` in bytes (-1: no limit).
    pub data_max_bytes: i64,
    /// Seconds within which a republished batch is dropped as a duplicate; must
    /// cover a job's duration plus the worker's ack wait.
    pub duplicate_window_secs: u64,
    /// Seconds a job record is kept after its last change.
    pub record_retention_secs: u64,
    /// Largest payload of one data message; larger batches are chunked.
    pub max_payload: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        let stores = JobStores::default();
        JobsConfig {
            enabled: true,
            data_max_age_secs: stores.data_max_age.as_secs(),
            data_max_bytes: stores.data_max_bytes,
            duplicate_window_secs: stores.duplicate_window.as_secs(),
            record_retention_secs: stores.record_max_age.as_secs(),
            max_payload: JobEncoding::default().max_payload,
        }
    }
}

impl JobsConfig {
    /// Stream and bucket settings.
    pub fn stores(&self) -> JobStores {
        JobStores {
            data_max_age: Duration::from_secs(self.data_max_age_secs.max(1)),
            data_max_bytes: self.data_max_bytes,
            duplicate_window: Duration::from_secs(self.duplicate_window_secs.max(1)),
            record_max_age: Duration::from_secs(self.record_retention_secs.max(1)),
            ..JobStores::default()
        }
    }

    /// Encoding given to workers with every job.
    pub fn encoding(&self) -> JobEncoding {
        JobEncoding {
            max_payload: self.max_payload.clamp(4096, 8 * 1024 * 1024),
            ..JobEncoding::default()
        }
    }
}

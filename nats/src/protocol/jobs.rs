//! The publish-job protocol: request bodies, job records, status messages
//! and the subjects they travel on (see `docs/jobs.md`).
//!
//! Requests go to `lclstream.gateway.<institution-id>.jobs.<verb>` and get
//! the same `{"status": "ok"|"error"}` envelope and error codes as the
//! dataset request service ([`crate::service::protocol`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::protocol::requests::{DatasetGrant, ErrorBody, ErrorCode};
use crate::subjects::validate_token;
use crate::wire::DType;

/// Verb: submit a job (`jobs.submit`).
pub const VERB_SUBMIT: &str = "jobs.submit";
/// Verb: one job's record and consumer (`jobs.get`).
pub const VERB_GET: &str = "jobs.get";
/// Verb: the institution's jobs (`jobs.list`).
pub const VERB_LIST: &str = "jobs.list";
/// Verb: cancel a job (`jobs.cancel`).
pub const VERB_CANCEL: &str = "jobs.cancel";
/// All job verbs.
pub const VERBS: [&str; 4] = [VERB_SUBMIT, VERB_GET, VERB_LIST, VERB_CANCEL];

/// Work-queue stream of pending jobs.
pub const QUEUE_STREAM: &str = "LCLS_JOBS";
/// Prefix of queue subjects: `lclstream.jobs.queue.<instrument>`.
pub const QUEUE_PREFIX: &str = "lclstream.jobs.queue";
/// Stream holding the data jobs publish.
pub const DATA_STREAM: &str = "LCLS_JOBS_DATA";
/// Prefix of data subjects: `lclstream.jobs.data.<job-id>`.
pub const DATA_PREFIX: &str = "lclstream.jobs.data";
/// Prefix of status subjects: `lclstream.jobs.status.<job-id>`.
pub const STATUS_PREFIX: &str = "lclstream.jobs.status";
/// Key-value bucket of job records (keys `<institution>.<job-id>`).
pub const RECORDS_BUCKET: &str = "lclstream-jobs";
/// Header on every data message naming its job.
pub const JOB_HEADER: &str = "Lclstream-Job";
/// Consumer metadata key: the job a consumer belongs to.
pub const META_JOB: &str = "lclstream.job";
/// `lclstream.kind` metadata of job consumers (dataset consumers say `dataset`).
pub const KIND_JOB: &str = "job";

/// Largest number of runs in one job.
pub const MAX_RUNS: u32 = 100;
/// Largest number of fields in one job.
pub const MAX_FIELDS: usize = 64;
/// Largest number of events per batch a job may ask for.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Smallest and largest batch size in bytes a job may ask for.
pub const BATCH_BYTES_RANGE: (usize, usize) = (1024, 64 * 1024 * 1024);
/// Largest ROI coordinate and binning factor.
pub const MAX_PIXELS: u64 = 1 << 20;
/// Largest binning factor.
pub const MAX_BIN: u64 = 64;
/// Longest job id.
pub const MAX_JOB_ID: usize = 64;

/// Queue subject of an instrument's jobs.
pub fn queue_subject(instrument: &str) -> String {
    format!("{QUEUE_PREFIX}.{}", instrument.to_ascii_lowercase())
}

/// The durable work-queue consumer of an instrument's jobs, shared by its
/// workers: `jobs-<instrument>`, on [`QUEUE_STREAM`] only.
pub fn worker_consumer_name(instrument: &str) -> String {
    format!("jobs-{}", instrument.to_ascii_lowercase())
}

/// Data subject of a job.
pub fn data_subject(job: &str) -> String {
    format!("{DATA_PREFIX}.{job}")
}

/// Status subject of a job.
pub fn status_subject(job: &str) -> String {
    format!("{STATUS_PREFIX}.{job}")
}

/// Record key of a job: `<institution>.<job-id>`.
pub fn record_key(institution: &str, job: &str) -> String {
    format!("{institution}.{job}")
}

/// Subject on which the gateway forwards a job's status to its institution:
/// `_INBOX.<institution>.jobs.<job-id>` (inside the institution's private inbox).
pub fn watch_subject(institution: &str, job: &str) -> String {
    format!(
        "{}.jobs.{job}",
        crate::protocol::naming::inbox_prefix(institution)
    )
}

/// The current time (UTC), for records.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Image processing steps, applied in this order: crop, bin, threshold, dtype.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobProcessing {
    /// Array fields the image steps apply to; empty means every array of 2+ dimensions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub apply_to: Vec<String>,
    /// Region of interest `[y0, y1, x0, x1]` (half-open) on the last two axes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roi: Option<[u64; 4]>,
    /// n x n binning (sum); 8/16-bit integers widen to 32 bits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin: Option<u64>,
    /// Values below this become zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Convert to this element type (saturating), e.g. `f32`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// Batch limits of the job's data messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobBatch {
    /// Most events in one batch.
    pub max_events: usize,
    /// Most uncompressed bytes in one batch (one larger event forms a batch alone).
    pub max_bytes: usize,
}

impl Default for JobBatch {
    fn default() -> Self {
        JobBatch {
            max_events: 64,
            max_bytes: 4 * 1024 * 1024,
        }
    }
}

/// An inclusive range of event indexes within each run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRange {
    /// First event index (inclusive).
    pub first: u64,
    /// Last event index (inclusive).
    pub last: u64,
}

/// Body of `jobs.submit`: stream a run (or run range) from facility storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Instrument, e.g. `mfx`.
    pub instrument: String,
    /// Experiment, e.g. `mfxp1234`.
    pub experiment: String,
    /// First run.
    pub run: u32,
    /// Last run (inclusive); default `run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_end: Option<u32>,
    /// Fields (scalars and arrays) to keep; empty keeps every field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Processing steps.
    #[serde(default)]
    pub processing: JobProcessing,
    /// Batch limits.
    #[serde(default)]
    pub batch: JobBatch,
    /// Only these events of each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventRange>,
    /// A name for the job, shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl JobRequest {
    /// The last run of the job.
    pub fn last_run(&self) -> u32 {
        self.run_end.unwrap_or(self.run)
    }

    /// The runs of the job, in order.
    pub fn runs(&self) -> std::ops::RangeInclusive<u32> {
        self.run..=self.last_run()
    }
}

fn bad(reason: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, reason)
}

/// Checks everything in a job request that does not depend on policy.
pub fn check_request(request: &JobRequest) -> Result<(), ErrorBody> {
    validate_token("instrument", &request.instrument).map_err(bad)?;
    validate_token("experiment", &request.experiment).map_err(bad)?;
    if request.last_run() < request.run {
        return Err(bad(format!(
            "run_end {} is before run {}",
            request.last_run(),
            request.run
        )));
    }
    if request.last_run() - request.run >= MAX_RUNS {
        return Err(bad(format!(
            "runs {}..={} are more than {MAX_RUNS} runs; submit several jobs",
            request.run,
            request.last_run()
        )));
    }
    if request.fields.len() > MAX_FIELDS || request.processing.apply_to.len() > MAX_FIELDS {
        return Err(bad(format!("fields: at most {MAX_FIELDS} fields")));
    }
    for field in request.fields.iter().chain(&request.processing.apply_to) {
        validate_token("field", field).map_err(|e| bad(format!("fields: {e}")))?;
    }
    let p = &request.processing;
    if let Some([y0, y1, x0, x1]) = p.roi {
        if y0 >= y1 || x0 >= x1 || y1 > MAX_PIXELS || x1 > MAX_PIXELS {
            return Err(bad(format!(
                "processing.roi: [y0, y1, x0, x1] needs y0 < y1 <= {MAX_PIXELS} and x0 < x1 <= {MAX_PIXELS}"
            )));
        }
    }
    if let Some(b) = p.bin {
        if b == 0 || b > MAX_BIN {
            return Err(bad(format!("processing.bin: {b} is outside 1..={MAX_BIN}")));
        }
    }
    if let Some(t) = p.threshold {
        if !t.is_finite() {
            return Err(bad("processing.threshold must be a finite number"));
        }
    }
    if let Some(d) = &p.dtype {
        if DType::parse(d).is_none() {
            return Err(bad(format!(
                "processing.dtype: unknown type {d:?} (u8, i8, u16, i16, u32, i32, u64, i64, f32, f64)"
            )));
        }
    }
    let b = &request.batch;
    if b.max_events == 0 || b.max_events > MAX_BATCH_EVENTS {
        return Err(bad(format!(
            "batch.max_events: {} is outside 1..={MAX_BATCH_EVENTS}",
            b.max_events
        )));
    }
    let (lo, hi) = BATCH_BYTES_RANGE;
    if b.max_bytes < lo || b.max_bytes > hi {
        return Err(bad(format!(
            "batch.max_bytes: {} is outside {lo}..={hi}",
            b.max_bytes
        )));
    }
    if let Some(r) = &request.events {
        if r.first > r.last {
            return Err(bad(format!(
                "events: first {} is after last {}",
                r.first, r.last
            )));
        }
    }
    if let Some(label) = &request.label {
        crate::protocol::requests::check_label(label)?;
    }
    Ok(())
}

/// Checks a job id given by a client: `[A-Za-z0-9_-]`, at most [`MAX_JOB_ID`] characters.
pub fn check_job_id(job: &str) -> Result<(), ErrorBody> {
    if job.is_empty()
        || job.len() > MAX_JOB_ID
        || !job
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad(format!(
            "job: {job:?} is not a job id (1 to {MAX_JOB_ID} letters, digits, '_' or '-')"
        )));
    }
    Ok(())
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker is publishing it.
    Running,
    /// Every event was published.
    Done,
    /// The job stopped with an error.
    Failed,
    /// The requester cancelled it.
    Cancelled,
}

impl JobState {
    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }

    /// The state as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encoding of the job's data, fixed at submission so that every worker
/// (including one retrying after a crash) produces the same messages and ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEncoding {
    /// LZ4-compress payloads.
    pub lz4: bool,
    /// Filter arrays before compression with the default policy (bitshuffle
    /// for integers, byte shuffle for floats); the name predates bitshuffle.
    pub shuffle: bool,
    /// Largest payload of one message; larger batches are chunked.
    pub max_payload: usize,
}

impl Default for JobEncoding {
    fn default() -> Self {
        JobEncoding {
            lz4: true,
            shuffle: true,
            max_payload: 1024 * 1024,
        }
    }
}

/// The message on the work queue: what a worker needs to run the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Job id.
    pub job: String,
    /// Requesting institution.
    pub institution: String,
    /// The request.
    pub request: JobRequest,
    /// Subject to publish data on.
    pub subject: String,
    /// Encoding of the data.
    pub encoding: JobEncoding,
}

/// A job's record, kept in the [`RECORDS_BUCKET`] key-value bucket and sent as status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// Job id.
    pub job: String,
    /// Requesting institution.
    pub institution: String,
    /// Who asked (user or institution).
    pub requester: String,
    /// The request.
    pub request: JobRequest,
    /// State.
    pub state: JobState,
    /// Stream of the data.
    pub stream: String,
    /// Subject of the data.
    pub subject: String,
    /// The consumer created for the requester.
    pub consumer: String,
    /// Submission time.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
    /// Start of the last attempt.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub started: Option<OffsetDateTime>,
    /// End of the job.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished: Option<OffsetDateTime>,
    /// Worker of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Attempts started (a retried job has more than one).
    #[serde(default)]
    pub attempts: u32,
    /// Events the job will publish (known once a worker has opened the files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_total: Option<u64>,
    /// Events published so far in the current attempt (a retry starts over,
    /// its republished batches are dropped as duplicates by the stream).
    #[serde(default)]
    pub events: u64,
    /// Batches published so far in the current attempt.
    #[serde(default)]
    pub batches: u64,
    /// Wire bytes stored for the job (duplicates not counted).
    #[serde(default)]
    pub bytes: u64,
    /// Files read.
    #[serde(default)]
    pub files: u64,
    /// Why the job failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `jobs.get` and `jobs.cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    /// Job id.
    pub job: String,
}

/// Body of `jobs.list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobListRequest {
    /// Only jobs in this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
}

/// Reply to `jobs.submit` and `jobs.get`: the record and the consumer to pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobView {
    /// The record.
    pub record: JobRecord,
    /// The job's consumer, while it exists (pull it with the partner library).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<DatasetGrant>,
    /// Subject in the institution's inbox where status updates are forwarded.
    pub watch: String,
    /// Public key whose signature every genuine status update carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices_key: Option<String>,
}

/// Reply to `jobs.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobList {
    /// The institution.
    pub institution: String,
    /// Its jobs still on record, newest first.
    pub jobs: Vec<JobRecord>,
    /// True when the list was cut at the reply limit.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<JobRequest, String> {
        let r: JobRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        check_request(&r).map_err(|e| e.to_string())?;
        Ok(r)
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let r = request(r#"{"instrument":"mfx","experiment":"e1","run":3}"#).unwrap();
        assert_eq!(r.runs(), 3..=3);
        assert_eq!(r.batch, JobBatch::default());
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (json, needle) in [
            (
                r#"{"instrument":"mfx","experiment":"e1","run":3,"bogus":1}"#,
                "bogus",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e.1","run":3}"#,
                "experiment",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":3,"run_end":2}"#,
                "run_end",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":1,"run_end":500}"#,
                "runs",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":1,"processing":{"roi":[5,5,0,1]}}"#,
                "roi",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":1,"processing":{"bin":0}}"#,
                "bin",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":1,"processing":{"dtype":"u12"}}"#,
                "dtype",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":1,"batch":{"max_events":0}}"#,
                "max_events",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":1,"batch":{"max_bytes":1}}"#,
                "max_bytes",
            ),
            (
                r#"{"instrument":"mfx","experiment":"e1","run":1,"events":{"first":5,"last":1}}"#,
                "events",
            ),
            (r#"{"instrument":"mfx","experiment":"e1","run":-1}"#, "u32"),
        ] {
            let e = request(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn job_ids_are_single_tokens() {
        check_job_id("j18a3f-01").unwrap();
        for bad in ["", "a.b", "*", ">", &"x".repeat(65)] {
            assert!(check_job_id(bad).is_err(), "{bad}");
        }
    }
}

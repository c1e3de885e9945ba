//! The JetStream side of jobs, shared by the gateway and the workers: the
//! work-queue stream, the data stream, the records bucket and
//! compare-and-set updates of records.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;

use super::jobs::{
    record_key, JobRecord, DATA_PREFIX, DATA_STREAM, QUEUE_PREFIX, QUEUE_STREAM, RECORDS_BUCKET,
};

/// Retention and limits of the job streams and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStores {
    /// How long job data stays in [`DATA_STREAM`].
    pub data_max_age: Duration,
    /// Largest size of [`DATA_STREAM`] in bytes (-1: no limit).
    pub data_max_bytes: i64,
    /// Window in which a republished batch is dropped as a duplicate; must
    /// cover a job's duration plus the time before a dead worker's job is retried.
    pub duplicate_window: Duration,
    /// How long a job record is kept after its last change.
    pub record_max_age: Duration,
    /// Largest message accepted in the data stream.
    pub max_message_size: i32,
}

impl Default for JobStores {
    fn default() -> Self {
        JobStores {
            data_max_age: Duration::from_secs(24 * 3600),
            data_max_bytes: -1,
            duplicate_window: Duration::from_secs(3600),
            record_max_age: Duration::from_secs(7 * 24 * 3600),
            max_message_size: 16 * 1024 * 1024,
        }
    }
}

/// Configuration of the work-queue stream.
pub fn queue_stream_config() -> stream::Config {
    stream::Config {
        name: QUEUE_STREAM.to_string(),
        subjects: vec![format!("{QUEUE_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_message_size: 64 * 1024,
        ..Default::default()
    }
}

/// Configuration of the data stream.
pub fn data_stream_config(stores: &JobStores) -> stream::Config {
    stream::Config {
        name: DATA_STREAM.to_string(),
        subjects: vec![format!("{DATA_PREFIX}.>")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_age: stores.data_max_age,
        max_bytes: stores.data_max_bytes,
        duplicate_window: stores.duplicate_window.min(stores.data_max_age),
        max_message_size: stores.max_message_size,
        ..Default::default()
    }
}

/// Configuration of the records bucket.
pub fn records_config(stores: &JobStores) -> kv::Config {
    kv::Config {
        bucket: RECORDS_BUCKET.to_string(),
        description: "lclstream publish-job records".into(),
        history: 1,
        max_age: stores.record_max_age,
        max_value_size: 64 * 1024,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Creates (or finds) both streams and the records bucket.
pub async fn ensure(
    js: &jetstream::Context,
    stores: &JobStores,
) -> Result<kv::Store, async_nats::Error> {
    js.get_or_create_stream(queue_stream_config()).await?;
    js.get_or_create_stream(data_stream_config(stores)).await?;
    open_records(js, stores).await
}

/// Opens the records bucket, creating it when missing.
pub async fn open_records(
    js: &jetstream::Context,
    stores: &JobStores,
) -> Result<kv::Store, async_nats::Error> {
    match js.get_key_value(RECORDS_BUCKET).await {
        Ok(store) => Ok(store),
        Err(_) => Ok(js.create_key_value(records_config(stores)).await?),
    }
}

/// What is stored under a record key.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordRead {
    /// A record and its revision.
    Found(Box<JobRecord>, u64),
    /// Nothing (never created, deleted or expired).
    Missing,
    /// Something that is not this key's job record; why.
    Malformed(String),
}

/// Reads what is stored under a record key without failing on a value that
/// is not a job record (or is another job's record): readers that list
/// records skip such a value rather than fail.
pub async fn read_record_entry(
    records: &kv::Store,
    institution: &str,
    job: &str,
) -> Result<RecordRead, async_nats::Error> {
    let key = record_key(institution, job);
    let Some(entry) = records.entry(key.clone()).await? else {
        return Ok(RecordRead::Missing);
    };
    if !matches!(entry.operation, kv::Operation::Put) {
        return Ok(RecordRead::Missing);
    }
    let record: JobRecord = match serde_json::from_slice(&entry.value) {
        Ok(record) => record,
        Err(e) => {
            return Ok(RecordRead::Malformed(format!(
                "record {key} is not a job record: {e}"
            )))
        }
    };
    if record.institution != institution || record.job != job {
        return Ok(RecordRead::Malformed(format!(
            "record {key} holds job {:?} of {:?}",
            record.job, record.institution
        )));
    }
    Ok(RecordRead::Found(Box::new(record), entry.revision))
}

/// Reads a record and its revision; a malformed value is an error.
pub async fn read_record(
    records: &kv::Store,
    institution: &str,
    job: &str,
) -> Result<Option<(JobRecord, u64)>, async_nats::Error> {
    match read_record_entry(records, institution, job).await? {
        RecordRead::Found(record, revision) => Ok(Some((*record, revision))),
        RecordRead::Missing => Ok(None),
        RecordRead::Malformed(why) => Err(why.into()),
    }
}

/// Stores a new record; fails if the key exists.
pub async fn create_record(
    records: &kv::Store,
    record: &JobRecord,
) -> Result<u64, async_nats::Error> {
    let value = Bytes::from(serde_json::to_vec(record)?);
    Ok(records
        .create(record_key(&record.institution, &record.job), value)
        .await?)
}

/// The outcome of [`update_record`].
#[derive(Debug, Clone, PartialEq)]
pub enum Updated {
    /// The change was stored; the new record.
    Stored(JobRecord),
    /// `change` declined to change the record (it returned `false`); the current record.
    Unchanged(JobRecord),
    /// The record does not exist (expired or never created).
    Missing,
}

/// Attempts of one compare-and-set update before giving up.
const CAS_ATTEMPTS: usize = 16;

/// Applies `change` to the current record and stores it if nobody changed
/// the record meanwhile (compare-and-set on the revision), retrying on a
/// conflict. `change` returns `false` to leave the record as it is.
pub async fn update_record(
    records: &kv::Store,
    institution: &str,
    job: &str,
    mut change: impl FnMut(&mut JobRecord) -> bool,
) -> Result<Updated, async_nats::Error> {
    let key = record_key(institution, job);
    for attempt in 0..CAS_ATTEMPTS {
        let Some((mut record, revision)) = read_record(records, institution, job).await? else {
            return Ok(Updated::Missing);
        };
        if !change(&mut record) {
            return Ok(Updated::Unchanged(record));
        }
        record.updated = super::jobs::now();
        let value = Bytes::from(serde_json::to_vec(&record)?);
        match records.update(&key, value, revision).await {
            Ok(_) => return Ok(Updated::Stored(record)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 + 1))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(format!("record {key}: too many concurrent updates").into())
}

//! The gateway side of publish jobs: the `jobs.*` endpoints, and the relay
//! that forwards worker status to the requesting institution and charges
//! the bytes a job stores against the institution's daily quota.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::{consumer, kv};
use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::OnceCell;

use super::protocol::*;
use super::store::{self, JobStores, RecordRead, Updated};
use super::JobsConfig;
use crate::audit::{AuditRecord, Decision};
use crate::naming::{consumer_slot_name, parse_consumer_slot};
use crate::policy::InstitutionPolicy;
use crate::service::consumers::{list_institution, META_INSTITUTION, META_KIND};
use crate::service::protocol::{ErrorBody, ErrorCode, MAX_REQUEST_BYTES};
use crate::service::validate::resolve_stream;
use crate::service::{admit, respond, ServiceContext};
use lclstream_nats::streams::{pull_consumer_config, StartPosition};
use lclstream_nats::subjects::{DATA_ROOT, GATEWAY_PREFIX};

/// Name of the NATS service of the job endpoints.
pub const JOBS_SERVICE_NAME: &str = "lclstream-jobs";
/// Largest number of jobs returned by `jobs.list`.
const MAX_LISTED_JOBS: usize = 1000;
/// Largest number of requests handled at once.
const MAX_CONCURRENT_REQUESTS: usize = 32;

/// The job endpoints and their state.
pub struct JobsService {
    ctx: Arc<ServiceContext>,
    config: JobsConfig,
    records: OnceCell<kv::Store>,
    /// Bytes already charged per job (the relay charges increases only).
    charged: Mutex<HashMap<String, u64>>,
    sequence: AtomicU64,
}

/// A running job service; its tasks stop when it is dropped.
pub struct JobsHandle {
    service: Option<async_nats::service::Service>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    jobs: Arc<JobsService>,
}

impl JobsHandle {
    /// The handlers (to call them without NATS).
    pub fn jobs(&self) -> Arc<JobsService> {
        self.jobs.clone()
    }

    /// Stops answering requests and relaying status.
    pub async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(service) = self.service.take() {
            if let Err(e) = service.stop().await {
                tracing::warn!("stopping the job service: {e}");
            }
        }
    }
}

impl Drop for JobsHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn bad(reason: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, reason)
}

fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, format!("gateway error: {e}"))
}

fn parse_body<T: DeserializeOwned>(body: &[u8], empty: Option<T>) -> Result<T, ErrorBody> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(bad(format!(
            "request body is {} bytes; the limit is {MAX_REQUEST_BYTES}",
            body.len()
        )));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        if let Some(value) = empty {
            return Ok(value);
        }
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("request body: {e}")))
}

fn to_value<T: serde::Serialize>(value: T) -> Result<serde_json::Value, ErrorBody> {
    serde_json::to_value(value).map_err(internal)
}

impl JobsService {
    /// Job handlers over the request service's context (connection,
    /// policies, quotas, audit and the per-institution slot lock).
    pub fn new(ctx: Arc<ServiceContext>, config: JobsConfig) -> JobsService {
        JobsService {
            ctx,
            config,
            records: OnceCell::new(),
            charged: Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(0),
        }
    }

    /// Creates the job streams and bucket (retried on each request if the
    /// server is not ready yet), registers the endpoints and starts the relay.
    pub async fn start(
        ctx: Arc<ServiceContext>,
        config: JobsConfig,
        queue_group: &str,
    ) -> Result<JobsHandle, async_nats::Error> {
        let jobs = Arc::new(JobsService::new(ctx.clone(), config));
        if let Err(e) = jobs.records().await {
            tracing::warn!(
                "job streams not ready yet ({}); retrying on the first request",
                e.reason
            );
        }
        let service = ctx
            .front
            .service_builder()
            .description("lclstream publish jobs: stream runs from facility storage on request")
            .queue_group(queue_group)
            .start(JOBS_SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await?;
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS));
        let mut tasks = Vec::new();
        for verb in VERBS {
            let mut endpoint = service
                .endpoint_builder()
                .name(verb.replace('.', "-"))
                .add(format!("{GATEWAY_PREFIX}.*.{verb}"))
                .await?;
            let jobs = jobs.clone();
            let permits = permits.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(request) = endpoint.next().await {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let jobs = jobs.clone();
                    tokio::spawn(async move {
                        jobs.answer(verb, request).await;
                        drop(permit);
                    });
                }
            }));
        }
        let mut status = ctx
            .client
            .queue_subscribe(format!("{STATUS_PREFIX}.*"), queue_group.to_string())
            .await?;
        {
            let jobs = jobs.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(message) = status.next().await {
                    jobs.relay(&message.payload).await;
                }
            }));
        }
        // A job whose last delivery died with its worker: the server gives up
        // on the queue message and says so; the record must not stay `running`.
        let mut exhausted = ctx
            .client
            .queue_subscribe(
                format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{QUEUE_STREAM}.*"),
                queue_group.to_string(),
            )
            .await?;
        {
            let jobs = jobs.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(message) = exhausted.next().await {
                    jobs.abandoned(&message.payload).await;
                }
            }));
        }
        Ok(JobsHandle {
            service: Some(service),
            tasks,
            jobs,
        })
    }

    fn stores(&self) -> JobStores {
        self.config.stores()
    }

    /// The records bucket, creating the streams and bucket on first use.
    pub async fn records(&self) -> Result<&kv::Store, ErrorBody> {
        self.records
            .get_or_try_init(|| async {
                store::ensure(&self.ctx.js, &self.stores())
                    .await
                    .map_err(|e| internal(format!("creating the job streams: {e}")))
            })
            .await
    }

    async fn answer(&self, verb: &'static str, request: async_nats::service::Request) {
        let Some((institution, who)) = admit(&self.ctx.audit, &request, verb) else {
            return;
        };
        let (outcome, details) = self
            .dispatch(verb, &institution, &who, &request.message.payload)
            .await;
        respond(
            &self.ctx.audit,
            request,
            verb,
            &institution,
            who,
            outcome,
            details,
        )
        .await;
    }

    /// Runs one job verb for an institution; returns the result or refusal and audit details.
    pub async fn dispatch(
        &self,
        verb: &str,
        institution: &str,
        who: &str,
        body: &[u8],
    ) -> (Result<serde_json::Value, ErrorBody>, serde_json::Value) {
        let mut details = json!({ "subject": format!("{GATEWAY_PREFIX}.{institution}.{verb}") });
        let result = async {
            let policy = self.policy(institution)?;
            match verb {
                VERB_SUBMIT => {
                    let request: JobRequest = parse_body(body, None)?;
                    details["request"] = json!(request);
                    let view = self.submit(&policy, who, request).await?;
                    details["job"] = json!(view.record.job);
                    details["consumer"] = json!(view.record.consumer);
                    to_value(view)
                }
                VERB_GET => {
                    let job: JobRef = parse_body(body, None)?;
                    details["job"] = json!(job.job);
                    to_value(self.get(&policy, &job.job).await?)
                }
                VERB_LIST => {
                    let request: JobListRequest =
                        parse_body(body, Some(JobListRequest::default()))?;
                    to_value(self.list(&policy, &request).await?)
                }
                VERB_CANCEL => {
                    let job: JobRef = parse_body(body, None)?;
                    details["job"] = json!(job.job);
                    to_value(self.cancel(&policy, &job.job).await?)
                }
                other => Err(bad(format!("unknown verb {other:?}"))),
            }
        }
        .await;
        (result, details)
    }

    fn policy(&self, institution: &str) -> Result<InstitutionPolicy, ErrorBody> {
        let policies = self.ctx.policies.read().unwrap_or_else(|p| p.into_inner());
        policies.get(institution).cloned().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::UnknownInstitution,
                format!("no policy for institution {institution:?}"),
            )
        })
    }

    fn new_job_id(&self) -> String {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128;
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("j{:x}{:03x}", nanos, n % 4096)
    }

    /// Validates a job against grants and quotas, takes a consumer slot for
    /// its data, records it and puts it on the work queue.
    pub async fn submit(
        &self,
        policy: &InstitutionPolicy,
        requester: &str,
        request: JobRequest,
    ) -> Result<JobView, ErrorBody> {
        check_request(&request)?;
        let id = policy.id.as_str();
        let quotas = &self.ctx.quotas;
        // The job publishes what the agent would publish for these runs: every
        // source of every run must lie within an active grant.
        let instrument = request.instrument.to_ascii_lowercase();
        let filters: Vec<String> = request
            .runs()
            .map(|run| format!("{DATA_ROOT}.{instrument}.{}.{run}.*", request.experiment))
            .collect();
        resolve_stream(policy, &filters, quotas.now())?;
        let records = self.records().await?;
        let _guard = self.ctx.lock(id).await?;
        quotas
            .check_bytes(id, policy.quotas.bytes_per_day)
            .map_err(|e| {
                ErrorBody::new(
                    ErrorCode::QuotaBytes,
                    format!(
                        "{} of {} bytes delivered today (UTC); new jobs are refused until {}",
                        e.used, e.limit, e.resets_at
                    ),
                )
            })?;
        quotas
            .check_request(id, policy.quotas.requests_per_hour)
            .map_err(|e| {
                ErrorBody::new(
                    ErrorCode::QuotaRequests,
                    format!(
                        "{} of {} requests used in the last hour; the next is allowed at {}",
                        e.used, e.limit, e.resets_at
                    ),
                )
            })?;
        let existing = list_institution(&self.ctx.js, id).await.map_err(internal)?;
        let slots = policy.quotas.concurrent_consumers;
        let taken: Vec<u32> = existing
            .iter()
            .filter_map(|c| parse_consumer_slot(id, &c.name))
            .collect();
        let Some(slot) = (0..slots).find(|k| !taken.contains(k)) else {
            let names: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
            return Err(ErrorBody::new(
                ErrorCode::QuotaConsumers,
                format!(
                    "all {slots} consumer slots are in use ({names:?}); a job needs one for its \
                     data; release one or cancel a job first"
                ),
            ));
        };
        let job = self.new_job_id();
        let consumer_name = consumer_slot_name(id, slot);
        let subject = data_subject(&job);
        let mut config = pull_consumer_config(
            &consumer_name,
            vec![subject.clone()],
            &StartPosition::All,
            &policy.quotas.pull.to_limits(),
        );
        config.description = Some(format!("lclstream job {job} of {id}"));
        config.metadata = HashMap::from([
            (META_INSTITUTION.to_string(), id.to_string()),
            (META_JOB.to_string(), job.clone()),
            (META_KIND.to_string(), KIND_JOB.to_string()),
        ]);
        let data = self
            .ctx
            .js
            .get_stream_no_info(DATA_STREAM)
            .await
            .map_err(internal)?;
        let created = data
            .create_consumer_strict(config)
            .await
            .map_err(internal)?;
        let info = created.cached_info().clone();
        let now = now();
        let record = JobRecord {
            job: job.clone(),
            institution: id.to_string(),
            requester: requester.to_string(),
            request: request.clone(),
            state: JobState::Queued,
            stream: DATA_STREAM.to_string(),
            subject: subject.clone(),
            consumer: consumer_name.clone(),
            created: now,
            updated: now,
            started: None,
            finished: None,
            worker: None,
            attempts: 0,
            events_total: None,
            events: 0,
            batches: 0,
            bytes: 0,
            files: 0,
            error: None,
        };
        let spec = JobSpec {
            job: job.clone(),
            institution: id.to_string(),
            request,
            subject,
            encoding: self.config.encoding(),
        };
        let queued = async {
            store::create_record(records, &record).await?;
            let payload = serde_json::to_vec(&spec)?;
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .message_id(job.as_str());
            self.ctx
                .js
                .send_publish(queue_subject(&instrument), publish)
                .await?
                .await?;
            Ok::<_, async_nats::Error>(())
        }
        .await;
        if let Err(e) = queued {
            let _ = data.delete_consumer(&consumer_name).await;
            let _ = records.delete(record_key(id, &job)).await;
            return Err(internal(format!("queueing job {job}: {e}")));
        }
        if let Err(e) = quotas.count_request(id).await {
            tracing::error!("job {job} was queued but not counted: {e}");
        }
        self.ctx.meter.register(&info);
        self.charged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.clone(), 0);
        Ok(JobView {
            watch: watch_subject(id, &job),
            notices_key: self.ctx.notifier.public_key(),
            grant: Some(self.ctx.grant_of(&info, false)),
            record,
        })
    }

    async fn job_consumer(&self, record: &JobRecord) -> Option<consumer::Info> {
        let stream = self.ctx.js.get_stream_no_info(&record.stream).await.ok()?;
        let mut consumer: consumer::PullConsumer =
            stream.get_consumer(&record.consumer).await.ok()?;
        let info = consumer.info().await.ok()?.clone();
        (info.config.metadata.get(META_JOB) == Some(&record.job)).then_some(info)
    }

    async fn record_of(
        &self,
        policy: &InstitutionPolicy,
        job: &str,
    ) -> Result<JobRecord, ErrorBody> {
        check_job_id(job)?;
        let records = self.records().await?;
        match store::read_record_entry(records, &policy.id, job)
            .await
            .map_err(internal)?
        {
            RecordRead::Found(record, _) => Ok(*record),
            RecordRead::Missing => Err(bad(format!("no job {job:?} of yours is on record"))),
            RecordRead::Malformed(why) => {
                self.bad_record(&policy.id, &why);
                Err(bad(format!(
                    "the record of job {job:?} is unreadable; the facility has been told"
                )))
            }
        }
    }

    /// One job's record and, while it exists, its consumer.
    pub async fn get(&self, policy: &InstitutionPolicy, job: &str) -> Result<JobView, ErrorBody> {
        let record = self.record_of(policy, job).await?;
        let grant = self
            .job_consumer(&record)
            .await
            .map(|info| self.ctx.grant_of(&info, false));
        Ok(JobView {
            watch: watch_subject(&policy.id, job),
            notices_key: self.ctx.notifier.public_key(),
            grant,
            record,
        })
    }

    /// Logs and audits a value in the records bucket that is not the job
    /// record its key names.
    fn bad_record(&self, institution: &str, why: &str) {
        tracing::warn!(institution, "skipping a bad job record: {why}");
        self.ctx.audit.record(AuditRecord::now(
            "gateway",
            Some(institution),
            "jobs.record",
            Decision::Info,
            "bad_record",
            json!({ "error": why }),
        ));
    }

    /// The institution's jobs on record, newest first.
    pub async fn list(
        &self,
        policy: &InstitutionPolicy,
        request: &JobListRequest,
    ) -> Result<JobList, ErrorBody> {
        let records = self.records().await?;
        let prefix = format!("{}.", policy.id);
        let mut keys = records.keys().await.map_err(internal)?;
        let mut jobs = Vec::new();
        let mut truncated = false;
        let mut seen = 0usize;
        while let Some(key) = keys.try_next().await.map_err(internal)? {
            seen += 1;
            if seen > 100 * MAX_LISTED_JOBS {
                truncated = true;
                break;
            }
            let Some(job) = key.strip_prefix(&prefix) else {
                continue;
            };
            match store::read_record_entry(records, &policy.id, job)
                .await
                .map_err(internal)?
            {
                RecordRead::Found(record, _) => {
                    if request.state.is_none_or(|s| s == record.state) {
                        jobs.push(*record);
                    }
                }
                RecordRead::Missing => {}
                // One bad record must not hide the others.
                RecordRead::Malformed(why) => self.bad_record(&policy.id, &why),
            }
            if jobs.len() >= MAX_LISTED_JOBS {
                truncated = true;
                break;
            }
        }
        jobs.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok(JobList {
            institution: policy.id.clone(),
            jobs,
            truncated,
        })
    }

    /// Cancels a job: marks the record cancelled (the worker stops at its
    /// next batch), deletes the job's consumer (freeing the slot) and purges
    /// the data it published. A finished job keeps its state; its consumer
    /// and data are discarded all the same.
    pub async fn cancel(
        &self,
        policy: &InstitutionPolicy,
        job: &str,
    ) -> Result<JobView, ErrorBody> {
        check_job_id(job)?;
        let records = self.records().await?;
        let updated = store::update_record(records, &policy.id, job, |r| {
            if r.state.is_terminal() {
                return false;
            }
            r.state = JobState::Cancelled;
            r.finished = Some(now());
            r.error = Some("cancelled by the requester".into());
            true
        })
        .await
        .map_err(internal)?;
        let record = match updated {
            Updated::Stored(r) | Updated::Unchanged(r) => r,
            Updated::Missing => return Err(bad(format!("no job {job:?} of yours is on record"))),
        };
        let _guard = self.ctx.lock(&policy.id).await?;
        if self.job_consumer(&record).await.is_some() {
            let stream = self
                .ctx
                .js
                .get_stream_no_info(&record.stream)
                .await
                .map_err(internal)?;
            stream
                .delete_consumer(&record.consumer)
                .await
                .map_err(internal)?;
        }
        self.purge(&record).await;
        let _ = self
            .ctx
            .notifier
            .publish(
                watch_subject(&policy.id, job),
                serde_json::to_vec(&record).unwrap_or_default().into(),
            )
            .await;
        Ok(JobView {
            watch: watch_subject(&policy.id, job),
            notices_key: self.ctx.notifier.public_key(),
            grant: None,
            record,
        })
    }

    /// Deletes the data a job published.
    async fn purge(&self, record: &JobRecord) {
        if record.stream != DATA_STREAM || record.subject != data_subject(&record.job) {
            return;
        }
        if let Ok(stream) = self.ctx.js.get_stream_no_info(DATA_STREAM).await {
            if let Err(e) = stream.purge().filter(record.subject.as_str()).await {
                tracing::warn!("cannot purge the data of job {}: {e}", record.job);
            }
        }
    }

    /// Marks the job of a queue message that ran out of deliveries as failed
    /// and removes the message from the queue.
    async fn abandoned(&self, advisory: &[u8]) {
        let Ok(advisory) = serde_json::from_slice::<serde_json::Value>(advisory) else {
            return;
        };
        let Some(sequence) = advisory["stream_seq"].as_u64() else {
            return;
        };
        let deliveries = advisory["deliveries"].as_u64().unwrap_or_default();
        let Ok(queue) = self.ctx.js.get_stream_no_info(QUEUE_STREAM).await else {
            return;
        };
        let Ok(message) = queue.get_raw_message(sequence).await else {
            return;
        };
        let Ok(spec) = serde_json::from_slice::<JobSpec>(&message.payload) else {
            return;
        };
        let Ok(records) = self.records().await else {
            return;
        };
        let error = format!(
            "no worker completed the job in {deliveries} deliveries (workers died or stalled)"
        );
        let updated = store::update_record(records, &spec.institution, &spec.job, |r| {
            if r.state.is_terminal() {
                return false;
            }
            r.state = JobState::Failed;
            r.finished = Some(now());
            r.error = Some(error.clone());
            true
        })
        .await;
        match updated {
            Ok(Updated::Stored(record)) => {
                tracing::warn!(job = %spec.job, "{error}");
                self.ctx.audit.record(AuditRecord::now(
                    "gateway",
                    Some(&spec.institution),
                    "jobs.abandon",
                    Decision::Info,
                    "max_deliveries",
                    json!({ "job": spec.job, "deliveries": deliveries }),
                ));
                if let Ok(payload) = serde_json::to_vec(&record) {
                    self.relay(&payload).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job = %spec.job, "cannot mark the abandoned job: {e}"),
        }
        if let Err(e) = queue.delete_message(sequence).await {
            tracing::debug!("cannot delete abandoned job message {sequence}: {e}");
        }
    }

    /// Handles one worker status message: charges new bytes and forwards it.
    async fn relay(&self, payload: &[u8]) {
        let Ok(record) = serde_json::from_slice::<JobRecord>(payload) else {
            tracing::debug!("ignoring a malformed job status message");
            return;
        };
        if check_job_id(&record.job).is_err() || self.policy(&record.institution).is_err() {
            return;
        }
        let delta = {
            let mut charged = self.charged.lock().unwrap_or_else(|p| p.into_inner());
            // A job first seen here (gateway restarted, or submitted through
            // another gateway) is charged from now on.
            let before = *charged.entry(record.job.clone()).or_insert(record.bytes);
            let delta = record.bytes.saturating_sub(before);
            if record.state.is_terminal() {
                charged.remove(&record.job);
            } else if delta > 0 {
                charged.insert(record.job.clone(), record.bytes);
            }
            delta
        };
        if delta > 0 {
            if let Err(e) = self
                .ctx
                .quotas
                .meter_bytes(&record.institution, delta)
                .await
            {
                tracing::warn!("bytes of job {} not counted: {e}", record.job);
            }
        }
        if record.state == JobState::Cancelled {
            // The worker may have published a last batch after the cancel purged the subject.
            self.purge(&record).await;
        }
        if let Err(e) = self
            .ctx
            .notifier
            .publish(
                watch_subject(&record.institution, &record.job),
                Bytes::copy_from_slice(payload),
            )
            .await
        {
            tracing::debug!("cannot forward the status of job {}: {e}", record.job);
        }
    }
}

//! The data-request service: partners ask for datasets over NATS.
//!
//! A NATS service (`$SRV.INFO.lclstream-gateway`) with four endpoints on
//! `lclstream.gateway.*.<verb>` ([`protocol`]). The institution is the
//! subject token after `lclstream.gateway`, never a field of the body: the
//! auth callout lets each institution publish only under its own id.

pub mod consumers;
pub mod meter;
pub mod notices;
pub use lclstream_nats::protocol::requests as protocol;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_nats::jetstream::stream::ConsumerCreateStrictErrorKind;
use async_nats::jetstream::{self, consumer};
use async_nats::service::ServiceExt;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use self::consumers::{
    end_of, filters_of, label_of, list_institution, start_of, view_of, KIND_DATASET, META_END,
    META_INSTITUTION, META_KIND, META_LABEL, META_START,
};
use self::meter::Meter;
use self::notices::Notifier;
use self::protocol::*;
use self::validate::{check_label, grant_active, resolve_stream};
use crate::audit::{Audit, AuditRecord, Decision};
use crate::naming::{
    consumer_slot_name, inbox_prefix, institution_of_subject, notice_subject, parse_consumer_slot,
    reply_in_inbox,
};
use crate::policy::InstitutionPolicy;
use crate::quota::QuotaBook;
use lclstream_nats::streams::{pull_consumer_config, StartPosition};
use lclstream_nats::subjects::GATEWAY_PREFIX;

/// Institution policies by id.
pub type PolicyMap = HashMap<String, InstitutionPolicy>;
/// Policies shared with the meter and the auth callout; replace the map to reload.
pub type SharedPolicies = Arc<RwLock<PolicyMap>>;

/// Largest number of stored subjects listed per grant.
const MAX_LISTED_SUBJECTS: usize = 1000;
/// Largest number of requests handled at once.
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// Everything a request handler needs.
pub struct ServiceContext {
    /// The gateway's facility-side connection (consumers, job stores).
    pub client: async_nats::Client,
    /// The gateway's partner-side connection: requests arrive and replies
    /// leave on it (the same connection as `client` without the callout).
    pub front: async_nats::Client,
    /// Signed notices and job status to institutions (on `front`).
    pub notifier: Arc<Notifier>,
    /// The JetStream API prefix institutions pull with.
    pub partner_api: String,
    /// JetStream on that connection.
    pub js: jetstream::Context,
    /// Current policies.
    pub policies: SharedPolicies,
    /// Quota counters.
    pub quotas: Arc<QuotaBook>,
    /// Audit log.
    pub audit: Arc<Audit>,
    /// Byte meter (new consumers are registered with it).
    pub meter: Arc<Meter>,
    /// State shared with the facility's other gateways (None: this gateway is alone).
    shared: std::sync::OnceLock<crate::shared_state::SharedState>,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one institution's decision is taken (see [`ServiceContext::lock`]).
pub struct DecisionGuard {
    // Dropped first: the shared lock is released before the local one.
    _shared: Option<crate::shared_state::DecisionLock>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// A running request service.
pub struct ServiceHandle {
    service: async_nats::service::Service,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ServiceHandle {
    /// The endpoint tasks (aborted on drop of the gateway).
    pub(crate) fn tasks_handles(&self) -> &[tokio::task::JoinHandle<()>] {
        &self.tasks
    }

    /// Stops answering requests.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Err(e) = self.service.stop().await {
            tracing::warn!("stopping the request service: {e}");
        }
    }
}

impl ServiceContext {
    /// A context over existing connections (see the field docs).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: async_nats::Client,
        front: async_nats::Client,
        notifier: Arc<Notifier>,
        partner_api: String,
        policies: SharedPolicies,
        quotas: Arc<QuotaBook>,
        audit: Arc<Audit>,
        meter: Arc<Meter>,
    ) -> ServiceContext {
        ServiceContext {
            js: jetstream::new(client.clone()),
            client,
            front,
            notifier,
            partner_api,
            policies,
            quotas,
            audit,
            meter,
            shared: std::sync::OnceLock::new(),
            locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Takes decision locks in `shared` too, so that several gateways decide
    /// for one institution one at a time.
    pub fn attach_shared(&self, shared: crate::shared_state::SharedState) {
        let _ = self.shared.set(shared);
    }

    /// Registers the endpoints and starts answering; `queue_group` lets
    /// several gateways share the load.
    pub async fn start(
        self: Arc<Self>,
        queue_group: &str,
    ) -> Result<ServiceHandle, async_nats::Error> {
        let service = self
            .front
            .service_builder()
            .description("lclstream data requests: datasets, usage and release per institution")
            .queue_group(queue_group)
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await?;
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_REQUESTS));
        let mut tasks = Vec::new();
        for verb in VERBS {
            let mut endpoint = service
                .endpoint_builder()
                .name(verb)
                .add(format!("{GATEWAY_PREFIX}.*.{verb}"))
                .await?;
            let ctx = self.clone();
            let permits = permits.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(request) = endpoint.next().await {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        ctx.answer(verb, request).await;
                        drop(permit);
                    });
                }
            }));
        }
        Ok(ServiceHandle { service, tasks })
    }

    async fn answer(&self, verb: &'static str, request: async_nats::service::Request) {
        let Some((institution, who)) = admit(&self.audit, &request, verb) else {
            return;
        };
        let body = request.message.payload.clone();
        let (outcome, details) = self.dispatch(verb, &institution, &body).await;
        respond(
            &self.audit,
            request,
            verb,
            &institution,
            who,
            outcome,
            details,
        )
        .await;
    }

    /// Runs one verb for an institution; returns the result or refusal and audit details.
    pub async fn dispatch(
        &self,
        verb: &str,
        institution: &str,
        body: &[u8],
    ) -> (Result<serde_json::Value, ErrorBody>, serde_json::Value) {
        let mut details = json!({ "subject": format!("{GATEWAY_PREFIX}.{institution}.{verb}") });
        let result = async {
            let policy = self.policy(institution)?;
            match verb {
                VERB_REQUEST => {
                    let request: DatasetRequest = parse_body(body, None)?;
                    details["filters"] = json!(request.filters);
                    details["label"] = json!(request.label);
                    let grant = self.request_dataset(&policy, request).await?;
                    details["consumer"] = json!(grant.consumer);
                    details["stream"] = json!(grant.stream);
                    details["resumed"] = json!(grant.resumed);
                    to_value(grant)
                }
                VERB_LIST => {
                    let _: ListRequest = parse_body(body, Some(ListRequest::default()))?;
                    to_value(self.list(&policy).await?)
                }
                VERB_USAGE => {
                    let _: UsageRequest = parse_body(body, Some(UsageRequest::default()))?;
                    to_value(self.usage(&policy).await?)
                }
                VERB_RELEASE => {
                    let request: ReleaseRequest = parse_body(body, None)?;
                    let released = self.release(&policy, request).await?;
                    details["consumer"] = json!(released.consumer);
                    to_value(released)
                }
                other => Err(bad(format!("unknown verb {other:?}"))),
            }
        }
        .await;
        (result, details)
    }

    fn policy(&self, institution: &str) -> Result<InstitutionPolicy, ErrorBody> {
        let policies = self.policies.read().unwrap_or_else(|p| p.into_inner());
        policies.get(institution).cloned().ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::UnknownInstitution,
                format!("no policy for institution {institution:?}"),
            )
        })
    }

    /// Serializes slot decisions of one institution (dataset requests and
    /// publish jobs take consumer slots under this lock): in this process,
    /// then across gateways through the shared bucket (bounded wait), after
    /// which the institution's counters are re-read from it.
    pub async fn lock(&self, institution: &str) -> Result<DecisionGuard, ErrorBody> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(institution.to_string()).or_default().clone()
        };
        let local = lock.lock_owned().await;
        let shared = match self.shared.get() {
            Some(shared) => Some(
                shared
                    .lock(institution)
                    .await
                    .map_err(|e| ErrorBody::new(ErrorCode::Internal, e))?,
            ),
            None => None,
        };
        self.quotas.refresh(institution).await.map_err(internal)?;
        Ok(DecisionGuard {
            _shared: shared,
            _local: local,
        })
    }

    /// Grants (or refuses) a dataset: resumes a labelled consumer or creates one in a free slot.
    pub async fn request_dataset(
        &self,
        policy: &InstitutionPolicy,
        request: DatasetRequest,
    ) -> Result<DatasetGrant, ErrorBody> {
        validate::check_request(&request)?;
        let id = policy.id.as_str();
        let now = self.quotas.now();
        let stream = resolve_stream(policy, &request.filters, now)?;
        // One decision at a time per institution, so two requests cannot take the same slot.
        let _guard = self.lock(id).await?;
        let existing = list_institution(&self.js, id).await.map_err(internal)?;
        if let Some(label) = &request.label {
            if let Some(info) = existing.iter().find(|c| label_of(c) == Some(label)) {
                let mut have = filters_of(&info.config);
                let mut want = request.filters.clone();
                have.sort();
                want.sort();
                if info.stream_name != stream || have != want {
                    return Err(bad(format!(
                        "label {label:?} already names consumer {} on {} with filters {have:?}; \
                         release it or choose another label",
                        info.name, info.stream_name
                    )));
                }
                self.check_bytes(policy)?;
                return Ok(self.grant_of(info, true));
            }
        }
        self.check_bytes(policy)?;
        if let Err(e) = self
            .quotas
            .check_request(id, policy.quotas.requests_per_hour)
        {
            return Err(ErrorBody::new(
                ErrorCode::QuotaRequests,
                format!(
                    "{} of {} dataset requests used in the last hour; the next is allowed at {}",
                    e.used, e.limit, e.resets_at
                ),
            ));
        }
        let slots = policy.quotas.concurrent_consumers;
        let taken: Vec<u32> = existing
            .iter()
            .filter_map(|c| parse_consumer_slot(id, &c.name))
            .collect();
        let Some(slot) = (0..slots).find(|k| !taken.contains(k)) else {
            let names: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
            return Err(ErrorBody::new(
                ErrorCode::QuotaConsumers,
                format!("all {slots} consumer slots are in use ({names:?}); release one first"),
            ));
        };
        let name = consumer_slot_name(id, slot);
        let start = match &request.start {
            Start::All => StartPosition::All,
            Start::New => StartPosition::New,
            Start::Sequence(s) => StartPosition::Sequence(*s),
            Start::Time(t) => StartPosition::Time(t.unix_timestamp()),
        };
        let mut config = pull_consumer_config(
            &name,
            request.filters.clone(),
            &start,
            &policy.quotas.pull.to_limits(),
        );
        config.description = Some(format!("lclstream dataset of {id}"));
        let mut metadata = HashMap::new();
        metadata.insert(META_INSTITUTION.to_string(), id.to_string());
        metadata.insert(META_KIND.to_string(), KIND_DATASET.to_string());
        metadata.insert(
            META_START.to_string(),
            serde_json::to_string(&request.start).unwrap_or_default(),
        );
        if let Some(end) = &request.end {
            metadata.insert(
                META_END.to_string(),
                serde_json::to_string(end).unwrap_or_default(),
            );
        }
        if let Some(label) = &request.label {
            metadata.insert(META_LABEL.to_string(), label.clone());
        }
        config.metadata = metadata;
        // Counted before the consumer exists: a gateway dying in between
        // leaves one request too many counted, never one granted uncounted.
        self.quotas.count_request(id).await.map_err(internal)?;
        let created = async {
            let handle = self
                .js
                .get_stream_no_info(&stream)
                .await
                .map_err(internal)?;
            handle
                .create_consumer_strict(config)
                .await
                .map_err(|e| match e.kind() {
                    ConsumerCreateStrictErrorKind::JetStream(j) if j.code() == 404 => bad(format!(
                        "stream {stream} does not exist yet; no data has been published to it"
                    )),
                    _ => internal(e),
                })
        }
        .await;
        let created = match created {
            Ok(created) => created,
            Err(refused) => {
                if let Err(e) = self.quotas.uncount_request(id).await {
                    tracing::warn!("a refused request of {id} stays counted: {e}");
                }
                return Err(refused);
            }
        };
        let info = created.cached_info().clone();
        self.meter.register(&info);
        Ok(self.grant_of(&info, false))
    }

    fn check_bytes(&self, policy: &InstitutionPolicy) -> Result<(), ErrorBody> {
        self.quotas
            .check_bytes(&policy.id, policy.quotas.bytes_per_day)
            .map_err(|e| {
                ErrorBody::new(
                    ErrorCode::QuotaBytes,
                    format!(
                        "{} of {} bytes delivered today (UTC); consumers are paused until {}",
                        e.used, e.limit, e.resets_at
                    ),
                )
            })
    }

    /// What the institution may read, with what is stored under each grant.
    pub async fn list(&self, policy: &InstitutionPolicy) -> Result<DatasetList, ErrorBody> {
        let now = self.quotas.now();
        let mut grants = Vec::new();
        for grant in &policy.grants {
            let mut view = GrantView {
                stream: grant.stream.clone(),
                subjects: grant.subjects.clone(),
                not_before: grant.not_before,
                not_after: grant.not_after,
                active: grant_active(grant, now),
                stream_exists: false,
                stored: Vec::new(),
                truncated: false,
            };
            let stream = self
                .js
                .get_stream_no_info(&grant.stream)
                .await
                .map_err(internal)?;
            'subjects: for pattern in &grant.subjects {
                let mut subjects = match stream.info_with_subjects(pattern).await {
                    Ok(s) => s,
                    Err(e) if e.to_string().contains("not found") => break,
                    Err(e) => return Err(internal(e)),
                };
                view.stream_exists = true;
                while let Some((subject, messages)) = subjects.try_next().await.map_err(internal)? {
                    if view.stored.len() >= MAX_LISTED_SUBJECTS {
                        view.truncated = true;
                        break 'subjects;
                    }
                    view.stored.push(SubjectCount {
                        subject,
                        messages: messages as u64,
                    });
                }
            }
            view.stored.sort_by(|a, b| a.subject.cmp(&b.subject));
            grants.push(view);
        }
        Ok(DatasetList {
            institution: policy.id.clone(),
            grants,
        })
    }

    /// The institution's usage and remaining quota.
    pub async fn usage(&self, policy: &InstitutionPolicy) -> Result<UsageReply, ErrorBody> {
        let id = policy.id.as_str();
        let consumers = list_institution(&self.js, id).await.map_err(internal)?;
        self.quotas.refresh(id).await.map_err(internal)?;
        let snapshot = self.quotas.snapshot(id);
        let quotas = &policy.quotas;
        let bytes = Counter::new(
            snapshot.bytes_today,
            quotas.bytes_per_day,
            Some(snapshot.bytes_reset_at),
        );
        Ok(UsageReply {
            institution: id.to_string(),
            requests: Counter::new(
                snapshot.requests_last_hour,
                quotas.requests_per_hour as u64,
                snapshot.requests_reset_at,
            ),
            consumers: Counter::new(
                consumers.len() as u64,
                quotas.concurrent_consumers as u64,
                None,
            ),
            paused: bytes.remaining == 0 || consumers.iter().any(|c| c.paused),
            bytes,
            consumer_list: consumers.iter().map(view_of).collect(),
            notices: notice_subject(id),
            notices_key: self.notifier.public_key(),
        })
    }

    /// The grant of one of an institution's consumers, with what the
    /// institution needs to pull from it and to verify notices.
    pub fn grant_of(&self, info: &consumer::Info, resumed: bool) -> DatasetGrant {
        let config = &info.config;
        DatasetGrant {
            consumer: info.name.clone(),
            stream: info.stream_name.clone(),
            filters: filters_of(config),
            start: start_of(info),
            end: end_of(info),
            label: label_of(info).map(str::to_string),
            resumed,
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending as u64,
            pull: PullLimitsReply {
                max_batch: config.max_batch,
                max_bytes: config.max_bytes,
                max_ack_pending: config.max_ack_pending,
                ack_wait_secs: config.ack_wait.as_secs(),
                inactive_threshold_secs: config.inactive_threshold.as_secs(),
            },
            notices: notice_subject(
                config
                    .metadata
                    .get(META_INSTITUTION)
                    .map(String::as_str)
                    .unwrap_or_default(),
            ),
            notices_key: self.notifier.public_key(),
            api_prefix: self.partner_api.clone(),
        }
    }

    /// Deletes one of the institution's consumers.
    pub async fn release(
        &self,
        policy: &InstitutionPolicy,
        request: ReleaseRequest,
    ) -> Result<ReleaseReply, ErrorBody> {
        let id = policy.id.as_str();
        match (&request.consumer, &request.label) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(bad("give exactly one of \"consumer\" and \"label\""))
            }
            (Some(name), None) if parse_consumer_slot(id, name).is_none() => {
                return Err(bad(format!(
                    "consumer {name:?} is not one of your consumer slots"
                )))
            }
            (None, Some(label)) => check_label(label)?,
            _ => {}
        }
        let _guard = self.lock(id).await?;
        let existing = list_institution(&self.js, id).await.map_err(internal)?;
        let found = existing
            .iter()
            .find(|c| match (&request.consumer, &request.label) {
                (Some(name), _) => &c.name == name,
                (None, Some(label)) => label_of(c) == Some(label.as_str()),
                _ => false,
            });
        let Some(info) = found else {
            return Err(bad(format!(
                "no consumer of yours matches {}",
                serde_json::to_string(&request).unwrap_or_default()
            )));
        };
        let stream = self
            .js
            .get_stream_no_info(&info.stream_name)
            .await
            .map_err(internal)?;
        stream.delete_consumer(&info.name).await.map_err(internal)?;
        Ok(ReleaseReply {
            consumer: info.name.clone(),
            stream: info.stream_name.clone(),
        })
    }
}

fn bad(reason: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::BadRequest, reason)
}

fn internal(e: impl std::fmt::Display) -> ErrorBody {
    ErrorBody::new(ErrorCode::Internal, format!("gateway error: {e}"))
}

fn to_value<T: serde::Serialize>(value: T) -> Result<serde_json::Value, ErrorBody> {
    serde_json::to_value(value).map_err(internal)
}

/// Parses a JSON body within the size limit; `empty` is used for an empty body when given.
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

/// The institution a request speaks for, from its subject: the auth
/// callout lets each institution publish only on
/// `lclstream.gateway.<its id>.>`, so the subject is what the server
/// authenticated. Nothing a client writes into a message (headers such as
/// `Nats-Request-Info`, body fields) names the requester.
pub fn caller(request: &async_nats::service::Request) -> String {
    institution_of_subject(&request.message.subject)
        .unwrap_or_default()
        .to_string()
}

/// Admits a request for handling: its reply subject must lie in the
/// requesting institution's own inbox (`_INBOX.<id>.`). The reply subject is
/// the requester's choice; answering anywhere else would let one
/// institution aim the gateway's reply at another's inbox or notices.
/// Refusals get no reply and an audit record. Returns the institution and
/// the audit identity (`institution:<id>`).
pub fn admit(
    audit: &Audit,
    request: &async_nats::service::Request,
    verb: &str,
) -> Option<(String, String)> {
    let institution = caller(request);
    let who = format!("institution:{institution}");
    let reply = request.message.reply.as_deref().unwrap_or_default();
    if reply_in_inbox(&institution, reply) {
        return Some((institution, who));
    }
    let shown: String = reply.chars().take(200).collect();
    tracing::warn!(institution, reply = %shown, verb, "request refused: reply outside the institution's inbox");
    audit.record(AuditRecord::now(
        who,
        Some(&institution),
        verb,
        Decision::Deny,
        "reply_outside_inbox",
        json!({
            "subject": request.message.subject.to_string(),
            "reply": shown,
            "expected_prefix": format!("{}.", inbox_prefix(&institution)),
        }),
    ));
    None
}

/// Replies to a service request with its outcome (refusals also in the
/// standard service error headers, for generic NATS tooling) and records the
/// decision in the audit log. Shared by the dataset and job endpoints.
pub async fn respond(
    audit: &Audit,
    request: async_nats::service::Request,
    verb: &str,
    institution: &str,
    who: String,
    outcome: Result<serde_json::Value, ErrorBody>,
    mut details: serde_json::Value,
) {
    let subject = request.message.subject.to_string();
    let mut headers = async_nats::HeaderMap::new();
    let (payload, decision, reason) = match outcome {
        Ok(result) => (Reply::Ok { result }, Decision::Allow, "ok"),
        Err(error) => {
            headers.insert(
                async_nats::service::NATS_SERVICE_ERROR,
                error.reason.as_str(),
            );
            headers.insert(
                async_nats::service::NATS_SERVICE_ERROR_CODE,
                error.code.status().to_string().as_str(),
            );
            details["reason"] = error.reason.clone().into();
            let code = error.code.as_str();
            (Reply::Error { error }, Decision::Deny, code)
        }
    };
    audit.record(AuditRecord::now(
        who,
        Some(institution),
        verb,
        decision,
        reason,
        details,
    ));
    let payload = serde_json::to_vec(&payload).unwrap_or_default();
    if let Err(e) = request
        .respond_with_headers(Ok(Bytes::from(payload)), headers)
        .await
    {
        tracing::warn!("cannot reply on {subject}: {e}");
    }
}

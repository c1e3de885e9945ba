//! Connecting as an institution and talking to the gateway.

use std::time::Duration;

use async_nats::jetstream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use lclstream_nats::protocol::jobs::{JobRecord, JobView};
use lclstream_nats::protocol::naming::{inbox_prefix, request_subject};
use lclstream_nats::protocol::requests::{
    DatasetGrant, DatasetList, DatasetRequest, ErrorBody, ListRequest, Notice, ReleaseReply,
    ReleaseRequest, Reply, UsageReply, UsageRequest, VERB_LIST, VERB_RELEASE, VERB_REQUEST,
    VERB_USAGE,
};
use lclstream_nats::protocol::signing::{verify, SIGNATURE_HEADER};

/// How long a gateway request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors of the partner client.
#[derive(Debug, thiserror::Error)]
pub enum PartnerError {
    /// The gateway refused; `code` says why in machine-readable form.
    #[error("the gateway refused: {0}")]
    Refused(ErrorBody),
    /// Connecting or talking to NATS failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// A reply or message could not be understood.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The sink failed to write events.
    #[error("writing events: {0}")]
    Sink(String),
}

impl PartnerError {
    pub(crate) fn nats(e: impl std::fmt::Display) -> PartnerError {
        PartnerError::Nats(e.to_string())
    }
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct PartnerConfig {
    /// Server URL(s).
    pub url: String,
    /// The institution id (its inbox prefix and request subjects derive from it).
    pub institution: String,
    /// The institution's user nkey seed (`SU...`); none on servers without authentication.
    pub seed: Option<String>,
}

/// A connection of one institution.
#[derive(Clone)]
pub struct PartnerClient {
    pub(crate) client: async_nats::Client,
    institution: String,
}

impl PartnerClient {
    /// Connects with the institution's nkey and private inbox prefix.
    pub async fn connect(config: &PartnerConfig) -> Result<PartnerClient, PartnerError> {
        let options = match &config.seed {
            Some(seed) => async_nats::ConnectOptions::with_nkey(seed.trim().to_string()),
            None => async_nats::ConnectOptions::new(),
        };
        let name = format!("lclstream-partner-{}", config.institution);
        let client =
            lclstream_nats::connection_events::log_events_with_url(options, &config.url, &name)
                .name(name)
                .custom_inbox_prefix(inbox_prefix(&config.institution))
                .connect(lclstream_nats::server_urls::server_urls(&config.url))
                .await
                .map_err(|e| {
                    let hint = match e.kind() {
                        async_nats::ConnectErrorKind::AuthorizationViolation => {
                            " (the server refused these credentials: check the seed file \
                             and the institution id; a revoked or expired key, or an auth \
                             callout that did not answer in time, look the same to the \
                             client, so try again before changing anything)"
                        }
                        _ => "",
                    };
                    PartnerError::Nats(format!("connecting to {}: {e}{hint}", config.url))
                })?;
        Ok(Self::from_client(client, &config.institution))
    }

    /// Wraps an existing connection (which must use the institution's inbox prefix).
    pub fn from_client(client: async_nats::Client, institution: &str) -> PartnerClient {
        PartnerClient {
            client,
            institution: institution.to_string(),
        }
    }

    /// JetStream through `api_prefix`, as a grant names it (`$JS.lclstream.API`
    /// behind the auth callout).
    pub fn jetstream(&self, api_prefix: &str) -> jetstream::Context {
        jetstream::with_prefix(self.client.clone(), api_prefix)
    }

    /// The underlying connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The institution id.
    pub fn institution(&self) -> &str {
        &self.institution
    }

    async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        verb: &str,
        body: &Q,
    ) -> Result<R, PartnerError> {
        let payload =
            serde_json::to_vec(body).map_err(|e| PartnerError::Protocol(e.to_string()))?;
        self.call_raw(verb, payload).await
    }

    /// Sends a raw request body to `verb` and parses the reply (tests of malformed requests use it).
    pub async fn call_raw<R: DeserializeOwned>(
        &self,
        verb: &str,
        payload: Vec<u8>,
    ) -> Result<R, PartnerError> {
        let subject = request_subject(&self.institution, verb);
        let reply = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client.request(subject.clone(), payload.into()),
        )
        .await
        .map_err(|_| {
            PartnerError::Nats(format!("no reply on {subject} within {REQUEST_TIMEOUT:?}"))
        })?
        .map_err(|e| PartnerError::Nats(format!("request on {subject}: {e}")))?;
        let reply: Reply<R> = serde_json::from_slice(&reply.payload)
            .map_err(|e| PartnerError::Protocol(format!("reply on {subject}: {e}")))?;
        reply.into_result().map_err(PartnerError::Refused)
    }

    /// Asks for a dataset; the same label again returns the same consumer.
    pub async fn request_dataset(
        &self,
        request: &DatasetRequest,
    ) -> Result<DatasetGrant, PartnerError> {
        self.call(VERB_REQUEST, request).await
    }

    /// Lists the grants and what is stored under them.
    pub async fn list(&self) -> Result<DatasetList, PartnerError> {
        self.call(VERB_LIST, &ListRequest {}).await
    }

    /// Shows usage and remaining quota.
    pub async fn usage(&self) -> Result<UsageReply, PartnerError> {
        self.call(VERB_USAGE, &UsageRequest {}).await
    }

    /// Releases (deletes) a consumer by name or label.
    pub async fn release(&self, request: &ReleaseRequest) -> Result<ReleaseReply, PartnerError> {
        self.call(VERB_RELEASE, request).await
    }

    /// The status updates of job `view.record.job` on `view.watch`, verified
    /// against `view.notices_key` (the view is the gateway's reply to
    /// `jobs.get` or `jobs.submit`).
    pub async fn job_status(&self, view: &JobView) -> Result<JobStatus, PartnerError> {
        let subscriber = self
            .client
            .subscribe(view.watch.clone())
            .await
            .map_err(PartnerError::nats)?;
        Ok(JobStatus {
            subscriber,
            key: view.notices_key.clone(),
            job: view.record.job.clone(),
        })
    }

    /// The gateway's notices for this institution, verified: only messages
    /// signed by the gateway's notice key (learned from a `usage` reply) and
    /// addressed to this institution are yielded; anything else arriving on
    /// the notice subject (another institution can aim its own pull replies
    /// there) is dropped with a warning.
    pub async fn notices(&self) -> Result<Notices, PartnerError> {
        let usage = self.usage().await?;
        let subscriber = self
            .client
            .subscribe(usage.notices.clone())
            .await
            .map_err(PartnerError::nats)?;
        Ok(Notices {
            subscriber,
            key: usage.notices_key,
            institution: self.institution.clone(),
        })
    }
}

/// Verified status of one publish job ([`PartnerClient::job_status`]).
pub struct JobStatus {
    subscriber: async_nats::Subscriber,
    key: Option<String>,
    job: String,
}

impl JobStatus {
    /// The next status of the job signed by the gateway; `None` when the
    /// connection closes. Anything else on the subject (not signed, not a
    /// job record, about another job) is dropped with a warning.
    pub async fn next(&mut self) -> Option<JobRecord> {
        use futures::StreamExt;
        while let Some(message) = self.subscriber.next().await {
            match self.check(&message) {
                Ok(record) => return Some(record),
                Err(why) => tracing::warn!(
                    subject = %message.subject,
                    "dropping a message on the job status subject: {why}"
                ),
            }
        }
        None
    }

    fn check(&self, message: &async_nats::Message) -> Result<JobRecord, String> {
        verify_from_gateway(self.key.as_deref(), message)?;
        let record: JobRecord = serde_json::from_slice(&message.payload)
            .map_err(|e| format!("not a job record: {e}"))?;
        if record.job != self.job {
            return Err(format!("about job {:?}", record.job));
        }
        Ok(record)
    }
}

/// Checks that `message` was signed by the gateway's notice key `key`
/// (`None`: a gateway without the auth callout, which signs nothing).
pub fn verify_from_gateway(key: Option<&str>, message: &async_nats::Message) -> Result<(), String> {
    let Some(key) = key else {
        return Ok(());
    };
    let header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(SIGNATURE_HEADER))
        .map(|v| v.as_str());
    verify(key, &message.subject, &message.payload, header)
}

/// Verified notices of one institution ([`PartnerClient::notices`]).
pub struct Notices {
    subscriber: async_nats::Subscriber,
    key: Option<String>,
    institution: String,
}

impl Notices {
    /// The next genuine notice; `None` when the connection closes.
    pub async fn next(&mut self) -> Option<Notice> {
        use futures::StreamExt;
        while let Some(message) = self.subscriber.next().await {
            match self.check(&message) {
                Ok(notice) => return Some(notice),
                Err(why) => tracing::warn!(
                    subject = %message.subject,
                    "dropping a message on the notice subject: {why}"
                ),
            }
        }
        None
    }

    fn check(&self, message: &async_nats::Message) -> Result<Notice, String> {
        verify_from_gateway(self.key.as_deref(), message)?;
        let notice: Notice =
            serde_json::from_slice(&message.payload).map_err(|e| format!("not a notice: {e}"))?;
        if notice.institution != self.institution {
            return Err(format!("addressed to {:?}", notice.institution));
        }
        Ok(notice)
    }
}

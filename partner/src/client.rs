//! Connecting as an institution and talking to the gateway.

use std::time::Duration;

use async_nats::jetstream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use lclstream_nats::protocol::naming::{inbox_prefix, notice_subject, request_subject};
use lclstream_nats::protocol::requests::{
    DatasetGrant, DatasetList, DatasetRequest, ErrorBody, ListRequest, ReleaseReply,
    ReleaseRequest, Reply, UsageReply, UsageRequest, VERB_LIST, VERB_RELEASE, VERB_REQUEST,
    VERB_USAGE,
};

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
    pub(crate) js: jetstream::Context,
    institution: String,
}

impl PartnerClient {
    /// Connects with the institution's nkey and private inbox prefix.
    pub async fn connect(config: &PartnerConfig) -> Result<PartnerClient, PartnerError> {
        let options = match &config.seed {
            Some(seed) => async_nats::ConnectOptions::with_nkey(seed.trim().to_string()),
            None => async_nats::ConnectOptions::new(),
        };
        let client = options
            .name(format!("lclstream-partner-{}", config.institution))
            .custom_inbox_prefix(inbox_prefix(&config.institution))
            .connect(config.url.as_str())
            .await
            .map_err(|e| PartnerError::Nats(format!("connecting to {}: {e}", config.url)))?;
        Ok(Self::from_client(client, &config.institution))
    }

    /// Wraps an existing connection (which must use the institution's inbox prefix).
    pub fn from_client(client: async_nats::Client, institution: &str) -> PartnerClient {
        PartnerClient {
            js: jetstream::new(client.clone()),
            client,
            institution: institution.to_string(),
        }
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

    /// Subscribes to the gateway's notices for this institution.
    pub async fn notices(&self) -> Result<async_nats::Subscriber, PartnerError> {
        self.client
            .subscribe(notice_subject(&self.institution))
            .await
            .map_err(PartnerError::nats)
    }
}

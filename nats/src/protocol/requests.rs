//! The request/reply protocol of the gateway service (JSON, see `docs/gateway-protocol.md`).
//!
//! Requests go to `lclstream.gateway.<institution-id>.<verb>`; every request
//! and reply type refuses unknown fields so that a typo is an error, not a
//! silently ignored option.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Verb: request a dataset (creates or resumes a durable consumer).
pub const VERB_REQUEST: &str = "request";
/// Verb: list what the institution may read.
pub const VERB_LIST: &str = "list";
/// Verb: show usage and remaining quota.
pub const VERB_USAGE: &str = "usage";
/// Verb: release (delete) a consumer.
pub const VERB_RELEASE: &str = "release";
/// All verbs, in the order the service registers them.
pub const VERBS: [&str; 4] = [VERB_REQUEST, VERB_LIST, VERB_USAGE, VERB_RELEASE];

/// Name of the NATS service (`$SRV.INFO.lclstream-gateway`).
pub const SERVICE_NAME: &str = "lclstream-gateway";

/// Largest request body accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Largest number of subject filters in one dataset request.
pub const MAX_FILTERS: usize = 16;
/// Longest subject filter.
pub const MAX_FILTER_LEN: usize = 255;
/// Longest consumer label.
pub const MAX_LABEL_LEN: usize = 64;
/// Largest stream sequence accepted (JetStream sequences fit in an i64).
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// Where a dataset starts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Every message still in the stream (`"all"`).
    #[default]
    All,
    /// Only messages published after the consumer is created (`"new"`).
    New,
    /// From a stream sequence, 1 or more (`{"sequence": 42}`).
    Sequence(u64),
    /// From an instant (`{"time": "2026-03-01T10:00:00Z"}`).
    Time(#[serde(with = "time::serde::rfc3339")] OffsetDateTime),
}

/// Where a dataset ends (inclusive); the partner stops there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// Last stream sequence of the dataset (`{"sequence": 99}`).
    Sequence(u64),
    /// Messages stored after this instant are not part of the dataset (`{"time": "..."}`).
    Time(#[serde(with = "time::serde::rfc3339")] OffsetDateTime),
}

/// Body of `request`: ask for a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetRequest {
    /// Subject filters, each within one of the institution's grants, all in one stream.
    pub filters: Vec<String>,
    /// Where to start; default `"all"`.
    #[serde(default)]
    pub start: Start,
    /// Where to stop (inclusive); default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    /// A name for this dataset: asking again with the same label returns the
    /// same consumer (resume) instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Pull limits of a granted consumer; a pull over them gets a 409 from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullLimitsReply {
    /// Largest number of messages per pull request.
    pub max_batch: i64,
    /// Largest number of bytes per pull request.
    pub max_bytes: i64,
    /// Largest number of unacknowledged messages.
    pub max_ack_pending: i64,
    /// Seconds before an unacknowledged message is redelivered.
    pub ack_wait_secs: u64,
    /// Seconds without activity after which the server deletes the consumer.
    pub inactive_threshold_secs: u64,
}

/// Reply to `request`: the consumer to pull from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetGrant {
    /// Durable consumer name (`<institution>-c<k>`).
    pub consumer: String,
    /// Stream the consumer reads.
    pub stream: String,
    /// Its subject filters.
    pub filters: Vec<String>,
    /// Where it started.
    pub start: Start,
    /// Where the dataset ends, if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<End>,
    /// The label, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// True when an existing consumer with this label was returned.
    pub resumed: bool,
    /// Messages not yet delivered to the consumer.
    pub num_pending: u64,
    /// Messages delivered but not acknowledged.
    pub num_ack_pending: u64,
    /// Pull limits.
    pub pull: PullLimitsReply,
    /// Subject on which the gateway publishes notices to the institution.
    pub notices: String,
    /// Public key (`U...`) whose signature every genuine notice carries;
    /// absent on a gateway without the auth callout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices_key: Option<String>,
    /// JetStream API prefix to pull with: `$JS.lclstream.API` when the
    /// institution connects through the auth callout (its own account),
    /// `$JS.API` otherwise.
    #[serde(default = "facility_api_prefix")]
    pub api_prefix: String,
}

fn facility_api_prefix() -> String {
    crate::protocol::naming::FACILITY_API_PREFIX.to_string()
}

/// Body of `list` (empty object or empty body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {}

/// One subject in a stream with its message count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectCount {
    /// The subject.
    pub subject: String,
    /// Messages stored on it.
    pub messages: u64,
}

/// One grant with what is currently stored under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantView {
    /// Stream name.
    pub stream: String,
    /// Granted subject patterns.
    pub subjects: Vec<String>,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_before: Option<OffsetDateTime>,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub not_after: Option<OffsetDateTime>,
    /// Whether the grant is valid now.
    pub active: bool,
    /// Whether the stream exists.
    pub stream_exists: bool,
    /// Stored subjects within the grant with message counts.
    pub stored: Vec<SubjectCount>,
    /// True when `stored` was cut at the reply limit.
    pub truncated: bool,
}

/// Reply to `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetList {
    /// The institution.
    pub institution: String,
    /// Its grants.
    pub grants: Vec<GrantView>,
}

/// Body of `usage` (empty object or empty body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {}

/// One consumer of the institution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerView {
    /// Consumer name.
    pub consumer: String,
    /// Stream.
    pub stream: String,
    /// Label, if any.
    #[serde(default)]
    pub label: Option<String>,
    /// Subject filters.
    pub filters: Vec<String>,
    /// Messages not yet delivered.
    pub num_pending: u64,
    /// Messages delivered, not acknowledged.
    pub num_ack_pending: u64,
    /// Paused by the gateway (bytes quota).
    pub paused: bool,
}

/// Used amount against a limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    /// Used in the current window.
    pub used: u64,
    /// Limit.
    pub limit: u64,
    /// Limit minus used (0 when exhausted).
    pub remaining: u64,
    /// When the window frees room (none when nothing is used).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub resets_at: Option<OffsetDateTime>,
}

impl Counter {
    /// A counter of `used` out of `limit`.
    pub fn new(used: u64, limit: u64, resets_at: Option<OffsetDateTime>) -> Counter {
        Counter {
            used,
            limit,
            remaining: limit.saturating_sub(used),
            resets_at,
        }
    }
}

/// Reply to `usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageReply {
    /// The institution.
    pub institution: String,
    /// Dataset requests granted in the last hour.
    pub requests: Counter,
    /// Consumer slots in use.
    pub consumers: Counter,
    /// Bytes delivered today (UTC).
    pub bytes: Counter,
    /// True while consumers are paused because the bytes quota is exhausted.
    pub paused: bool,
    /// The institution's consumers.
    pub consumer_list: Vec<ConsumerView>,
    /// Subject on which notices are published.
    pub notices: String,
    /// Public key whose signature every genuine notice carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices_key: Option<String>,
}

/// Body of `release`: name the consumer or its label (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// Consumer name (`<institution>-c<k>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Label given at request time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Reply to `release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseReply {
    /// The deleted consumer.
    pub consumer: String,
    /// Its stream.
    pub stream: String,
}

/// Machine-readable reason of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A filter is outside every active grant.
    NoGrant,
    /// Too many dataset requests in the rolling hour.
    QuotaRequests,
    /// Every consumer slot is in use.
    QuotaConsumers,
    /// Today's bytes are exhausted.
    QuotaBytes,
    /// The request is malformed or inconsistent.
    BadRequest,
    /// The institution in the subject has no policy.
    UnknownInstitution,
    /// The gateway failed (server unreachable, unexpected server error).
    Internal,
}

impl ErrorCode {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NoGrant => "no_grant",
            ErrorCode::QuotaRequests => "quota_requests",
            ErrorCode::QuotaConsumers => "quota_consumers",
            ErrorCode::QuotaBytes => "quota_bytes",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownInstitution => "unknown_institution",
            ErrorCode::Internal => "internal",
        }
    }

    /// An HTTP-like status for the `Nats-Service-Error-Code` header.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NoGrant | ErrorCode::UnknownInstitution => 403,
            ErrorCode::QuotaRequests | ErrorCode::QuotaConsumers | ErrorCode::QuotaBytes => 429,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: code plus a human reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code}: {reason}")]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for a human.
    pub reason: String,
}

impl ErrorBody {
    /// A refusal with `code` and `reason`.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            reason: reason.into(),
        }
    }
}

/// Every reply: `{"status": "ok", "result": {...}}` or `{"status": "error", "error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply<T> {
    /// Success.
    Ok {
        /// The result.
        result: T,
    },
    /// Refusal.
    Error {
        /// Why.
        error: ErrorBody,
    },
}

impl<T> Reply<T> {
    /// The result, or the refusal as an error.
    pub fn into_result(self) -> Result<T, ErrorBody> {
        match self {
            Reply::Ok { result } => Ok(result),
            Reply::Error { error } => Err(error),
        }
    }
}

/// A notice published to `_INBOX.<institution>.notices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// When it was published.
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    /// The institution.
    pub institution: String,
    /// `quota_bytes` when consumers are paused, `resumed` when they run again.
    pub code: String,
    /// Human-readable text.
    pub message: String,
    /// Consumers concerned.
    pub consumers: Vec<String>,
    /// When paused consumers resume (end of the quota window).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub until: Option<OffsetDateTime>,
}

/// Checks a label: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn check_label(label: &str) -> Result<(), ErrorBody> {
    if label.is_empty()
        || label.len() > MAX_LABEL_LEN
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("label: {label:?} must be 1 to {MAX_LABEL_LEN} letters, digits, '_' or '-'"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_end_spellings() {
        let r: DatasetRequest = serde_json::from_str(
            r#"{"filters":["lcls.mfx.e.>"],"start":{"sequence":5},"end":{"time":"2026-03-01T10:00:00Z"},"label":"x"}"#,
        )
        .unwrap();
        assert_eq!(r.start, Start::Sequence(5));
        assert!(matches!(r.end, Some(End::Time(_))));
        let r: DatasetRequest = serde_json::from_str(r#"{"filters":["a"],"start":"new"}"#).unwrap();
        assert_eq!(r.start, Start::New);
        let r: DatasetRequest = serde_json::from_str(r#"{"filters":["a"]}"#).unwrap();
        assert_eq!(r.start, Start::All);
        for bad in [
            r#"{"filters":["a"],"bogus":1}"#,
            r#"{"filters":["a"],"start":{"sequence":-1}}"#,
            r#"{"filters":["a"],"start":{"sequence":1e30}}"#,
            r#"{"filters":["a"],"start":"sometime"}"#,
            r#"{"filters":["a"],"start":{"time":"yesterday"}}"#,
            r#"{"filters":"a"}"#,
        ] {
            assert!(
                serde_json::from_str::<DatasetRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_are_tagged() {
        let ok: Reply<ReleaseReply> = Reply::Ok {
            result: ReleaseReply {
                consumer: "a-c0".into(),
                stream: "S".into(),
            },
        };
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(
            text,
            r#"{"status":"ok","result":{"consumer":"a-c0","stream":"S"}}"#
        );
        let err: Reply<ReleaseReply> = Reply::Error {
            error: ErrorBody::new(ErrorCode::QuotaBytes, "done for today"),
        };
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(
            text,
            r#"{"status":"error","error":{"code":"quota_bytes","reason":"done for today"}}"#
        );
        let back: Reply<ReleaseReply> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, err);
    }
}

//! The policy data model, as written in `policies/<institution>.toml`.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Everything the facility decided about one partner institution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionPolicy {
    /// Short identifier used in consumer names, inbox prefixes and logs
    /// (`[a-z0-9-]`, at most 32 characters), e.g. `ucsd`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Public nkeys (`U...`) the institution may connect with; several to allow rotation.
    #[serde(default)]
    pub keys: Vec<InstitutionKey>,
    /// What the institution may read.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// How much it may read.
    #[serde(default)]
    pub quotas: Quotas,
}

/// One public nkey of an institution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstitutionKey {
    /// The public user nkey, starting with `U`.
    pub public: String,
    /// What this key is for (host, person, date of issue).
    #[serde(default)]
    pub comment: String,
    /// A revoked key is refused and its live connections are closed.
    #[serde(default)]
    pub revoked: bool,
    /// After this instant (RFC 3339) the key is refused.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires: Option<OffsetDateTime>,
}

/// Permission to read part of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Stream name, e.g. `LCLS_MFX`.
    pub stream: String,
    /// Subject patterns within the stream, e.g. `lcls.mfx.mfxp1234.>`.
    pub subjects: Vec<String>,
    /// The grant starts at this instant (RFC 3339); absent means now.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    /// The grant ends at this instant (RFC 3339); absent means never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
}

/// Limits on an institution's use of the facility.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quotas {
    /// Data requests accepted per rolling hour.
    pub requests_per_hour: u32,
    /// Durable consumers the institution may hold at once.
    pub concurrent_consumers: u32,
    /// Bytes (as stored in the stream, i.e. compressed) delivered per UTC day.
    pub bytes_per_day: u64,
    /// Limits applied to each of its consumers.
    pub pull: PullQuota,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            requests_per_hour: 60,
            concurrent_consumers: 4,
            bytes_per_day: 1024 * 1024 * 1024 * 1024,
            pull: PullQuota::default(),
        }
    }
}

/// Limits applied to each durable consumer of an institution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullQuota {
    /// Largest number of messages in one pull request.
    pub max_batch: i64,
    /// Largest number of bytes in one pull request.
    pub max_bytes: i64,
    /// Largest number of unacknowledged messages.
    pub max_ack_pending: i64,
    /// The consumer is deleted after this many seconds without activity.
    pub inactive_threshold_secs: u64,
    /// Seconds before an unacknowledged message is redelivered (also how long
    /// a crashed partner's in-flight messages wait before its restart gets them).
    pub ack_wait_secs: u64,
}

impl Default for PullQuota {
    fn default() -> Self {
        PullQuota {
            max_batch: 64,
            max_bytes: 64 * 1024 * 1024,
            max_ack_pending: 256,
            inactive_threshold_secs: 24 * 3600,
            ack_wait_secs: 60,
        }
    }
}

impl PullQuota {
    /// The consumer limits these quotas translate to.
    pub fn to_limits(&self) -> lclstream_nats::streams::PullLimits {
        lclstream_nats::streams::PullLimits {
            max_batch: self.max_batch,
            max_bytes: self.max_bytes,
            max_ack_pending: self.max_ack_pending,
            inactive_threshold: std::time::Duration::from_secs(self.inactive_threshold_secs),
            ack_wait: std::time::Duration::from_secs(self.ack_wait_secs.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_policy_file() {
        let text = r#"
            id = "ucsd"
            name = "UC San Diego"
            [[keys]]
            public = "UABC"
            expires = "2027-01-01T00:00:00Z"
            [[grants]]
            stream = "LCLS_MFX"
            subjects = ["lcls.mfx.mfxp1234.>"]
            [quotas]
            requests_per_hour = 5
            [quotas.pull]
            max_batch = 8
        "#;
        let policy: InstitutionPolicy = toml::from_str(text).unwrap();
        assert_eq!(policy.quotas.requests_per_hour, 5);
        assert_eq!(policy.quotas.pull.max_batch, 8);
        assert_eq!(policy.quotas.pull.max_ack_pending, 256);
        assert!(policy.keys[0].expires.is_some());
        assert!(
            toml::from_str::<InstitutionPolicy>("id = \"x\"\nname = \"y\"\nbogus = 1").is_err()
        );
    }
}

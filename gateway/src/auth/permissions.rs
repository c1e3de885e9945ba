//! What each kind of principal, and each of the gateway's own connections,
//! may publish and subscribe to.
//!
//! The rule every list here follows: each wildcard can only match tokens
//! that belong to the party holding the permission. Where a subject has a
//! fixed number of tokens the pattern has exactly that many (`*`, not `>`),
//! because a `>` lets a client shift tokens and put someone else's name in
//! the position the server reads. `gateway/tests/permission_model.rs`
//! checks every role against generated subjects, and the security model in
//! `docs/gateway-protocol.md` explains each entry.
//!
//! Accounts: institutions land in [`PARTNER_ACCOUNT`](super::server_config::PARTNER_ACCOUNT),
//! which holds no stream and imports from the facility account only pulls,
//! consumer info and acks; agents and operators land in the facility
//! account with the streams.

use lclstream_nats::protocol::jobs::{
    worker_consumer_name, DATA_PREFIX, DATA_STREAM, QUEUE_PREFIX, QUEUE_STREAM, RECORDS_BUCKET,
    STATUS_PREFIX,
};
use lclstream_nats::protocol::naming::{
    key_inbox_prefix, partner_api_prefix, FACILITY_API_PREFIX, GATEWAY_INBOX_PREFIX,
};
use lclstream_nats::subjects::{stream_name, stream_subjects, GATEWAY_PREFIX};
use serde::{Deserialize, Serialize};

use crate::naming::{consumer_slot_name, inbox_prefix, request_permission};
use crate::policy::{Access, Identity};
use crate::shared_state::{LIVE_BUCKET, STATE_BUCKET};

/// Allow and deny lists of subjects (nats-io/jwt `Permission`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectPermission {
    /// Subjects allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Subjects denied (wins over allow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Permission to reply to requests received (nats-io/jwt `ResponsePermission`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsePermission {
    /// Replies allowed per request.
    pub max: i64,
    /// How long the reply subject stays open (nanoseconds).
    pub ttl: i64,
}

/// Publish and subscribe permissions of a connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Publish.
    #[serde(rename = "pub", default)]
    pub publish: SubjectPermission,
    /// Subscribe.
    #[serde(rename = "sub", default)]
    pub subscribe: SubjectPermission,
    /// Replies to received requests.
    #[serde(rename = "resp", default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<ResponsePermission>,
}

impl Permissions {
    fn new(publish: Vec<String>, subscribe: Vec<String>) -> Permissions {
        Permissions {
            publish: SubjectPermission {
                allow: publish,
                deny: Vec::new(),
            },
            subscribe: SubjectPermission {
                allow: subscribe,
                deny: Vec::new(),
            },
            responses: None,
        }
    }

    /// Whether a literal `subject` may be published.
    pub fn may_publish(&self, subject: &str) -> bool {
        allowed(&self.publish, subject)
    }

    /// Whether a literal `subject` may be subscribed to.
    pub fn may_subscribe(&self, subject: &str) -> bool {
        allowed(&self.subscribe, subject)
    }
}

fn allowed(permission: &SubjectPermission, subject: &str) -> bool {
    use lclstream_nats::subjects::subject_within;
    permission
        .allow
        .iter()
        .any(|pattern| subject_within(subject, pattern))
        && !permission
            .deny
            .iter()
            .any(|pattern| subject_within(subject, pattern))
}

/// Publish patterns for pulling from, reading and acknowledging consumer
/// `consumer` of `stream`, under JetStream API prefix `api`.
///
/// Ack subjects come in two forms (nats-server `consumer.go`): the one sent
/// by default, `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`
/// (exactly 9 tokens; the server's ack subscription has exactly 9), and the
/// form behind the server's `js_ack_fc_v2` feature flag,
/// `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>` followed by at least
/// five more tokens (the server subscribes with `.*.*.*.*.>`). Each pattern
/// pins the stream and consumer positions of its form, so a subject of one
/// form can never carry the consumer name where the server reads the other.
pub fn consumer_access(api: &str, stream: &str, consumer: &str) -> Vec<String> {
    vec![
        format!("{api}.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("{api}.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.*.*.*.*.*"),
        format!("$JS.ACK.*.*.{stream}.{consumer}.*.*.*.*.>"),
    ]
}

/// The permissions of an institution with `slots` consumer slots whose
/// grants name `streams`.
///
/// Pull, ack and consumer info on its own slots, on the streams it is
/// granted and on the publish-job data stream (only the gateway creates
/// consumers, so a slot name on those streams is always this institution's);
/// requests to the gateway under its own id; subscriptions only in its
/// private inbox. All of it in the partner account, where the JetStream API
/// is the imported `$JS.lclstream.API`.
pub fn institution_permissions(id: &str, slots: u32, streams: &[String]) -> Permissions {
    let api = partner_api_prefix();
    let mut streams: Vec<&str> = streams.iter().map(String::as_str).collect();
    streams.push(DATA_STREAM);
    streams.sort_unstable();
    streams.dedup();
    let mut publish = Vec::with_capacity(4 * slots as usize * streams.len() + 1);
    for k in 0..slots {
        let slot = consumer_slot_name(id, k);
        for stream in &streams {
            publish.extend(consumer_access(&api, stream, &slot));
        }
    }
    publish.push(request_permission(id));
    Permissions::new(publish, vec![format!("{}.>", inbox_prefix(id))])
}

/// The permissions of a facility agent with user key `public_key`: publish
/// events of its instruments and manage (create, update, read) their
/// streams; run publish jobs as a worker (`docs/jobs.md`): take jobs of its
/// instruments from the work queue, publish job data and status, read and
/// update job records; replies only in its own inbox `_INBOX_<public key>`.
pub fn agent_permissions(public_key: &str, instruments: &[String]) -> Permissions {
    let api = FACILITY_API_PREFIX;
    let mut publish = vec![format!("{api}.INFO")];
    let records_stream = format!("KV_{RECORDS_BUCKET}");
    for stream in [QUEUE_STREAM, DATA_STREAM, records_stream.as_str()] {
        publish.extend(stream_management(stream));
    }
    for instrument in instruments {
        let stream = stream_name(instrument);
        publish.push(stream_subjects(instrument));
        publish.extend(stream_management(&stream));
        // Resume of re-readable sources reads the last batch it stored.
        publish.push(format!("{api}.STREAM.MSG.GET.{stream}"));
        let consumer = worker_consumer_name(instrument);
        publish.push(format!("{api}.CONSUMER.CREATE.{QUEUE_STREAM}.{consumer}"));
        publish.push(format!(
            "{api}.CONSUMER.CREATE.{QUEUE_STREAM}.{consumer}.{QUEUE_PREFIX}.{}",
            instrument.to_ascii_lowercase()
        ));
        publish.push(format!(
            "{api}.CONSUMER.DURABLE.CREATE.{QUEUE_STREAM}.{consumer}"
        ));
        publish.extend(consumer_access(api, QUEUE_STREAM, &consumer));
    }
    publish.extend(records_access());
    publish.push(format!("{DATA_PREFIX}.*"));
    publish.push(format!("{STATUS_PREFIX}.*"));
    Permissions::new(publish, vec![format!("{}.>", key_inbox_prefix(public_key))])
}

/// Create, update and read one stream's configuration.
fn stream_management(stream: &str) -> [String; 3] {
    let api = FACILITY_API_PREFIX;
    [
        format!("{api}.STREAM.CREATE.{stream}"),
        format!("{api}.STREAM.UPDATE.{stream}"),
        format!("{api}.STREAM.INFO.{stream}"),
    ]
}

/// Read and write job records (the key-value bucket).
fn records_access() -> [String; 3] {
    bucket_access(RECORDS_BUCKET)
}

/// Read and write the keys of a key-value bucket.
fn bucket_access(bucket: &str) -> [String; 3] {
    let api = FACILITY_API_PREFIX;
    [
        format!("$KV.{bucket}.>"),
        format!("{api}.DIRECT.GET.KV_{bucket}.>"),
        format!("{api}.STREAM.MSG.GET.KV_{bucket}"),
    ]
}

/// The permissions of an operator: everything in the facility account (the
/// streams, consumers and the gateway's facility-side traffic are theirs to
/// run); nothing in the partner account, which imports nothing from here
/// that an operator could reach.
pub fn operator_permissions() -> Permissions {
    Permissions::new(vec![">".to_string()], vec![">".to_string()])
}

/// The permissions of an authenticated identity (`public_key` is the key it
/// connected with).
pub fn permissions_for(identity: &Identity) -> Permissions {
    match &identity.access {
        Access::Institution { slots, streams } => {
            institution_permissions(&identity.principal.id, *slots, streams)
        }
        Access::Agent { instruments } => agent_permissions(&identity.public_key, instruments),
        Access::Operator => operator_permissions(),
    }
}

/// The gateway's facility-side connection: consumers of every stream (it
/// creates, lists, pauses and deletes institutions' consumers, and follows
/// streams headers-only to meter bytes), the publish-job stores (queue, data
/// stream, records), and its own inbox. It never publishes into a data
/// stream and has no stream deletion or purge.
pub fn gateway_service_permissions() -> Permissions {
    let api = FACILITY_API_PREFIX;
    let mut publish = vec![
        format!("{api}.INFO"),
        format!("{api}.STREAM.NAMES"),
        format!("{api}.STREAM.LIST"),
        format!("{api}.STREAM.INFO.*"),
        format!("{api}.CONSUMER.CREATE.*"),
        format!("{api}.CONSUMER.CREATE.*.*"),
        format!("{api}.CONSUMER.CREATE.*.*.>"),
        format!("{api}.CONSUMER.DURABLE.CREATE.*.*"),
        format!("{api}.CONSUMER.INFO.*.*"),
        format!("{api}.CONSUMER.LIST.*"),
        format!("{api}.CONSUMER.NAMES.*"),
        format!("{api}.CONSUMER.DELETE.*.*"),
        format!("{api}.CONSUMER.PAUSE.*.*"),
        format!("{api}.CONSUMER.MSG.NEXT.*.*"),
        // Flow control of the headers-only metering consumers.
        "$JS.FC.>".to_string(),
        format!("{QUEUE_PREFIX}.*"),
        // Cancelled jobs: their data; abandoned jobs: their queue message.
        format!("{api}.STREAM.PURGE.{DATA_STREAM}"),
        format!("{api}.STREAM.MSG.GET.{QUEUE_STREAM}"),
        format!("{api}.DIRECT.GET.{QUEUE_STREAM}"),
        format!("{api}.STREAM.MSG.DELETE.{QUEUE_STREAM}"),
    ];
    let records_stream = format!("KV_{RECORDS_BUCKET}");
    for stream in [QUEUE_STREAM, DATA_STREAM, records_stream.as_str()] {
        publish.extend(stream_management(stream));
    }
    publish.extend(records_access());
    // The state shared by several gateways (quota counters, locks, meter leadership).
    for bucket in [STATE_BUCKET, LIVE_BUCKET] {
        publish.extend(stream_management(&format!("KV_{bucket}")));
        publish.extend(bucket_access(bucket));
    }
    Permissions::new(
        publish,
        vec![
            format!("{GATEWAY_INBOX_PREFIX}.>"),
            format!("{STATUS_PREFIX}.*"),
            format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{QUEUE_STREAM}.*"),
        ],
    )
}

/// The gateway's partner-side connection: receives requests on
/// `lclstream.gateway.<institution>.<verb>` (and service discovery), and
/// publishes replies, notices and job status into institutions' inboxes.
/// Which inbox a reply may go to is checked per request by the gateway
/// (the requester's own), since a permission cannot tie two tokens together.
pub fn gateway_front_permissions() -> Permissions {
    Permissions::new(
        vec!["_INBOX.*.>".to_string()],
        vec![
            format!("{GATEWAY_PREFIX}.*.*"),
            format!("{GATEWAY_PREFIX}.*.jobs.*"),
            "$SRV.>".to_string(),
        ],
    )
}

/// The callout's connection (callout account): receives authorization
/// requests; publishes nothing but the one reply to each (the server's
/// `allow_responses`).
pub fn callout_user_permissions() -> Permissions {
    Permissions {
        publish: SubjectPermission::default(),
        subscribe: SubjectPermission {
            allow: vec![super::claims::CALLOUT_SUBJECT.to_string()],
            deny: Vec::new(),
        },
        responses: Some(ResponsePermission { max: 1, ttl: 0 }),
    }
}

/// The gateway's system-account connection: lists connections and kicks
/// revoked ones, nothing else.
pub fn system_user_permissions() -> Permissions {
    Permissions::new(
        vec![
            "$SYS.REQ.SERVER.PING.CONNZ".to_string(),
            "$SYS.REQ.SERVER.*.KICK".to_string(),
        ],
        vec![format!("{GATEWAY_INBOX_PREFIX}.>")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn institution_permissions_name_every_slot_and_stream_and_nothing_else() {
        let p = institution_permissions("ucsd", 2, &["LCLS_MFX".to_string()]);
        // 2 slots x 2 streams (granted + job data) x 4 patterns + requests.
        assert_eq!(p.publish.allow.len(), 17);
        assert!(p
            .publish
            .allow
            .contains(&"$JS.lclstream.API.CONSUMER.MSG.NEXT.LCLS_MFX.ucsd-c1".to_string()));
        assert!(p
            .publish
            .allow
            .contains(&"$JS.ACK.LCLS_MFX.ucsd-c0.*.*.*.*.*".to_string()));
        assert!(p
            .publish
            .allow
            .contains(&"lclstream.gateway.ucsd.>".to_string()));
        assert!(!p.publish.allow.iter().any(|s| s.contains("CREATE")));
        assert_eq!(p.subscribe.allow, vec!["_INBOX.ucsd.>".to_string()]);
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("pub").is_some() && json.get("resp").is_none());
        assert!(p.may_publish("$JS.ACK.LCLS_MFX.ucsd-c0.1.2.3.4.5"));
        assert!(!p.may_publish("$JS.ACK.LCLS_MFX.ucsd-c0.1.2.3.4.5.6"));
        assert!(!p.may_publish("$JS.ACK.LCLS_MFX.slac-c0.1.ucsd-c0.3.4.5"));
    }
}

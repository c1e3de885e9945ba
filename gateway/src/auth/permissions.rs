//! What each kind of principal may publish and subscribe to.

use lclstream_nats::subjects::stream_subjects;
use serde::{Deserialize, Serialize};

use crate::naming::{consumer_slot_name, inbox_prefix, request_permission};
use crate::policy::{Access, Identity};

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

/// The permissions of an institution with `slots` consumer slots.
///
/// Pull, ack and consumer-info on its own slots (on any stream: a consumer
/// name is per stream, and only the gateway creates consumers), requests to
/// the gateway under its own id, replies only in its private inbox.
pub fn institution_permissions(id: &str, slots: u32) -> Permissions {
    let mut publish = Vec::with_capacity(4 * slots as usize + 1);
    for k in 0..slots {
        let slot = consumer_slot_name(id, k);
        publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.*.{slot}"));
        publish.push(format!("$JS.API.CONSUMER.INFO.*.{slot}"));
        // Ack subjects: `$JS.ACK.<stream>.<consumer>...` and the 2.14+ form
        // `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>...`.
        publish.push(format!("$JS.ACK.*.{slot}.>"));
        publish.push(format!("$JS.ACK.*.*.*.{slot}.>"));
    }
    publish.push(request_permission(id));
    Permissions {
        publish: SubjectPermission {
            allow: publish,
            deny: Vec::new(),
        },
        subscribe: SubjectPermission {
            allow: vec![format!("{}.>", inbox_prefix(id))],
            deny: Vec::new(),
        },
        responses: None,
    }
}

/// The permissions of a facility agent: publish events of its instruments and
/// use the JetStream API (stream creation and publish acks); replies in `_INBOX.>`.
///
/// Agents also run publish jobs as workers (`docs/jobs.md`): they publish job
/// data and status, update job records in the key-value bucket and
/// acknowledge (with progress heartbeats) the jobs they take from the queue.
pub fn agent_permissions(instruments: &[String]) -> Permissions {
    use crate::jobs::protocol::{DATA_PREFIX, QUEUE_STREAM, RECORDS_BUCKET, STATUS_PREFIX};
    let mut publish: Vec<String> = instruments.iter().map(|i| stream_subjects(i)).collect();
    publish.push("$JS.API.>".to_string());
    publish.push(format!("{DATA_PREFIX}.>"));
    publish.push(format!("{STATUS_PREFIX}.>"));
    publish.push(format!("$KV.{RECORDS_BUCKET}.>"));
    publish.push(format!("$JS.ACK.{QUEUE_STREAM}.>"));
    publish.push(format!("$JS.ACK.*.*.{QUEUE_STREAM}.>"));
    Permissions {
        publish: SubjectPermission {
            allow: publish,
            deny: Vec::new(),
        },
        subscribe: SubjectPermission {
            allow: vec!["_INBOX.>".to_string()],
            deny: Vec::new(),
        },
        responses: None,
    }
}

/// The permissions of an operator: everything in the facility account.
pub fn operator_permissions() -> Permissions {
    Permissions {
        publish: SubjectPermission {
            allow: vec![">".to_string()],
            deny: Vec::new(),
        },
        subscribe: SubjectPermission {
            allow: vec![">".to_string()],
            deny: Vec::new(),
        },
        responses: None,
    }
}

/// The permissions of an authenticated identity.
pub fn permissions_for(identity: &Identity) -> Permissions {
    match &identity.access {
        Access::Institution { slots } => institution_permissions(&identity.principal.id, *slots),
        Access::Agent { instruments } => agent_permissions(instruments),
        Access::Operator => operator_permissions(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn institution_permissions_name_every_slot_and_nothing_else() {
        let p = institution_permissions("ucsd", 2);
        assert_eq!(p.publish.allow.len(), 9);
        assert!(p
            .publish
            .allow
            .contains(&"$JS.API.CONSUMER.MSG.NEXT.*.ucsd-c1".to_string()));
        assert!(p
            .publish
            .allow
            .contains(&"$JS.ACK.*.*.*.ucsd-c0.>".to_string()));
        assert!(p
            .publish
            .allow
            .contains(&"lclstream.gateway.ucsd.>".to_string()));
        assert!(!p.publish.allow.iter().any(|s| s.contains("CREATE")));
        assert_eq!(p.subscribe.allow, vec!["_INBOX_ucsd.>".to_string()]);
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("pub").is_some() && json.get("resp").is_none());
    }
}

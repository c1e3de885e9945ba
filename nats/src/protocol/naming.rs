//! Names shared by the request service and the auth callout, so that the
//! permissions issued at connect time match what the gateway creates later.
//!
//! - Consumer slots: an institution's durable consumers are named
//!   `<institution-id>-c<k>` for `k` in `0..quotas.concurrent_consumers`.
//!   The set is fixed and known at connect time, so the user JWT can grant
//!   pull, ack and consumer-info on exactly these names.
//! - Inbox prefix: replies and pull deliveries go to `_INBOX.<institution-id>.>`
//!   (async-nats `ConnectOptions::custom_inbox_prefix`), so no institution can
//!   read another's replies.
//! - Request subjects: `lclstream.gateway.<institution-id>.<verb>`; the
//!   institution id in the subject is the identity the gateway trusts, and the
//!   auth callout grants publish only on `lclstream.gateway.<its-id>.>`.

use crate::subjects::GATEWAY_PREFIX;

/// Name of consumer slot `k` of an institution: `<institution>-c<k>`.
///
/// Distinct (institution, k) pairs give distinct names because `k` is all
/// digits and follows the last `-c`.
pub fn consumer_slot_name(institution: &str, k: u32) -> String {
    format!("{institution}-c{k}")
}

/// The slot number of `consumer` if it is one of `institution`'s slot names.
pub fn parse_consumer_slot(institution: &str, consumer: &str) -> Option<u32> {
    let digits = consumer.strip_prefix(institution)?.strip_prefix("-c")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 9 {
        return None;
    }
    // Reject leading zeros so that each slot has exactly one spelling.
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    digits.parse().ok()
}

/// Private inbox prefix of an institution: `_INBOX.<institution>`.
pub fn inbox_prefix(institution: &str) -> String {
    format!("_INBOX.{institution}")
}

/// JetStream domain through which partner connections reach the facility's
/// JetStream API. Institutions connect into their own account (`PARTNERS`),
/// which imports only pull, consumer-info and ack subjects from the facility
/// account and names them `$JS.<domain>.API...`, so a standard client reaches
/// them with `jetstream(domain = "lclstream")`.
pub const PARTNER_JS_DOMAIN: &str = "lclstream";

/// JetStream API prefix of partner connections: `$JS.lclstream.API`.
pub fn partner_api_prefix() -> String {
    format!("$JS.{PARTNER_JS_DOMAIN}.API")
}

/// The JetStream API prefix of a connection in the facility account.
pub const FACILITY_API_PREFIX: &str = "$JS.API";

/// Inbox prefix of a facility connection (agent, worker, operator tool) that
/// authenticates with the user key `public_key`: `_INBOX_<public key>`. The
/// callout grants subscribe permission on exactly this prefix, so no other
/// facility user can read its replies.
pub fn key_inbox_prefix(public_key: &str) -> String {
    format!("_INBOX_{public_key}")
}

/// Inbox prefix of the gateway's own connections.
pub const GATEWAY_INBOX_PREFIX: &str = "_INBOX_GATEWAY";

/// Whether `reply` lies inside `institution`'s private inbox
/// (`_INBOX.<institution>.` followed by at least one token). The gateway
/// answers only such replies: a reply subject is chosen by the requester,
/// and any other subject would let it aim the gateway at someone else.
pub fn reply_in_inbox(institution: &str, reply: &str) -> bool {
    let Some(rest) = reply
        .strip_prefix(&inbox_prefix(institution))
        .and_then(|r| r.strip_prefix('.'))
    else {
        return false;
    };
    !rest.is_empty()
        && rest.split('.').all(|t| !t.is_empty())
        && !rest.contains(['*', '>', ' ', '\t', '\r', '\n'])
}

/// Subject on which the gateway publishes notices (quota exhausted, consumers
/// paused or resumed) to an institution: `_INBOX.<institution>.notices`.
pub fn notice_subject(institution: &str) -> String {
    format!("{}.notices", inbox_prefix(institution))
}

/// Request subject of `verb` for an institution: `lclstream.gateway.<institution>.<verb>`.
pub fn request_subject(institution: &str, verb: &str) -> String {
    format!("{GATEWAY_PREFIX}.{institution}.{verb}")
}

/// Subject pattern an institution may publish requests on: `lclstream.gateway.<institution>.>`.
pub fn request_permission(institution: &str) -> String {
    format!("{GATEWAY_PREFIX}.{institution}.>")
}

/// The institution id in a request subject `lclstream.gateway.<institution>.<verb>`.
pub fn institution_of_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix(GATEWAY_PREFIX)?.strip_prefix('.')?;
    let (institution, _verb) = rest.split_once('.')?;
    (!institution.is_empty()).then_some(institution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_round_trip_and_do_not_collide() {
        assert_eq!(consumer_slot_name("ucsd", 3), "ucsd-c3");
        assert_eq!(parse_consumer_slot("ucsd", "ucsd-c3"), Some(3));
        assert_eq!(parse_consumer_slot("ucsd", "ucsd-c03"), None);
        assert_eq!(parse_consumer_slot("ucsd", "ucsd-c"), None);
        assert_eq!(parse_consumer_slot("a", "a-c1-c0"), None);
        assert_eq!(parse_consumer_slot("a-c1", "a-c1-c0"), Some(0));
        assert_eq!(inbox_prefix("ucsd"), "_INBOX.ucsd");
        assert_eq!(notice_subject("ucsd"), "_INBOX.ucsd.notices");
    }

    #[test]
    fn replies_must_stay_in_the_institutions_inbox() {
        assert!(reply_in_inbox("ucsd", "_INBOX.ucsd.abc"));
        assert!(reply_in_inbox("ucsd", "_INBOX.ucsd.abc.def"));
        for bad in [
            "_INBOX.ucsd",
            "_INBOX.ucsd.",
            "_INBOX.ucsdx.abc",
            "_INBOX.ucs.abc",
            "_INBOX.slac.abc",
            "_INBOX.ucsd..abc",
            "_INBOX.ucsd.*",
            "_INBOX.ucsd.>",
            "lcls.mfx.e1.1.det",
            "$KV.lclstream-jobs.ucsd.x",
            "",
        ] {
            assert!(!reply_in_inbox("ucsd", bad), "{bad:?}");
        }
    }

    #[test]
    fn institution_comes_from_the_subject() {
        let subject = request_subject("ucsd", "request");
        assert_eq!(subject, "lclstream.gateway.ucsd.request");
        assert_eq!(institution_of_subject(&subject), Some("ucsd"));
        assert_eq!(institution_of_subject("lclstream.gateway.request"), None);
        assert_eq!(institution_of_subject("other.gateway.ucsd.request"), None);
    }
}

//! Names shared by the request service and the auth callout, so that the
//! permissions issued at connect time match what the gateway creates later.
//!
//! - Consumer slots: an institution's durable consumers are named
//!   `<institution-id>-c<k>` for `k` in `0..quotas.concurrent_consumers`.
//!   The set is fixed and known at connect time, so the user JWT can grant
//!   pull, ack and consumer-info on exactly these names.
//! - Inbox prefix: replies and pull deliveries go to `_INBOX_<institution-id>.>`
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

/// Private inbox prefix of an institution: `_INBOX_<institution>`.
pub fn inbox_prefix(institution: &str) -> String {
    format!("_INBOX_{institution}")
}

/// Subject on which the gateway publishes notices (quota exhausted, consumers
/// paused or resumed) to an institution: `_INBOX_<institution>.notices`.
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
        assert_eq!(inbox_prefix("ucsd"), "_INBOX_ucsd");
        assert_eq!(notice_subject("ucsd"), "_INBOX_ucsd.notices");
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

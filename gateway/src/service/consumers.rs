//! The institutions' consumers as the server knows them.
//!
//! The server is the single source of truth for which slots are taken (a
//! consumer also disappears by itself after its inactivity threshold), so
//! every decision lists consumers afresh instead of trusting a cache.

use std::collections::HashMap;

use async_nats::jetstream::{self, consumer};
use futures::TryStreamExt;

use super::protocol::{ConsumerView, End, Start};
use crate::naming::parse_consumer_slot;

/// Consumer metadata key: the institution that owns the consumer.
pub const META_INSTITUTION: &str = "lclstream.institution";
/// Consumer metadata key: what created the consumer ([`KIND_DATASET`] for the request service).
pub const META_KIND: &str = "lclstream.kind";
/// [`META_KIND`] of consumers created by dataset requests.
pub const KIND_DATASET: &str = "dataset";
/// Consumer metadata key: the label given at request time.
pub const META_LABEL: &str = "lclstream.label";
/// Consumer metadata key: the requested start (JSON of [`Start`]).
pub const META_START: &str = "lclstream.start";
/// Consumer metadata key: the requested end (JSON of [`End`]).
pub const META_END: &str = "lclstream.end";

/// Largest number of streams or consumers per stream looked at (bounds a listing).
const MAX_LISTED: usize = 10_000;

/// The subject filters of a consumer configuration.
pub fn filters_of(config: &consumer::Config) -> Vec<String> {
    if !config.filter_subjects.is_empty() {
        config.filter_subjects.clone()
    } else if !config.filter_subject.is_empty() {
        vec![config.filter_subject.clone()]
    } else {
        Vec::new()
    }
}

/// The label stored on a consumer.
pub fn label_of(info: &consumer::Info) -> Option<&str> {
    info.config.metadata.get(META_LABEL).map(String::as_str)
}

/// The start stored on a consumer.
pub fn start_of(info: &consumer::Info) -> Start {
    info.config
        .metadata
        .get(META_START)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// The end stored on a consumer.
pub fn end_of(info: &consumer::Info) -> Option<End> {
    info.config
        .metadata
        .get(META_END)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Whether the consumer was created by a dataset request (and so must stay within a grant).
pub fn is_dataset(info: &consumer::Info) -> bool {
    info.config.metadata.get(META_KIND).map(String::as_str) == Some(KIND_DATASET)
}

/// The owner of a consumer: the metadata must name an institution whose slot name it carries.
pub fn owner_of(info: &consumer::Info) -> Option<&str> {
    let institution = info.config.metadata.get(META_INSTITUTION)?;
    parse_consumer_slot(institution, &info.name).map(|_| institution.as_str())
}

/// A consumer as shown to its institution.
pub fn view_of(info: &consumer::Info) -> ConsumerView {
    ConsumerView {
        consumer: info.name.clone(),
        stream: info.stream_name.clone(),
        label: label_of(info).map(str::to_string),
        filters: filters_of(&info.config),
        num_pending: info.num_pending,
        num_ack_pending: info.num_ack_pending as u64,
        paused: info.paused,
    }
}

/// Every consumer on every stream (bounded), gateway-created or not.
pub async fn list_all(js: &jetstream::Context) -> Result<Vec<consumer::Info>, async_nats::Error> {
    let mut names = Vec::new();
    let mut stream_names = js.stream_names();
    while let Some(name) = stream_names.try_next().await? {
        if names.len() >= MAX_LISTED {
            break;
        }
        names.push(name);
    }
    let mut all = Vec::new();
    for name in names {
        let stream = js.get_stream_no_info(&name).await?;
        let mut consumers = stream.consumers();
        let mut seen = 0;
        while let Some(info) = consumers.try_next().await? {
            seen += 1;
            if seen > MAX_LISTED {
                break;
            }
            all.push(info);
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Gateway-created consumers grouped by owning institution.
pub fn group_by_owner(all: Vec<consumer::Info>) -> HashMap<String, Vec<consumer::Info>> {
    let mut by_institution: HashMap<String, Vec<consumer::Info>> = HashMap::new();
    for info in all {
        if let Some(owner) = owner_of(&info).map(str::to_string) {
            by_institution.entry(owner).or_default().push(info);
        }
    }
    by_institution
}

/// The consumers occupying one institution's slots, on every stream.
///
/// Matched by name, not metadata, so that any consumer holding a slot name
/// counts as occupying it.
pub async fn list_institution(
    js: &jetstream::Context,
    institution: &str,
) -> Result<Vec<consumer::Info>, async_nats::Error> {
    Ok(list_all(js)
        .await?
        .into_iter()
        .filter(|info| parse_consumer_slot(institution, &info.name).is_some())
        .collect())
}

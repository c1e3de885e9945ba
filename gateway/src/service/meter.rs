//! Metering delivered bytes and enforcing the daily bytes quota.
//!
//! NATS counts no bytes per consumer, so the gateway meters them itself:
//! - a headers-only ordered consumer per granted stream feeds a [`SizeIndex`]
//!   (stream sequence -> subject and payload size, from `Nats-Msg-Size`);
//! - every tick, each institution consumer's delivered stream sequence is
//!   read from consumer info, and the sizes of the messages between the last
//!   metered sequence and it that match the consumer's filters are added to
//!   the institution's bytes of the day.
//!
//! Redeliveries are not counted again (the meter follows the delivered
//! sequence). Enforcement lags by at most one tick plus the messages already
//! pulled: when the day's bytes reach the quota the institution's consumers
//! are paused until the next UTC midnight (consumer pause API), a notice is
//! published on `_INBOX.<id>.notices`, and new dataset requests are refused
//! with `quota_bytes`. When the day rolls over the gateway resumes them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::consumers::{filters_of, group_by_owner, is_dataset, list_all};
use super::protocol::Notice;
use super::validate::resolve_stream;
use super::SharedPolicies;
use crate::audit::{Audit, AuditRecord, Decision};
use crate::naming::notice_subject;
use crate::quota::QuotaBook;

/// Settings of the meter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeterConfig {
    /// Milliseconds between two metering passes.
    pub interval_ms: u64,
    /// Largest number of messages remembered per stream (8 bytes each); older
    /// entries are forgotten, so consumers further behind are metered only from there.
    pub max_index_entries: usize,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            interval_ms: 2000,
            max_index_entries: 8 * 1024 * 1024,
        }
    }
}

const NO_SUBJECT: u32 = u32::MAX;
/// Largest number of distinct subjects remembered per stream.
const MAX_SUBJECTS: usize = 1 << 20;

/// Subject and payload size of each message of a stream, by sequence.
#[derive(Debug, Default)]
pub struct SizeIndex {
    base: u64,
    entries: VecDeque<(u32, u32)>,
    subjects: Vec<String>,
    subject_ids: HashMap<String, u32>,
    max_entries: usize,
}

impl SizeIndex {
    /// An empty index holding at most `max_entries` messages.
    pub fn new(max_entries: usize) -> SizeIndex {
        SizeIndex {
            max_entries: max_entries.max(1),
            ..Default::default()
        }
    }

    /// The highest sequence indexed so far (0 when empty).
    pub fn high(&self) -> u64 {
        if self.entries.is_empty() {
            self.base.saturating_sub(1)
        } else {
            self.base + self.entries.len() as u64 - 1
        }
    }

    /// Records message `sequence` on `subject` with `size` payload bytes.
    pub fn push(&mut self, sequence: u64, subject: &str, size: u32) {
        if self.entries.is_empty() {
            self.base = sequence;
        }
        let next = self.base + self.entries.len() as u64;
        if sequence < next {
            return; // already indexed (a redelivery after a consumer reset)
        }
        let gap = sequence - next;
        if gap >= self.max_entries as u64 {
            self.entries.clear();
            self.base = sequence;
        } else {
            // Deleted or expired messages between the two: nothing to count.
            for _ in 0..gap {
                self.push_entry((NO_SUBJECT, 0));
            }
        }
        let id = match self.subject_ids.get(subject) {
            Some(&id) => id,
            None if self.subjects.len() < MAX_SUBJECTS => {
                let id = self.subjects.len() as u32;
                self.subjects.push(subject.to_string());
                self.subject_ids.insert(subject.to_string(), id);
                id
            }
            None => NO_SUBJECT,
        };
        self.push_entry((id, size));
    }

    fn push_entry(&mut self, entry: (u32, u32)) {
        self.entries.push_back(entry);
        if self.entries.len() > self.max_entries {
            self.entries.pop_front();
            self.base += 1;
        }
    }

    /// Bytes of messages with sequence in `(after, upto]` whose subject matches one of `filters`.
    pub fn bytes_between(&self, after: u64, upto: u64, filters: &[String]) -> u64 {
        if self.entries.is_empty() || upto <= after {
            return 0;
        }
        let from = (after + 1).max(self.base);
        let to = upto.min(self.high());
        let mut matches: HashMap<u32, bool> = HashMap::new();
        let mut total = 0u64;
        for seq in from..=to {
            let (id, size) = self.entries[(seq - self.base) as usize];
            if id == NO_SUBJECT {
                continue;
            }
            let hit = *matches.entry(id).or_insert_with(|| {
                let subject = &self.subjects[id as usize];
                filters.is_empty()
                    || filters
                        .iter()
                        .any(|f| lclstream_nats::subjects::subject_within(subject, f))
            });
            if hit {
                total += size as u64;
            }
        }
        total
    }
}

/// What one metering pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Bytes added per institution.
    pub metered: HashMap<String, u64>,
    /// Consumers paused in this pass.
    pub paused: Vec<String>,
    /// Consumers resumed in this pass.
    pub resumed: Vec<String>,
    /// Consumers deleted because no active grant covers them any more.
    pub withdrawn: Vec<String>,
}

type ConsumerKey = (String, String, i128);

fn key_of(info: &consumer::Info) -> ConsumerKey {
    (
        info.stream_name.clone(),
        info.name.clone(),
        info.created.unix_timestamp_nanos(),
    )
}

/// The meter: size indexes, metered positions, and quota enforcement.
pub struct Meter {
    notifier: Arc<super::notices::Notifier>,
    js: jetstream::Context,
    policies: SharedPolicies,
    quotas: Arc<QuotaBook>,
    audit: Arc<Audit>,
    config: MeterConfig,
    indexes: Arc<Mutex<HashMap<String, SizeIndex>>>,
    indexers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    positions: Mutex<HashMap<ConsumerKey, u64>>,
    tick_lock: tokio::sync::Mutex<()>,
}

impl Meter {
    /// A meter over the streams named in `policies`.
    pub fn new(
        client: async_nats::Client,
        notifier: Arc<super::notices::Notifier>,
        policies: SharedPolicies,
        quotas: Arc<QuotaBook>,
        audit: Arc<Audit>,
        config: MeterConfig,
    ) -> Meter {
        Meter {
            js: jetstream::new(client),
            notifier,
            policies,
            quotas,
            audit,
            config,
            indexes: Arc::new(Mutex::new(HashMap::new())),
            indexers: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            tick_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The interval between passes.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.config.interval_ms.max(50))
    }

    /// Starts metering a consumer the gateway just created, from its current position.
    pub fn register(&self, info: &consumer::Info) {
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        positions.insert(key_of(info), info.delivered.stream_sequence);
    }

    /// Highest sequence indexed for `stream` (0 when none).
    pub fn indexed_high(&self, stream: &str) -> u64 {
        let indexes = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        indexes.get(stream).map(SizeIndex::high).unwrap_or(0)
    }

    /// Makes sure each granted stream has a running indexer (gateways that
    /// do not meter keep theirs warm, to take over without a gap).
    pub fn ensure_indexers(&self) {
        let streams: HashSet<String> = {
            let policies = self.policies.read().unwrap_or_else(|p| p.into_inner());
            policies
                .values()
                .flat_map(|p| p.grants.iter().map(|g| g.stream.clone()))
                .collect()
        };
        let mut indexers = self.indexers.lock().unwrap_or_else(|p| p.into_inner());
        for stream in streams {
            if indexers.get(&stream).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            let task = index_stream(
                self.js.clone(),
                stream.clone(),
                self.indexes.clone(),
                self.config.max_index_entries,
            );
            indexers.insert(stream, tokio::spawn(task));
        }
    }

    /// Stops the indexers.
    pub fn stop(&self) {
        let mut indexers = self.indexers.lock().unwrap_or_else(|p| p.into_inner());
        for (_, handle) in indexers.drain() {
            handle.abort();
        }
    }

    /// One metering and enforcement pass.
    pub async fn tick(&self) -> Result<TickReport, async_nats::Error> {
        let _one_at_a_time = self.tick_lock.lock().await;
        self.ensure_indexers();
        let mut report = TickReport::default();
        let by_owner = group_by_owner(list_all(&self.js).await?);
        for (institution, added) in self.meter(&by_owner) {
            match self.quotas.meter_bytes(&institution, added).await {
                Ok(_) => {
                    report.metered.insert(institution, added);
                }
                Err(e) => tracing::warn!("{added} bytes of {institution} not counted: {e}"),
            }
        }
        let by_owner = self.enforce_grants(by_owner, &mut report).await;
        self.enforce(&by_owner, &mut report).await;
        Ok(report)
    }

    /// Deletes dataset consumers that no active grant covers any more (grant
    /// removed or expired, institution removed): permissions are per slot,
    /// so a consumer must not outlive the grant it was created under.
    async fn enforce_grants(
        &self,
        by_owner: HashMap<String, Vec<consumer::Info>>,
        report: &mut TickReport,
    ) -> HashMap<String, Vec<consumer::Info>> {
        let now = self.quotas.now();
        let policies = self
            .policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut kept = HashMap::new();
        for (institution, consumers) in by_owner {
            let mut keep = Vec::new();
            let mut withdrawn = Vec::new();
            for info in consumers {
                let covered = !is_dataset(&info)
                    || policies.get(&institution).is_some_and(|policy| {
                        resolve_stream(policy, &filters_of(&info.config), now)
                            .is_ok_and(|stream| stream == info.stream_name)
                    });
                if covered {
                    keep.push(info);
                    continue;
                }
                let deleted = match self.js.get_stream_no_info(&info.stream_name).await {
                    Ok(stream) => stream
                        .delete_consumer(&info.name)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match deleted {
                    Ok(()) => withdrawn.push(info.name.clone()),
                    Err(e) => {
                        tracing::warn!("cannot delete {} after its grant ended: {e}", info.name)
                    }
                }
            }
            if !withdrawn.is_empty() {
                self.notify(
                    &institution,
                    "grant_withdrawn",
                    "no active grant covers these consumers any more; they were deleted",
                    &withdrawn,
                    None,
                )
                .await;
                self.audit.record(AuditRecord::now(
                    "gateway",
                    Some(&institution),
                    "withdraw",
                    Decision::Info,
                    "grant_withdrawn",
                    serde_json::json!({ "consumers": withdrawn }),
                ));
                report.withdrawn.extend(withdrawn);
            }
            kept.insert(institution, keep);
        }
        kept
    }

    /// Bytes delivered per institution since the last pass.
    fn meter(&self, by_owner: &HashMap<String, Vec<consumer::Info>>) -> Vec<(String, u64)> {
        let mut metered = Vec::new();
        let indexes = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = HashSet::new();
        for (institution, consumers) in by_owner {
            let mut added = 0u64;
            for info in consumers {
                let key = key_of(info);
                live.insert(key.clone());
                let delivered = info.delivered.stream_sequence;
                // A consumer first seen here (gateway restarted) is metered from now on.
                let position = positions.entry(key).or_insert(delivered);
                let Some(index) = indexes.get(&info.stream_name) else {
                    continue;
                };
                let upto = delivered.min(index.high());
                if upto > *position {
                    added += index.bytes_between(*position, upto, &filters_of(&info.config));
                    *position = upto;
                }
            }
            if added > 0 {
                metered.push((institution.clone(), added));
            }
        }
        positions.retain(|k, _| live.contains(k));
        metered
    }

    /// The metered position of every consumer, keyed `stream/consumer/created-ns`
    /// (saved by the metering gateway so that the next one continues from there).
    pub fn positions(&self) -> HashMap<String, u64> {
        let positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        positions
            .iter()
            .map(|((stream, name, created), &seq)| (format!("{stream}/{name}/{created}"), seq))
            .collect()
    }

    /// Continues from positions saved by [`Meter::positions`] (a gateway taking over the meter).
    pub fn restore_positions(&self, saved: &HashMap<String, u64>) {
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        for (key, &seq) in saved {
            let mut parts = key.rsplitn(3, '/');
            let (Some(created), Some(name), Some(stream)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(created) = created.parse::<i128>() else {
                continue;
            };
            positions.insert((stream.to_string(), name.to_string(), created), seq);
        }
    }

    async fn enforce(
        &self,
        by_owner: &HashMap<String, Vec<consumer::Info>>,
        report: &mut TickReport,
    ) {
        let limits: HashMap<String, u64> = {
            let policies = self.policies.read().unwrap_or_else(|p| p.into_inner());
            policies
                .iter()
                .map(|(id, p)| (id.clone(), p.quotas.bytes_per_day))
                .collect()
        };
        for (institution, consumers) in by_owner {
            let Some(&limit) = limits.get(institution) else {
                continue;
            };
            if let Err(e) = self.quotas.refresh(institution).await {
                tracing::warn!("cannot read the counters of {institution}: {e}");
                continue;
            }
            match self.quotas.check_bytes(institution, limit) {
                Err(exceeded) => {
                    let until = pause_deadline(exceeded.resets_at);
                    let mut paused = Vec::new();
                    for info in consumers.iter().filter(|c| !c.paused) {
                        match self.set_paused(info, Some(until)).await {
                            Ok(()) => paused.push(info.name.clone()),
                            Err(e) => tracing::warn!("cannot pause {}: {e}", info.name),
                        }
                    }
                    let first = self
                        .quotas
                        .claim_exhaustion_notice(institution)
                        .await
                        .unwrap_or(false);
                    if first || !paused.is_empty() {
                        let message = format!(
                            "{} of {limit} bytes delivered today (UTC); consumers paused until {}",
                            exceeded.used, exceeded.resets_at
                        );
                        self.notify(
                            institution,
                            "quota_bytes",
                            &message,
                            &paused,
                            Some(exceeded.resets_at),
                        )
                        .await;
                        self.audit.record(AuditRecord::now(
                            "gateway",
                            Some(institution),
                            "pause",
                            Decision::Info,
                            "quota_bytes",
                            serde_json::json!({
                                "consumers": paused, "used": exceeded.used, "limit": limit,
                                "until": exceeded.resets_at.to_string(),
                            }),
                        ));
                    }
                    report.paused.extend(paused);
                }
                Ok(()) => {
                    let mut resumed = Vec::new();
                    for info in consumers.iter().filter(|c| c.paused) {
                        match self.set_paused(info, None).await {
                            Ok(()) => resumed.push(info.name.clone()),
                            Err(e) => tracing::warn!("cannot resume {}: {e}", info.name),
                        }
                    }
                    if !resumed.is_empty() {
                        self.notify(
                            institution,
                            "resumed",
                            "a new quota window started; consumers resumed",
                            &resumed,
                            None,
                        )
                        .await;
                        self.audit.record(AuditRecord::now(
                            "gateway",
                            Some(institution),
                            "resume",
                            Decision::Info,
                            "quota_window_reset",
                            serde_json::json!({ "consumers": resumed }),
                        ));
                    }
                    report.resumed.extend(resumed);
                }
            }
        }
    }

    async fn set_paused(
        &self,
        info: &consumer::Info,
        until: Option<OffsetDateTime>,
    ) -> Result<(), async_nats::Error> {
        let stream = self.js.get_stream_no_info(&info.stream_name).await?;
        match until {
            Some(until) => stream.pause_consumer(&info.name, until).await?,
            None => stream.resume_consumer(&info.name).await?,
        };
        Ok(())
    }

    async fn notify(
        &self,
        institution: &str,
        code: &str,
        message: &str,
        consumers: &[String],
        until: Option<OffsetDateTime>,
    ) {
        let notice = Notice {
            ts: self.quotas.now(),
            institution: institution.to_string(),
            code: code.to_string(),
            message: message.to_string(),
            consumers: consumers.to_vec(),
            until,
        };
        let Ok(payload) = serde_json::to_vec(&notice) else {
            return;
        };
        if let Err(e) = self
            .notifier
            .publish(notice_subject(institution), payload.into())
            .await
        {
            tracing::warn!("cannot publish a notice to {institution}: {e}");
        }
    }
}

/// The server-side pause deadline: the quota window's end, but never in the
/// past by the server's clock (the gateway also resumes explicitly when its
/// own clock says the window rolled over).
fn pause_deadline(window_end: OffsetDateTime) -> OffsetDateTime {
    let floor = OffsetDateTime::now_utc() + Duration::from_secs(60);
    window_end.max(floor)
}

/// Follows one stream with a headers-only ordered consumer, filling its index;
/// retries while the stream does not exist or the connection is down.
async fn index_stream(
    js: jetstream::Context,
    stream_name: String,
    indexes: Arc<Mutex<HashMap<String, SizeIndex>>>,
    max_entries: usize,
) {
    loop {
        let high = {
            let indexes = indexes.lock().unwrap_or_else(|p| p.into_inner());
            indexes.get(&stream_name).map(SizeIndex::high).unwrap_or(0)
        };
        if let Err(e) = follow(&js, &stream_name, high, &indexes, max_entries).await {
            tracing::debug!("size index of {stream_name}: {e}; retrying");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn follow(
    js: &jetstream::Context,
    stream_name: &str,
    high: u64,
    indexes: &Arc<Mutex<HashMap<String, SizeIndex>>>,
    max_entries: usize,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream_no_info(stream_name).await?;
    let deliver_policy = if high == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: high + 1,
        }
    };
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig {
            headers_only: true,
            deliver_policy,
            description: Some("lclstream gateway size index".into()),
            ..Default::default()
        })
        .await?;
    let mut messages = ordered.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let info = message.info()?;
        let sequence = info.stream_sequence;
        let size = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Size"))
            .and_then(|v| v.as_str().parse::<u32>().ok())
            .unwrap_or(0);
        let subject = message.subject.to_string();
        let mut indexes = indexes.lock().unwrap_or_else(|p| p.into_inner());
        indexes
            .entry(stream_name.to_string())
            .or_insert_with(|| SizeIndex::new(max_entries))
            .push(sequence, &subject, size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sums_matching_ranges() {
        let mut index = SizeIndex::new(100);
        index.push(1, "a.x", 10);
        index.push(2, "a.y", 20);
        index.push(5, "a.x", 40); // 3 and 4 were deleted
        assert_eq!(index.high(), 5);
        let all = vec!["a.>".to_string()];
        assert_eq!(index.bytes_between(0, 5, &all), 70);
        assert_eq!(index.bytes_between(1, 5, &all), 60);
        assert_eq!(index.bytes_between(0, 5, &["a.x".to_string()]), 50);
        assert_eq!(
            index.bytes_between(0, 99, &all),
            70,
            "clamped to what is indexed"
        );
        index.push(2, "a.y", 999);
        assert_eq!(index.bytes_between(0, 5, &all), 70, "a repeat is ignored");
    }

    #[test]
    fn index_is_bounded() {
        let mut index = SizeIndex::new(3);
        for seq in 1..=10 {
            index.push(seq, "s", 1);
        }
        assert_eq!(index.entries.len(), 3);
        assert_eq!(index.bytes_between(0, 10, &[]), 3);
        index.push(1_000_000, "s", 5);
        assert_eq!(index.high(), 1_000_000);
        assert_eq!(index.entries.len(), 1);
    }
}

//! State several gateways share through JetStream key-value buckets, so that
//! any number of them can run side by side (active-active):
//!
//! - [`STATE_BUCKET`] holds each institution's quota counters
//!   (`usage.<institution>`), the per-institution decision locks
//!   (`lock.<institution>`) and the meter's positions (`meter.positions`).
//!   Every change is a compare-and-set on the key's revision, retried a
//!   bounded number of times: two gateways never both count from the same
//!   old value.
//! - [`LIVE_BUCKET`] (entries expire after the lease) holds who meters
//!   (`meter.leader`) and one heartbeat per gateway (`gateway.<id>`).
//!
//! Both buckets live in the facility account, where only the gateway's
//! service user (and operators) may reach them; institutions connect to
//! another account that imports nothing of the facility's key-value API.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::quota::Usage;

/// Bucket of quota counters, decision locks and meter positions.
pub const STATE_BUCKET: &str = "lclstream-gateway-state";
/// Bucket of the meter leadership and gateway heartbeats (entries expire).
pub const LIVE_BUCKET: &str = "lclstream-gateway-live";
/// Key naming the gateway that meters.
pub const LEADER_KEY: &str = "meter.leader";
/// Key of the meter's positions (consumer -> metered stream sequence).
pub const POSITIONS_KEY: &str = "meter.positions";
/// Attempts of one compare-and-set before giving up.
pub const MAX_CAS_ATTEMPTS: usize = 64;
/// How long a decision lock is held at most: a gateway that dies holding
/// one blocks that institution's decisions for at most this long.
pub const LOCK_LEASE: Duration = Duration::from_secs(3);
/// How long a gateway waits for a decision lock before answering "busy".
pub const LOCK_WAIT: Duration = Duration::from_secs(6);
/// How long one operation on the shared buckets may take. A gateway cut off
/// from the buckets (a partner-site gateway during a WAN partition) must
/// refuse within the partner's request timeout (10 s), not after it: the
/// lock's wait plus one operation stays below it.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

fn usage_key(institution: &str) -> String {
    format!("usage.{institution}")
}

fn lock_key(institution: &str) -> String {
    format!("lock.{institution}")
}

/// The shared buckets of one facility.
#[derive(Clone)]
pub struct SharedState {
    state: kv::Store,
    live: kv::Store,
    gateway_id: String,
    lease: Duration,
}

/// Handle on the quota counters in [`STATE_BUCKET`].
#[derive(Clone)]
pub struct SharedUsage {
    state: kv::Store,
}

/// The current value and revision of a key (revision 0 and `None` when absent).
async fn read_entry(store: &kv::Store, key: &str) -> Result<(Option<Bytes>, u64), String> {
    match store.entry(key).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            Ok((Some(entry.value), entry.revision))
        }
        Ok(Some(entry)) => Ok((None, entry.revision)),
        Ok(None) => Ok((None, 0)),
        Err(e) => Err(format!("reading {key}: {e}")),
    }
}

/// Writes `value` at `key` if the key is still at `revision` (0: absent).
/// Ok(None) when someone else wrote first.
async fn write_if(
    store: &kv::Store,
    key: &str,
    value: Bytes,
    revision: u64,
) -> Result<Option<u64>, String> {
    let written = if revision == 0 {
        store.create(key, value).await.map_err(|e| {
            (
                e.kind() == kv::CreateErrorKind::AlreadyExists,
                e.to_string(),
            )
        })
    } else {
        store.update(key, value, revision).await.map_err(|e| {
            let stale = e.kind() == kv::UpdateErrorKind::WrongLastRevision
                || e.to_string().contains("wrong last sequence");
            (stale, e.to_string())
        })
    };
    match written {
        Ok(revision) => Ok(Some(revision)),
        Err((true, _)) => Ok(None),
        Err((false, e)) => Err(format!("writing {key}: {e}")),
    }
}

impl SharedUsage {
    /// An institution's counters (empty when never counted).
    pub(crate) async fn read(&self, institution: &str) -> Result<Usage, String> {
        let (value, _) = read_entry(&self.state, &usage_key(institution)).await?;
        decode_usage(value)
    }

    /// Applies `change` by compare-and-set; returns the stored counters and
    /// what `change` returned.
    pub(crate) async fn change<T>(
        &self,
        institution: &str,
        change: impl Fn(&mut Usage) -> T,
    ) -> Result<(Usage, T), String> {
        let key = usage_key(institution);
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let (value, revision) = read_entry(&self.state, &key).await?;
            let mut usage = decode_usage(value)?;
            let out = change(&mut usage);
            let encoded = serde_json::to_vec(&usage).map_err(|e| e.to_string())?;
            if write_if(&self.state, &key, encoded.into(), revision)
                .await?
                .is_some()
            {
                return Ok((usage, out));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(format!(
            "quota counters of {institution} changed {MAX_CAS_ATTEMPTS} times under us; try again"
        ))
    }
}

fn decode_usage(value: Option<Bytes>) -> Result<Usage, String> {
    match value {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("unreadable quota counters in {STATE_BUCKET}: {e}")),
        None => Ok(Usage::default()),
    }
}

fn backoff(attempt: usize) -> Duration {
    // Spread the contenders: 5 to ~80 ms, with jitter from the clock.
    let jitter = OffsetDateTime::now_utc().nanosecond() as u64 % 5;
    Duration::from_millis(5 * (1 + attempt.min(15) as u64) + jitter)
}

/// What a decision lock holds.
#[derive(Debug, Serialize, Deserialize)]
struct LockValue {
    owner: String,
    /// Unix milliseconds after which the lock is free even if never released.
    until_ms: i64,
}

/// A held decision lock; released on drop.
pub struct DecisionLock {
    state: kv::Store,
    key: String,
    revision: u64,
}

impl Drop for DecisionLock {
    fn drop(&mut self) {
        let state = self.state.clone();
        let key = std::mem::take(&mut self.key);
        let revision = self.revision;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Only our own lock: if the lease ran out and someone took it, theirs stays.
                let _ = state.delete_expect_revision(&key, Some(revision)).await;
            });
        }
    }
}

/// One gateway's heartbeat (`gateway.<id>` in [`LIVE_BUCKET`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The gateway's id.
    pub id: String,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When it wrote this heartbeat.
    #[serde(with = "time::serde::rfc3339")]
    pub seen: OffsetDateTime,
    /// Whether it was the meter when it wrote it.
    pub metering: bool,
    /// Its version.
    pub version: String,
}

/// Key-value configuration of [`STATE_BUCKET`].
pub fn state_config(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: STATE_BUCKET.to_string(),
        description: "lclstream gateways: quota counters, decision locks, meter positions".into(),
        history: 1,
        max_value_size: 1024 * 1024,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

/// Key-value configuration of [`LIVE_BUCKET`]: entries expire after `lease`.
pub fn live_config(replicas: usize, lease: Duration) -> kv::Config {
    kv::Config {
        bucket: LIVE_BUCKET.to_string(),
        description: "lclstream gateways: meter leader and heartbeats".into(),
        history: 1,
        max_age: lease,
        max_value_size: 64 * 1024,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    }
}

async fn open_or_create(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, async_nats::Error> {
    match js.get_key_value(&config.bucket).await {
        Ok(store) => Ok(store),
        Err(_) => match js.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            // Another gateway created it meanwhile.
            Err(_) => Ok(js.get_key_value(&config.bucket).await?),
        },
    }
}

/// A gateway id unique enough among a facility's gateways: host and process.
pub fn default_gateway_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!("{host}-{}", std::process::id())
}

impl SharedState {
    /// Opens (creating when missing) both buckets on the facility
    /// connection; every later operation on them is bounded by
    /// [`OPERATION_TIMEOUT`].
    pub async fn open(
        client: &async_nats::Client,
        gateway_id: String,
        replicas: usize,
        lease: Duration,
    ) -> Result<SharedState, async_nats::Error> {
        // Creating a replicated bucket may take longer than one operation.
        let js = jetstream::new(client.clone());
        open_or_create(&js, state_config(replicas)).await?;
        open_or_create(&js, live_config(replicas, lease)).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(OPERATION_TIMEOUT);
        let state = js.get_key_value(STATE_BUCKET).await?;
        let live = js.get_key_value(LIVE_BUCKET).await?;
        Ok(SharedState {
            state,
            live,
            gateway_id,
            lease,
        })
    }

    /// This gateway's id.
    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// The meter lease: a dead meter is replaced within it plus one meter interval.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The quota counters' handle.
    pub fn usage(&self) -> SharedUsage {
        SharedUsage {
            state: self.state.clone(),
        }
    }

    /// Takes `institution`'s decision lock, waiting at most [`LOCK_WAIT`].
    /// Errors say whether another gateway holds it or the bucket did not answer.
    pub async fn lock(&self, institution: &str) -> Result<DecisionLock, String> {
        let unreachable = |e: String| {
            format!(
                "the gateways' shared state (bucket {STATE_BUCKET}) did not answer ({e}); \
                 try again"
            )
        };
        let key = lock_key(institution);
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut attempt = 0;
        loop {
            let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            let (value, revision) = read_entry(&self.state, &key).await.map_err(unreachable)?;
            let free = match value {
                None => true,
                Some(bytes) => serde_json::from_slice::<LockValue>(&bytes)
                    .map(|held| held.until_ms <= now_ms)
                    .unwrap_or(true),
            };
            if free {
                let mine = LockValue {
                    owner: self.gateway_id.clone(),
                    until_ms: now_ms + LOCK_LEASE.as_millis() as i64,
                };
                let encoded = serde_json::to_vec(&mine).map_err(|e| e.to_string())?;
                if let Some(revision) = write_if(&self.state, &key, encoded.into(), revision)
                    .await
                    .map_err(unreachable)?
                {
                    return Ok(DecisionLock {
                        state: self.state.clone(),
                        key,
                        revision,
                    });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "gateway busy: another gateway is deciding for {institution}; try again"
                ));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Tries to be (or stay) the facility's meter; true when this gateway meters.
    pub async fn lead(&self) -> Result<bool, String> {
        let (value, revision) = read_entry(&self.live, LEADER_KEY).await?;
        let mine = Bytes::from(self.gateway_id.clone());
        match value {
            // Renewing rewrites the entry, which restarts its expiry.
            Some(holder) if holder == mine => Ok(write_if(&self.live, LEADER_KEY, mine, revision)
                .await?
                .is_some()),
            Some(_) => Ok(false),
            None => Ok(write_if(&self.live, LEADER_KEY, mine, revision)
                .await?
                .is_some()),
        }
    }

    /// Gives up metering (clean shutdown), so that another gateway takes over at once.
    pub async fn resign(&self) {
        if let Ok((Some(holder), revision)) = read_entry(&self.live, LEADER_KEY).await {
            if holder == self.gateway_id.as_bytes() {
                let _ = self
                    .live
                    .delete_expect_revision(LEADER_KEY, Some(revision))
                    .await;
            }
        }
        let _ = self
            .live
            .delete(format!("gateway.{}", self.gateway_id))
            .await;
    }

    /// Writes this gateway's heartbeat.
    pub async fn beat(&self, started: OffsetDateTime, metering: bool) -> Result<(), String> {
        let beat = Heartbeat {
            id: self.gateway_id.clone(),
            started,
            seen: OffsetDateTime::now_utc(),
            metering,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let encoded = serde_json::to_vec(&beat).map_err(|e| e.to_string())?;
        self.live
            .put(format!("gateway.{}", self.gateway_id), encoded.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("writing the heartbeat: {e}"))
    }

    /// Saves the meter's positions (only the meter calls this).
    pub async fn save_positions(&self, positions: &HashMap<String, u64>) -> Result<(), String> {
        let encoded = serde_json::to_vec(positions).map_err(|e| e.to_string())?;
        self.state
            .put(POSITIONS_KEY, encoded.into())
            .await
            .map(|_| ())
            .map_err(|e| format!("saving meter positions: {e}"))
    }

    /// The positions saved by the last meter.
    pub async fn load_positions(&self) -> Result<HashMap<String, u64>, String> {
        match read_entry(&self.state, POSITIONS_KEY).await? {
            (Some(bytes), _) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
            (None, _) => Ok(HashMap::new()),
        }
    }
}

/// The live gateways and which one meters, read from [`LIVE_BUCKET`].
pub async fn gateways(js: &jetstream::Context) -> Result<(Vec<Heartbeat>, Option<String>), String> {
    use futures::StreamExt;
    let live = js
        .get_key_value(LIVE_BUCKET)
        .await
        .map_err(|e| format!("no gateway has run in HA mode here ({LIVE_BUCKET}: {e})"))?;
    let mut beats = Vec::new();
    let mut keys = live.keys().await.map_err(|e| e.to_string())?;
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if !key.starts_with("gateway.") {
            continue;
        }
        if let Ok((Some(bytes), _)) = read_entry(&live, &key).await {
            if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&bytes) {
                beats.push(beat);
            }
        }
    }
    beats.sort_by(|a, b| a.id.cmp(&b.id));
    let leader = match read_entry(&live, LEADER_KEY).await? {
        (Some(bytes), _) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        (None, _) => None,
    };
    Ok((beats, leader))
}

//! Quota accounting: requests per rolling hour and bytes delivered per UTC day.
//!
//! The number of concurrent consumers is not counted here: it is the number
//! of occupied consumer slots on the server, which is authoritative (consumers
//! also disappear on their own after their inactivity threshold).
//!
//! Time comes from a [`Clock`] so that tests can move through windows
//! without waiting for them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

/// Length of the rolling request window.
pub const REQUEST_WINDOW: Duration = Duration::from_secs(3600);

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current instant (UTC).
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The start of the next UTC day after `now`.
pub fn next_utc_midnight(now: OffsetDateTime) -> OffsetDateTime {
    let today = now.to_offset(time::UtcOffset::UTC).date();
    let tomorrow = today.next_day().unwrap_or(today);
    tomorrow.midnight().assume_utc()
}

/// Why a quota refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// Used amount in the current window.
    pub used: u64,
    /// The limit.
    pub limit: u64,
    /// When the window frees room again.
    pub resets_at: OffsetDateTime,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Usage {
    /// Instants of counted requests within the last hour, oldest first.
    requests: VecDeque<OffsetDateTime>,
    /// The UTC day `bytes` belongs to.
    day: Option<Date>,
    /// Bytes delivered on `day`.
    bytes: u64,
    /// Whether the institution was already told that `day`'s bytes are exhausted.
    notified: bool,
}

impl Usage {
    /// Rolls both windows forward to `now` before anyone looks at them.
    fn roll(&mut self, now: OffsetDateTime) {
        while let Some(&oldest) = self.requests.front() {
            if now - oldest >= REQUEST_WINDOW {
                self.requests.pop_front();
            } else {
                break;
            }
        }
        let today = now.to_offset(time::UtcOffset::UTC).date();
        if self.day != Some(today) {
            self.day = Some(today);
            self.bytes = 0;
            self.notified = false;
        }
    }
}

/// Per-institution counters shared by the request service and the meter.
///
/// With a [`SharedUsage`] store attached (several gateways), the counters
/// that matter live in a JetStream key-value bucket and every change is a
/// compare-and-set there; the in-memory map is then a cache refreshed
/// before each decision.
pub struct QuotaBook {
    clock: Arc<dyn Clock>,
    usage: Mutex<HashMap<String, Usage>>,
    shared: std::sync::OnceLock<SharedUsage>,
}

pub use crate::shared_state::SharedUsage;

/// A snapshot of one institution's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSnapshot {
    /// Counted requests in the last hour.
    pub requests_last_hour: u64,
    /// When the oldest counted request leaves the window (None when there is none).
    #[serde(with = "time::serde::rfc3339::option")]
    pub requests_reset_at: Option<OffsetDateTime>,
    /// Bytes delivered today (UTC).
    pub bytes_today: u64,
    /// Start of the next UTC day, when `bytes_today` resets.
    #[serde(with = "time::serde::rfc3339")]
    pub bytes_reset_at: OffsetDateTime,
}

impl QuotaBook {
    /// Empty counters reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> QuotaBook {
        QuotaBook {
            clock,
            usage: Mutex::new(HashMap::new()),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// The clock the book reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The current instant according to the book's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    fn with_usage<T>(
        &self,
        institution: &str,
        f: impl FnOnce(&mut Usage, OffsetDateTime) -> T,
    ) -> T {
        let now = self.clock.now();
        let mut all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let usage = all.entry(institution.to_string()).or_default();
        usage.roll(now);
        f(usage, now)
    }

    /// Keeps the counters in `shared` from now on (several gateways).
    pub fn attach_shared(&self, shared: SharedUsage) {
        let _ = self.shared.set(shared);
    }

    /// Whether the counters live in a shared store.
    pub fn is_shared(&self) -> bool {
        self.shared.get().is_some()
    }

    /// Reloads `institution`'s counters from the shared store (no-op without one).
    pub async fn refresh(&self, institution: &str) -> Result<(), String> {
        let Some(shared) = self.shared.get() else {
            return Ok(());
        };
        let usage = shared.read(institution).await?;
        self.cache(institution, usage);
        Ok(())
    }

    fn cache(&self, institution: &str, usage: Usage) {
        let mut all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(institution.to_string(), usage);
    }

    /// Applies `change` to `institution`'s counters: in the shared store by
    /// compare-and-set when there is one (so that two gateways never both
    /// count from the same old value), else in memory.
    async fn change<T>(
        &self,
        institution: &str,
        change: impl Fn(&mut Usage, OffsetDateTime) -> T,
    ) -> Result<T, String> {
        let Some(shared) = self.shared.get() else {
            return Ok(self.with_usage(institution, change));
        };
        let (usage, out) = shared
            .change(institution, |usage| {
                let now = self.clock.now();
                usage.roll(now);
                change(usage, now)
            })
            .await?;
        self.cache(institution, usage);
        Ok(out)
    }

    /// Counts one request now, in the shared store if any.
    pub async fn count_request(&self, institution: &str) -> Result<(), String> {
        self.change(institution, |usage, now| usage.requests.push_back(now))
            .await
    }

    /// Takes back the newest counted request (its consumer could not be created).
    pub async fn uncount_request(&self, institution: &str) -> Result<(), String> {
        self.change(institution, |usage, _| {
            usage.requests.pop_back();
        })
        .await
    }

    /// Adds delivered bytes, in the shared store if any; returns the new total.
    pub async fn meter_bytes(&self, institution: &str, bytes: u64) -> Result<u64, String> {
        self.change(institution, |usage, _| {
            usage.bytes = usage.bytes.saturating_add(bytes);
            usage.bytes
        })
        .await
    }

    /// Marks today's exhaustion as notified, in the shared store if any;
    /// true the first time per day across all gateways.
    pub async fn claim_exhaustion_notice(&self, institution: &str) -> Result<bool, String> {
        self.change(institution, |usage, _| {
            !std::mem::replace(&mut usage.notified, true)
        })
        .await
    }

    /// Checks that one more request fits in the rolling hour.
    pub fn check_request(&self, institution: &str, limit: u32) -> Result<(), QuotaExceeded> {
        self.with_usage(institution, |usage, now| {
            let used = usage.requests.len() as u64;
            if used < limit as u64 {
                return Ok(());
            }
            let resets_at = usage
                .requests
                .front()
                .map(|&oldest| oldest + REQUEST_WINDOW)
                .unwrap_or(now);
            Err(QuotaExceeded {
                used,
                limit: limit as u64,
                resets_at,
            })
        })
    }

    /// Counts one request now. The deque never grows beyond what the window
    /// holds: the service checks before it counts, and the window drops old entries.
    pub fn record_request(&self, institution: &str) {
        self.with_usage(institution, |usage, now| usage.requests.push_back(now));
    }

    /// Adds delivered bytes to today's total; returns the new total.
    pub fn add_bytes(&self, institution: &str, bytes: u64) -> u64 {
        self.with_usage(institution, |usage, _| {
            usage.bytes = usage.bytes.saturating_add(bytes);
            usage.bytes
        })
    }

    /// Checks that today's delivered bytes are below `limit`.
    pub fn check_bytes(&self, institution: &str, limit: u64) -> Result<(), QuotaExceeded> {
        self.with_usage(institution, |usage, now| {
            if usage.bytes < limit {
                Ok(())
            } else {
                Err(QuotaExceeded {
                    used: usage.bytes,
                    limit,
                    resets_at: next_utc_midnight(now),
                })
            }
        })
    }

    /// Marks today's exhaustion as notified; returns true the first time per day.
    pub fn take_exhaustion_notice(&self, institution: &str) -> bool {
        self.with_usage(institution, |usage, _| {
            !std::mem::replace(&mut usage.notified, true)
        })
    }

    /// The institution's counters now.
    pub fn snapshot(&self, institution: &str) -> UsageSnapshot {
        self.with_usage(institution, |usage, now| UsageSnapshot {
            requests_last_hour: usage.requests.len() as u64,
            requests_reset_at: usage.requests.front().map(|&t| t + REQUEST_WINDOW),
            bytes_today: usage.bytes,
            bytes_reset_at: next_utc_midnight(now),
        })
    }

    /// Serializes all counters (to survive a gateway restart).
    pub fn save(&self) -> serde_json::Value {
        let all = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_value(&*all).unwrap_or_default()
    }

    /// Restores counters saved by [`QuotaBook::save`]; stale windows roll on next use.
    pub fn restore(&self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        let restored: HashMap<String, Usage> = serde_json::from_value(saved)?;
        *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn requests_roll_out_of_the_hour() {
        let clock = ManualClock::new(datetime!(2026-03-01 10:00 UTC));
        let book = QuotaBook::new(Arc::new(clock.clone()));
        for _ in 0..3 {
            book.check_request("a", 3).unwrap();
            book.record_request("a");
            clock.advance(Duration::from_secs(60));
        }
        let refused = book.check_request("a", 3).unwrap_err();
        assert_eq!(refused.used, 3);
        assert_eq!(refused.resets_at, datetime!(2026-03-01 11:00 UTC));
        assert!(book.check_request("b", 3).is_ok(), "per institution");
        clock.set(datetime!(2026-03-01 11:00 UTC));
        assert!(book.check_request("a", 3).is_ok());
    }

    #[test]
    fn bytes_reset_at_utc_midnight() {
        let clock = ManualClock::new(datetime!(2026-03-01 23:59 UTC));
        let book = QuotaBook::new(Arc::new(clock.clone()));
        assert_eq!(book.add_bytes("a", 700), 700);
        assert!(book.check_bytes("a", 1000).is_ok());
        book.add_bytes("a", 300);
        let refused = book.check_bytes("a", 1000).unwrap_err();
        assert_eq!(refused.resets_at, datetime!(2026-03-02 00:00 UTC));
        assert!(book.take_exhaustion_notice("a"));
        assert!(!book.take_exhaustion_notice("a"));
        clock.advance(Duration::from_secs(60));
        assert!(book.check_bytes("a", 1000).is_ok());
        assert_eq!(book.snapshot("a").bytes_today, 0);
        assert!(book.take_exhaustion_notice("a"), "a new day notifies again");
    }

    #[test]
    fn counters_survive_save_and_restore() {
        let clock = Arc::new(ManualClock::new(datetime!(2026-03-01 12:00 UTC)));
        let book = QuotaBook::new(clock.clone());
        book.record_request("a");
        book.add_bytes("a", 42);
        let again = QuotaBook::new(clock);
        again.restore(book.save()).unwrap();
        assert_eq!(again.snapshot("a").bytes_today, 42);
        assert_eq!(again.snapshot("a").requests_last_hour, 1);
    }
}

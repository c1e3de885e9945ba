//! The partner's side of the WAN tests: `lclstream pull` into a JSON lines
//! file, rerun with the same label whenever it stops (as an operator's
//! service manager would), and the exactly-once check of the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Guarded, Site};

/// Event indices of a JSON lines file, with how often each appears.
pub fn written_indices(path: &Path) -> BTreeMap<u64, u32> {
    let mut counts = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            continue; // a line being written
        };
        if let Some(index) = value["index"].as_u64() {
            *counts.entry(index).or_insert(0) += 1;
        }
    }
    counts
}

/// Waits until `check` holds, polling every 200 ms, up to `timeout`.
pub async fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    check()
}

/// What one partner pulls, and where.
pub struct PullSpec {
    /// Where the partner's process runs.
    pub site: Site,
    /// Server URL as the partner's site reaches it.
    pub url: String,
    /// Institution id and its nkey seed file.
    pub institution: String,
    pub seed_file: PathBuf,
    /// Subject filter and consumer label.
    pub subject: String,
    pub label: String,
    /// The JSON lines file events are written to.
    pub out: PathBuf,
    /// Where each run's log goes (`pull-<run>.log`).
    pub logs: PathBuf,
    /// Events expected: the loop ends once the file holds this many.
    pub events: u64,
}

/// `lclstream pull` rerun until the file is complete, stopped or 100 s passed.
pub struct PullLoop {
    stop: Arc<AtomicBool>,
    runs: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl PullLoop {
    /// Starts the loop with the test binary `binary`.
    pub fn spawn(binary: &'static str, spec: PullSpec) -> PullLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, runs) = (stop.clone(), runs.clone());
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(100);
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    let log = spec.logs.join(format!("pull-{run}.log"));
                    let mut pull = Guarded(
                        spec.site
                            .command(binary)
                            .args(["pull", "--url", &spec.url])
                            .args(["--institution", &spec.institution])
                            .arg("--seed")
                            .arg(&spec.seed_file)
                            .args(["--subject", &spec.subject, "--label", &spec.label])
                            .args(["--idle-timeout", "6"])
                            .arg("--jsonl")
                            .arg(&spec.out)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(std::fs::File::create(&log).unwrap())
                            .spawn()
                            .expect("pull starts"),
                    );
                    // Bounded: a pull stalled by a partition is killed, as a
                    // service manager's watchdog would.
                    let status = pull.wait_timeout(Duration::from_secs(40));
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if status.is_none_or(|s| !s.success()) {
                        let last = text
                            .lines()
                            .rfind(|l| l.starts_with("error"))
                            .or(text.lines().last())
                            .unwrap_or("")
                            .trim()
                            .to_string();
                        failures.push(format!("run {run} ({status:?}): {last}"));
                    }
                    if written_indices(&spec.out).len() as u64 >= spec.events {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                failures
            })
        };
        PullLoop { stop, runs, task }
    }

    /// Runs started so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }

    /// Stops after the current run; the failed runs, each with its last error line.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the pull loop ends")
            .unwrap()
    }
}

/// Asserts that `out` holds event indices `0..events`, each exactly once.
pub fn assert_exactly_once(out: &Path, events: u64, failures: &[String]) {
    let counts = written_indices(out);
    let missing: Vec<u64> = (0..events).filter(|i| !counts.contains_key(i)).collect();
    let repeated: Vec<(&u64, &u32)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let outside: Vec<&u64> = counts.keys().filter(|i| **i >= events).collect();
    assert!(
        missing.is_empty(),
        "{} of {events} events reached the partner; missing: {missing:?}; \
         pull runs that failed: {failures:#?}",
        counts.len()
    );
    assert!(repeated.is_empty(), "events written twice: {repeated:?}");
    assert!(outside.is_empty(), "unexpected events: {outside:?}");
}

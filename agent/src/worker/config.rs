//! Worker configuration: a TOML file (see `docs/jobs.md`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use lclstream_nats::subjects::validate_token;
use serde::Deserialize;

use crate::config::{FieldMapping, Hdf5Config, NatsConfig, OnError, Preset, PsanaConfig};
use crate::AgentError;

/// The whole worker configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Worker name, shown in job records; default `worker-<pid>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Instruments whose jobs this worker takes (`lclstream.jobs.queue.<instrument>`).
    pub instruments: Vec<String>,
    /// Jobs run at once.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Broker connection.
    #[serde(default)]
    pub nats: NatsConfig,
    /// Where runs are stored.
    pub storage: StorageConfig,
    /// Work-queue settings.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Source name written into batches (the last token of batch ids).
    #[serde(default = "default_source")]
    pub source: String,
}

fn one() -> usize {
    1
}
fn default_source() -> String {
    "data".into()
}

/// Where the HDF5 files of a run are and how they are laid out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Root directory of the facility's data.
    pub root: PathBuf,
    /// File glob relative to `root`; `{instrument}`, `{experiment}`, `{run}` and
    /// `{run:0N}` (zero-padded to N digits) are replaced.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Explicit files of some runs (take precedence over `pattern`).
    #[serde(default)]
    pub runs: Vec<RunFiles>,
    /// Layout preset of the files.
    pub preset: Option<Preset>,
    /// Dataset-to-field mappings (added to, or overriding, the preset's).
    #[serde(default)]
    pub fields: Vec<FieldMapping>,
    /// Dataset holding the per-event timestamp in ns.
    pub time_dataset: Option<String>,
    /// Events read per HDF5 hyperslab.
    #[serde(default = "default_read_chunk")]
    pub read_chunk_events: usize,
    /// Most events read per second by one job (0: no limit), to spare shared storage.
    #[serde(default)]
    pub max_events_per_sec: f64,
    /// The run's files are LCLS-II xtc2, read through psana with these
    /// detectors and fields (`files` and `experiment` stay unset: the files
    /// are the run's `pattern` matches).
    pub psana: Option<PsanaConfig>,
}

fn default_pattern() -> String {
    "{experiment}/run{run:04}*.h5".into()
}
fn default_read_chunk() -> usize {
    16
}

/// The files of one run, named explicitly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFiles {
    /// Experiment.
    pub experiment: String,
    /// Run.
    pub run: u32,
    /// File glob (absolute, or relative to `storage.root`).
    pub glob: String,
}

/// Work-queue settings. A worker that dies stops sending progress
/// heartbeats; its job is redelivered to another worker `ack_wait_secs`
/// after the last heartbeat, at most `max_deliver` times in all.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Seconds without a heartbeat after which a job is given to another worker.
    pub ack_wait_secs: u64,
    /// Milliseconds between heartbeats (at most half of `ack_wait_secs`).
    pub heartbeat_ms: u64,
    /// Deliveries of one job in all (first attempt included).
    pub max_deliver: i64,
    /// Milliseconds between progress updates of the job record and status.
    pub progress_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            ack_wait_secs: 30,
            heartbeat_ms: 5000,
            max_deliver: 5,
            progress_ms: 500,
        }
    }
}

impl QueueConfig {
    /// Ack wait as a duration.
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs)
    }

    /// Heartbeat interval as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

impl WorkerConfig {
    /// Loads and validates a TOML file.
    pub fn load(path: &Path) -> Result<WorkerConfig, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Config {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text (for tests and embedding).
    pub fn from_toml(text: &str) -> Result<WorkerConfig, AgentError> {
        Self::parse(text, Path::new("<inline>"))
    }

    fn parse(text: &str, path: &Path) -> Result<WorkerConfig, AgentError> {
        let bad = |message: String| AgentError::Config {
            path: path.to_path_buf(),
            message,
        };
        let settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let mut config: WorkerConfig =
            settings.try_deserialize().map_err(|e| bad(e.to_string()))?;
        if config.storage.root.is_relative() {
            if let Some(base) = path.parent().filter(|p| p.is_dir()) {
                config.storage.root = base.join(&config.storage.root);
            }
        }
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks values that the types alone do not.
    pub fn validate(&self) -> Result<(), String> {
        if self.instruments.is_empty() {
            return Err("instruments: at least one instrument is required".into());
        }
        for i in &self.instruments {
            validate_token("instruments", i)?;
        }
        validate_token("source", &self.source)?;
        if self.concurrency == 0 || self.concurrency > 64 {
            return Err("concurrency must be between 1 and 64".into());
        }
        let s = &self.storage;
        match &s.psana {
            Some(p) => {
                if !p.files.is_empty() || p.experiment.is_some() {
                    return Err("storage.psana: `files` and `experiment` come from storage.pattern; remove them".into());
                }
                if p.fields.is_empty() {
                    return Err("storage.psana.fields: at least one detector is required".into());
                }
            }
            None if s.preset.is_none() && s.fields.is_empty() => {
                return Err("storage: `preset`, `fields` or [storage.psana] is required".into());
            }
            None => {}
        }
        if s.read_chunk_events == 0 {
            return Err("storage.read_chunk_events must be positive".into());
        }
        if !(s.max_events_per_sec >= 0.0 && s.max_events_per_sec.is_finite()) {
            return Err("storage.max_events_per_sec must be >= 0".into());
        }
        if !s.pattern.contains("{run") {
            return Err("storage.pattern must contain {run} or {run:0N}".into());
        }
        for (i, r) in s.runs.iter().enumerate() {
            validate_token("experiment", &r.experiment)
                .map_err(|e| format!("storage.runs[{i}]: {e}"))?;
        }
        let q = &self.queue;
        if q.ack_wait_secs == 0
            || q.heartbeat_ms == 0
            || q.heartbeat_ms * 2 > q.ack_wait_secs * 1000
        {
            return Err(format!(
                "queue.heartbeat_ms ({}) must be positive and at most half of queue.ack_wait_secs ({} s)",
                q.heartbeat_ms, q.ack_wait_secs
            ));
        }
        if q.max_deliver < 1 {
            return Err("queue.max_deliver must be at least 1".into());
        }
        Ok(())
    }

    /// The worker's name.
    pub fn worker_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("worker-{}", std::process::id()))
    }

    /// An HDF5 source configuration with the storage layout (for [`crate::hdf5_source::Layout`]).
    pub fn hdf5_layout_config(&self) -> Hdf5Config {
        Hdf5Config {
            file: None,
            glob: None,
            watch_dir: None,
            pattern: "*.h5".into(),
            poll_ms: 500,
            stable_ms: 1000,
            preset: self.storage.preset,
            fields: self.storage.fields.clone(),
            time_dataset: self.storage.time_dataset.clone(),
            read_chunk_events: self.storage.read_chunk_events,
            on_error: OnError::Stop,
        }
    }

    /// The file glob of a run: an explicit `[[storage.runs]]` entry, else the pattern.
    pub fn run_glob(&self, instrument: &str, experiment: &str, run: u32) -> String {
        let root = &self.storage.root;
        if let Some(r) = self
            .storage
            .runs
            .iter()
            .find(|r| r.experiment == experiment && r.run == run)
        {
            return if Path::new(&r.glob).is_absolute() {
                r.glob.clone()
            } else {
                root.join(&r.glob).to_string_lossy().into_owned()
            };
        }
        let mut pattern = self
            .storage
            .pattern
            .replace("{instrument}", instrument)
            .replace("{experiment}", experiment)
            .replace("{run}", &run.to_string());
        for width in 1..=9 {
            pattern = pattern.replace(
                &format!("{{run:0{width}}}"),
                &format!("{run:0width$}", width = width),
            );
        }
        // Tokens are validated ([A-Za-z0-9_-]), so the glob cannot leave `root`.
        root.join(pattern).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
instruments = ["mfx"]
[storage]
root = "/data"
preset = "sample"
"#;

    #[test]
    fn pattern_expands_run_numbers() {
        let c = WorkerConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(c.run_glob("mfx", "e1", 7), "/data/e1/run0007*.h5");
        let text = format!(
            "{MINIMAL}\n[[storage.runs]]\nexperiment = \"e1\"\nrun = 3\nglob = \"x/*.cxi\"\n"
        );
        let c = WorkerConfig::from_toml(&text).unwrap();
        assert_eq!(c.run_glob("mfx", "e1", 3), "/data/x/*.cxi");
    }

    #[test]
    fn documented_example_is_valid() {
        let doc = include_str!("../../../docs/jobs.md");
        let section = doc
            .split("## Worker configuration")
            .nth(1)
            .expect("docs/jobs.md has a worker configuration section");
        let toml = section
            .split("```toml")
            .nth(1)
            .and_then(|t| t.split("```").next())
            .expect("the section has a TOML example");
        let c = WorkerConfig::from_toml(toml).unwrap();
        assert_eq!(c.concurrency, 2);
        assert_eq!(
            c.run_glob("mfx", "mfxp1234", 12),
            "/sdf/data/lcls/legacy/mfxp1234_r12_*.h5"
        );
        assert_eq!(c.queue.max_deliver, 5);
    }

    #[test]
    fn bad_values_are_named() {
        let text = MINIMAL.replace("[storage]", "bogus = 1\n[storage]");
        let e = WorkerConfig::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let text = format!("{MINIMAL}\n[queue]\nack_wait_secs = 2\nheartbeat_ms = 1500\n");
        let e = WorkerConfig::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains("heartbeat_ms"), "{e}");
    }
}

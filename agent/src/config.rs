//! Agent configuration: a TOML file plus `LCLSTREAM_*` environment overrides.
//!
//! Every key is documented in `agent/agent.example.toml`. Unknown keys are
//! errors so that a typo never silently falls back to a default.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lclstream_nats::streams::StreamSettings;
use lclstream_nats::subjects::{validate_token, DataSubject};
use lclstream_nats::wire::{Compression, DType, EncodeOptions, Filter, FilterPolicy};
use serde::Deserialize;

use crate::AgentError;

/// The whole agent configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Instrument, e.g. `mfx`; selects the stream `LCLS_<INSTRUMENT>`.
    pub instrument: String,
    /// Experiment, e.g. `mfxp1234`.
    pub experiment: String,
    /// Stop once every source is exhausted and everything is acknowledged
    /// (only possible when no source is endless).
    #[serde(default = "yes")]
    pub exit_when_done: bool,
    /// Broker connection.
    #[serde(default)]
    pub nats: NatsConfig,
    /// Stream creation and checks.
    #[serde(default)]
    pub stream: StreamConfig,
    /// Write-ahead spool.
    pub spool: SpoolConfig,
    /// Batching limits.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Encoding options.
    #[serde(default)]
    pub encode: EncodeConfig,
    /// Publishing options.
    #[serde(default)]
    pub publish: PublishConfig,
    /// Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Event sources.
    pub sources: Vec<SourceConfig>,
}

fn yes() -> bool {
    true
}

/// Broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated.
    pub url: String,
    /// Optional `.creds` file.
    pub credentials_file: Option<PathBuf>,
    /// Optional file holding an nkey seed.
    pub nkey_seed_file: Option<PathBuf>,
    /// Client name shown in server monitoring.
    pub name: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            nkey_seed_file: None,
            name: "lclstream-agent".into(),
        }
    }
}

/// Stream creation and checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Create the stream when missing (otherwise it must exist).
    pub create: bool,
    /// Stream name; default `LCLS_<INSTRUMENT>`.
    pub name: Option<String>,
    /// Oldest data kept, seconds.
    pub max_age_secs: Option<u64>,
    /// Largest stream size in bytes.
    pub max_bytes: Option<i64>,
    /// Duplicate window in seconds; must cover the longest replay after a restart.
    pub duplicate_window_secs: Option<u64>,
    /// Largest message the stream accepts.
    pub max_message_size: Option<i32>,
    /// Replicas.
    pub replicas: Option<usize>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            create: true,
            name: None,
            max_age_secs: None,
            max_bytes: None,
            duplicate_window_secs: None,
            max_message_size: None,
            replicas: None,
        }
    }
}

/// Write-ahead spool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool (segments and checkpoint).
    pub dir: PathBuf,
    /// Largest number of unacknowledged bytes; reading blocks beyond it.
    #[serde(default = "default_spool_bytes")]
    pub max_bytes: u64,
    /// Size at which a new segment file is started.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// `false` turns every fsync off, whatever `sync` says (benchmarks of the
    /// rest of the pipeline).
    #[serde(default = "yes")]
    pub fsync: bool,
    /// When spooled batches reach the disk: `auto` (default: `off` when every
    /// source is a file, glob or watched directory, which can be re-read,
    /// else `group`), `every_batch`, `group` or `off`.
    #[serde(default)]
    pub sync: SyncSetting,
    /// Largest interval between checkpoint writes, milliseconds.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
}

/// The configured spool sync policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncSetting {
    /// Chosen from the sources (see [`AgentConfig::spool_sync`]).
    #[default]
    Auto,
    /// One fsync per batch.
    EveryBatch,
    /// Group commit.
    Group,
    /// No fsync.
    Off,
}

fn default_spool_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_checkpoint_ms() -> u64 {
    200
}

/// Batching limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most events in one batch.
    pub max_events: usize,
    /// Most uncompressed bytes in one batch (one larger event forms a batch alone).
    pub max_bytes: usize,
    /// Longest time the first event of a batch waits for more, milliseconds.
    pub max_linger_ms: u64,
    /// Low latency: a batch is sent as soon as the source has no further
    /// event waiting (no linger at low rates; at high rates events queue up
    /// and batches still fill), and `spool.sync = "auto"` does not fsync.
    pub low_latency: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 64,
            max_bytes: 4 * 1024 * 1024,
            max_linger_ms: 200,
            low_latency: false,
        }
    }
}

impl BatchConfig {
    /// Longest linger as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.max_linger_ms)
    }
}

/// Encoding options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncodeConfig {
    /// `lz4` or `none`.
    pub compression: String,
    /// Filter arrays before compression as `filters` says; `false` sends
    /// every array unfiltered.
    pub shuffle: bool,
    /// Which filter each array gets.
    pub filters: FiltersConfig,
    /// Largest payload of one message (must not exceed the server's `max_payload`).
    pub max_payload: usize,
    /// Threads encoding batches per source (spooled in order).
    pub threads: usize,
}

/// Array filters (`none`, `shuffle` or `bitshuffle`): by field name first,
/// then by dtype, then by kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiltersConfig {
    /// Filter of integer arrays.
    pub integers: String,
    /// Filter of float arrays.
    pub floats: String,
    /// Per-dtype filters, e.g. `{ i64 = "none" }`.
    pub dtypes: BTreeMap<String, String>,
    /// Per-field filters (array name), e.g. `{ timestamps = "none" }`.
    pub fields: BTreeMap<String, String>,
}

impl Default for FiltersConfig {
    fn default() -> Self {
        let policy = FilterPolicy::default();
        FiltersConfig {
            integers: policy.integers.name().into(),
            floats: policy.floats.name().into(),
            dtypes: BTreeMap::new(),
            fields: BTreeMap::new(),
        }
    }
}

impl FiltersConfig {
    /// The policy, or an error naming the key to fix.
    pub fn policy(&self) -> Result<FilterPolicy, String> {
        let filter = |key: &str, name: &str| {
            Filter::parse(name).ok_or_else(|| {
                format!(
                    "encode.filters.{key}: {name:?} is not \"none\", \"shuffle\" or \"bitshuffle\""
                )
            })
        };
        let mut policy = FilterPolicy {
            integers: filter("integers", &self.integers)?,
            floats: filter("floats", &self.floats)?,
            ..FilterPolicy::none()
        };
        for (dtype, name) in &self.dtypes {
            let key = format!("dtypes.{dtype}");
            let parsed = DType::parse(dtype)
                .ok_or_else(|| format!("encode.filters.dtypes: unknown type {dtype:?}"))?;
            policy.dtypes.insert(parsed, filter(&key, name)?);
        }
        for (field, name) in &self.fields {
            policy
                .fields
                .insert(field.clone(), filter(&format!("fields.{field}"), name)?);
        }
        Ok(policy)
    }
}

impl Default for EncodeConfig {
    fn default() -> Self {
        EncodeConfig {
            compression: "lz4".into(),
            shuffle: true,
            filters: FiltersConfig::default(),
            max_payload: 1024 * 1024,
            threads: 2,
        }
    }
}

/// Publishing options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// Most messages published and not yet acknowledged.
    pub max_in_flight: usize,
    /// Time to wait for one acknowledgement, milliseconds.
    pub ack_timeout_ms: u64,
    /// First retry delay after a failure, milliseconds (doubles up to `retry_max_ms`).
    pub retry_initial_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
    /// On shutdown, longest time spent publishing what is spooled, milliseconds.
    pub drain_timeout_ms: u64,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            max_in_flight: 64,
            ack_timeout_ms: 5000,
            retry_initial_ms: 100,
            retry_max_ms: 5000,
            drain_timeout_ms: 30_000,
        }
    }
}

/// Prometheus metrics endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Listen address, e.g. `127.0.0.1:9464`; no endpoint when absent.
    pub listen: Option<String>,
}

/// What to do with a file that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Log the error, count it and continue with the next file.
    #[default]
    Skip,
    /// Stop the agent with the error.
    Stop,
}

/// One source of events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Source name: the last subject token and part of batch ids.
    pub name: String,
    /// Run number.
    pub run: u32,
    /// HDF5 files (exactly one of `hdf5` and `synthetic`).
    pub hdf5: Option<Hdf5Config>,
    /// Synthetic detector.
    pub synthetic: Option<SyntheticConfig>,
    /// LCLS-II xtc2 run read through psana.
    pub psana: Option<PsanaConfig>,
    /// Processing steps applied to every event.
    #[serde(default)]
    pub processing: ProcessingConfig,
}

/// Layout presets of HDF5 files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The layout `lclstream sample` writes: per-shot scalars and `/jungfrau/image`.
    Sample,
    /// Files written by LCLS smalldata_tools: every per-event dataset
    /// (`/ipm2/sum`, `/gas_detector/f_11_ENRC`, `/lightStatus/xray`,
    /// `/<det>/ROI_0_area`, ...), time from `/timestamp` (psana2) or
    /// `/event_time` (LCLS-I).
    Smalldata,
    /// CXI-like: `/entry_1/data_1/data` and peak tables.
    Cxi,
}

/// HDF5 file source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hdf5Config {
    /// One file.
    pub file: Option<PathBuf>,
    /// A glob of files, read in name order.
    pub glob: Option<String>,
    /// A directory watched for new files (runs forever).
    pub watch_dir: Option<PathBuf>,
    /// File name pattern inside `watch_dir`.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Poll interval of `watch_dir`, milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// A file is taken once its size and mtime are unchanged this long, milliseconds.
    #[serde(default = "default_stable_ms")]
    pub stable_ms: u64,
    /// Layout preset providing `fields` and `time_dataset`.
    pub preset: Option<Preset>,
    /// Dataset-to-field mappings (added to, or overriding, the preset's).
    #[serde(default)]
    pub fields: Vec<FieldMapping>,
    /// Dataset holding the per-event timestamp in ns (1-D integers).
    pub time_dataset: Option<String>,
    /// Events read per HDF5 hyperslab.
    #[serde(default = "default_read_chunk")]
    pub read_chunk_events: usize,
    /// `skip` or `stop` on an unreadable file.
    #[serde(default)]
    pub on_error: OnError,
}

fn default_pattern() -> String {
    "*.h5".into()
}
fn default_poll_ms() -> u64 {
    500
}
fn default_stable_ms() -> u64 {
    1000
}
fn default_read_chunk() -> usize {
    16
}

/// A run read through psana (LCLS-II xtc2) by the helper `agent/python/psana_events.py`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsanaConfig {
    /// xtc2 files of the run (or `experiment` with `psana_run`).
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// psana experiment name, e.g. `xpptut15` (with `psana_run`; psana finds the files).
    pub experiment: Option<String>,
    /// psana run number (default: the source's `run`).
    pub psana_run: Option<u32>,
    /// Directory of the experiment's xtc2 files (psana `dir`).
    pub dir: Option<PathBuf>,
    /// Detectors and the data taken from each.
    pub fields: Vec<PsanaField>,
    /// Python interpreter with psana installed; default `$LCLSTREAM_PSANA_PYTHON`, else `python3`.
    pub python: Option<PathBuf>,
    /// Read at most this many events.
    pub max_events: Option<u64>,
    /// Times a helper that died without an error report is restarted at the next event.
    #[serde(default = "default_restarts")]
    pub restarts: u32,
    /// A helper that sends nothing for this many seconds while the agent
    /// waits for its next event is killed and restarted like one that died
    /// (0: wait forever).
    #[serde(default = "default_stall_timeout_secs")]
    pub stall_timeout_secs: u64,
    /// Skip psana's calibration database (offline reading); `calib` and `image`
    /// then use no constants.
    #[serde(default = "yes")]
    pub skip_calib_load: bool,
}

impl PsanaConfig {
    /// Offline reading of `files` with the defaults of a configuration file.
    pub fn for_files(files: Vec<PathBuf>, fields: Vec<PsanaField>) -> PsanaConfig {
        PsanaConfig {
            files,
            experiment: None,
            psana_run: None,
            dir: None,
            fields,
            python: None,
            max_events: None,
            restarts: default_restarts(),
            stall_timeout_secs: default_stall_timeout_secs(),
            skip_calib_load: true,
        }
    }
}

fn default_restarts() -> u32 {
    2
}

fn default_stall_timeout_secs() -> u64 {
    300
}

/// One detector datum taken from every psana event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsanaField {
    /// Detector name (`run.detnames`), or an epics / scan variable name.
    pub detector: String,
    /// `raw`, `calib`, `image`, `waveforms`, `peaks`, `epics` (a PV or scan
    /// variable), or a dotted method path such as `fex.calib`.
    #[serde(default = "default_psana_data")]
    pub data: String,
    /// Event field name; default `<detector>_<data>` (the PV name for `epics`).
    pub field: Option<String>,
}

fn default_psana_data() -> String {
    "raw".into()
}

/// One dataset read as one event field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Dataset path in the file, e.g. `/jungfrau/image`; axis 0 is the event axis.
    pub dataset: String,
    /// Field name in the event, e.g. `jungfrau`.
    pub field: String,
}

/// Synthetic detector source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Field name of the frame.
    #[serde(default = "default_frame_field")]
    pub field: String,
    /// Frame height.
    #[serde(default = "default_height")]
    pub height: u64,
    /// Frame width.
    #[serde(default = "default_width")]
    pub width: u64,
    /// Element type of the frame (`u16` native; others converted).
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Events per second; 0 for as fast as possible.
    #[serde(default)]
    pub rate_hz: f64,
    /// Mean photons per pixel (Poisson).
    #[serde(default = "default_density")]
    pub photon_density: f64,
    /// Read noise in ADU (standard deviation), `adu` mode only.
    #[serde(default = "default_read_noise")]
    pub read_noise: f64,
    /// `adu` (pedestal-subtracted ADU with read noise) or `photon_counts`
    /// (integer photons per pixel, no noise).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Bright peaks per frame.
    #[serde(default = "default_peaks")]
    pub peaks: u32,
    /// Number of events; absent for endless.
    pub events: Option<u64>,
    /// Seed of the generator.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_frame_field() -> String {
    "detector".into()
}
fn default_height() -> u64 {
    512
}
fn default_width() -> u64 {
    1024
}
fn default_dtype() -> String {
    "u16".into()
}
fn default_density() -> f64 {
    0.02
}
fn default_read_noise() -> f64 {
    3.0
}
fn default_mode() -> String {
    "adu".into()
}
fn default_peaks() -> u32 {
    30
}
fn default_seed() -> u64 {
    1
}

/// Processing steps, applied in this order: crop, bin, threshold, dtype; then field selection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// Array fields the image steps apply to; empty means every array of 2+ dimensions.
    pub fields: Vec<String>,
    /// Region of interest `[y0, y1, x0, x1]` (half-open) on the last two axes.
    pub roi: Option<[u64; 4]>,
    /// n x n binning (sum) on the last two axes; 8/16-bit integers widen to 32 bits.
    pub bin: Option<u64>,
    /// Values below this become zero.
    pub threshold: Option<f64>,
    /// Convert to this element type (saturating), e.g. `f32`.
    pub dtype: Option<String>,
    /// Keep only these fields (scalars and arrays); empty keeps all.
    pub include: Vec<String>,
    /// Drop these fields.
    pub exclude: Vec<String>,
}

impl AgentConfig {
    /// Loads `path` (TOML) with `LCLSTREAM_<SECTION>__<KEY>` environment overrides.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(path, env)
    }

    /// Like [`AgentConfig::load`] with an explicit environment (for tests).
    ///
    /// Only variables with `__` after the `LCLSTREAM_` prefix are taken, so
    /// unrelated ones such as `LCLSTREAM_LOG_FORMAT` are not unknown keys.
    pub fn load_with_env(
        path: &Path,
        env: HashMap<String, String>,
    ) -> Result<AgentConfig, AgentError> {
        let bad = |message: String| AgentError::Config {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(bad("file not found".into()));
        }
        let overrides: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| {
                k.strip_prefix("LCLSTREAM_")
                    .is_some_and(|rest| rest.contains("__"))
            })
            .collect();
        let settings = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("LCLSTREAM")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(overrides)),
            )
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let config: AgentConfig = settings.try_deserialize().map_err(|e| bad(e.to_string()))?;
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Parses TOML text (no environment), for tests and embedding.
    pub fn from_toml(text: &str) -> Result<AgentConfig, AgentError> {
        let bad = |message: String| AgentError::Config {
            path: PathBuf::from("<inline>"),
            message,
        };
        let settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let config: AgentConfig = settings.try_deserialize().map_err(|e| bad(e.to_string()))?;
        config.validate().map_err(bad)?;
        Ok(config)
    }

    /// Checks values that the types alone do not.
    pub fn validate(&self) -> Result<(), String> {
        validate_token("instrument", &self.instrument)?;
        validate_token("experiment", &self.experiment)?;
        if self.sources.is_empty() {
            return Err("sources: at least one [[sources]] entry is required".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let at = format!("sources[{i}] ({})", s.name);
            validate_token("source name", &s.name).map_err(|e| format!("{at}: {e}"))?;
            if !names.insert(s.name.clone()) {
                return Err(format!("{at}: duplicate source name"));
            }
            let kinds = [s.hdf5.is_some(), s.synthetic.is_some(), s.psana.is_some()];
            if kinds.iter().filter(|b| **b).count() != 1 {
                return Err(format!(
                    "{at}: exactly one of [sources.hdf5], [sources.synthetic] and [sources.psana] is required"
                ));
            }
            if let Some(p) = &s.psana {
                if p.files.is_empty() == p.experiment.is_none() {
                    return Err(format!(
                        "{at}.psana: exactly one of `files` and `experiment` is required"
                    ));
                }
                if p.fields.is_empty() {
                    return Err(format!(
                        "{at}.psana.fields: at least one detector is required"
                    ));
                }
            }
            match (&s.hdf5, &s.synthetic) {
                (Some(h), None) => {
                    let n = [h.file.is_some(), h.glob.is_some(), h.watch_dir.is_some()]
                        .iter()
                        .filter(|b| **b)
                        .count();
                    if n != 1 {
                        return Err(format!(
                            "{at}.hdf5: exactly one of `file`, `glob` and `watch_dir` is required"
                        ));
                    }
                    if h.preset.is_none() && h.fields.is_empty() {
                        return Err(format!("{at}.hdf5: `preset` or `fields` is required"));
                    }
                    if h.read_chunk_events == 0 {
                        return Err(format!("{at}.hdf5.read_chunk_events must be positive"));
                    }
                }
                (None, Some(syn)) => {
                    if DType::parse(&syn.dtype).is_none() {
                        return Err(format!(
                            "{at}.synthetic.dtype: unknown type {:?}",
                            syn.dtype
                        ));
                    }
                    if syn.height == 0 || syn.width == 0 || syn.height * syn.width > 1 << 28 {
                        return Err(format!(
                            "{at}.synthetic: height x width must be between 1 and 2^28"
                        ));
                    }
                    if !matches!(syn.mode.as_str(), "adu" | "photon_counts") {
                        return Err(format!(
                            "{at}.synthetic.mode: {:?} is not \"adu\" or \"photon_counts\"",
                            syn.mode
                        ));
                    }
                    if !(syn.read_noise >= 0.0 && syn.read_noise.is_finite()) {
                        return Err(format!("{at}.synthetic.read_noise must be >= 0"));
                    }
                    if !(syn.rate_hz >= 0.0 && syn.rate_hz.is_finite()) {
                        return Err(format!("{at}.synthetic.rate_hz must be >= 0"));
                    }
                }
                _ => {}
            }
            if let Some(d) = &s.processing.dtype {
                if DType::parse(d).is_none() {
                    return Err(format!("{at}.processing.dtype: unknown type {d:?}"));
                }
            }
            if s.processing.bin == Some(0) {
                return Err(format!("{at}.processing.bin must be at least 1"));
            }
            if let Some([y0, y1, x0, x1]) = s.processing.roi {
                if y0 >= y1 || x0 >= x1 {
                    return Err(format!(
                        "{at}.processing.roi: [y0, y1, x0, x1] needs y0 < y1 and x0 < x1"
                    ));
                }
            }
        }
        match self.encode.compression.as_str() {
            "lz4" | "none" => {}
            other => {
                return Err(format!(
                    "encode.compression: {other:?} is not \"lz4\" or \"none\""
                ))
            }
        }
        self.encode.filters.policy()?;
        if self.batch.max_events == 0 {
            return Err("batch.max_events must be positive".into());
        }
        if self.publish.max_in_flight == 0 {
            return Err("publish.max_in_flight must be positive".into());
        }
        if self.spool.max_bytes == 0 {
            return Err("spool.max_bytes must be positive".into());
        }
        Ok(())
    }

    /// Whether every source can be read again after a crash (HDF5 file,
    /// glob or watched directory: the files stay where they are).
    pub fn sources_rereadable(&self) -> bool {
        self.sources.iter().all(|s| s.hdf5.is_some())
    }

    /// The spool's effective sync policy.
    pub fn spool_sync(&self) -> crate::spool::SpoolSync {
        use crate::spool::SpoolSync;
        if !self.spool.fsync {
            return SpoolSync::Off;
        }
        match self.spool.sync {
            SyncSetting::Auto if self.sources_rereadable() || self.batch.low_latency => {
                SpoolSync::Off
            }
            SyncSetting::Auto | SyncSetting::Group => SpoolSync::Group,
            SyncSetting::EveryBatch => SpoolSync::EveryBatch,
            SyncSetting::Off => SpoolSync::Off,
        }
    }

    /// Codec options from `[encode]`.
    pub fn encode_options(&self) -> EncodeOptions {
        EncodeOptions {
            compression: if self.encode.compression == "none" {
                Compression::None
            } else {
                Compression::Lz4
            },
            // Validated when the configuration was loaded.
            filters: match self.encode.filters.policy() {
                Ok(policy) if self.encode.shuffle => policy,
                _ => FilterPolicy::none(),
            },
            max_payload: self.encode.max_payload,
        }
    }

    /// Stream settings from `[stream]` over the instrument defaults.
    pub fn stream_settings(&self) -> StreamSettings {
        let mut s = StreamSettings::for_instrument(&self.instrument);
        let c = &self.stream;
        if let Some(name) = &c.name {
            s.name = name.clone();
        }
        if let Some(v) = c.max_age_secs {
            s.max_age = Duration::from_secs(v);
        }
        if let Some(v) = c.max_bytes {
            s.max_bytes = v;
        }
        if let Some(v) = c.duplicate_window_secs {
            s.duplicate_window = Duration::from_secs(v);
        }
        if let Some(v) = c.max_message_size {
            s.max_message_size = v;
        }
        if let Some(v) = c.replicas {
            s.replicas = v;
        }
        s
    }

    /// The data subject of a source.
    pub fn subject(&self, source: &SourceConfig) -> Result<DataSubject, String> {
        DataSubject::new(&self.instrument, &self.experiment, source.run, &source.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
instrument = "mfx"
experiment = "mfxp1234"
[spool]
dir = "/tmp/spool"
[[sources]]
name = "det"
run = 3
[sources.synthetic]
events = 10
"#;

    #[test]
    fn example_config_is_valid() {
        let config = AgentConfig::from_toml(include_str!("../agent.example.toml")).unwrap();
        assert_eq!(config.sources.len(), 3);
        let psana = config.sources[1].psana.as_ref().unwrap();
        assert_eq!(psana.fields[1].data, "fex.calib");
        assert_eq!(psana.fields[2].field, None);
        assert_eq!(
            config.sources[0].hdf5.as_ref().unwrap().preset,
            Some(Preset::Sample)
        );
        assert_eq!(config.stream_settings().name, "LCLS_MFX");
    }

    #[test]
    fn defaults_fill_a_minimal_config() {
        let config = AgentConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(config.batch.max_events, 64);
        assert_eq!(config.encode_options().max_payload, 1024 * 1024);
        assert_eq!(
            config.subject(&config.sources[0]).unwrap().to_string(),
            "lcls.mfx.mfxp1234.3.det"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = MINIMAL.replace("[spool]", "[spool]\nmax_byte = 5");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("max_byte"), "{err}");
        let text = MINIMAL.replace("events = 10", "events = 10\nrate = 3");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("rate"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let text = MINIMAL.replace("name = \"det\"", "name = \"a.b\"");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("source name"), "{err}");
        let text = MINIMAL.replace("[sources.synthetic]\nevents = 10", "");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains("exactly one of [sources.hdf5], [sources.synthetic] and [sources.psana]"),
            "{err}"
        );
        let text = format!("{MINIMAL}\n[sources.processing]\ndtype = \"u12\"\n");
        let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
        assert!(err.contains("processing.dtype"), "{err}");
    }

    #[test]
    fn filters_are_chosen_by_field_dtype_and_kind() {
        let config = AgentConfig::from_toml(MINIMAL).unwrap();
        let policy = config.encode_options().filters;
        assert_eq!(policy.choose("det", DType::U16), Filter::Bitshuffle);
        assert_eq!(policy.choose("det", DType::F32), Filter::Shuffle);
        let text = format!(
            "{MINIMAL}\n[encode.filters]\nfloats = \"none\"\ndtypes = {{ i64 = \"shuffle\" }}\n\
             fields = {{ timestamps = \"none\", wave = \"bitshuffle\" }}\n"
        );
        let policy = AgentConfig::from_toml(&text)
            .unwrap()
            .encode_options()
            .filters;
        assert_eq!(policy.choose("det", DType::U32), Filter::Bitshuffle);
        assert_eq!(policy.choose("det", DType::F64), Filter::None);
        assert_eq!(policy.choose("det", DType::I64), Filter::Shuffle);
        assert_eq!(policy.choose("timestamps", DType::I64), Filter::None);
        assert_eq!(policy.choose("wave", DType::F32), Filter::Bitshuffle);
        let text = format!("{MINIMAL}\n[encode]\nshuffle = false\n");
        let policy = AgentConfig::from_toml(&text)
            .unwrap()
            .encode_options()
            .filters;
        assert_eq!(policy, FilterPolicy::none());
        for (bad, named) in [
            ("integers = \"bitshufle\"", "encode.filters.integers"),
            ("dtypes = { u12 = \"none\" }", "encode.filters.dtypes"),
            ("fields = { det = \"lz4\" }", "encode.filters.fields.det"),
        ] {
            let text = format!("{MINIMAL}\n[encode.filters]\n{bad}\n");
            let err = AgentConfig::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(named), "{err}");
        }
    }

    #[test]
    fn environment_overrides_nested_keys_and_ignores_unrelated_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let env: HashMap<String, String> = [
            ("LCLSTREAM_NATS__URL", "nats://10.0.0.1:4222"),
            ("LCLSTREAM_BATCH__MAX_EVENTS", "7"),
            ("LCLSTREAM_LOG_FORMAT", "json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let config = AgentConfig::load_with_env(&path, env).unwrap();
        assert_eq!(config.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(config.batch.max_events, 7);
        let env = [("LCLSTREAM_BATCH__MAX_EVENTZ".to_string(), "7".to_string())]
            .into_iter()
            .collect();
        let err = AgentConfig::load_with_env(&path, env)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_eventz") && err.contains("agent.toml"),
            "{err}"
        );
        let err = AgentConfig::load_with_env(&dir.path().join("missing.toml"), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.toml") && err.contains("not found"),
            "{err}"
        );
    }
}

//! HDF5 file sources: one file, a glob, or a watched directory.
//!
//! Every mapped dataset has the events on axis 0. 1-D datasets become
//! per-event scalars, datasets of 2+ dimensions become per-event arrays of
//! shape `shape[1..]`. Events are read in chunks (hyperslab selections of
//! `read_chunk_events` events), never the whole file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant, SystemTime};

use hdf5::types::{FloatSize, IntSize, TypeDescriptor};
use hdf5::{Dataset, File, Hyperslab, Selection, SliceOrIndex};
use lclstream_nats::wire::{Array, DType, Event, Scalar};
use ndarray::IxDyn;

use crate::config::{FieldMapping, Hdf5Config, OnError, Preset};
use crate::source::{sleep_unless_stopped, ReaderContext, SourceMessage};
use crate::spool::Position;
use crate::AgentError;

/// The datasets a file is read with.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Dataset-to-field mappings.
    pub fields: Vec<FieldMapping>,
    /// Dataset of per-event timestamps (ns).
    pub time_dataset: Option<String>,
}

fn map(dataset: &str, field: &str) -> FieldMapping {
    FieldMapping {
        dataset: dataset.into(),
        field: field.into(),
    }
}

impl Layout {
    /// The layout of a preset.
    pub fn preset(preset: Preset) -> Layout {
        match preset {
            Preset::Smalldata => Layout {
                fields: vec![
                    map("/photon_energy_ev", "photon_energy_ev"),
                    map("/pulse_energy_mj", "pulse_energy_mj"),
                    map("/pulse_id", "pulse_id"),
                    map("/jungfrau/image", "jungfrau"),
                ],
                time_dataset: Some("/timestamp_ns".into()),
            },
            Preset::Cxi => Layout {
                fields: vec![
                    map("/entry_1/data_1/data", "data"),
                    map("/entry_1/result_1/nPeaks", "n_peaks"),
                    map("/entry_1/result_1/peakXPosRaw", "peak_x"),
                    map("/entry_1/result_1/peakYPosRaw", "peak_y"),
                    map("/entry_1/result_1/peakTotalIntensity", "peak_intensity"),
                ],
                time_dataset: None,
            },
        }
    }

    /// The preset's layout with the configured mappings added (a mapping of
    /// the same dataset or field replaces the preset's).
    pub fn from_config(config: &Hdf5Config) -> Layout {
        let mut layout = config.preset.map(Layout::preset).unwrap_or(Layout {
            fields: Vec::new(),
            time_dataset: None,
        });
        for m in &config.fields {
            layout
                .fields
                .retain(|f| f.dataset != m.dataset && f.field != m.field);
            layout.fields.push(m.clone());
        }
        if config.time_dataset.is_some() {
            layout.time_dataset = config.time_dataset.clone();
        }
        layout
    }
}

/// How a dataset's values are read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Element {
    Bool,
    Num(DType),
}

struct Column {
    field: String,
    dataset_name: String,
    dataset: Dataset,
    element: Element,
    /// Per-event shape (`shape[1..]`); empty for scalars.
    event_shape: Vec<u64>,
}

/// An open HDF5 file checked against a layout.
pub struct Hdf5Reader {
    path: PathBuf,
    _file: File,
    columns: Vec<Column>,
    time: Option<(String, Dataset)>,
    events: u64,
}

fn element_of(descriptor: &TypeDescriptor) -> Option<Element> {
    Some(match descriptor {
        TypeDescriptor::Boolean => Element::Bool,
        TypeDescriptor::Integer(IntSize::U1) => Element::Num(DType::I8),
        TypeDescriptor::Integer(IntSize::U2) => Element::Num(DType::I16),
        TypeDescriptor::Integer(IntSize::U4) => Element::Num(DType::I32),
        TypeDescriptor::Integer(IntSize::U8) => Element::Num(DType::I64),
        TypeDescriptor::Unsigned(IntSize::U1) => Element::Num(DType::U8),
        TypeDescriptor::Unsigned(IntSize::U2) => Element::Num(DType::U16),
        TypeDescriptor::Unsigned(IntSize::U4) => Element::Num(DType::U32),
        TypeDescriptor::Unsigned(IntSize::U8) => Element::Num(DType::U64),
        TypeDescriptor::Float(FloatSize::U4) => Element::Num(DType::F32),
        TypeDescriptor::Float(FloatSize::U8) => Element::Num(DType::F64),
        _ => return None,
    })
}

impl Hdf5Reader {
    /// Opens `path` and checks every dataset of `layout`: present, numeric,
    /// and all with the same number of events on axis 0.
    pub fn open(path: &Path, layout: &Layout) -> Result<Hdf5Reader, AgentError> {
        let bad = |message: String| AgentError::Hdf5 {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let mut columns = Vec::new();
        let mut events: Option<(u64, String)> = None;
        let mut check_axis = |name: &str, shape: &[usize]| -> Result<(), AgentError> {
            let Some(&n) = shape.first() else {
                return Err(bad(format!(
                    "dataset {name} is a scalar, not per-event data"
                )));
            };
            match &events {
                None => events = Some((n as u64, name.to_string())),
                Some((m, other)) if *m != n as u64 => {
                    return Err(bad(format!(
                        "mismatched event axes: dataset {name} has {n} events on axis 0 but {other} has {m}"
                    )))
                }
                _ => {}
            }
            Ok(())
        };
        for m in &layout.fields {
            let dataset = file.dataset(&m.dataset).map_err(|e| {
                bad(format!(
                    "missing dataset {} (field {}): {e}",
                    m.dataset, m.field
                ))
            })?;
            let shape = dataset.shape();
            check_axis(&m.dataset, &shape)?;
            let descriptor = dataset
                .dtype()
                .and_then(|t| t.to_descriptor())
                .map_err(|e| bad(format!("dataset {}: unreadable type: {e}", m.dataset)))?;
            let element = element_of(&descriptor).ok_or_else(|| {
                bad(format!(
                    "dataset {} (field {}) has unsupported type {descriptor:?}",
                    m.dataset, m.field
                ))
            })?;
            if element == Element::Bool && shape.len() > 1 {
                return Err(bad(format!(
                    "dataset {} (field {}): boolean arrays are not supported",
                    m.dataset, m.field
                )));
            }
            columns.push(Column {
                field: m.field.clone(),
                dataset_name: m.dataset.clone(),
                dataset,
                element,
                event_shape: shape[1..].iter().map(|&d| d as u64).collect(),
            });
        }
        let time = match &layout.time_dataset {
            Some(name) => {
                let dataset = file
                    .dataset(name)
                    .map_err(|e| bad(format!("missing time dataset {name}: {e}")))?;
                let shape = dataset.shape();
                if shape.len() != 1 {
                    return Err(bad(format!(
                        "time dataset {name} must be 1-D, it has shape {shape:?}"
                    )));
                }
                check_axis(name, &shape)?;
                Some((name.clone(), dataset))
            }
            None => None,
        };
        let events = events.map(|(n, _)| n).unwrap_or(0);
        Ok(Hdf5Reader {
            path: path.to_path_buf(),
            _file: file,
            columns,
            time,
            events,
        })
    }

    /// Number of events in the file.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Reads events `start..end` (file-local) as events with `index` set from `first_index`.
    pub fn read(&self, start: u64, end: u64, first_index: u64) -> Result<Vec<Event>, AgentError> {
        let end = end.min(self.events);
        let n = end.saturating_sub(start) as usize;
        let mut events: Vec<Event> = (0..n)
            .map(|i| Event {
                index: first_index + i as u64,
                ..Default::default()
            })
            .collect();
        if n == 0 {
            return Ok(events);
        }
        let range = start as usize..end as usize;
        let bad = |name: &str, e: hdf5::Error| AgentError::Hdf5 {
            path: self.path.clone(),
            message: format!("reading events {start}..{end} of dataset {name}: {e}"),
        };
        if let Some((name, dataset)) = &self.time {
            let times = dataset
                .read_slice::<u64, _, IxDyn>(range.clone())
                .map_err(|e| bad(name, e))?;
            for (event, t) in events.iter_mut().zip(times.iter()) {
                event.time_ns = *t;
            }
        }
        for column in &self.columns {
            let ds = &column.dataset;
            let name = &column.dataset_name;
            match column.element {
                Element::Bool => {
                    let values = ds
                        .read_slice::<bool, _, IxDyn>(range.clone())
                        .map_err(|e| bad(name, e))?;
                    for (event, v) in events.iter_mut().zip(values.iter()) {
                        event.scalars.insert(column.field.clone(), Scalar::Bool(*v));
                    }
                }
                Element::Num(dtype) => {
                    let per_event =
                        read_le_bytes(ds, dtype, range.clone(), n).map_err(|e| bad(name, e))?;
                    for ((i, event), chunk) in events.iter_mut().enumerate().zip(per_event) {
                        if column.event_shape.is_empty() {
                            let scalar = scalar_of(dtype, &chunk).ok_or_else(|| AgentError::Hdf5 {
                                path: self.path.clone(),
                                message: format!(
                                    "dataset {name}: value of event {} does not fit a signed 64-bit integer",
                                    start + i as u64
                                ),
                            })?;
                            event.scalars.insert(column.field.clone(), scalar);
                        } else {
                            let array = Array::new(dtype, column.event_shape.clone(), chunk)
                                .map_err(|e| AgentError::Hdf5 {
                                    path: self.path.clone(),
                                    message: format!("dataset {name}: {e}"),
                                })?;
                            event.arrays.insert(column.field.clone(), array);
                        }
                    }
                }
            }
        }
        Ok(events)
    }
}

/// A hyperslab of events `range` on axis 0 and every element on the other axes.
fn event_selection(ds: &Dataset, range: std::ops::Range<usize>) -> Selection {
    let mut dims: Vec<SliceOrIndex> = vec![range.into()];
    dims.extend((1..ds.ndim()).map(|_| SliceOrIndex::from(..)));
    Selection::from(Hyperslab::from(dims))
}

/// Reads events `range` of a dataset as little-endian bytes of `dtype`, one
/// buffer per event (one copy after HDF5's own).
fn read_le_bytes(
    ds: &Dataset,
    dtype: DType,
    range: std::ops::Range<usize>,
    events: usize,
) -> hdf5::Result<Vec<Vec<u8>>> {
    let selection = event_selection(ds, range);
    macro_rules! read {
        ($t:ty) => {{
            let values = ds.read_slice::<$t, _, IxDyn>(selection)?;
            let values = values.as_standard_layout();
            let flat = values.as_slice().expect("standard layout");
            let per_event = flat.len() / events.max(1);
            let size = std::mem::size_of::<$t>();
            if per_event == 0 {
                return Ok(vec![Vec::new(); events]);
            }
            flat.chunks(per_event)
                .map(|chunk| {
                    let mut out = vec![0u8; chunk.len() * size];
                    for (dst, v) in out.chunks_exact_mut(size).zip(chunk) {
                        dst.copy_from_slice(&v.to_le_bytes());
                    }
                    out
                })
                .collect()
        }};
    }
    Ok(match dtype {
        DType::U8 => read!(u8),
        DType::I8 => read!(i8),
        DType::U16 => read!(u16),
        DType::I16 => read!(i16),
        DType::U32 => read!(u32),
        DType::I32 => read!(i32),
        DType::U64 => read!(u64),
        DType::I64 => read!(i64),
        DType::F32 => read!(f32),
        DType::F64 => read!(f64),
    })
}

fn scalar_of(dtype: DType, b: &[u8]) -> Option<Scalar> {
    Some(match dtype {
        DType::U8 => Scalar::Int(b[0] as i64),
        DType::I8 => Scalar::Int(b[0] as i8 as i64),
        DType::U16 => Scalar::Int(u16::from_le_bytes(b.try_into().ok()?) as i64),
        DType::I16 => Scalar::Int(i16::from_le_bytes(b.try_into().ok()?) as i64),
        DType::U32 => Scalar::Int(u32::from_le_bytes(b.try_into().ok()?) as i64),
        DType::I32 => Scalar::Int(i32::from_le_bytes(b.try_into().ok()?) as i64),
        DType::U64 => Scalar::Int(i64::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()?),
        DType::I64 => Scalar::Int(i64::from_le_bytes(b.try_into().ok()?)),
        DType::F32 => Scalar::Float(f32::from_le_bytes(b.try_into().ok()?) as f64),
        DType::F64 => Scalar::Float(f64::from_le_bytes(b.try_into().ok()?)),
    })
}

fn path_key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Files of a `file` or `glob` source, in name order.
fn listed_files(config: &Hdf5Config) -> Result<Vec<PathBuf>, String> {
    if let Some(file) = &config.file {
        return Ok(vec![file.clone()]);
    }
    let pattern = config.glob.as_deref().unwrap_or_default();
    let mut files: Vec<PathBuf> = glob::glob(pattern)
        .map_err(|e| format!("glob {pattern:?}: {e}"))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort_by_key(|p| path_key(p));
    Ok(files)
}

/// Where reading stands while a source runs.
struct Cursor {
    /// Resume position (file and event within it).
    resume: Option<Position>,
    next_index: u64,
    /// Skip events until this index (a resume point known only as an event
    /// index, from JetStream): whole files by their event counts, in order.
    skip_to: Option<u64>,
}

impl Cursor {
    /// The event to start `file` at, or `None` when it was finished before.
    fn start_of(&self, file: &str) -> Option<u64> {
        match &self.resume {
            Some(Position {
                file: Some(f),
                file_event,
                ..
            }) => match file.cmp(f.as_str()) {
                std::cmp::Ordering::Less => None,
                std::cmp::Ordering::Equal if *file_event == u64::MAX => None,
                std::cmp::Ordering::Equal => Some(*file_event),
                std::cmp::Ordering::Greater => Some(0),
            },
            _ => Some(0),
        }
    }
}

/// Outcome of reading one file.
enum FileOutcome {
    Done,
    Stop,
    Failed(AgentError),
}

fn read_file(
    path: &Path,
    start: u64,
    layout: &Layout,
    config: &Hdf5Config,
    ctx: &ReaderContext,
    cursor: &mut Cursor,
    tx: &SyncSender<SourceMessage>,
) -> FileOutcome {
    let reader = match Hdf5Reader::open(path, layout) {
        Ok(r) => r,
        Err(e) => return FileOutcome::Failed(e),
    };
    let total = reader.events();
    if let Some(p) = &ctx.progress {
        p.inc_length(total.saturating_sub(start));
    }
    tracing::info!(source = %ctx.name, file = %path.display(), events = total, start, "reading file");
    let key = path_key(path);
    let mut at = start;
    if let Some(target) = cursor.skip_to {
        let skip = target
            .saturating_sub(cursor.next_index)
            .min(total.saturating_sub(at));
        at += skip;
        cursor.next_index += skip;
        if cursor.next_index >= target {
            cursor.skip_to = None;
        }
    }
    while at < total {
        if ctx.stopping() {
            return FileOutcome::Stop;
        }
        let end = (at + config.read_chunk_events as u64).min(total);
        let events = match reader.read(at, end, cursor.next_index) {
            Ok(e) => e,
            Err(e) => return FileOutcome::Failed(e),
        };
        for event in events {
            at += 1;
            cursor.next_index = event.index + 1;
            let position = Position {
                file: Some(key.clone()),
                file_event: at,
                next_index: cursor.next_index,
            };
            if !ctx.send(tx, event, position) {
                return FileOutcome::Stop;
            }
        }
    }
    FileOutcome::Done
}

/// Handles a failed file per `on_error`; `false` means stop the source.
fn handle_failure(
    error: AgentError,
    config: &Hdf5Config,
    ctx: &ReaderContext,
    tx: &SyncSender<SourceMessage>,
) -> bool {
    ctx.metrics
        .source_errors
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match config.on_error {
        OnError::Skip => {
            tracing::error!(source = %ctx.name, error = %error, "skipping file");
            ctx.metrics
                .files_skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        }
        OnError::Stop => {
            let _ = tx.send(SourceMessage::Failed(error));
            false
        }
    }
}

/// Runs an HDF5 source until its files are read (file, glob) or the agent stops (watch_dir).
pub fn run_hdf5(
    config: &Hdf5Config,
    ctx: &ReaderContext,
    resume: Option<Position>,
    tx: SyncSender<SourceMessage>,
) {
    let layout = Layout::from_config(config);
    // A position without a file is an event index to skip to.
    let skip_to = resume
        .as_ref()
        .filter(|p| p.file.is_none() && p.next_index > 0)
        .map(|p| p.next_index);
    let mut cursor = Cursor {
        next_index: match skip_to {
            Some(_) => 0,
            None => resume.as_ref().map(|p| p.next_index).unwrap_or(0),
        },
        resume: resume.filter(|p| p.file.is_some()),
        skip_to,
    };
    let mut process = |path: &Path, cursor: &mut Cursor| -> bool {
        let key = path_key(path);
        let Some(start) = cursor.start_of(&key) else {
            return true;
        };
        match read_file(path, start, &layout, config, ctx, cursor, &tx) {
            FileOutcome::Done => {
                ctx.metrics
                    .files_done
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Later files start at their beginning.
                cursor.resume = Some(Position {
                    file: Some(key),
                    file_event: u64::MAX,
                    next_index: cursor.next_index,
                });
                true
            }
            FileOutcome::Stop => false,
            FileOutcome::Failed(e) => {
                cursor.resume = Some(Position {
                    file: Some(key),
                    file_event: u64::MAX,
                    next_index: cursor.next_index,
                });
                handle_failure(e, config, ctx, &tx)
            }
        }
    };
    if let Some(dir) = &config.watch_dir {
        watch(dir, config, ctx, &mut cursor, &mut process);
        return;
    }
    let files = match listed_files(config) {
        Ok(f) => f,
        Err(message) => {
            let _ = tx.send(SourceMessage::Failed(AgentError::Source {
                source_name: ctx.name.clone(),
                message,
            }));
            return;
        }
    };
    if files.is_empty() {
        tracing::warn!(source = %ctx.name, "no file matches");
    }
    for file in files {
        if ctx.stopping() || !process(&file, &mut cursor) {
            return;
        }
    }
    let _ = tx.send(SourceMessage::Done);
}

/// Polls `dir` for files matching the pattern; takes a file once its size and
/// mtime have not changed for `stable_ms` (its writer has finished).
fn watch(
    dir: &Path,
    config: &Hdf5Config,
    ctx: &ReaderContext,
    cursor: &mut Cursor,
    process: &mut dyn FnMut(&Path, &mut Cursor) -> bool,
) {
    let pattern = match glob::Pattern::new(&config.pattern) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(source = %ctx.name, error = %e, "bad watch pattern");
            return;
        }
    };
    let stable = Duration::from_millis(config.stable_ms);
    let poll = Duration::from_millis(config.poll_ms.max(10));
    // path -> (size, mtime, unchanged since)
    let mut seen: HashMap<PathBuf, (u64, Option<SystemTime>, Instant)> = HashMap::new();
    while !ctx.stopping() {
        let mut ready = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().to_string();
                if !pattern.matches(&name) || cursor.start_of(&path_key(&path)).is_none() {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() {
                    continue;
                }
                let (size, mtime) = (meta.len(), meta.modified().ok());
                let now = Instant::now();
                let slot = seen.entry(path.clone()).or_insert((size, mtime, now));
                if slot.0 != size || slot.1 != mtime {
                    *slot = (size, mtime, now);
                } else if now.duration_since(slot.2) >= stable {
                    ready.push(path);
                }
            }
        }
        ready.sort_by_key(|p| path_key(p));
        for path in ready {
            seen.remove(&path);
            if ctx.stopping() || !process(&path, cursor) {
                return;
            }
        }
        sleep_unless_stopped(ctx, poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{write_sample, SampleSpec};

    #[test]
    fn reads_smalldata_in_chunks_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        write_sample(&path, &SampleSpec::new(Preset::Smalldata, 20)).unwrap();
        let reader = Hdf5Reader::open(&path, &Layout::preset(Preset::Smalldata)).unwrap();
        assert_eq!(reader.events(), 20);
        let events = reader.read(5, 9, 100).unwrap();
        assert_eq!(events.len(), 4);
        let e = &events[0];
        assert_eq!(e.index, 100);
        assert_eq!(e.time_ns, crate::sample::SAMPLE_EPOCH_NS + 5 * 8_333_333);
        assert_eq!(e.scalars["pulse_id"], Scalar::Int(1015));
        assert_eq!(e.arrays["jungfrau"].shape, vec![64, 64]);
        assert_eq!(e.arrays["jungfrau"].dtype, DType::U16);
        let model = lclstream_nats::synthetic::DetectorModel {
            height: 64,
            width: 64,
            seed: 1,
            peaks: 8,
            ..Default::default()
        };
        assert_eq!(e.arrays["jungfrau"].to_u16().unwrap(), model.frame(5));
    }

    #[test]
    fn reads_cxi_peak_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.cxi");
        write_sample(&path, &SampleSpec::new(Preset::Cxi, 5)).unwrap();
        let reader = Hdf5Reader::open(&path, &Layout::preset(Preset::Cxi)).unwrap();
        let events = reader.read(0, 5, 0).unwrap();
        assert_eq!(events[3].scalars["n_peaks"], Scalar::Int(4));
        assert_eq!(
            events[3].arrays["peak_x"].shape,
            vec![crate::sample::CXI_MAX_PEAKS as u64]
        );
        assert_eq!(events[3].arrays["data"].dtype, DType::F32);
    }

    #[test]
    fn missing_dataset_and_mismatched_axes_name_the_file_and_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        write_sample(&path, &SampleSpec::new(Preset::Smalldata, 4)).unwrap();
        let err = Hdf5Reader::open(&path, &Layout::preset(Preset::Cxi))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("run.h5"), "{err}");
        assert!(
            err.contains("missing dataset /entry_1/data_1/data"),
            "{err}"
        );
        let file = File::open_rw(&path).unwrap();
        file.new_dataset_builder()
            .with_data(&ndarray::arr1(&[1.0f64, 2.0, 3.0]))
            .create("short")
            .unwrap();
        drop(file);
        let mut layout = Layout::preset(Preset::Smalldata);
        layout.fields.push(map("/short", "short"));
        let err = Hdf5Reader::open(&path, &layout).err().unwrap().to_string();
        assert!(err.contains("mismatched event axes"), "{err}");
        assert!(err.contains("/short has 3 events"), "{err}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.h5");
        std::fs::write(&path, b"this is not an HDF5 file").unwrap();
        let err = Hdf5Reader::open(&path, &Layout::preset(Preset::Smalldata))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("bad.h5") && err.contains("cannot open"),
            "{err}"
        );
    }
}

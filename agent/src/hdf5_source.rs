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
    /// Dataset of per-event timestamps (ns since the Unix epoch).
    pub time_dataset: Option<String>,
    /// Also read every other dataset of the file that has the event axis
    /// (smalldata_tools files, whose detector names vary by experiment).
    pub discover: bool,
}

fn map(dataset: &str, field: &str) -> FieldMapping {
    FieldMapping {
        dataset: dataset.into(),
        field: field.into(),
    }
}

/// Time datasets of smalldata_tools files, in order of preference: psana2
/// `timestamp` (seconds since 1990 << 32 | ns), LCLS-I `event_time`
/// (Unix seconds << 32 | ns).
const SMALLDATA_TIMES: [(&str, TimeFormat); 2] = [
    ("/timestamp", TimeFormat::Psana2),
    ("/event_time", TimeFormat::SecondsNanos),
];

/// Groups of smalldata_tools files that hold per-run configuration, not events.
const SMALLDATA_NOT_EVENTS: [&str; 2] = ["/UserDataCfg", "/Sums"];

/// How a time dataset encodes a timestamp.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TimeFormat {
    /// Nanoseconds since the Unix epoch.
    UnixNs,
    /// psana2: seconds since 1990-01-01 UTC in the upper 32 bits, ns in the lower.
    Psana2,
    /// LCLS-I `event_time`: Unix seconds in the upper 32 bits, ns in the lower.
    SecondsNanos,
}

impl TimeFormat {
    fn to_unix_ns(self, t: u64) -> u64 {
        const EPICS_EPOCH_UNIX_S: u64 = 631_152_000;
        match self {
            TimeFormat::UnixNs => t,
            TimeFormat::Psana2 => {
                ((t >> 32) + EPICS_EPOCH_UNIX_S) * 1_000_000_000 + (t & 0xffff_ffff)
            }
            TimeFormat::SecondsNanos => (t >> 32) * 1_000_000_000 + (t & 0xffff_ffff),
        }
    }
}

impl Layout {
    /// The layout of a preset.
    pub fn preset(preset: Preset) -> Layout {
        match preset {
            Preset::Sample => Layout {
                fields: vec![
                    map("/photon_energy_ev", "photon_energy_ev"),
                    map("/pulse_energy_mj", "pulse_energy_mj"),
                    map("/pulse_id", "pulse_id"),
                    map("/jungfrau/image", "jungfrau"),
                ],
                time_dataset: Some("/timestamp_ns".into()),
                discover: false,
            },
            Preset::Smalldata => Layout {
                fields: Vec::new(),
                time_dataset: None,
                discover: true,
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
                discover: false,
            },
        }
    }

    /// The preset's layout with the configured mappings added (a mapping of
    /// the same dataset or field replaces the preset's).
    pub fn from_config(config: &Hdf5Config) -> Layout {
        let mut layout = config.preset.map(Layout::preset).unwrap_or(Layout {
            fields: Vec::new(),
            time_dataset: None,
            discover: false,
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

/// The field name of a discovered dataset: its path without the leading `/`,
/// with `/` replaced by `_` (`/ipm2/sum` -> `ipm2_sum`).
pub fn discovered_field_name(dataset: &str) -> String {
    dataset.trim_start_matches('/').replace('/', "_")
}

/// Every dataset under `group`, as absolute paths, in name order.
fn all_datasets(group: &hdf5::Group, out: &mut Vec<String>) -> hdf5::Result<()> {
    let mut names = group.member_names()?;
    names.sort();
    for name in names {
        let path = if group.name() == "/" {
            format!("/{name}")
        } else {
            format!("{}/{name}", group.name())
        };
        if let Ok(ds) = group.dataset(&name) {
            drop(ds);
            out.push(path);
        } else if let Ok(g) = group.group(&name) {
            all_datasets(&g, out)?;
        }
    }
    Ok(())
}

/// How a dataset's values are read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Element {
    /// HDF5 booleans (h5py's enum): scalars stay booleans, arrays become `u8` 0/1.
    Bool,
    /// Numbers, read as this wire type (float16 is widened to f32 by HDF5).
    Num(DType),
    /// Strings (fixed or variable length, ASCII or UTF-8); per-event scalars only.
    Text(StringKind),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum StringKind {
    FixedAscii(usize),
    FixedUnicode(usize),
    VarLenAscii,
    VarLenUnicode,
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
    time: Option<(String, Dataset, TimeFormat)>,
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
        TypeDescriptor::Float(FloatSize::U2) => Element::Num(DType::F32),
        TypeDescriptor::Float(FloatSize::U4) => Element::Num(DType::F32),
        TypeDescriptor::Float(FloatSize::U8) => Element::Num(DType::F64),
        TypeDescriptor::FixedAscii(n) => Element::Text(StringKind::FixedAscii(*n)),
        TypeDescriptor::FixedUnicode(n) => Element::Text(StringKind::FixedUnicode(*n)),
        TypeDescriptor::VarLenAscii => Element::Text(StringKind::VarLenAscii),
        TypeDescriptor::VarLenUnicode => Element::Text(StringKind::VarLenUnicode),
        _ => return None,
    })
}

/// Longest fixed-length string read, in bytes.
const MAX_FIXED_STRING: usize = 4096;

impl Hdf5Reader {
    /// Opens `path` and checks every dataset of `layout`: present, of a
    /// supported type, and all with the same number of events on axis 0.
    pub fn open(path: &Path, layout: &Layout) -> Result<Hdf5Reader, AgentError> {
        let bad = |message: String| AgentError::Hdf5 {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let mut columns = Vec::new();
        let mut events: Option<(u64, String)> = None;
        let check_axis = |events: &mut Option<(u64, String)>,
                          name: &str,
                          shape: &[usize]|
         -> Result<(), AgentError> {
            let Some(&n) = shape.first() else {
                return Err(bad(format!(
                    "dataset {name} is a scalar, not per-event data"
                )));
            };
            match &*events {
                None => *events = Some((n as u64, name.to_string())),
                Some((m, other)) if *m != n as u64 => {
                    return Err(bad(format!(
                        "mismatched event axes: dataset {name} has {n} events on axis 0 but {other} has {m}"
                    )))
                }
                _ => {}
            }
            Ok(())
        };
        // The time dataset first: in discovery mode it defines the event axis.
        let time_choice: Vec<(String, TimeFormat)> = match &layout.time_dataset {
            Some(name) => vec![(name.clone(), TimeFormat::UnixNs)],
            None if layout.discover => SMALLDATA_TIMES
                .iter()
                .filter(|(n, _)| file.link_exists(n))
                .take(1)
                .map(|(n, f)| (n.to_string(), *f))
                .collect(),
            None => Vec::new(),
        };
        let time = match time_choice.into_iter().next() {
            Some((name, format)) => {
                let dataset = file
                    .dataset(&name)
                    .map_err(|e| bad(format!("missing time dataset {name}: {e}")))?;
                let shape = dataset.shape();
                if shape.len() != 1 {
                    return Err(bad(format!(
                        "time dataset {name} must be 1-D, it has shape {shape:?}"
                    )));
                }
                check_axis(&mut events, &name, &shape)?;
                Some((name, dataset, format))
            }
            None if layout.discover => {
                return Err(bad(
                    "no /timestamp or /event_time dataset: not a smalldata_tools file \
                     (set `time_dataset` or use `fields`)"
                        .into(),
                ))
            }
            None => None,
        };
        let mut mappings: Vec<(FieldMapping, bool)> =
            layout.fields.iter().map(|m| (m.clone(), false)).collect();
        if layout.discover {
            let mut found = Vec::new();
            all_datasets(&file, &mut found)
                .map_err(|e| bad(format!("cannot list datasets: {e}")))?;
            let time_name = time.as_ref().map(|(n, _, _)| n.clone());
            for dataset in found {
                let configured = layout.fields.iter().any(|m| m.dataset == dataset);
                let config_group = SMALLDATA_NOT_EVENTS
                    .iter()
                    .any(|g| dataset.starts_with(&format!("{g}/")));
                if configured || config_group || Some(&dataset) == time_name.as_ref() {
                    continue;
                }
                let field = discovered_field_name(&dataset);
                if layout.fields.iter().any(|m| m.field == field) {
                    continue;
                }
                mappings.push((map(&dataset, &field), true));
            }
            if let Some((name, _, _)) = &time {
                // The raw timestamp stays available as a field.
                mappings.push((map(name, &discovered_field_name(name)), true));
            }
        }
        for (m, discovered) in &mappings {
            let dataset = file.dataset(&m.dataset).map_err(|e| {
                bad(format!(
                    "missing dataset {} (field {}): {e}",
                    m.dataset, m.field
                ))
            })?;
            let shape = dataset.shape();
            let descriptor = dataset
                .dtype()
                .and_then(|t| t.to_descriptor())
                .map_err(|e| format!("dataset {}: unreadable type: {e}", m.dataset));
            let element = descriptor.and_then(|d| {
                element_of(&d).ok_or_else(|| {
                    format!(
                        "dataset {} (field {}) has unsupported type {d:?}",
                        m.dataset, m.field
                    )
                })
            });
            if *discovered {
                // Discovered datasets without the event axis or of other
                // types are per-run data, not events: leave them out.
                let per_event =
                    matches!((&events, shape.first()), (Some((n, _)), Some(&m)) if *n == m as u64);
                match &element {
                    Ok(Element::Text(_)) if shape.len() > 1 => continue,
                    Ok(_) if per_event => {}
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), "{e}: not read");
                        continue;
                    }
                }
            }
            let element = element.map_err(bad)?;
            check_axis(&mut events, &m.dataset, &shape)?;
            if let Element::Text(kind) = element {
                if shape.len() > 1 {
                    return Err(bad(format!(
                        "dataset {} (field {}): string arrays are not supported, only one string per event",
                        m.dataset, m.field
                    )));
                }
                if let StringKind::FixedAscii(n) | StringKind::FixedUnicode(n) = kind {
                    if n > MAX_FIXED_STRING {
                        return Err(bad(format!(
                            "dataset {} (field {}): strings of {n} bytes exceed {MAX_FIXED_STRING}",
                            m.dataset, m.field
                        )));
                    }
                }
            }
            columns.push(Column {
                field: m.field.clone(),
                dataset_name: m.dataset.clone(),
                dataset,
                element,
                event_shape: shape[1..].iter().map(|&d| d as u64).collect(),
            });
        }
        let events = events.map(|(n, _)| n).unwrap_or(0);
        Ok(Hdf5Reader {
            path: path.to_path_buf(),
            _file: file,
            columns,
            time,
            events,
        })
    }

    /// Names the plugin filters a dataset needs (HDF5's own error names only
    /// the plugin directory it searched).
    fn plugin_hint(&self, dataset: &str) -> String {
        let Some(column) = self.columns.iter().find(|c| c.dataset_name == dataset) else {
            return String::new();
        };
        let needed: Vec<String> = column
            .dataset
            .filters()
            .iter()
            .filter_map(|f| match f {
                hdf5::filters::Filter::User(id, _) => Some(match id {
                    32001 => "Blosc (32001)".to_string(),
                    32004 => "LZ4 (32004)".to_string(),
                    32008 => "bitshuffle (32008)".to_string(),
                    32015 => "zstd (32015)".to_string(),
                    32026 => "Blosc2 (32026)".to_string(),
                    other => format!("filter {other}"),
                }),
                _ => None,
            })
            .collect();
        if needed.is_empty() {
            return String::new();
        }
        format!(
            " (the dataset is compressed with {}: install the Python package hdf5plugin and set \
             HDF5_PLUGIN_PATH to its PLUGINS_PATH, see docs/operators.md)",
            needed.join(", ")
        )
    }

    /// Number of events in the file.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The fields read, in order (with discovered datasets).
    pub fn fields(&self) -> Vec<(String, String)> {
        self.columns
            .iter()
            .map(|c| (c.dataset_name.clone(), c.field.clone()))
            .collect()
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
            message: format!(
                "reading events {start}..{end} of dataset {name}: {e}{}",
                self.plugin_hint(name)
            ),
        };
        if let Some((name, dataset, format)) = &self.time {
            let times = dataset
                .read_slice::<u64, _, IxDyn>(range.clone())
                .map_err(|e| bad(name, e))?;
            for (event, t) in events.iter_mut().zip(times.iter()) {
                event.time_ns = format.to_unix_ns(*t);
            }
        }
        for column in &self.columns {
            let ds = &column.dataset;
            let name = &column.dataset_name;
            match column.element {
                Element::Bool if column.event_shape.is_empty() => {
                    let values = ds
                        .read_slice::<bool, _, IxDyn>(range.clone())
                        .map_err(|e| bad(name, e))?;
                    for (event, v) in events.iter_mut().zip(values.iter()) {
                        event.scalars.insert(column.field.clone(), Scalar::Bool(*v));
                    }
                }
                Element::Bool => {
                    let values = ds
                        .read_slice::<bool, _, IxDyn>(event_selection(ds, range.clone()))
                        .map_err(|e| bad(name, e))?;
                    let values = values.as_standard_layout();
                    let flat = values.as_slice().expect("standard layout");
                    let per_event = flat.len() / n;
                    for (i, event) in events.iter_mut().enumerate() {
                        let bytes = flat[i * per_event..(i + 1) * per_event]
                            .iter()
                            .map(|b| *b as u8)
                            .collect();
                        let array = Array::new(DType::U8, column.event_shape.clone(), bytes)
                            .map_err(|e| AgentError::Hdf5 {
                                path: self.path.clone(),
                                message: format!("dataset {name}: {e}"),
                            })?;
                        event.arrays.insert(column.field.clone(), array);
                    }
                }
                Element::Text(kind) => {
                    let values = read_strings(ds, kind, range.clone()).map_err(|e| bad(name, e))?;
                    for (event, v) in events.iter_mut().zip(values) {
                        event.scalars.insert(column.field.clone(), Scalar::Text(v));
                    }
                }
                Element::Num(dtype) => {
                    let per_event =
                        read_le_bytes(ds, dtype, range.clone(), n).map_err(|e| bad(name, e))?;
                    for (event, chunk) in events.iter_mut().zip(per_event) {
                        if column.event_shape.is_empty() {
                            event
                                .scalars
                                .insert(column.field.clone(), scalar_of(dtype, &chunk));
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

/// Reads events `range` of a 1-D string dataset.
fn read_strings(
    ds: &Dataset,
    kind: StringKind,
    range: std::ops::Range<usize>,
) -> hdf5::Result<Vec<String>> {
    use hdf5::types::{FixedAscii, FixedUnicode, VarLenAscii, VarLenUnicode};
    macro_rules! read {
        ($t:ty) => {
            ds.read_slice::<$t, _, IxDyn>(range)?
                .iter()
                .map(|s| s.as_str().to_string())
                .collect()
        };
    }
    // HDF5 converts fixed-length strings to a longer fixed length (padding);
    // the reader picks the smallest buffer that holds them.
    Ok(match kind {
        StringKind::VarLenAscii => read!(VarLenAscii),
        StringKind::VarLenUnicode => read!(VarLenUnicode),
        StringKind::FixedAscii(n) if n <= 64 => read!(FixedAscii<64>),
        StringKind::FixedAscii(n) if n <= 512 => read!(FixedAscii<512>),
        StringKind::FixedAscii(_) => read!(FixedAscii<MAX_FIXED_STRING>),
        StringKind::FixedUnicode(n) if n <= 64 => read!(FixedUnicode<64>),
        StringKind::FixedUnicode(n) if n <= 512 => read!(FixedUnicode<512>),
        StringKind::FixedUnicode(_) => read!(FixedUnicode<MAX_FIXED_STRING>),
    })
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

fn scalar_of(dtype: DType, b: &[u8]) -> Scalar {
    let bytes8 = |b: &[u8]| {
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        a
    };
    let bytes4 = |b: &[u8]| {
        let mut a = [0u8; 4];
        a[..b.len()].copy_from_slice(b);
        a
    };
    match dtype {
        DType::U8 => Scalar::Int(b[0] as i64),
        DType::I8 => Scalar::Int(b[0] as i8 as i64),
        DType::U16 => Scalar::Int(u16::from_le_bytes([b[0], b[1]]) as i64),
        DType::I16 => Scalar::Int(i16::from_le_bytes([b[0], b[1]]) as i64),
        DType::U32 => Scalar::Int(u32::from_le_bytes(bytes4(b)) as i64),
        DType::I32 => Scalar::Int(i32::from_le_bytes(bytes4(b)) as i64),
        DType::U64 => {
            let v = u64::from_le_bytes(bytes8(b));
            // Values above i64::MAX keep their exact value as unsigned.
            i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int)
        }
        DType::I64 => Scalar::Int(i64::from_le_bytes(bytes8(b))),
        DType::F32 => Scalar::Float32(f32::from_le_bytes(bytes4(b))),
        DType::F64 => Scalar::Float(f64::from_le_bytes(bytes8(b))),
    }
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
    // Files read and files skipped by this run, and the last skip's error.
    let mut read_ok = 0u64;
    let mut skipped = 0u64;
    let mut last_error: Option<String> = None;
    let mut process = |path: &Path, cursor: &mut Cursor| -> bool {
        let key = path_key(path);
        let Some(start) = cursor.start_of(&key) else {
            return true;
        };
        match read_file(path, start, &layout, config, ctx, cursor, &tx) {
            FileOutcome::Done => {
                read_ok += 1;
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
                skipped += 1;
                last_error = Some(e.to_string());
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
        // A finite source with nothing to read is a mistyped path, not a
        // finished run; files still to be written belong to `watch_dir`.
        let _ = tx.send(SourceMessage::Failed(AgentError::Source {
            source_name: ctx.name.clone(),
            message: format!(
                "glob {:?} matches no file: check the path (for files still to be written, use watch_dir)",
                config.glob.as_deref().unwrap_or_default()
            ),
        }));
        return;
    }
    for file in files {
        if ctx.stopping() || !process(&file, &mut cursor) {
            return;
        }
    }
    if read_ok == 0 && skipped > 0 {
        // Nothing was read: a run of only bad files is a failure, not a success.
        let _ = tx.send(SourceMessage::Failed(AgentError::Source {
            source_name: ctx.name.clone(),
            message: format!(
                "every file was skipped ({skipped}); the last error: {}",
                last_error.unwrap_or_default()
            ),
        }));
        return;
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
    fn reads_the_sample_layout_in_chunks_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.h5");
        write_sample(&path, &SampleSpec::new(Preset::Sample, 20)).unwrap();
        let reader = Hdf5Reader::open(&path, &Layout::preset(Preset::Sample)).unwrap();
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
        write_sample(&path, &SampleSpec::new(Preset::Sample, 4)).unwrap();
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
        let mut layout = Layout::preset(Preset::Sample);
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
        let err = Hdf5Reader::open(&path, &Layout::preset(Preset::Sample))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("bad.h5") && err.contains("cannot open"),
            "{err}"
        );
    }
}

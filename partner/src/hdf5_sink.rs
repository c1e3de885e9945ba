//! HDF5 output: `/<experiment>/<source>/<field>`, one dataset per field with
//! the event axis first, chunked, extendable and compressed (gzip with the
//! shuffle filter by default; see [`Hdf5Compression`]); `index`, `run` and
//! `time_ns` datasets give each row's identity. Scalars keep their wire type:
//! booleans as HDF5 booleans, integers as int64 (uint64 for values above
//! 2^63-1), floats as float32 or float64, text as variable-length UTF-8. Arrays keep their
//! dtype and shape, zero-size shapes such as (N, 0) included.
//!
//! `present/<field>` (booleans, one row per event) says whether the event had
//! the field: a row of an event without it holds the fill value 0, so the
//! mask tells a missing value from a real 0.
//!
//! Reopening an existing file reads `run` and `index` back, so events already
//! written are skipped on resume. The identity datasets are written last in
//! each batch, so a row counts as written only when its data is.
//! HDF5 1.10 is not crash-safe: a process killed while writing can leave the
//! file unreadable; prefer JSON lines output where that matters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{bail, Context as _};
use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, Group, H5Type};
use lclstream_nats::wire::{Array, DType, Event, Scalar};
use ndarray::{ArrayD, IxDyn};

use crate::sink::{BatchInfo, EventKey, EventSink};

/// Writes events into an HDF5 file.
pub struct Hdf5Sink {
    file: hdf5::File,
    seen: HashSet<EventKey>,
    rows: HashMap<(String, String), usize>,
    compression: Hdf5Compression,
}

/// Compression of the datasets the sink creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hdf5Compression {
    /// No filter.
    None,
    /// HDF5 shuffle then deflate (gzip) at this level (1-9): readable everywhere.
    Gzip(u8),
    /// h5py's LZF (fast; readers need the LZF filter, which h5py has).
    Lzf,
}

impl Default for Hdf5Compression {
    fn default() -> Self {
        Hdf5Compression::Gzip(4)
    }
}

impl std::str::FromStr for Hdf5Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?}: expected none, gzip, gzip:1 to gzip:9, or lzf");
        Ok(match text {
            "none" => Hdf5Compression::None,
            "gzip" => Hdf5Compression::default(),
            "lzf" => Hdf5Compression::Lzf,
            t => match t.strip_prefix("gzip:").map(str::parse::<u8>) {
                Some(Ok(level)) if (1..=9).contains(&level) => Hdf5Compression::Gzip(level),
                _ => return Err(bad()),
            },
        })
    }
}

const RESERVED: [&str; 4] = ["index", "run", "time_ns", PRESENT];
/// Group of the per-field presence masks.
const PRESENT: &str = "present";
/// Rows per chunk of scalar datasets.
const SCALAR_CHUNK: usize = 1024;

fn selection(start: usize, count: usize, inner: &[usize]) -> hdf5::Hyperslab {
    let mut dims = vec![hdf5::SliceOrIndex::SliceTo {
        start,
        step: 1,
        end: start + count,
        block: 1,
    }];
    dims.extend(inner.iter().map(|&d| hdf5::SliceOrIndex::SliceTo {
        start: 0,
        step: 1,
        end: d,
        block: 1,
    }));
    hdf5::Hyperslab::from(dims)
}

fn extendable<T: H5Type>(
    group: &Group,
    name: &str,
    rows: usize,
    inner: &[usize],
    compression: Hdf5Compression,
) -> anyhow::Result<Dataset> {
    if group.link_exists(name) {
        let ds = group.dataset(name)?;
        let shape = ds.shape();
        if shape.len() != inner.len() + 1 || shape[1..] != *inner {
            bail!("field {name}: existing dataset has shape {shape:?}, an event brings {inner:?}");
        }
        return Ok(ds);
    }
    let mut extents = vec![hdf5::Extent::resizable(rows)];
    // A chunk cannot have a zero dimension, nor exceed a fixed one: a zero
    // per-event dimension (shape (N, 0)) is made resizable instead.
    extents.extend(inner.iter().map(|&d| {
        if d == 0 {
            hdf5::Extent::resizable(0)
        } else {
            hdf5::Extent::from(d)
        }
    }));
    let row_elems: usize = inner.iter().product::<usize>().max(1);
    let chunk_rows = (SCALAR_CHUNK / row_elems).max(1);
    let mut chunk = vec![chunk_rows];
    chunk.extend(inner.iter().map(|&d| d.max(1)));
    let builder = group
        .new_dataset::<T>()
        .chunk(chunk)
        .shape(hdf5::SimpleExtents::from_vec(extents));
    let builder = match compression {
        Hdf5Compression::None => builder,
        Hdf5Compression::Gzip(level) => builder.shuffle().deflate(level),
        Hdf5Compression::Lzf => builder.lzf(),
    };
    let ds = builder
        .create(name)
        .with_context(|| format!("creating dataset {name}"))?;
    Ok(ds)
}

#[allow(clippy::too_many_arguments)]
fn write_rows<T: H5Type + Clone>(
    group: &Group,
    name: &str,
    start: usize,
    count: usize,
    inner: &[usize],
    values: Vec<T>,
    compression: Hdf5Compression,
) -> anyhow::Result<()> {
    let ds = extendable::<T>(group, name, start, inner, compression)?;
    let mut shape = vec![start + count];
    shape.extend(inner.iter().copied());
    ds.resize(shape.clone())?;
    if values.is_empty() {
        // Zero-size rows: the new shape is all there is to write.
        return Ok(());
    }
    let mut arr_shape = vec![count];
    arr_shape.extend(inner.iter().copied());
    let arr = ArrayD::from_shape_vec(IxDyn(&arr_shape), values)
        .with_context(|| format!("field {name}: values do not fill shape {arr_shape:?}"))?;
    ds.write_slice(&arr, selection(start, count, inner))
        .with_context(|| format!("writing field {name}"))?;
    Ok(())
}

macro_rules! le_values {
    ($bytes:expr, $t:ty) => {
        $bytes
            .chunks_exact(std::mem::size_of::<$t>())
            .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")))
            .collect::<Vec<$t>>()
    };
}

/// Writes the `field` column of `rows` (missing entries are zeros of `template`'s size).
fn write_array_field(
    group: &Group,
    name: &str,
    start: usize,
    template: &Array,
    column: &[Option<&Array>],
    compression: Hdf5Compression,
) -> anyhow::Result<()> {
    let inner: Vec<usize> = template.shape.iter().map(|&d| d as usize).collect();
    let row_bytes = template.data.len();
    let mut bytes = Vec::with_capacity(row_bytes * column.len());
    for cell in column {
        match cell {
            Some(a) if a.dtype == template.dtype && a.shape == template.shape => {
                bytes.extend_from_slice(&a.data)
            }
            Some(a) => bail!(
                "field {name}: an event has dtype {} shape {:?}, another {} {:?}",
                a.dtype,
                a.shape,
                template.dtype,
                template.shape
            ),
            None => bytes.resize(bytes.len() + row_bytes, 0),
        }
    }
    let n = column.len();
    let c = compression;
    match template.dtype {
        DType::U8 => write_rows(group, name, start, n, &inner, bytes, c),
        DType::I8 => write_rows(group, name, start, n, &inner, le_values!(bytes, i8), c),
        DType::U16 => write_rows(group, name, start, n, &inner, le_values!(bytes, u16), c),
        DType::I16 => write_rows(group, name, start, n, &inner, le_values!(bytes, i16), c),
        DType::U32 => write_rows(group, name, start, n, &inner, le_values!(bytes, u32), c),
        DType::I32 => write_rows(group, name, start, n, &inner, le_values!(bytes, i32), c),
        DType::U64 => write_rows(group, name, start, n, &inner, le_values!(bytes, u64), c),
        DType::I64 => write_rows(group, name, start, n, &inner, le_values!(bytes, i64), c),
        DType::F32 => write_rows(group, name, start, n, &inner, le_values!(bytes, f32), c),
        DType::F64 => write_rows(group, name, start, n, &inner, le_values!(bytes, f64), c),
    }
}

/// The HDF5 type a scalar column is stored as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ScalarKind {
    Bool,
    Int,
    UInt,
    Float,
    Float32,
    Text,
}

impl ScalarKind {
    fn of(value: &Scalar) -> Option<ScalarKind> {
        match value {
            Scalar::Bool(_) => Some(ScalarKind::Bool),
            Scalar::Int(_) => Some(ScalarKind::Int),
            Scalar::UInt(_) => Some(ScalarKind::UInt),
            Scalar::Float(_) => Some(ScalarKind::Float),
            Scalar::Float32(_) => Some(ScalarKind::Float32),
            Scalar::Text(_) => Some(ScalarKind::Text),
        }
    }

    fn of_dataset(ds: &Dataset) -> Option<ScalarKind> {
        let t = ds.dtype().ok()?;
        Some(if t.is::<bool>() {
            ScalarKind::Bool
        } else if t.is::<VarLenUnicode>() {
            ScalarKind::Text
        } else if t.is::<u64>() {
            ScalarKind::UInt
        } else if t.is::<f64>() {
            ScalarKind::Float
        } else if t.is::<f32>() {
            ScalarKind::Float32
        } else {
            ScalarKind::Int
        })
    }

    /// The kind holding both `self` and `other` (a column's values can differ
    /// in kind: an integer field whose first values are small, then one is
    /// above 2^63-1).
    fn join(self, other: ScalarKind) -> ScalarKind {
        use ScalarKind::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Text, _) | (_, Text) => Text,
            (Float, _) | (_, Float) | (Float32, _) | (_, Float32) => Float,
            (UInt, _) | (_, UInt) => UInt,
            _ => Int,
        }
    }
}

fn write_scalar_field(
    group: &Group,
    name: &str,
    start: usize,
    column: &[Option<&Scalar>],
    compression: Hdf5Compression,
) -> anyhow::Result<()> {
    // A new dataset takes the kind of the batch's values; an existing one keeps its type.
    let kind = match group
        .dataset(name)
        .ok()
        .and_then(|ds| ScalarKind::of_dataset(&ds))
    {
        Some(kind) => kind,
        None => column
            .iter()
            .flatten()
            .filter_map(|v| ScalarKind::of(v))
            .reduce(ScalarKind::join)
            .unwrap_or(ScalarKind::Int),
    };
    let n = column.len();
    let c = compression;
    let text_in_numbers = |t: &str| {
        anyhow::anyhow!(
            "field {name}: text value {t:?} in a numeric dataset (written by an earlier batch)"
        )
    };
    match kind {
        ScalarKind::Text => {
            let mut values = Vec::with_capacity(n);
            for v in column {
                let text = match v {
                    Some(Scalar::Text(t)) => t.clone(),
                    Some(Scalar::Bool(b)) => b.to_string(),
                    Some(Scalar::Int(i)) => i.to_string(),
                    Some(Scalar::UInt(u)) => u.to_string(),
                    Some(Scalar::Float(f)) => f.to_string(),
                    Some(Scalar::Float32(f)) => f.to_string(),
                    None => String::new(),
                };
                values.push(
                    text.parse::<VarLenUnicode>()
                        .map_err(|e| anyhow::anyhow!("field {name}: {e}"))?,
                );
            }
            write_rows::<VarLenUnicode>(group, name, start, n, &[], values, c)
        }
        ScalarKind::Bool => {
            let values = column
                .iter()
                .map(|v| {
                    Ok(match v {
                        Some(Scalar::Bool(b)) => *b,
                        Some(Scalar::Int(i)) => *i != 0,
                        Some(Scalar::UInt(u)) => *u != 0,
                        Some(Scalar::Float(f)) => *f != 0.0,
                        Some(Scalar::Float32(f)) => *f != 0.0,
                        Some(Scalar::Text(t)) => return Err(text_in_numbers(t)),
                        None => false,
                    })
                })
                .collect::<anyhow::Result<Vec<bool>>>()?;
            write_rows::<bool>(group, name, start, n, &[], values, c)
        }
        ScalarKind::Float => {
            let values = column
                .iter()
                .map(|v| {
                    Ok(match v {
                        Some(Scalar::Float(f)) => *f,
                        Some(Scalar::Float32(f)) => *f as f64,
                        Some(Scalar::Int(i)) => *i as f64,
                        Some(Scalar::UInt(u)) => *u as f64,
                        Some(Scalar::Bool(b)) => *b as u8 as f64,
                        Some(Scalar::Text(t)) => return Err(text_in_numbers(t)),
                        None => 0.0,
                    })
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            write_rows::<f64>(group, name, start, n, &[], values, c)
        }
        ScalarKind::Float32 => {
            let mut values = Vec::with_capacity(n);
            for v in column {
                let wide = match v {
                    Some(Scalar::Float32(f)) => {
                        values.push(*f);
                        continue;
                    }
                    Some(Scalar::Float(f)) => *f,
                    Some(Scalar::Int(i)) => *i as f64,
                    Some(Scalar::UInt(u)) => *u as f64,
                    Some(Scalar::Bool(b)) => *b as u8 as f64,
                    Some(Scalar::Text(t)) => return Err(text_in_numbers(t)),
                    None => 0.0,
                };
                let narrow = wide as f32;
                if narrow as f64 != wide && !wide.is_nan() {
                    bail!(
                        "field {name}: value {wide} does not fit the float32 dataset \
                         (written by an earlier batch); write to a new file"
                    );
                }
                values.push(narrow);
            }
            write_rows::<f32>(group, name, start, n, &[], values, c)
        }
        ScalarKind::UInt => {
            let mut values = Vec::with_capacity(n);
            for v in column {
                values.push(match v {
                    Some(Scalar::UInt(u)) => *u,
                    Some(Scalar::Int(i)) => u64::try_from(*i).map_err(|_| {
                        anyhow::anyhow!(
                            "field {name}: negative value {i} in an unsigned 64-bit dataset"
                        )
                    })?,
                    Some(Scalar::Bool(b)) => *b as u64,
                    Some(Scalar::Float(f)) => *f as u64,
                    Some(Scalar::Float32(f)) => *f as u64,
                    Some(Scalar::Text(t)) => return Err(text_in_numbers(t)),
                    None => 0,
                });
            }
            write_rows::<u64>(group, name, start, n, &[], values, c)
        }
        ScalarKind::Int => {
            let mut values = Vec::with_capacity(n);
            for v in column {
                values.push(match v {
                    Some(Scalar::Int(i)) => *i,
                    Some(Scalar::UInt(u)) => i64::try_from(*u).map_err(|_| {
                        anyhow::anyhow!(
                            "field {name}: value {u} above 2^63-1 in a signed 64-bit dataset \
                             (written by an earlier pull); write to a new file"
                        )
                    })?,
                    Some(Scalar::Bool(b)) => *b as i64,
                    Some(Scalar::Float(f)) => *f as i64,
                    Some(Scalar::Float32(f)) => *f as i64,
                    Some(Scalar::Text(t)) => return Err(text_in_numbers(t)),
                    None => 0,
                });
            }
            write_rows::<i64>(group, name, start, n, &[], values, c)
        }
    }
}

impl Hdf5Sink {
    /// Creates `path`, or opens it and reads which events it already holds;
    /// new datasets are gzip-compressed.
    pub fn open(path: &Path) -> anyhow::Result<Hdf5Sink> {
        Self::open_with(path, Hdf5Compression::default())
    }

    /// Like [`Hdf5Sink::open`] with the compression of new datasets.
    pub fn open_with(path: &Path, compression: Hdf5Compression) -> anyhow::Result<Hdf5Sink> {
        let file = hdf5::File::append(path)
            .with_context(|| format!("opening HDF5 file {}", path.display()))?;
        let mut seen = HashSet::new();
        let mut rows = HashMap::new();
        for experiment in file.groups()? {
            let exp_name = experiment
                .name()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            for source in experiment.groups()? {
                let src_name = source
                    .name()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if !source.link_exists("index") || !source.link_exists("run") {
                    continue;
                }
                let index: Vec<u64> = source.dataset("index")?.read_raw()?;
                let run: Vec<u32> = source.dataset("run")?.read_raw()?;
                let n = index.len().min(run.len());
                for i in 0..n {
                    seen.insert(EventKey {
                        experiment: exp_name.clone(),
                        run: run[i],
                        source: src_name.clone(),
                        index: index[i],
                    });
                }
                rows.insert((exp_name.clone(), src_name), n);
            }
        }
        Ok(Hdf5Sink {
            file,
            seen,
            rows,
            compression,
        })
    }

    /// Number of events the file holds.
    pub fn known_events(&self) -> usize {
        self.seen.len()
    }

    fn group(&self, experiment: &str, source: &str) -> anyhow::Result<Group> {
        let exp = match self.file.group(experiment) {
            Ok(g) => g,
            Err(_) => self.file.create_group(experiment)?,
        };
        Ok(match exp.group(source) {
            Ok(g) => g,
            Err(_) => exp.create_group(source)?,
        })
    }
}

impl EventSink for Hdf5Sink {
    fn contains(&self, key: &EventKey) -> bool {
        self.seen.contains(key)
    }

    fn write(&mut self, batch: &BatchInfo, events: Vec<Event>) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let group = self.group(&batch.experiment, &batch.source)?;
        let key = (batch.experiment.clone(), batch.source.clone());
        let start = *self.rows.get(&key).unwrap_or(&0);
        let mut arrays: BTreeMap<&str, &Array> = BTreeMap::new();
        let mut scalars: BTreeMap<&str, ()> = BTreeMap::new();
        for event in &events {
            for (name, array) in &event.arrays {
                arrays.entry(name.as_str()).or_insert(array);
            }
            for name in event.scalars.keys() {
                scalars.insert(name.as_str(), ());
            }
        }
        let c = self.compression;
        let present = match group.group(PRESENT) {
            Ok(g) => g,
            Err(_) => group.create_group(PRESENT)?,
        };
        let n = events.len();
        for (name, template) in &arrays {
            if RESERVED.contains(name) || name.contains('/') {
                bail!("field name {name:?} is reserved in HDF5 output or contains '/'");
            }
            let column: Vec<Option<&Array>> = events.iter().map(|e| e.arrays.get(*name)).collect();
            write_array_field(&group, name, start, template, &column, c)?;
            let mask = column.iter().map(Option::is_some).collect();
            write_rows::<bool>(&present, name, start, n, &[], mask, c)?;
        }
        for name in scalars.keys() {
            if RESERVED.contains(name) || arrays.contains_key(name) || name.contains('/') {
                bail!(
                    "field name {name:?} is reserved or used twice in HDF5 output, or contains '/'"
                );
            }
            let column: Vec<Option<&Scalar>> =
                events.iter().map(|e| e.scalars.get(*name)).collect();
            write_scalar_field(&group, name, start, &column, c)?;
            let mask = column.iter().map(Option::is_some).collect();
            write_rows::<bool>(&present, name, start, n, &[], mask, c)?;
        }
        let end = start + events.len();
        // Fields absent from this batch still get rows (fill value, mask
        // false), so all stay aligned.
        for ds in present.datasets()? {
            if ds.shape().first().is_some_and(|&rows| rows < end) {
                ds.resize(vec![end])?;
            }
        }
        for name in group.member_names()? {
            if RESERVED.contains(&name.as_str())
                || arrays.contains_key(name.as_str())
                || scalars.contains_key(name.as_str())
            {
                continue;
            }
            if let Ok(ds) = group.dataset(&name) {
                let mut shape = ds.shape();
                if !shape.is_empty() && shape[0] < end {
                    shape[0] = end;
                    ds.resize(shape)?;
                }
            }
        }
        write_rows::<u64>(
            &group,
            "time_ns",
            start,
            n,
            &[],
            events.iter().map(|e| e.time_ns).collect(),
            c,
        )?;
        write_rows::<u32>(&group, "run", start, n, &[], vec![batch.run; n], c)?;
        // Last: a row exists for resume only once its index is written.
        write_rows::<u64>(
            &group,
            "index",
            start,
            n,
            &[],
            events.iter().map(|e| e.index).collect(),
            c,
        )?;
        self.rows.insert(key, end);
        for event in &events {
            self.seen.insert(batch.key(event.index));
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.file.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(run: u32) -> BatchInfo {
        BatchInfo {
            experiment: "e".into(),
            run,
            source: "det".into(),
            subject: "s".into(),
            stream_sequence: 1,
            wire_bytes: 0,
        }
    }

    fn event(index: u64, with_frame: bool) -> Event {
        let mut e = Event {
            index,
            time_ns: 10 + index,
            ..Default::default()
        };
        e.scalars
            .insert("energy".into(), Scalar::Float(index as f64 * 0.5));
        e.scalars
            .insert("pulse".into(), Scalar::Int(index as i64 * 2));
        e.scalars
            .insert("note".into(), Scalar::Text(format!("shot é{index}")));
        if with_frame {
            let pixels: Vec<u16> = (0..6).map(|p| (p + index) as u16).collect();
            e.arrays.insert(
                "frame".into(),
                Array::from_u16(vec![2, 3], &pixels).unwrap(),
            );
        }
        e
    }

    #[test]
    fn writes_extendable_datasets_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.h5");
        let mut sink = Hdf5Sink::open(&path).unwrap();
        sink.write(&batch(1), vec![event(0, true), event(1, false)])
            .unwrap();
        sink.flush().unwrap();
        drop(sink);
        let mut sink = Hdf5Sink::open(&path).unwrap();
        assert_eq!(sink.known_events(), 2);
        assert!(sink.contains(&batch(1).key(1)));
        assert!(!sink.contains(&batch(2).key(1)), "runs are told apart");
        sink.write(&batch(2), vec![event(1, true)]).unwrap();
        drop(sink);

        let file = hdf5::File::open(&path).unwrap();
        let group = file.group("e/det").unwrap();
        assert_eq!(
            group.dataset("index").unwrap().read_raw::<u64>().unwrap(),
            vec![0, 1, 1]
        );
        assert_eq!(
            group.dataset("run").unwrap().read_raw::<u32>().unwrap(),
            vec![1, 1, 2]
        );
        assert_eq!(
            group.dataset("energy").unwrap().read_raw::<f64>().unwrap(),
            vec![0.0, 0.5, 0.5]
        );
        assert_eq!(
            group.dataset("pulse").unwrap().read_raw::<i64>().unwrap(),
            vec![0, 2, 2]
        );
        let notes: Vec<VarLenUnicode> = group.dataset("note").unwrap().read_raw().unwrap();
        let notes: Vec<&str> = notes.iter().map(|n| n.as_str()).collect();
        assert_eq!(notes, ["shot é0", "shot é1", "shot é1"]);
        let frame = group.dataset("frame").unwrap();
        assert_eq!(frame.shape(), vec![3, 2, 3]);
        let values: Vec<u16> = frame.read_raw().unwrap();
        assert_eq!(&values[0..6], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(&values[6..12], &[0; 6], "a missing field is zero-filled");
        assert_eq!(&values[12..18], &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_frame_of_another_shape_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = Hdf5Sink::open(&dir.path().join("out.h5")).unwrap();
        sink.write(&batch(1), vec![event(0, true)]).unwrap();
        let mut odd = event(1, false);
        odd.arrays.insert(
            "frame".into(),
            Array::from_u16(vec![3, 2], &[0; 6]).unwrap(),
        );
        let error = sink.write(&batch(1), vec![odd]).unwrap_err().to_string();
        assert!(error.contains("frame"), "{error}");
    }

    #[test]
    fn compression_names_parse_and_bad_ones_are_named() {
        assert_eq!("gzip".parse(), Ok(Hdf5Compression::Gzip(4)));
        assert_eq!("gzip:9".parse(), Ok(Hdf5Compression::Gzip(9)));
        assert_eq!("lzf".parse(), Ok(Hdf5Compression::Lzf));
        assert_eq!("none".parse(), Ok(Hdf5Compression::None));
        let err = "gzip:0".parse::<Hdf5Compression>().unwrap_err();
        assert!(err.contains("gzip:1 to gzip:9"), "{err}");
    }
}

//! The data model carried by one message: a batch of detector events.
//!
//! Field names are serialized as MessagePack map keys (not positional arrays)
//! so that a Python consumer reads `batch["events"][0]["arrays"]["jungfrau"]`
//! without knowing Rust struct order. See `docs/wire-format.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::WireError;
use super::{bitshuffle, shuffle};

/// The schema version written into every batch and header.
pub const SCHEMA_VERSION: u32 = 1;

/// A batch of consecutive events from one source of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// Experiment name, e.g. `mfxp1234`.
    pub experiment: String,
    /// Run number within the experiment.
    pub run: u32,
    /// Name of the source that produced the events (detector group, file set).
    pub source: String,
    /// Index of the first event in the batch (inclusive).
    pub first: u64,
    /// Index of the last event in the batch (inclusive).
    pub last: u64,
    /// Number of events; equals `events.len()`.
    pub count: u32,
    /// The events, in increasing index order.
    pub events: Vec<Event>,
}

/// One detector event (one shot): named scalars and named n-dimensional arrays.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Event {
    /// Event index within the run, unique per source.
    pub index: u64,
    /// Acquisition time in nanoseconds since the Unix epoch (0 when unknown).
    pub time_ns: u64,
    /// Per-shot scalar values (photon energy, pulse id, gas detector...).
    #[serde(default)]
    pub scalars: BTreeMap<String, Scalar>,
    /// Per-shot arrays (detector images, waveforms, peak tables).
    #[serde(default)]
    pub arrays: BTreeMap<String, Array>,
}

/// A scalar value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer above `i64::MAX` (smaller values are `Int`).
    UInt(u64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Text(String),
    /// A 32-bit float (a MessagePack float 32; decoders without this variant
    /// read it as a 64-bit float, exactly).
    Float32(f32),
}

// By hand rather than `untagged`: an untagged enum would read a MessagePack
// float 32 as whichever float variant comes first, losing the type.
impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Scalar, D::Error> {
        struct ScalarVisitor;
        impl serde::de::Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a boolean, integer, float or string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int))
            }
            fn visit_f32<E>(self, v: f32) -> Result<Scalar, E> {
                Ok(Scalar::Float32(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Text(v))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// Element type of an [`Array`], named as numpy names it (`np.dtype("<u2")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    /// Unsigned 8-bit integer.
    #[serde(rename = "|u1")]
    U8,
    /// Signed 8-bit integer.
    #[serde(rename = "|i1")]
    I8,
    /// Little-endian unsigned 16-bit integer.
    #[serde(rename = "<u2")]
    U16,
    /// Little-endian signed 16-bit integer.
    #[serde(rename = "<i2")]
    I16,
    /// Little-endian unsigned 32-bit integer.
    #[serde(rename = "<u4")]
    U32,
    /// Little-endian signed 32-bit integer.
    #[serde(rename = "<i4")]
    I32,
    /// Little-endian unsigned 64-bit integer.
    #[serde(rename = "<u8")]
    U64,
    /// Little-endian signed 64-bit integer.
    #[serde(rename = "<i8")]
    I64,
    /// Little-endian IEEE 754 single precision float.
    #[serde(rename = "<f4")]
    F32,
    /// Little-endian IEEE 754 double precision float.
    #[serde(rename = "<f8")]
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 => 1,
            DType::U16 | DType::I16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 => 8,
        }
    }

    /// Whether the type is an integer type (the byte shuffle helps integers most).
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::F64)
    }

    /// The numpy name of the type, e.g. `<u2`.
    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::U8 => "|u1",
            DType::I8 => "|i1",
            DType::U16 => "<u2",
            DType::I16 => "<i2",
            DType::U32 => "<u4",
            DType::I32 => "<i4",
            DType::U64 => "<u8",
            DType::I64 => "<i8",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
        }
    }

    /// Parses a short name such as `u16`, `f32` or a numpy name such as `<u2`.
    pub fn parse(name: &str) -> Option<DType> {
        let all = [
            DType::U8,
            DType::I8,
            DType::U16,
            DType::I16,
            DType::U32,
            DType::I32,
            DType::U64,
            DType::I64,
            DType::F32,
            DType::F64,
        ];
        all.into_iter()
            .find(|d| d.numpy_name() == name || d.short_name() == name)
    }

    /// The Rust-style short name, e.g. `u16`.
    pub fn short_name(self) -> &'static str {
        match self {
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::U64 => "u64",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A pre-compression filter applied to an array's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// The bytes are the little-endian elements in C order.
    #[default]
    None,
    /// Byte shuffle: all first bytes of the elements, then all second bytes, ...
    Shuffle,
    /// Bitshuffle: bit planes per block of elements, exactly as the bitshuffle
    /// library (HDF5 filter 32008 without its compression); see
    /// [`bitshuffle`](super::bitshuffle).
    Bitshuffle,
}

impl Filter {
    /// The name used on the wire and in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::Shuffle => "shuffle",
            Filter::Bitshuffle => "bitshuffle",
        }
    }

    /// Parses [`Filter::name`].
    pub fn parse(name: &str) -> Option<Filter> {
        [Filter::None, Filter::Shuffle, Filter::Bitshuffle]
            .into_iter()
            .find(|f| f.name() == name)
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which filter each array gets before compression: by field name first,
/// then by dtype, then by kind (integer or float).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPolicy {
    /// Filter of integer arrays.
    pub integers: Filter,
    /// Filter of float arrays.
    pub floats: Filter,
    /// Per-dtype choices, over `integers` and `floats`.
    pub dtypes: BTreeMap<DType, Filter>,
    /// Per-field choices (array name), over everything else.
    pub fields: BTreeMap<String, Filter>,
}

impl Default for FilterPolicy {
    /// Bitshuffle for integers (detector pixels: x1.3 the byte shuffle's
    /// ratio, see docs/benchmarks.md), byte shuffle for floats (their bit
    /// planes are noise; grouping exponent bytes still helps a little).
    fn default() -> Self {
        FilterPolicy {
            integers: Filter::Bitshuffle,
            floats: Filter::Shuffle,
            dtypes: BTreeMap::new(),
            fields: BTreeMap::new(),
        }
    }
}

impl FilterPolicy {
    /// No filter on any array.
    pub fn none() -> FilterPolicy {
        FilterPolicy::uniform(Filter::None)
    }

    /// The same filter for every array.
    pub fn uniform(filter: Filter) -> FilterPolicy {
        FilterPolicy {
            integers: filter,
            floats: filter,
            dtypes: BTreeMap::new(),
            fields: BTreeMap::new(),
        }
    }

    /// The filter for array `field` of type `dtype`.
    pub fn choose(&self, field: &str, dtype: DType) -> Filter {
        if let Some(&filter) = self.fields.get(field) {
            return filter;
        }
        if let Some(&filter) = self.dtypes.get(&dtype) {
            return filter;
        }
        if dtype.is_integer() {
            self.integers
        } else {
            self.floats
        }
    }
}

/// An n-dimensional array in C order with little-endian elements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Array {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, slowest varying first.
    pub shape: Vec<u64>,
    /// Element bytes, transformed by `filter`.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Filter applied to `data`.
    #[serde(default)]
    pub filter: Filter,
}

impl Array {
    /// Builds an array from little-endian bytes, checking the length against the shape.
    pub fn new(dtype: DType, shape: Vec<u64>, data: Vec<u8>) -> Result<Array, WireError> {
        let array = Array {
            dtype,
            shape,
            data,
            filter: Filter::None,
        };
        array.validate()?;
        Ok(array)
    }

    /// Builds a `u16` array from values.
    pub fn from_u16(shape: Vec<u64>, values: &[u16]) -> Result<Array, WireError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Array::new(DType::U16, shape, data)
    }

    /// Builds an `f32` array from values.
    pub fn from_f32(shape: Vec<u64>, values: &[f32]) -> Result<Array, WireError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Array::new(DType::F32, shape, data)
    }

    /// Number of elements implied by the shape, or `None` on overflow.
    pub fn element_count(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }

    /// Checks that the byte length matches shape and dtype.
    pub fn validate(&self) -> Result<(), WireError> {
        let expected = self
            .element_count()
            .and_then(|n| n.checked_mul(self.dtype.size() as u64));
        match expected {
            Some(len) if len == self.data.len() as u64 => Ok(()),
            _ => Err(WireError::Invalid(format!(
                "array of dtype {} and shape {:?} holds {} bytes",
                self.dtype,
                self.shape,
                self.data.len()
            ))),
        }
    }

    /// Applies the byte shuffle filter (no-op for 1-byte types or if already filtered).
    pub fn shuffle(&mut self) {
        // A byte shuffle of whole elements cannot fail.
        let _ = self.apply_filter(Filter::Shuffle);
    }

    /// Applies `filter` to an unfiltered array (no-op if already filtered,
    /// and a byte shuffle of 1-byte elements is skipped: it changes nothing).
    pub fn apply_filter(&mut self, filter: Filter) -> Result<(), WireError> {
        if self.filter != Filter::None {
            return Ok(());
        }
        let size = self.dtype.size();
        match filter {
            Filter::None => {}
            Filter::Shuffle if size == 1 => {}
            Filter::Shuffle => self.data = shuffle::shuffle(&self.data, size),
            Filter::Bitshuffle => bitshuffle::bitshuffle_in_place(&mut self.data, size)?,
        }
        if filter != Filter::Shuffle || size > 1 {
            self.filter = filter;
        }
        Ok(())
    }

    /// Removes any filter so `data` holds plain little-endian elements.
    ///
    /// Fails only on an array whose length is not a whole number of elements
    /// (one that [`Array::validate`] refuses).
    pub fn remove_filter(&mut self) -> Result<(), WireError> {
        let size = self.dtype.size();
        match self.filter {
            Filter::None => return Ok(()),
            Filter::Shuffle => self.data = shuffle::unshuffle(&self.data, size),
            Filter::Bitshuffle => bitshuffle::bitunshuffle_in_place(&mut self.data, size)?,
        }
        self.filter = Filter::None;
        Ok(())
    }

    /// Reads the elements as `u16` (for `u16` arrays without filter).
    pub fn to_u16(&self) -> Option<Vec<u16>> {
        (self.dtype == DType::U16 && self.filter == Filter::None).then(|| {
            self.data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect()
        })
    }
}

impl Batch {
    /// Builds a batch from events, filling `first`, `last` and `count`.
    ///
    /// Returns an error for an empty event list or unordered indices.
    pub fn new(
        experiment: impl Into<String>,
        run: u32,
        source: impl Into<String>,
        events: Vec<Event>,
    ) -> Result<Batch, WireError> {
        let batch = Batch {
            schema: SCHEMA_VERSION,
            experiment: experiment.into(),
            run,
            source: source.into(),
            first: events.first().map(|e| e.index).unwrap_or(0),
            last: events.last().map(|e| e.index).unwrap_or(0),
            count: u32::try_from(events.len())
                .map_err(|_| WireError::Invalid("too many events in one batch".into()))?,
            events,
        };
        batch.validate()?;
        Ok(batch)
    }

    /// A stable identifier of this batch: experiment, source, run and event range.
    ///
    /// Used as `Nats-Msg-Id`, so republishing the same events deduplicates.
    pub fn id(&self) -> String {
        batch_id(
            &self.experiment,
            &self.source,
            self.run,
            self.first,
            self.last,
        )
    }

    /// Checks the batch's internal consistency (counts, ordering, array sizes).
    pub fn validate(&self) -> Result<(), WireError> {
        if self.schema != SCHEMA_VERSION {
            return Err(WireError::UnsupportedSchema(self.schema.to_string()));
        }
        if self.events.is_empty() {
            return Err(WireError::Invalid("batch has no events".into()));
        }
        if self.count as usize != self.events.len() {
            return Err(WireError::Invalid(format!(
                "batch declares {} events but holds {}",
                self.count,
                self.events.len()
            )));
        }
        let first = self.events[0].index;
        let last = self.events[self.events.len() - 1].index;
        if first != self.first || last != self.last {
            return Err(WireError::Invalid(format!(
                "batch declares events {}..={} but holds {first}..={last}",
                self.first, self.last
            )));
        }
        if self.events.windows(2).any(|w| w[0].index >= w[1].index) {
            return Err(WireError::Invalid(
                "event indices are not strictly increasing".into(),
            ));
        }
        for event in &self.events {
            for (name, array) in &event.arrays {
                array.validate().map_err(|e| {
                    WireError::Invalid(format!("event {} field {name}: {e}", event.index))
                })?;
            }
        }
        Ok(())
    }

    /// Sum of all array bytes and an estimate of scalar bytes.
    pub fn payload_bytes(&self) -> usize {
        self.events.iter().map(Event::payload_bytes).sum()
    }

    /// Applies the byte shuffle to every integer array wider than one byte.
    pub fn shuffle_integer_arrays(&mut self) {
        for array in self.events.iter_mut().flat_map(|e| e.arrays.values_mut()) {
            if array.dtype.is_integer() {
                array.shuffle();
            }
        }
    }

    /// Filters every unfiltered array as `policy` chooses for its name and dtype.
    pub fn apply_filters(&mut self, policy: &FilterPolicy) -> Result<(), WireError> {
        for event in &mut self.events {
            for (name, array) in event.arrays.iter_mut() {
                array.apply_filter(policy.choose(name, array.dtype))?;
            }
        }
        Ok(())
    }

    /// Removes filters from every array.
    pub fn remove_filters(&mut self) -> Result<(), WireError> {
        for event in &mut self.events {
            for (name, array) in event.arrays.iter_mut() {
                array.remove_filter().map_err(|e| {
                    WireError::Invalid(format!("event {} field {name}: {e}", event.index))
                })?;
            }
        }
        Ok(())
    }
}

impl Event {
    /// Approximate in-memory size of the event's data (array bytes plus scalars).
    pub fn payload_bytes(&self) -> usize {
        let arrays: usize = self
            .arrays
            .iter()
            .map(|(k, a)| k.len() + a.data.len() + 8 * a.shape.len() + 16)
            .sum();
        let scalars: usize = self
            .scalars
            .iter()
            .map(|(k, v)| {
                k.len()
                    + match v {
                        Scalar::Text(s) => s.len() + 2,
                        _ => 9,
                    }
            })
            .sum();
        arrays + scalars + 24
    }
}

/// Formats a batch identifier; see [`Batch::id`].
pub fn batch_id(experiment: &str, source: &str, run: u32, first: u64, last: u64) -> String {
    format!("{experiment}/{source}/r{run}/{first}-{last}")
}

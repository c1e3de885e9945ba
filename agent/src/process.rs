//! Processing steps applied to each event before batching.
//!
//! Order: region-of-interest crop, n x n binning (sum), threshold, dtype
//! conversion; then field selection (include/exclude). Image steps act on the
//! last two axes of array fields.

use lclstream_nats::wire::{Array, DType, Event, Filter};

use crate::config::ProcessingConfig;

/// The compiled processing steps of one source.
#[derive(Debug, Clone, Default)]
pub struct Processor {
    fields: Vec<String>,
    roi: Option<[u64; 4]>,
    bin: Option<u64>,
    threshold: Option<f64>,
    dtype: Option<DType>,
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Processor {
    /// Compiles a processing configuration (already validated).
    pub fn new(config: &ProcessingConfig) -> Processor {
        Processor {
            fields: config.fields.clone(),
            roi: config.roi,
            bin: config.bin.filter(|&b| b > 1),
            threshold: config.threshold,
            dtype: config.dtype.as_deref().and_then(DType::parse),
            include: config.include.clone(),
            exclude: config.exclude.clone(),
        }
    }

    /// Whether any image step is configured.
    fn has_image_steps(&self) -> bool {
        self.roi.is_some() || self.bin.is_some() || self.threshold.is_some() || self.dtype.is_some()
    }

    /// Applies every step to `event`; the error names the field.
    pub fn apply(&self, event: &mut Event) -> Result<(), String> {
        if !self.include.is_empty() {
            event.scalars.retain(|k, _| self.include.contains(k));
            event.arrays.retain(|k, _| self.include.contains(k));
        }
        for name in &self.exclude {
            event.scalars.remove(name);
            event.arrays.remove(name);
        }
        if !self.has_image_steps() {
            return Ok(());
        }
        for (name, array) in event.arrays.iter_mut() {
            let selected = if self.fields.is_empty() {
                array.shape.len() >= 2
            } else {
                self.fields.contains(name)
            };
            if selected {
                self.apply_array(array)
                    .map_err(|e| format!("event {} field {name}: {e}", event.index))?;
            }
        }
        Ok(())
    }

    fn apply_array(&self, array: &mut Array) -> Result<(), String> {
        array.remove_filter().map_err(|e| e.to_string())?;
        let mut shape = array.shape.clone();
        let mut values = to_f64(array);
        let mut dtype = array.dtype;
        if (self.roi.is_some() || self.bin.is_some()) && shape.len() < 2 {
            return Err(format!(
                "crop and binning need 2 or more axes, the array has shape {shape:?}"
            ));
        }
        if let Some(roi) = self.roi {
            (shape, values) = crop(&shape, &values, roi)?;
        }
        if let Some(n) = self.bin {
            (shape, values) = bin(&shape, &values, n)?;
            dtype = match dtype {
                DType::U8 | DType::U16 => DType::U32,
                DType::I8 | DType::I16 => DType::I32,
                other => other,
            };
        }
        if let Some(t) = self.threshold {
            for v in values.iter_mut() {
                if *v < t {
                    *v = 0.0;
                }
            }
        }
        if let Some(d) = self.dtype {
            dtype = d;
        }
        *array = Array {
            dtype,
            shape,
            data: from_f64(&values, dtype),
            filter: Filter::None,
        };
        Ok(())
    }
}

/// Splits a shape into (planes, height, width) over its last two axes.
fn planes(shape: &[u64]) -> (usize, usize, usize) {
    let n = shape.len();
    let planes: u64 = shape[..n - 2].iter().product();
    (
        planes as usize,
        shape[n - 2] as usize,
        shape[n - 1] as usize,
    )
}

/// Crops the last two axes to `[y0, y1, x0, x1]` (half-open).
pub fn crop(shape: &[u64], values: &[f64], roi: [u64; 4]) -> Result<(Vec<u64>, Vec<f64>), String> {
    let [y0, y1, x0, x1] = roi;
    let (p, h, w) = planes(shape);
    if y1 as usize > h || x1 as usize > w {
        return Err(format!(
            "roi [{y0}, {y1}, {x0}, {x1}] exceeds the {h} x {w} frame"
        ));
    }
    let (oh, ow) = ((y1 - y0) as usize, (x1 - x0) as usize);
    let mut out = Vec::with_capacity(p * oh * ow);
    for plane in 0..p {
        for y in y0 as usize..y1 as usize {
            let row = plane * h * w + y * w;
            out.extend_from_slice(&values[row + x0 as usize..row + x1 as usize]);
        }
    }
    let mut new_shape = shape.to_vec();
    let n = new_shape.len();
    new_shape[n - 2] = oh as u64;
    new_shape[n - 1] = ow as u64;
    Ok((new_shape, out))
}

/// Sums n x n blocks of the last two axes (a remainder row or column is dropped).
pub fn bin(shape: &[u64], values: &[f64], n: u64) -> Result<(Vec<u64>, Vec<f64>), String> {
    let (p, h, w) = planes(shape);
    let n = n as usize;
    let (oh, ow) = (h / n, w / n);
    if oh == 0 || ow == 0 {
        return Err(format!(
            "binning {n} x {n} is larger than the {h} x {w} frame"
        ));
    }
    let mut out = vec![0.0; p * oh * ow];
    for plane in 0..p {
        for y in 0..oh * n {
            for x in 0..ow * n {
                out[plane * oh * ow + (y / n) * ow + x / n] += values[plane * h * w + y * w + x];
            }
        }
    }
    let mut new_shape = shape.to_vec();
    let len = new_shape.len();
    new_shape[len - 2] = oh as u64;
    new_shape[len - 1] = ow as u64;
    Ok((new_shape, out))
}

/// Reads an unfiltered array's elements as `f64`.
pub fn to_f64(array: &Array) -> Vec<f64> {
    let d = &array.data;
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            d.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")) as f64)
                .collect()
        };
    }
    match array.dtype {
        DType::U8 => d.iter().map(|&v| v as f64).collect(),
        DType::I8 => d.iter().map(|&v| v as i8 as f64).collect(),
        DType::U16 => conv!(u16, 2),
        DType::I16 => conv!(i16, 2),
        DType::U32 => conv!(u32, 4),
        DType::I32 => conv!(i32, 4),
        DType::U64 => conv!(u64, 8),
        DType::I64 => conv!(i64, 8),
        DType::F32 => conv!(f32, 4),
        DType::F64 => conv!(f64, 8),
    }
}

/// Writes values as little-endian `dtype` elements, saturating (NaN becomes 0 for integers).
pub fn from_f64(values: &[f64], dtype: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    macro_rules! conv {
        ($t:ty) => {
            for &v in values {
                out.extend_from_slice(&(v as $t).to_le_bytes());
            }
        };
    }
    match dtype {
        DType::U8 => conv!(u8),
        DType::I8 => conv!(i8),
        DType::U16 => conv!(u16),
        DType::I16 => conv!(i16),
        DType::U32 => conv!(u32),
        DType::I32 => conv!(i32),
        DType::U64 => conv!(u64),
        DType::I64 => conv!(i64),
        DType::F32 => conv!(f32),
        DType::F64 => conv!(f64),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lclstream_nats::wire::Scalar;

    fn event() -> Event {
        let mut e = Event {
            index: 1,
            ..Default::default()
        };
        let pixels: Vec<u16> = (0..16).collect();
        e.arrays
            .insert("img".into(), Array::from_u16(vec![4, 4], &pixels).unwrap());
        e.arrays.insert(
            "peaks".into(),
            Array::from_f32(vec![3], &[1.0, 2.0, 3.0]).unwrap(),
        );
        e.scalars.insert("energy".into(), Scalar::Float(9500.0));
        e.scalars.insert("pulse_id".into(), Scalar::Int(7));
        e
    }

    #[test]
    fn crop_bin_threshold_and_convert_in_order() {
        let config = ProcessingConfig {
            roi: Some([0, 4, 0, 4]),
            bin: Some(2),
            threshold: Some(20.0),
            dtype: Some("f32".into()),
            ..Default::default()
        };
        let mut e = event();
        Processor::new(&config).apply(&mut e).unwrap();
        let img = &e.arrays["img"];
        assert_eq!(img.shape, vec![2, 2]);
        assert_eq!(img.dtype, DType::F32);
        // Blocks: [0,1,4,5]=10 -> below threshold, [2,3,6,7]=18 -> 0, [8,9,12,13]=42, [10,11,14,15]=50.
        assert_eq!(to_f64(img), vec![0.0, 0.0, 42.0, 50.0]);
        // The 1-D peak table is not an image and is left alone.
        assert_eq!(e.arrays["peaks"].dtype, DType::F32);
        assert_eq!(e.arrays["peaks"].shape, vec![3]);
    }

    #[test]
    fn crop_selects_the_region() {
        let config = ProcessingConfig {
            roi: Some([1, 3, 2, 4]),
            ..Default::default()
        };
        let mut e = event();
        Processor::new(&config).apply(&mut e).unwrap();
        let img = &e.arrays["img"];
        assert_eq!(img.shape, vec![2, 2]);
        assert_eq!(img.dtype, DType::U16);
        assert_eq!(img.to_u16().unwrap(), vec![6, 7, 10, 11]);
    }

    #[test]
    fn binning_widens_small_integers_and_conversion_saturates() {
        let mut e = Event::default();
        e.arrays.insert(
            "img".into(),
            Array::from_u16(vec![2, 2], &[u16::MAX; 4]).unwrap(),
        );
        let config = ProcessingConfig {
            bin: Some(2),
            ..Default::default()
        };
        Processor::new(&config).apply(&mut e).unwrap();
        assert_eq!(e.arrays["img"].dtype, DType::U32);
        assert_eq!(to_f64(&e.arrays["img"]), vec![4.0 * 65535.0]);
        let config = ProcessingConfig {
            dtype: Some("u16".into()),
            ..Default::default()
        };
        Processor::new(&config).apply(&mut e).unwrap();
        assert_eq!(e.arrays["img"].to_u16().unwrap(), vec![u16::MAX]);
    }

    #[test]
    fn roi_outside_the_frame_names_the_field() {
        let config = ProcessingConfig {
            roi: Some([0, 8, 0, 2]),
            ..Default::default()
        };
        let err = Processor::new(&config).apply(&mut event()).unwrap_err();
        assert!(err.contains("field img"), "{err}");
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn include_and_exclude_select_fields() {
        let config = ProcessingConfig {
            include: vec!["img".into(), "energy".into(), "pulse_id".into()],
            exclude: vec!["pulse_id".into()],
            ..Default::default()
        };
        let mut e = event();
        Processor::new(&config).apply(&mut e).unwrap();
        assert_eq!(e.arrays.keys().collect::<Vec<_>>(), vec!["img"]);
        assert_eq!(e.scalars.keys().collect::<Vec<_>>(), vec!["energy"]);
    }
}

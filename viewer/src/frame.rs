//! Array fields as images: element conversion, downsampling and `.npy` export.

use lclstream_nats::wire::{Array, DType};

/// Largest side of the preview sent to browsers; larger frames are binned.
pub const MAX_PREVIEW_SIDE: usize = 512;

/// An array field's values as f32, or `None` when it is not an image-like
/// array (fewer than two dimensions, or inconsistent data).
pub fn to_f32(array: &Array) -> Option<(usize, usize, Vec<f32>)> {
    if array.shape.len() < 2 {
        return None;
    }
    let mut array = array.clone();
    array.validate().ok()?;
    array.remove_filter().ok()?;
    // Leading dimensions (panels, modules) are stacked vertically.
    let width = *array.shape.last()? as usize;
    let height = array.shape[..array.shape.len() - 1].iter().product::<u64>() as usize;
    let d = &array.data;
    let values: Vec<f32> = match array.dtype {
        DType::U8 => d.iter().map(|&v| v as f32).collect(),
        DType::I8 => d.iter().map(|&v| v as i8 as f32).collect(),
        DType::U16 => d
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f32)
            .collect(),
        DType::I16 => d
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32)
            .collect(),
        DType::U32 => d
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
            .collect(),
        DType::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
            .collect(),
        DType::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect(),
        DType::U64 => d
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
            .collect(),
        DType::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
            .collect(),
        DType::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()) as f32)
            .collect(),
    };
    (values.len() == width * height && width > 0 && height > 0).then_some((width, height, values))
}

/// Bins a frame by the smallest integer factor that brings both sides to at
/// most [`MAX_PREVIEW_SIDE`]; each preview pixel is the mean of its bin
/// (NaNs skipped, so a bad pixel does not blank its neighbours).
pub fn downsample(width: usize, height: usize, values: &[f32]) -> (usize, usize, Vec<f32>) {
    let factor = width.max(height).div_ceil(MAX_PREVIEW_SIDE).max(1);
    if factor == 1 {
        return (width, height, values.to_vec());
    }
    let (w, h) = (width.div_ceil(factor), height.div_ceil(factor));
    let mut sum = vec![0f64; w * h];
    let mut count = vec![0u32; w * h];
    for y in 0..height {
        let row = &values[y * width..(y + 1) * width];
        for (x, &v) in row.iter().enumerate() {
            if v.is_finite() {
                let i = (y / factor) * w + x / factor;
                sum[i] += v as f64;
                count[i] += 1;
            }
        }
    }
    let out = sum
        .iter()
        .zip(&count)
        .map(|(&s, &c)| {
            if c == 0 {
                f32::NAN
            } else {
                (s / c as f64) as f32
            }
        })
        .collect();
    (w, h, out)
}

/// Sum of the finite values inside a rectangle (clipped to the frame).
pub fn roi_sum(width: usize, height: usize, values: &[f32], roi: [usize; 4]) -> f64 {
    let [x0, y0, x1, y1] = roi;
    let (x1, y1) = (x1.min(width), y1.min(height));
    let mut total = 0f64;
    for y in y0.min(y1)..y1 {
        for &v in &values[y * width + x0.min(x1)..y * width + x1] {
            if v.is_finite() {
                total += v as f64;
            }
        }
    }
    total
}

/// The array as a NumPy `.npy` file (format 1.0): magic, header dict padded
/// with spaces to a multiple of 64 bytes, then the little-endian data.
/// `None` for an array whose data is not a whole number of elements.
pub fn to_npy(array: &Array) -> Option<Vec<u8>> {
    let mut array = array.clone();
    array.validate().ok()?;
    array.remove_filter().ok()?;
    let shape = match array.shape.len() {
        1 => format!("({},)", array.shape[0]),
        _ => format!(
            "({})",
            array
                .shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        array.dtype.numpy_name()
    );
    // 10 bytes of preamble + header + '\n' must be a multiple of 64.
    let total = (10 + header.len() + 1).div_ceil(64) * 64;
    header.push_str(&" ".repeat(total - 10 - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + array.data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&array.data);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_bins_large_frames_to_the_preview_side() {
        let (w, h) = (1030, 20);
        let values: Vec<f32> = (0..w * h).map(|i| (i % w) as f32).collect();
        let (pw, ph, p) = downsample(w, h, &values);
        assert_eq!((pw, ph), (344, 7), "factor 3 for a 1030-wide frame");
        assert_eq!(p[0], 1.0, "mean of columns 0..3");
        let mut with_nan = values.clone();
        with_nan[0] = f32::NAN;
        assert!(downsample(w, h, &with_nan).2[0].is_finite());
    }

    #[test]
    fn npy_header_is_padded_and_describes_the_array() {
        let array = Array::from_u16(vec![2, 3], &[1, 2, 3, 4, 5, 65535]).unwrap();
        let npy = to_npy(&array).unwrap();
        assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&npy[10..10 + len]).unwrap();
        assert!(header.contains("'descr': '<u2'") && header.contains("'shape': (2, 3)"));
        assert_eq!(&npy[10 + len..], &array.data[..]);
    }

    #[test]
    fn big_frames_and_odd_dtypes_convert() {
        let array = Array::new(
            DType::I16,
            vec![2, 2],
            [-1i16, 2, 3, 4]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )
        .unwrap();
        let (w, h, v) = to_f32(&array).unwrap();
        assert_eq!((w, h), (2, 2));
        assert_eq!(v, vec![-1.0, 2.0, 3.0, 4.0]);
        assert_eq!(roi_sum(w, h, &v, [0, 0, 1, 2]), 2.0);
        let vector = Array::from_f32(vec![3], &[1.0, 2.0, 3.0]).unwrap();
        assert!(to_f32(&vector).is_none(), "a 1-d array is not an image");
    }
}

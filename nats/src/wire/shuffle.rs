//! Byte shuffle pre-filter (the same transform as HDF5's and Blosc's shuffle).
//!
//! Detector images are mostly small integers: their high bytes are almost all
//! zero. Grouping byte 0 of every element, then byte 1, ... turns those high
//! bytes into long zero runs that LZ4 compresses far better.

/// Shuffles `data` made of `item_size`-byte elements.
///
/// Trailing bytes that do not fill a whole element are copied unchanged.
pub fn shuffle(data: &[u8], item_size: usize) -> Vec<u8> {
    match item_size {
        2 => shuffle_fixed::<2>(data),
        4 => shuffle_fixed::<4>(data),
        8 => shuffle_fixed::<8>(data),
        _ => data.to_vec(),
    }
}

/// Inverts [`shuffle`].
pub fn unshuffle(data: &[u8], item_size: usize) -> Vec<u8> {
    match item_size {
        2 => unshuffle_fixed::<2>(data),
        4 => unshuffle_fixed::<4>(data),
        8 => unshuffle_fixed::<8>(data),
        _ => data.to_vec(),
    }
}

/// Byte-shuffles whole elements of `input` into `output` (same length, a
/// multiple of `item_size`), for any element size.
pub(crate) fn shuffle_into(input: &[u8], output: &mut [u8], item_size: usize) {
    let n = input.len() / item_size;
    match item_size {
        2 => scatter_fixed::<2>(input, output),
        4 => scatter_fixed::<4>(input, output),
        8 => scatter_fixed::<8>(input, output),
        _ => {
            for (i, element) in input.chunks_exact(item_size).enumerate() {
                for (b, &byte) in element.iter().enumerate() {
                    output[b * n + i] = byte;
                }
            }
        }
    }
}

/// Inverts [`shuffle_into`].
pub(crate) fn unshuffle_into(input: &[u8], output: &mut [u8], item_size: usize) {
    let n = input.len() / item_size;
    match item_size {
        2 => gather_fixed::<2>(input, output),
        4 => gather_fixed::<4>(input, output),
        8 => gather_fixed::<8>(input, output),
        _ => {
            for (i, element) in output.chunks_exact_mut(item_size).enumerate() {
                for (b, byte) in element.iter_mut().enumerate() {
                    *byte = input[b * n + i];
                }
            }
        }
    }
}

// Whole elements only; planes of `n` bytes each.
// Iterators instead of indexing: no bounds checks, so the loops vectorise.
fn scatter_fixed<const N: usize>(input: &[u8], output: &mut [u8]) {
    let n = input.len() / N;
    if N == 2 {
        let (low, high) = output[..2 * n].split_at_mut(n);
        for ((l, h), element) in low.iter_mut().zip(high).zip(input.chunks_exact(2)) {
            *l = element[0];
            *h = element[1];
        }
        return;
    }
    let mut planes: [&mut [u8]; N] = split_planes(output, n);
    for (i, element) in input.chunks_exact(N).enumerate() {
        for (plane, &byte) in planes.iter_mut().zip(element) {
            plane[i] = byte;
        }
    }
}

fn gather_fixed<const N: usize>(input: &[u8], output: &mut [u8]) {
    let n = input.len() / N;
    if N == 2 {
        let (low, high) = input[..2 * n].split_at(n);
        for ((element, &l), &h) in output.chunks_exact_mut(2).zip(low).zip(high) {
            element[0] = l;
            element[1] = h;
        }
        return;
    }
    let planes: [&[u8]; N] = std::array::from_fn(|b| &input[b * n..(b + 1) * n]);
    for (i, element) in output.chunks_exact_mut(N).enumerate() {
        for (byte, plane) in element.iter_mut().zip(&planes) {
            *byte = plane[i];
        }
    }
}

fn split_planes<const N: usize>(output: &mut [u8], n: usize) -> [&mut [u8]; N] {
    let mut rest = &mut output[..N * n];
    std::array::from_fn(|_| {
        let (plane, tail) = std::mem::take(&mut rest).split_at_mut(n);
        rest = tail;
        plane
    })
}

// Fixed element sizes let the compiler unroll the inner loop; one pass over
// the input writes all byte planes.
fn shuffle_fixed<const N: usize>(data: &[u8]) -> Vec<u8> {
    let n = data.len() / N;
    let mut out = vec![0u8; data.len()];
    let (planes, tail) = out.split_at_mut(n * N);
    if N == 2 {
        let (low, high) = planes.split_at_mut(n);
        for ((l, h), element) in low
            .iter_mut()
            .zip(high.iter_mut())
            .zip(data.chunks_exact(2))
        {
            *l = element[0];
            *h = element[1];
        }
    } else {
        for (i, element) in data.chunks_exact(N).enumerate() {
            for (b, &byte) in element.iter().enumerate() {
                planes[b * n + i] = byte;
            }
        }
    }
    tail.copy_from_slice(&data[n * N..]);
    out
}

fn unshuffle_fixed<const N: usize>(data: &[u8]) -> Vec<u8> {
    let n = data.len() / N;
    let mut out = vec![0u8; data.len()];
    let (elements, tail) = out.split_at_mut(n * N);
    if N == 2 {
        let (low, high) = data[..2 * n].split_at(n);
        for ((element, &l), &h) in elements.chunks_exact_mut(2).zip(low).zip(high) {
            element[0] = l;
            element[1] = h;
        }
    } else {
        for (i, element) in elements.chunks_exact_mut(N).enumerate() {
            for (b, byte) in element.iter_mut().enumerate() {
                *byte = data[b * n + i];
            }
        }
    }
    tail.copy_from_slice(&data[n * N..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_bytes_by_significance() {
        let data = [1u8, 0, 2, 0, 3, 0];
        assert_eq!(shuffle(&data, 2), vec![1, 2, 3, 0, 0, 0]);
        assert_eq!(unshuffle(&shuffle(&data, 2), 2), data);
    }

    #[test]
    fn round_trips_every_width() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1003).collect();
        for width in [1, 2, 3, 4, 8] {
            assert_eq!(
                unshuffle(&shuffle(&data, width), width),
                data,
                "width {width}"
            );
        }
        assert_eq!(shuffle(&[], 4), Vec::<u8>::new());
    }

    #[test]
    fn keeps_trailing_partial_element() {
        let data = [1u8, 2, 3, 4, 5];
        assert_eq!(unshuffle(&shuffle(&data, 4), 4), data);
        assert_eq!(shuffle(&data, 4)[4], 5);
    }
}

//! Byte shuffle pre-filter (the same transform as HDF5's and Blosc's shuffle).
//!
//! Detector images are mostly small integers: their high bytes are almost all
//! zero. Grouping byte 0 of every element, then byte 1, ... turns those high
//! bytes into long zero runs that LZ4 compresses far better.

/// Shuffles `data` made of `item_size`-byte elements.
///
/// Trailing bytes that do not fill a whole element are copied unchanged.
pub fn shuffle(data: &[u8], item_size: usize) -> Vec<u8> {
    if item_size <= 1 {
        return data.to_vec();
    }
    let n = data.len() / item_size;
    let mut out = vec![0u8; data.len()];
    for (i, element) in data.chunks_exact(item_size).enumerate() {
        for (b, &byte) in element.iter().enumerate() {
            out[b * n + i] = byte;
        }
    }
    let tail = n * item_size;
    out[tail..].copy_from_slice(&data[tail..]);
    out
}

/// Inverts [`shuffle`].
pub fn unshuffle(data: &[u8], item_size: usize) -> Vec<u8> {
    if item_size <= 1 {
        return data.to_vec();
    }
    let n = data.len() / item_size;
    let mut out = vec![0u8; data.len()];
    for (i, element) in out.chunks_exact_mut(item_size).enumerate() {
        for (b, byte) in element.iter_mut().enumerate() {
            *byte = data[b * n + i];
        }
    }
    let tail = n * item_size;
    out[tail..].copy_from_slice(&data[tail..]);
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
    fn keeps_trailing_partial_element() {
        let data = [1u8, 2, 3, 4, 5];
        assert_eq!(unshuffle(&shuffle(&data, 4), 4), data);
        assert_eq!(shuffle(&data, 4)[4], 5);
    }
}

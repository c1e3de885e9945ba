//! Bitshuffle pre-filter, bit for bit the transform of the bitshuffle library
//! (K. Masui et al., used by HDF5 filter 32008 and Dectris "bslz4").
//!
//! The elements are cut into blocks of [`block_elements`] elements (8192
//! bytes' worth, a multiple of 8). Within a block of `n` elements of `s`
//! bytes the output is `8 * s` bit planes of `n / 8` bytes: plane `8 * j + k`
//! holds bit `k` of byte `j` (memory order) of every element, element `8 * m +
//! b` at bit `b` of byte `m`. A last block that is not full is transposed
//! over its largest multiple of 8 elements; the remaining 0..7 elements are
//! copied unchanged at the end. Bit planes of detector pixels are mostly all
//! zero (high bits) or all noise (low bits), which LZ4 then compresses far
//! better than byte planes.
//!
//! The transform only moves bits, so it is the same for any byte order: a
//! big-endian array is transposed as its bytes lie in memory, as the library
//! does.
//!
//! Implementation: each 8 x 8 bit matrix is transposed in a `u64` (three
//! masked swap stages), and 8 of them at a time are transposed again as an
//! 8 x 8 byte matrix so that every bit plane receives whole `u64` words. The
//! loops work on fixed `[u64; 8]` groups the compiler unrolls and vectorises.

use super::shuffle;
use super::WireError;

/// Target block size of the bitshuffle library, in bytes.
const TARGET_BLOCK_BYTES: usize = 8192;
/// Smallest block the library chooses, in elements.
const MIN_BLOCK_ELEMENTS: usize = 128;

/// Block size in elements that the bitshuffle library uses for `elem_size`
/// by default (`bshuf_default_block_size`): 8192 bytes' worth of elements
/// rounded down to a multiple of 8, at least 128.
pub fn block_elements(elem_size: usize) -> usize {
    let elements = TARGET_BLOCK_BYTES / elem_size.max(1);
    ((elements / 8) * 8).max(MIN_BLOCK_ELEMENTS)
}

/// Bit-shuffles `data`, made of `elem_size`-byte elements, with the default block size.
///
/// Fails when `data` is not a whole number of elements or `elem_size` is 0.
pub fn bitshuffle(data: &[u8], elem_size: usize) -> Result<Vec<u8>, WireError> {
    let mut out = data.to_vec();
    bitshuffle_in_place(&mut out, elem_size)?;
    Ok(out)
}

/// Inverts [`bitshuffle`].
pub fn bitunshuffle(data: &[u8], elem_size: usize) -> Result<Vec<u8>, WireError> {
    let mut out = data.to_vec();
    bitunshuffle_in_place(&mut out, elem_size)?;
    Ok(out)
}

/// [`bitshuffle`] in place: no allocation beyond two blocks of scratch.
pub fn bitshuffle_in_place(data: &mut [u8], elem_size: usize) -> Result<(), WireError> {
    transform(data, elem_size, Direction::Shuffle)
}

/// [`bitunshuffle`] in place.
pub fn bitunshuffle_in_place(data: &mut [u8], elem_size: usize) -> Result<(), WireError> {
    transform(data, elem_size, Direction::Unshuffle)
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Shuffle,
    Unshuffle,
}

fn transform(data: &mut [u8], elem_size: usize, direction: Direction) -> Result<(), WireError> {
    if elem_size == 0 || !data.len().is_multiple_of(elem_size) {
        return Err(WireError::Invalid(format!(
            "bitshuffle: {} bytes are not a whole number of {elem_size}-byte elements",
            data.len()
        )));
    }
    let elements = data.len() / elem_size;
    let block = block_elements(elem_size);
    // Each block is copied out (it stays in L1 cache) and transformed back.
    let mut copy = vec![0u8; block.min(elements) * elem_size];
    let mut scratch = vec![0u8; copy.len()];
    let mut start = 0;
    while start + 8 <= elements {
        // Full blocks, then the last one rounded down to a multiple of 8 elements.
        let n = block.min(elements - start) / 8 * 8;
        let bytes = n * elem_size;
        let target = &mut data[start * elem_size..][..bytes];
        let (copy, scratch) = (&mut copy[..bytes], &mut scratch[..bytes]);
        copy.copy_from_slice(target);
        match direction {
            Direction::Shuffle => shuffle_block(copy, target, scratch, elem_size),
            Direction::Unshuffle => unshuffle_block(copy, target, scratch, elem_size),
        }
        start += n;
    }
    // Fewer than 8 trailing elements stay as they are.
    Ok(())
}

/// One block: byte planes first (byte shuffle), then each byte plane's bits.
fn shuffle_block(input: &[u8], output: &mut [u8], scratch: &mut [u8], elem_size: usize) {
    let planes: &[u8] = if elem_size == 1 {
        input
    } else {
        shuffle::shuffle_into(input, scratch, elem_size);
        scratch
    };
    let n = input.len() / elem_size;
    for (plane, rows) in planes.chunks_exact(n).zip(output.chunks_exact_mut(n)) {
        bits_to_rows(plane, rows);
    }
}

fn unshuffle_block(input: &[u8], output: &mut [u8], scratch: &mut [u8], elem_size: usize) {
    let n = input.len() / elem_size;
    if elem_size == 1 {
        rows_to_bits(input, output);
        return;
    }
    for (rows, plane) in input.chunks_exact(n).zip(scratch.chunks_exact_mut(n)) {
        rows_to_bits(rows, plane);
    }
    shuffle::unshuffle_into(scratch, output, elem_size);
}

/// Transposes one byte plane of `n` bytes (`n` a multiple of 8) into 8 bit
/// rows of `n / 8` bytes: row `k` holds bit `k` of every byte.
///
/// On x86-64, SSE2 (part of the base architecture) reads the top bit of 16
/// bytes at once (`movemask`); doubling every byte brings the next bit up.
#[cfg(target_arch = "x86_64")]
fn bits_to_rows(plane: &[u8], rows: &mut [u8]) {
    use std::arch::x86_64::{_mm_add_epi8, _mm_movemask_epi8, _mm_set_epi64x};
    let row_len = plane.len() / 8;
    let pairs = row_len / 2;
    for (q, bytes) in plane[..pairs * 16].chunks_exact(16).enumerate() {
        let (low, high) = (load(&bytes[..8]), load(&bytes[8..]));
        // SAFETY: these intrinsics only compute on values (no memory access)
        // and need SSE2, which every x86-64 CPU has (it is in the baseline
        // target, so the compiler emits SSE2 everywhere already).
        let mut v = unsafe { _mm_set_epi64x(high as i64, low as i64) };
        for k in (0..8).rev() {
            let bits = unsafe { _mm_movemask_epi8(v) } as u16;
            rows[k * row_len + 2 * q..][..2].copy_from_slice(&bits.to_le_bytes());
            v = unsafe { _mm_add_epi8(v, v) };
        }
    }
    if row_len % 2 == 1 {
        bits_to_rows_tail(plane, rows, row_len - 1);
    }
}

/// Portable [`bits_to_rows`]: 8 x 8 bit transposes in `u64`s.
#[cfg(any(not(target_arch = "x86_64"), test))]
fn bits_to_rows_portable(plane: &[u8], rows: &mut [u8]) {
    let row_len = plane.len() / 8;
    let whole = row_len / 8 * 8;
    // 64 bytes at a time: 8 words in, one word out to each row.
    for (group, bytes) in plane[..whole * 8].chunks_exact(64).enumerate() {
        let mut words: [u64; 8] = std::array::from_fn(|t| load(&bytes[t * 8..t * 8 + 8]));
        for word in &mut words {
            *word = transpose_bits(*word);
        }
        transpose_bytes(&mut words);
        for (row, word) in rows.chunks_exact_mut(row_len).zip(words) {
            row[group * 8..group * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    bits_to_rows_tail(plane, rows, whole);
}

#[cfg(not(target_arch = "x86_64"))]
use bits_to_rows_portable as bits_to_rows;

/// [`bits_to_rows`] for the 8-byte groups from `from` on, one at a time.
fn bits_to_rows_tail(plane: &[u8], rows: &mut [u8], from: usize) {
    let row_len = plane.len() / 8;
    for m in from..row_len {
        let word = transpose_bits(load(&plane[m * 8..m * 8 + 8]));
        for (row, byte) in rows.chunks_exact_mut(row_len).zip(word.to_le_bytes()) {
            row[m] = byte;
        }
    }
}

/// Inverts [`bits_to_rows`]. On x86-64 the 8 x 8 byte transposes are SSE2
/// unpacks and the bit transposes run on two words at once.
#[cfg(target_arch = "x86_64")]
fn rows_to_bits(rows: &[u8], plane: &mut [u8]) {
    use std::arch::x86_64::{
        _mm_cvtsi128_si64, _mm_cvtsi64_si128, _mm_unpackhi_epi16, _mm_unpackhi_epi32,
        _mm_unpackhi_epi64, _mm_unpacklo_epi16, _mm_unpacklo_epi32, _mm_unpacklo_epi8,
    };
    let row_len = rows.len() / 8;
    let whole = row_len / 8 * 8;
    for (group, bytes) in plane[..whole * 8].chunks_exact_mut(64).enumerate() {
        let mut r = [0u64; 8];
        for (word, row) in r.iter_mut().zip(rows.chunks_exact(row_len)) {
            *word = load(&row[group * 8..group * 8 + 8]);
        }
        // SAFETY: value-only SSE2 intrinsics (no memory access); SSE2 is in
        // every x86-64 CPU and in the baseline target.
        unsafe {
            let v = r.map(|w| _mm_cvtsi64_si128(w as i64));
            // Byte k of output word t must be byte t of row k: interleave
            // rows by bytes, then pairs, then quads.
            let a0 = _mm_unpacklo_epi8(v[0], v[1]);
            let a1 = _mm_unpacklo_epi8(v[2], v[3]);
            let a2 = _mm_unpacklo_epi8(v[4], v[5]);
            let a3 = _mm_unpacklo_epi8(v[6], v[7]);
            let b0 = _mm_unpacklo_epi16(a0, a1);
            let b1 = _mm_unpackhi_epi16(a0, a1);
            let b2 = _mm_unpacklo_epi16(a2, a3);
            let b3 = _mm_unpackhi_epi16(a2, a3);
            let words = [
                _mm_unpacklo_epi32(b0, b2),
                _mm_unpackhi_epi32(b0, b2),
                _mm_unpacklo_epi32(b1, b3),
                _mm_unpackhi_epi32(b1, b3),
            ];
            for (pair, out) in words.into_iter().zip(bytes.chunks_exact_mut(16)) {
                let x = transpose_bits_x2(pair);
                let low = _mm_cvtsi128_si64(x) as u64;
                let high = _mm_cvtsi128_si64(_mm_unpackhi_epi64(x, x)) as u64;
                out[..8].copy_from_slice(&low.to_le_bytes());
                out[8..].copy_from_slice(&high.to_le_bytes());
            }
        }
    }
    rows_to_bits_tail(rows, plane, whole);
}

/// [`transpose_bits`] on both 64-bit lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose_bits_x2(x: std::arch::x86_64::__m128i) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_set1_epi64x, _mm_slli_epi64, _mm_srli_epi64, _mm_xor_si128,
    };
    // SAFETY: value-only SSE2 intrinsics, see `rows_to_bits`.
    unsafe {
        let t = _mm_and_si128(
            _mm_xor_si128(x, _mm_srli_epi64::<7>(x)),
            _mm_set1_epi64x(0x00AA_00AA_00AA_00AA),
        );
        let x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64::<7>(t));
        let t = _mm_and_si128(
            _mm_xor_si128(x, _mm_srli_epi64::<14>(x)),
            _mm_set1_epi64x(0x0000_CCCC_0000_CCCC),
        );
        let x = _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64::<14>(t));
        let t = _mm_and_si128(
            _mm_xor_si128(x, _mm_srli_epi64::<28>(x)),
            _mm_set1_epi64x(0x0000_0000_F0F0_F0F0),
        );
        _mm_xor_si128(_mm_xor_si128(x, t), _mm_slli_epi64::<28>(t))
    }
}

/// Portable [`rows_to_bits`].
#[cfg(any(not(target_arch = "x86_64"), test))]
fn rows_to_bits_portable(rows: &[u8], plane: &mut [u8]) {
    let row_len = rows.len() / 8;
    let whole = row_len / 8 * 8;
    for (group, bytes) in plane[..whole * 8].chunks_exact_mut(64).enumerate() {
        let mut words = [0u64; 8];
        for (word, row) in words.iter_mut().zip(rows.chunks_exact(row_len)) {
            *word = load(&row[group * 8..group * 8 + 8]);
        }
        transpose_bytes(&mut words);
        for (out, word) in bytes.chunks_exact_mut(8).zip(words) {
            out.copy_from_slice(&transpose_bits(word).to_le_bytes());
        }
    }
    rows_to_bits_tail(rows, plane, whole);
}

#[cfg(not(target_arch = "x86_64"))]
use rows_to_bits_portable as rows_to_bits;

/// [`rows_to_bits`] for the 8-byte groups from `from` on, one at a time.
fn rows_to_bits_tail(rows: &[u8], plane: &mut [u8], from: usize) {
    let row_len = rows.len() / 8;
    for m in from..row_len {
        let mut bytes = [0u8; 8];
        for (byte, row) in bytes.iter_mut().zip(rows.chunks_exact(row_len)) {
            *byte = row[m];
        }
        let word = transpose_bits(u64::from_le_bytes(bytes));
        plane[m * 8..m * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
}

#[inline(always)]
fn load(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

/// Transposes the 8 x 8 bit matrix whose row `b` is byte `b` of `x` (little
/// endian): bit `k` of byte `b` becomes bit `b` of byte `k`. The library's
/// `TRANS_BIT_8X8`.
#[inline(always)]
fn transpose_bits(mut x: u64) -> u64 {
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x = x ^ t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x = x ^ t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Transposes the 8 x 8 byte matrix whose row `t` is `words[t]`: byte `k`
/// of word `t` becomes byte `t` of word `k`.
#[cfg(any(not(target_arch = "x86_64"), test))]
#[inline(always)]
fn transpose_bytes(words: &mut [u64; 8]) {
    swap_blocks(words, 1, 8, 0x00FF_00FF_00FF_00FF);
    swap_blocks(words, 2, 16, 0x0000_FFFF_0000_FFFF);
    swap_blocks(words, 4, 32, 0x0000_0000_FFFF_FFFF);
}

#[cfg(any(not(target_arch = "x86_64"), test))]
#[inline(always)]
fn swap_blocks(words: &mut [u64; 8], distance: usize, shift: u32, mask: u64) {
    for t in 0..8 {
        if t & distance == 0 {
            let (a, b) = (words[t], words[t + distance]);
            let swap = ((a >> shift) ^ b) & mask;
            words[t + distance] = b ^ swap;
            words[t] = a ^ (swap << shift);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one bit at a time.
    fn reference(data: &[u8], elem_size: usize) -> Vec<u8> {
        let elements = data.len() / elem_size;
        let block = block_elements(elem_size);
        let mut out = data.to_vec();
        let mut start = 0;
        while start + 8 <= elements {
            let n = block.min(elements - start) / 8 * 8;
            let base = start * elem_size;
            out[base..base + n * elem_size].fill(0);
            for e in 0..n {
                for j in 0..elem_size {
                    for k in 0..8 {
                        let bit = (data[base + e * elem_size + j] >> k) & 1;
                        let at = base + (8 * j + k) * (n / 8) + e / 8;
                        out[at] |= bit << (e % 8);
                    }
                }
            }
            start += n;
        }
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| {
                (i.wrapping_mul(2_654_435_761) >> 7) as u8 & if i % 3 == 0 { 0x0F } else { 0xFF }
            })
            .collect()
    }

    #[test]
    fn matches_the_bit_by_bit_definition() {
        for elem_size in [1, 2, 3, 4, 5, 8, 12, 16] {
            for elements in [0, 1, 7, 8, 9, 64, 65, 127, 200, 1000, 4096, 4103, 9000] {
                let data = sample(elements * elem_size);
                let shuffled = bitshuffle(&data, elem_size).unwrap();
                assert_eq!(
                    shuffled,
                    reference(&data, elem_size),
                    "{elements} elements of {elem_size} bytes"
                );
                assert_eq!(bitunshuffle(&shuffled, elem_size).unwrap(), data);
            }
        }
    }

    #[test]
    fn block_sizes_follow_the_library() {
        assert_eq!(block_elements(1), 8192);
        assert_eq!(block_elements(2), 4096);
        assert_eq!(block_elements(3), 2728);
        assert_eq!(block_elements(4), 2048);
        assert_eq!(block_elements(8), 1024);
        assert_eq!(block_elements(100), 128);
    }

    #[test]
    fn known_bytes_of_the_library() {
        // hdf5plugin.Bitshuffle(cname="none") on np.arange(16, dtype="<u2"):
        // bit 0 of 0..7 is 0b10101010, of 8..15 the same.
        let data: Vec<u8> = (0..16u16).flat_map(|v| v.to_le_bytes()).collect();
        let out = bitshuffle(&data, 2).unwrap();
        assert_eq!(&out[..8], &[0xAA, 0xAA, 0xCC, 0xCC, 0xF0, 0xF0, 0x00, 0xFF]);
        assert!(out[8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn ragged_input_is_an_error() {
        assert!(bitshuffle(&[1, 2, 3], 2).is_err());
        assert!(bitunshuffle(&[1, 2, 3], 0).is_err());
        assert_eq!(bitshuffle(&[], 4).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn simd_and_portable_bit_rows_agree() {
        for len in [8, 16, 24, 64, 72, 128, 4096, 4104] {
            let plane = sample(len);
            let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
            bits_to_rows(&plane, &mut a);
            bits_to_rows_portable(&plane, &mut b);
            assert_eq!(a, b, "{len} bytes");
            let (mut c, mut d) = (vec![0u8; len], vec![0u8; len]);
            rows_to_bits(&a, &mut c);
            rows_to_bits_portable(&a, &mut d);
            assert_eq!(c, d, "{len} bytes back");
            assert_eq!(c, plane);
        }
    }

    #[test]
    fn byte_transpose_is_a_transpose() {
        let mut words = [0u64; 8];
        for (t, w) in words.iter_mut().enumerate() {
            *w = u64::from_le_bytes(std::array::from_fn(|k| (t * 8 + k) as u8));
        }
        transpose_bytes(&mut words);
        for (k, w) in words.iter().enumerate() {
            for (t, byte) in w.to_le_bytes().into_iter().enumerate() {
                assert_eq!(byte as usize, t * 8 + k);
            }
        }
    }
}

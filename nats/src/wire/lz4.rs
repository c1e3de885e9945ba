//! LZ4 block decompression, in safe Rust, fast on long runs.
//!
//! Bit planes of bitshuffled detector frames are mostly zero: LZ4 encodes
//! them as long matches at offset 1 (a run of one byte). `lz4_flex` copies
//! overlapping matches one byte at a time, which made decoding of
//! bitshuffled batches LZ4-bound; here a run of one byte is a `memset` and a
//! short repeating pattern is copied in doubling slices. Any malformed input
//! is an error (every read and the output size are checked), never a panic.
//! Compression stays with `lz4_flex`; both speak the standard LZ4 block format.

/// Decompresses an LZ4 block into exactly `size` bytes.
pub fn decompress(input: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::with_capacity(size);
    let mut at = 0;
    loop {
        let token = *input.get(at).ok_or("truncated: missing token")?;
        at += 1;
        let literals = read_length(input, &mut at, usize::from(token >> 4))?;
        let end = at
            .checked_add(literals)
            .filter(|&end| end <= input.len())
            .ok_or("truncated literals")?;
        if out.len() + literals > size {
            return Err(format!("output exceeds the declared {size} bytes"));
        }
        out.extend_from_slice(&input[at..end]);
        at = end;
        if at == input.len() {
            break;
        }
        let offset = match input.get(at..at + 2) {
            Some(b) => usize::from(u16::from_le_bytes([b[0], b[1]])),
            None => return Err("truncated match offset".into()),
        };
        at += 2;
        let length = read_length(input, &mut at, usize::from(token & 15))? + 4;
        if offset == 0 || offset > out.len() {
            return Err(format!(
                "match offset {offset} outside the {} bytes decoded",
                out.len()
            ));
        }
        if out.len() + length > size {
            return Err(format!("output exceeds the declared {size} bytes"));
        }
        copy_match(&mut out, offset, length);
    }
    if out.len() != size {
        return Err(format!(
            "declared size {size} but {} bytes decompressed",
            out.len()
        ));
    }
    Ok(out)
}

/// A 4-bit length, extended by bytes while they are 255.
fn read_length(input: &[u8], at: &mut usize, nibble: usize) -> Result<usize, String> {
    let mut length = nibble;
    if nibble == 15 {
        loop {
            let byte = *input.get(*at).ok_or("truncated length")?;
            *at += 1;
            length = length
                .checked_add(usize::from(byte))
                .ok_or("length overflows")?;
            if byte != 255 {
                break;
            }
        }
    }
    Ok(length)
}

/// Appends `length` bytes starting `offset` bytes back (`1 <= offset <= len`).
fn copy_match(out: &mut Vec<u8>, offset: usize, length: usize) {
    let start = out.len() - offset;
    if offset >= length {
        out.extend_from_within(start..start + length);
    } else if offset == 1 {
        let byte = out[start];
        out.resize(out.len() + length, byte);
    } else {
        // The pattern repeats: copy it whole, doubling each time.
        let mut left = length;
        let mut chunk = offset;
        while left > 0 {
            let n = chunk.min(left);
            out.extend_from_within(start..start + n);
            left -= n;
            chunk *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_lz4_flex_encodes() {
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![7],
            vec![0; 100_000],
            b"abcabcabcabcabcabcabcabcabcabcabcabcabcxyz".to_vec(),
        ];
        let mut x = 1u64;
        let noise: Vec<u8> = (0..50_000)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if i % 1000 < 600 {
                    0
                } else {
                    (x >> 60) as u8
                }
            })
            .collect();
        cases.push(noise);
        for data in cases {
            let compressed = lz4_flex::compress(&data);
            assert_eq!(decompress(&compressed, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        let data = vec![3u8; 5000];
        let compressed = lz4_flex::compress(&data);
        for cut in 0..compressed.len() {
            assert!(decompress(&compressed[..cut], data.len()).is_err(), "cut {cut}");
        }
        assert!(decompress(&compressed, data.len() - 1).is_err());
        assert!(decompress(&compressed, data.len() + 1).is_err());
        // Offset 0 and an offset before the start.
        assert!(decompress(&[0x10, b'a', 0, 0], 10).is_err());
        assert!(decompress(&[0x10, b'a', 2, 0], 10).is_err());
    }
}

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
    let mut out = vec![0u8; size];
    let mut pos = 0;
    let mut at = 0;
    loop {
        let token = *input.get(at).ok_or("truncated: missing token")?;
        at += 1;
        let literals = read_length(input, &mut at, usize::from(token >> 4))?;
        // Short literals: one fixed 16-byte copy when both sides have room
        // (the bytes past the literals are overwritten later or are zeros).
        if literals <= 16 && at + 16 <= input.len() && pos + 16 <= size {
            copy16(&input[at..at + 16], &mut out[pos..pos + 16]);
        } else {
            let end = at
                .checked_add(literals)
                .filter(|&end| end <= input.len())
                .ok_or("truncated literals")?;
            if pos + literals > size {
                return Err(format!("output exceeds the declared {size} bytes"));
            }
            out[pos..pos + literals].copy_from_slice(&input[at..end]);
        }
        if at + literals > input.len() || pos + literals > size {
            return Err("truncated literals".into());
        }
        at += literals;
        pos += literals;
        if at == input.len() {
            break;
        }
        let offset = match input.get(at..at + 2) {
            Some(b) => usize::from(u16::from_le_bytes([b[0], b[1]])),
            None => return Err("truncated match offset".into()),
        };
        at += 2;
        let length = read_length(input, &mut at, usize::from(token & 15))? + 4;
        if offset == 0 || offset > pos {
            return Err(format!(
                "match offset {offset} outside the {pos} bytes decoded"
            ));
        }
        if pos + length > size {
            return Err(format!("output exceeds the declared {size} bytes"));
        }
        copy_match(&mut out, pos, offset, length);
        pos += length;
    }
    if pos != size {
        return Err(format!("declared size {size} but {pos} bytes decompressed"));
    }
    // Bytes a wild copy wrote past the end of the data were all overwritten:
    // every byte below `pos` was written in order.
    Ok(out)
}

/// A fixed-size copy the compiler turns into one 16-byte move (a slice
/// `copy_from_slice` of unknown length becomes a `memmove` call).
#[inline(always)]
fn copy16(from: &[u8], to: &mut [u8]) {
    let mut chunk = [0u8; 16];
    chunk.copy_from_slice(&from[..16]);
    to[..16].copy_from_slice(&chunk);
}

/// A 4-bit length, extended by bytes while they are 255.
#[inline(always)]
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

/// Writes at `pos` the `length` bytes starting `offset` bytes back, as LZ4
/// defines it (byte by byte forward, so a short offset repeats a pattern).
/// The caller checked `1 <= offset <= pos` and `pos + length <= out.len()`.
#[inline(always)]
fn copy_match(out: &mut [u8], pos: usize, offset: usize, length: usize) {
    let start = pos - offset;
    if offset >= 16 && length <= 32 && pos + 32 <= out.len() {
        // Two fixed 16-byte copies; the second may read what the first wrote,
        // which is what LZ4 means.
        let (head, tail) = out.split_at_mut(pos);
        copy16(&head[start..], tail);
        if length > 16 {
            // Reads up to 16 bytes past `start + 16`, some of which the first
            // copy may have just written: what LZ4 means by an overlap.
            let (head, tail) = out.split_at_mut(pos + 16);
            copy16(&head[start + 16..], tail);
        }
    } else if offset >= length {
        out.copy_within(start..start + length, pos);
    } else if offset == 1 {
        let byte = out[start];
        out[pos..pos + length].fill(byte);
    } else {
        // The pattern repeats: copy it whole, doubling each time.
        let mut done = 0;
        let mut chunk = offset;
        while done < length {
            let n = chunk.min(length - done);
            out.copy_within(start..start + n, pos + done);
            done += n;
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
            assert!(
                decompress(&compressed[..cut], data.len()).is_err(),
                "cut {cut}"
            );
        }
        assert!(decompress(&compressed, data.len() - 1).is_err());
        assert!(decompress(&compressed, data.len() + 1).is_err());
        // Offset 0 and an offset before the start.
        assert!(decompress(&[0x10, b'a', 0, 0], 10).is_err());
        assert!(decompress(&[0x10, b'a', 2, 0], 10).is_err());
    }
}

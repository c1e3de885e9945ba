//! Splitting an oversized message into chunks and putting it back together.
//!
//! Batches are bounded by bytes, but one detector frame can exceed the
//! payload limit on its own. Such a message's payload is cut into pieces of at
//! most `max_payload` bytes. Every chunk carries the full headers of the
//! whole message plus `Lclstream-Chunk: <index>/<total>` and its own
//! `Nats-Msg-Id` (`<batch id>#<index>`), so deduplication works per chunk.

use std::collections::HashMap;

use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};

use super::codec::{DecodeLimits, WireMessage};
use super::headers as h;
use super::WireError;

/// Splits `message` into chunks of at most `max_payload` bytes, setting `Nats-Msg-Id`.
///
/// A message that fits is returned alone, with `Nats-Msg-Id` set to `id`.
pub fn split(
    message: WireMessage,
    id: &str,
    max_payload: usize,
) -> Result<Vec<WireMessage>, WireError> {
    // Headers travel in every chunk and count against the server's limit too.
    let header_allowance = 1024;
    if max_payload <= header_allowance {
        return Err(WireError::Encode(format!(
            "max payload of {max_payload} bytes is too small"
        )));
    }
    let limit = max_payload - header_allowance;
    let WireMessage {
        mut headers,
        payload,
    } = message;
    if payload.len() <= limit {
        headers.insert(h::MSG_ID, id);
        return Ok(vec![WireMessage { headers, payload }]);
    }
    let total = payload.len().div_ceil(limit);
    Ok((0..total)
        .map(|index| {
            let mut chunk_headers = headers.clone();
            chunk_headers.insert(h::CHUNK, format!("{index}/{total}").as_str());
            chunk_headers.insert(h::MSG_ID, format!("{id}#{index}").as_str());
            let start = index * limit;
            let end = (start + limit).min(payload.len());
            WireMessage {
                headers: chunk_headers,
                payload: payload.slice(start..end),
            }
        })
        .collect())
}

/// Parses a `Lclstream-Chunk` header value `<index>/<total>`.
pub fn parse_chunk_header(value: &str) -> Result<(u32, u32), WireError> {
    let bad = || WireError::BadHeader {
        name: h::CHUNK,
        value: value.to_string(),
    };
    let (index, total) = value.split_once('/').ok_or_else(bad)?;
    let index: u32 = index.trim().parse().map_err(|_| bad())?;
    let total: u32 = total.trim().parse().map_err(|_| bad())?;
    if total == 0 || index >= total {
        return Err(bad());
    }
    Ok((index, total))
}

struct Partial {
    headers: HeaderMap,
    parts: Vec<Option<Bytes>>,
    received: u32,
    bytes: usize,
}

/// Collects chunks until a split message is complete, within [`DecodeLimits`].
#[derive(Default)]
pub struct Reassembler {
    limits: DecodeLimits,
    partial: HashMap<String, Partial>,
}

impl Reassembler {
    /// A reassembler bounded by `limits`.
    pub fn new(limits: DecodeLimits) -> Reassembler {
        Reassembler {
            limits,
            partial: HashMap::new(),
        }
    }

    /// Number of batches with some but not all chunks received.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Feeds one received message.
    ///
    /// Returns the complete message when `headers` has no chunk header or
    /// when this chunk completes its batch, `None` while chunks are missing.
    /// A duplicate chunk is ignored.
    pub fn push(
        &mut self,
        headers: &HeaderMap,
        payload: Bytes,
    ) -> Result<Option<WireMessage>, WireError> {
        let Some(chunk) = h::get(headers, h::CHUNK) else {
            return Ok(Some(WireMessage {
                headers: headers.clone(),
                payload,
            }));
        };
        let (index, total) = parse_chunk_header(chunk)?;
        if total > self.limits.max_chunks {
            return Err(WireError::TooLarge {
                what: "chunk count",
                declared: total as u64,
                limit: self.limits.max_chunks as u64,
            });
        }
        let id = h::get(headers, h::BATCH_ID)
            .ok_or_else(|| WireError::Chunk("chunk without Lclstream-Batch-Id".into()))?
            .to_string();
        if !self.partial.contains_key(&id) && self.partial.len() >= self.limits.max_partial_batches
        {
            return Err(WireError::Chunk(format!(
                "more than {} split batches in progress; dropping chunk of {id}",
                self.limits.max_partial_batches
            )));
        }
        let partial = self.partial.entry(id.clone()).or_insert_with(|| Partial {
            headers: headers.clone(),
            parts: vec![None; total as usize],
            received: 0,
            bytes: 0,
        });
        if partial.parts.len() != total as usize {
            let declared = partial.parts.len();
            self.partial.remove(&id);
            return Err(WireError::Chunk(format!(
                "chunks of {id} disagree on the total ({declared} vs {total})"
            )));
        }
        let slot = &mut partial.parts[index as usize];
        if slot.is_some() {
            return Ok(None);
        }
        partial.bytes += payload.len();
        if partial.bytes > self.limits.max_raw_bytes {
            let declared = partial.bytes as u64;
            self.partial.remove(&id);
            return Err(WireError::TooLarge {
                what: "split batch",
                declared,
                limit: self.limits.max_raw_bytes as u64,
            });
        }
        *slot = Some(payload);
        partial.received += 1;
        if partial.received < total {
            return Ok(None);
        }
        let partial = self.partial.remove(&id).expect("entry present");
        let mut whole = BytesMut::with_capacity(partial.bytes);
        for part in partial.parts.into_iter().flatten() {
            whole.extend_from_slice(&part);
        }
        let mut headers = partial.headers;
        remove_header(&mut headers, h::CHUNK);
        headers.insert(h::MSG_ID, id.as_str());
        Ok(Some(WireMessage {
            headers,
            payload: whole.freeze(),
        }))
    }
}

/// Returns a copy of `headers` without `name`.
fn remove_header(headers: &mut HeaderMap, name: &str) {
    let mut copy = HeaderMap::new();
    for (key, values) in headers.iter() {
        if key.as_ref() as &str != name {
            for value in values {
                copy.append(key.clone(), value.clone());
            }
        }
    }
    *headers = copy;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode, Array, Batch, Compression, EncodeOptions, Event};

    fn big_batch() -> Batch {
        // Random-ish bytes so compression cannot shrink the event below the limit.
        let mut state = 0x1234_5678u32;
        let pixels: Vec<u16> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u16
            })
            .collect();
        let mut event = Event {
            index: 5,
            ..Default::default()
        };
        event.arrays.insert(
            "frame".into(),
            Array::from_u16(vec![400, 500], &pixels).unwrap(),
        );
        Batch::new("exp", 1, "det", vec![event]).unwrap()
    }

    #[test]
    fn oversized_event_is_split_and_reassembled() {
        let batch = big_batch();
        let options = EncodeOptions {
            max_payload: 64 * 1024,
            compression: Compression::Lz4,
            filters: Default::default(),
        };
        let encoded = encode(batch.clone(), &options).unwrap();
        assert!(
            encoded.messages.len() > 3,
            "{} chunks",
            encoded.messages.len()
        );
        for m in &encoded.messages {
            assert!(m.payload.len() <= options.max_payload);
        }
        let mut reassembler = Reassembler::default();
        let mut complete = None;
        // Out of order, with a duplicate, still reassembles.
        let mut order: Vec<usize> = (0..encoded.messages.len()).rev().collect();
        order.insert(1, order[0]);
        for i in order {
            let m = &encoded.messages[i];
            if let Some(done) = reassembler.push(&m.headers, m.payload.clone()).unwrap() {
                complete = Some(done);
            }
        }
        let complete = complete.expect("reassembled");
        assert_eq!(reassembler.pending(), 0);
        assert!(h::get(&complete.headers, h::CHUNK).is_none());
        let decoded = decode(
            Some(&complete.headers),
            &complete.payload,
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(decoded, batch);
    }

    #[test]
    fn a_single_chunk_cannot_be_decoded_alone() {
        let options = EncodeOptions {
            max_payload: 64 * 1024,
            ..Default::default()
        };
        let encoded = encode(big_batch(), &options).unwrap();
        let m = &encoded.messages[0];
        assert!(matches!(
            decode(Some(&m.headers), &m.payload, &DecodeLimits::default()),
            Err(WireError::Chunk(_))
        ));
    }

    #[test]
    fn hostile_chunk_headers_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(h::BATCH_ID, "x");
        let mut r = Reassembler::default();
        for bad in ["", "1", "3/2", "0/0", "a/b", "0/4294967296"] {
            headers.insert(h::CHUNK, bad);
            assert!(r.push(&headers, Bytes::from_static(b"x")).is_err(), "{bad}");
        }
        headers.insert(h::CHUNK, "0/100000000");
        assert!(matches!(
            r.push(&headers, Bytes::from_static(b"x")),
            Err(WireError::TooLarge { .. })
        ));
        let limits = DecodeLimits {
            max_partial_batches: 1,
            ..Default::default()
        };
        let mut r = Reassembler::new(limits);
        headers.insert(h::CHUNK, "0/2");
        assert!(r
            .push(&headers, Bytes::from_static(b"x"))
            .unwrap()
            .is_none());
        headers.insert(h::BATCH_ID, "y");
        assert!(r.push(&headers, Bytes::from_static(b"x")).is_err());
    }
}

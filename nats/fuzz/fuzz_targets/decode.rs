//! Fuzzes the decoder with arbitrary payloads and header combinations.
//!
//! The first byte picks the headers; the rest is the payload. Any input must
//! give a batch or an error: never a panic, never an allocation beyond the limits.
#![no_main]

use bytes::Bytes;
use lclstream_nats::wire::{self, headers as h, DecodeLimits, Reassembler};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits {
        max_raw_bytes: 16 << 20,
        max_chunks: 16,
        max_partial_batches: 2,
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(h::BATCH_ID, "fuzz");
    if selector & 1 == 1 {
        headers.insert(h::CONTENT_ENCODING, h::ENCODING_IDENTITY);
    }
    if selector & 2 == 2 {
        headers.insert(h::CHUNK, format!("{}/{}", selector >> 5, (selector >> 2 & 7) + 1).as_str());
    }
    let _ = wire::decode(None, payload, &limits);
    let mut reassembler = Reassembler::new(limits);
    if let Ok(Some(whole)) = reassembler.push(&headers, Bytes::copy_from_slice(payload)) {
        let _ = wire::decode(Some(&whole.headers), &whole.payload, &limits);
    }
});

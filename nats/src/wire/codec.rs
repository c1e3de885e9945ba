//! Encoding a [`Batch`] into NATS messages and decoding it back.

use async_nats::HeaderMap;
use bytes::Bytes;

use super::batch::{Batch, FilterPolicy, SCHEMA_VERSION};
use super::headers::{self as h, format_checksum};
use super::{chunk, WireError};

/// Default largest payload of one NATS message (the server's `max_payload` must allow it).
pub const DEFAULT_MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// Compression of the MessagePack document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// LZ4 block format with a 4-byte little-endian uncompressed size prefix.
    #[default]
    Lz4,
    /// No compression.
    None,
}

/// How to encode a batch.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Compression of the document.
    pub compression: Compression,
    /// Filter of each array before compression ([`FilterPolicy::none`] for none).
    pub filters: FilterPolicy,
    /// Largest payload of one message; larger encodings are split into chunks.
    pub max_payload: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            compression: Compression::Lz4,
            filters: FilterPolicy::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// One NATS message: headers and payload (without subject).
#[derive(Debug, Clone)]
pub struct WireMessage {
    /// Headers, including `Nats-Msg-Id`.
    pub headers: HeaderMap,
    /// Payload bytes.
    pub payload: Bytes,
}

/// An encoded batch: usually one message, several chunks for an oversized batch.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The batch identifier ([`Batch::id`]).
    pub id: String,
    /// Size of the uncompressed MessagePack document.
    pub raw_size: usize,
    /// Total payload bytes over all messages.
    pub wire_size: usize,
    /// The messages to publish, in order.
    pub messages: Vec<WireMessage>,
}

/// Limits that protect a decoder from hostile or corrupt input.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest uncompressed document accepted.
    pub max_raw_bytes: usize,
    /// Largest number of chunks one batch may be split into.
    pub max_chunks: u32,
    /// Largest number of batches being reassembled at once.
    pub max_partial_batches: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_raw_bytes: 512 * 1024 * 1024,
            max_chunks: 1024,
            max_partial_batches: 8,
        }
    }
}

/// Encodes a batch into one message, or into chunks if it exceeds `max_payload`.
pub fn encode(mut batch: Batch, options: &EncodeOptions) -> Result<Encoded, WireError> {
    batch.validate()?;
    batch.apply_filters(&options.filters)?;
    // Sized up front: growing an 8 MB buffer by doubling costs several copies.
    let mut raw = Vec::with_capacity(batch.payload_bytes() + 4096);
    rmp_serde::encode::write_named(&mut raw, &batch)
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let raw_size = raw.len();
    let checksum = format_checksum(&raw);
    let (payload, encoding) = match options.compression {
        Compression::Lz4 => (lz4_flex::compress_prepend_size(&raw), h::ENCODING_LZ4),
        Compression::None => (raw, h::ENCODING_IDENTITY),
    };
    let id = batch.id();
    let mut headers = HeaderMap::new();
    headers.insert(h::CONTENT_TYPE, h::CONTENT_TYPE_BATCH);
    headers.insert(h::CONTENT_ENCODING, encoding);
    headers.insert(h::SCHEMA, SCHEMA_VERSION.to_string().as_str());
    headers.insert(h::BATCH_ID, id.as_str());
    headers.insert(
        h::EVENTS,
        format!("{}-{}", batch.first, batch.last).as_str(),
    );
    headers.insert(h::EVENT_COUNT, batch.count.to_string().as_str());
    headers.insert(h::RAW_SIZE, raw_size.to_string().as_str());
    headers.insert(h::CHECKSUM, checksum.as_str());
    let wire_size = payload.len();
    let message = WireMessage {
        headers,
        payload: Bytes::from(payload),
    };
    let messages = chunk::split(message, &id, options.max_payload)?;
    Ok(Encoded {
        id,
        raw_size,
        wire_size,
        messages,
    })
}

/// Decodes one complete (not chunked, or already reassembled) message into a batch.
///
/// Headers are checked when present: content type, encoding, schema and
/// checksum. Without headers the payload is taken as LZ4. Arrays come back
/// unfiltered. Never panics; sizes are checked against `limits` before any
/// allocation they would cause.
pub fn decode(
    headers: Option<&HeaderMap>,
    payload: &[u8],
    limits: &DecodeLimits,
) -> Result<Batch, WireError> {
    let mut encoding = h::ENCODING_LZ4.to_string();
    let mut checksum = None;
    let mut raw_size = None;
    if let Some(headers) = headers {
        if h::get(headers, h::CHUNK).is_some() {
            return Err(WireError::Chunk(
                "message is one chunk of a split batch; reassemble it first".into(),
            ));
        }
        if let Some(ct) = h::get(headers, h::CONTENT_TYPE) {
            if ct != h::CONTENT_TYPE_BATCH {
                return Err(WireError::UnsupportedContentType(ct.to_string()));
            }
        }
        if let Some(schema) = h::get(headers, h::SCHEMA) {
            if schema != SCHEMA_VERSION.to_string() {
                return Err(WireError::UnsupportedSchema(schema.to_string()));
            }
        }
        if let Some(enc) = h::get(headers, h::CONTENT_ENCODING) {
            encoding = enc.to_string();
        }
        checksum = h::get(headers, h::CHECKSUM).map(str::to_string);
        raw_size = h::get(headers, h::RAW_SIZE).map(str::to_string);
    }
    let decompressed;
    let raw: &[u8] = match encoding.as_str() {
        h::ENCODING_LZ4 => {
            decompressed = decompress_lz4(payload, limits)?;
            &decompressed
        }
        h::ENCODING_IDENTITY => {
            check_size("uncompressed document", payload.len() as u64, limits)?;
            payload
        }
        other => return Err(WireError::UnsupportedEncoding(other.to_string())),
    };
    if let Some(declared) = raw_size {
        if declared != raw.len().to_string() {
            return Err(WireError::BadHeader {
                name: h::RAW_SIZE,
                value: format!("{declared} (payload holds {} bytes)", raw.len()),
            });
        }
    }
    if let Some(expected) = checksum {
        let actual = format_checksum(raw);
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(WireError::Checksum { expected, actual });
        }
    }
    decode_document(raw)
}

/// Decodes an uncompressed MessagePack document into a validated, unfiltered batch.
pub fn decode_document(raw: &[u8]) -> Result<Batch, WireError> {
    let mut batch: Batch =
        rmp_serde::from_slice(raw).map_err(|e| WireError::MsgPack(e.to_string()))?;
    batch.validate()?;
    batch.remove_filters()?;
    Ok(batch)
}

fn check_size(what: &'static str, declared: u64, limits: &DecodeLimits) -> Result<(), WireError> {
    if declared > limits.max_raw_bytes as u64 {
        return Err(WireError::TooLarge {
            what,
            declared,
            limit: limits.max_raw_bytes as u64,
        });
    }
    Ok(())
}

/// Decompresses a size-prefixed LZ4 block after checking the declared size.
fn decompress_lz4(payload: &[u8], limits: &DecodeLimits) -> Result<Vec<u8>, WireError> {
    let Some(prefix) = payload.get(..4) else {
        return Err(WireError::Decompress(format!(
            "payload of {} bytes is shorter than the 4-byte size prefix",
            payload.len()
        )));
    };
    let declared = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as u64;
    check_size("uncompressed document", declared, limits)?;
    // LZ4 cannot expand data by more than ~255x; a larger claim is corrupt.
    let plausible = (payload.len() as u64 - 4).saturating_mul(255) + 16;
    if declared > plausible {
        return Err(WireError::Decompress(format!(
            "declared size {declared} is impossible for {} compressed bytes",
            payload.len() - 4
        )));
    }
    super::lz4::decompress(&payload[4..], declared as usize).map_err(WireError::Decompress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Array, Event, Scalar};

    fn sample_batch() -> Batch {
        let events = (10..13)
            .map(|i| {
                let mut e = Event {
                    index: i,
                    time_ns: 1_700_000_000_000_000_000 + i,
                    ..Default::default()
                };
                e.scalars
                    .insert("photon_energy_ev".into(), Scalar::Float(9500.5));
                e.scalars
                    .insert("pulse_id".into(), Scalar::Int(i as i64 * 3));
                e.scalars.insert("ok".into(), Scalar::Bool(true));
                e.scalars.insert("note".into(), Scalar::Text("x".into()));
                let pixels: Vec<u16> = (0..64).map(|p| (p * i as u16) % 300).collect();
                e.arrays
                    .insert("det".into(), Array::from_u16(vec![8, 8], &pixels).unwrap());
                e
            })
            .collect();
        Batch::new("mfxp1234", 7, "smd", events).unwrap()
    }

    #[test]
    fn round_trip_lz4_and_shuffle() {
        let batch = sample_batch();
        let encoded = encode(batch.clone(), &EncodeOptions::default()).unwrap();
        assert_eq!(encoded.messages.len(), 1);
        let msg = &encoded.messages[0];
        assert_eq!(
            h::get(&msg.headers, h::MSG_ID),
            Some("mfxp1234/smd/r7/10-12")
        );
        let decoded = decode(Some(&msg.headers), &msg.payload, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded, batch);
    }

    #[test]
    fn round_trip_uncompressed_without_shuffle() {
        let batch = sample_batch();
        let options = EncodeOptions {
            compression: Compression::None,
            filters: FilterPolicy::none(),
            ..Default::default()
        };
        let encoded = encode(batch.clone(), &options).unwrap();
        let msg = &encoded.messages[0];
        assert_eq!(encoded.raw_size, msg.payload.len());
        let decoded = decode(Some(&msg.headers), &msg.payload, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded, batch);
    }

    #[test]
    fn checksum_mismatch_is_reported() {
        let encoded = encode(sample_batch(), &EncodeOptions::default()).unwrap();
        let mut msg = encoded.messages[0].clone();
        msg.headers.insert(h::CHECKSUM, "crc32:00000000");
        let err = decode(Some(&msg.headers), &msg.payload, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, WireError::Checksum { .. }), "{err}");
    }

    #[test]
    fn truncated_payload_is_an_error() {
        let encoded = encode(sample_batch(), &EncodeOptions::default()).unwrap();
        let msg = &encoded.messages[0];
        for cut in [0, 3, 4, 10, msg.payload.len() / 2, msg.payload.len() - 1] {
            let result = decode(
                Some(&msg.headers),
                &msg.payload[..cut],
                &DecodeLimits::default(),
            );
            assert!(result.is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn huge_declared_size_is_refused_before_allocating() {
        let mut payload = u32::MAX.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 16]);
        let limits = DecodeLimits {
            max_raw_bytes: 1024,
            ..Default::default()
        };
        let err = decode(None, &payload, &limits).unwrap_err();
        assert!(matches!(err, WireError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn wrong_content_type_and_schema_are_refused() {
        let encoded = encode(sample_batch(), &EncodeOptions::default()).unwrap();
        let mut msg = encoded.messages[0].clone();
        msg.headers.insert(h::SCHEMA, "2");
        let err = decode(Some(&msg.headers), &msg.payload, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, WireError::UnsupportedSchema(_)));
        msg.headers.insert(h::SCHEMA, "1");
        msg.headers.insert(h::CONTENT_TYPE, "text/plain");
        let err = decode(Some(&msg.headers), &msg.payload, &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, WireError::UnsupportedContentType(_)));
    }

    #[test]
    fn array_with_wrong_length_is_refused() {
        let mut batch = sample_batch();
        batch.events[0].arrays.get_mut("det").unwrap().data.pop();
        assert!(encode(batch.clone(), &EncodeOptions::default()).is_err());
        // A hostile encoder that skips validation is caught by the decoder.
        let raw = rmp_serde::to_vec_named(&batch).unwrap();
        assert!(matches!(decode_document(&raw), Err(WireError::Invalid(_))));
    }
}

//! Header names and values of wire format v1.
//!
//! They make every message self-describing for tools that only print headers
//! (`nats sub`, `nats stream view`) and let a consumer check a payload before
//! decoding it.

/// `Content-Type` value of a batch.
pub const CONTENT_TYPE_BATCH: &str = "application/vnd.lclstream.batch+msgpack";
/// Standard content type header.
pub const CONTENT_TYPE: &str = "Content-Type";
/// Standard content encoding header: `lz4` or `identity`.
pub const CONTENT_ENCODING: &str = "Content-Encoding";
/// Schema version of the MessagePack document (`1`).
pub const SCHEMA: &str = "Lclstream-Schema";
/// Stable batch identifier, `<experiment>/<source>/r<run>/<first>-<last>`.
pub const BATCH_ID: &str = "Lclstream-Batch-Id";
/// Inclusive event index range, `<first>-<last>`.
pub const EVENTS: &str = "Lclstream-Events";
/// Number of events in the batch.
pub const EVENT_COUNT: &str = "Lclstream-Event-Count";
/// Size in bytes of the uncompressed MessagePack document.
pub const RAW_SIZE: &str = "Lclstream-Raw-Size";
/// `crc32:<8 hex digits>`: CRC-32 (IEEE, as Python's `zlib.crc32`) of the uncompressed document.
pub const CHECKSUM: &str = "Lclstream-Checksum";
/// Present on chunks of a split message: `<index>/<total>`, index from 0.
pub const CHUNK: &str = "Lclstream-Chunk";
/// JetStream deduplication id.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// `Content-Encoding` value for LZ4 block compression with a 4-byte little-endian size prefix.
pub const ENCODING_LZ4: &str = "lz4";
/// `Content-Encoding` value for no compression.
pub const ENCODING_IDENTITY: &str = "identity";

/// Formats a checksum header value.
pub fn format_checksum(raw: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(raw))
}

/// Reads a header as a string, if present.
pub fn get<'a>(headers: &'a async_nats::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

//! Wire format v1: one NATS message carries one batch of events.
//!
//! A message payload is `LZ4-block(size-prefixed)(MessagePack(Batch))`; its
//! headers say what it is ([`headers`]). An oversized batch (one event larger
//! than the payload limit) is split into chunks ([`chunk`]). The complete
//! specification, with a Python decoder, is `docs/wire-format.md`.

pub mod batch;
pub mod bitshuffle;
pub mod chunk;
pub mod codec;
pub mod headers;
pub mod lz4;
pub mod shuffle;

pub use batch::{
    batch_id, Array, Batch, DType, Event, Filter, FilterPolicy, Scalar, SCHEMA_VERSION,
};
pub use chunk::Reassembler;
pub use codec::{decode, encode, Compression, DecodeLimits, EncodeOptions, Encoded, WireMessage};

/// Everything that can be wrong with a message or a batch.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum WireError {
    /// The batch or its arrays are inconsistent.
    #[error("invalid batch: {0}")]
    Invalid(String),
    /// The schema version is not one this build reads.
    #[error("unsupported schema version {0} (this build reads version 1)")]
    UnsupportedSchema(String),
    /// The content encoding is not one this build reads.
    #[error("unsupported content encoding {0:?} (expected \"lz4\" or \"identity\")")]
    UnsupportedEncoding(String),
    /// The content type is not an lclstream batch.
    #[error("not an lclstream batch: content type {0:?}")]
    UnsupportedContentType(String),
    /// A declared size exceeds the configured limit.
    #[error("{what} of {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Declared size.
        declared: u64,
        /// Configured limit.
        limit: u64,
    },
    /// LZ4 decompression failed (corrupt or truncated payload).
    #[error("corrupt or truncated LZ4 payload: {0}")]
    Decompress(String),
    /// The checksum of the uncompressed bytes does not match the header.
    #[error("checksum mismatch: header says {expected}, payload has {actual}")]
    Checksum {
        /// Checksum announced in the header.
        expected: String,
        /// Checksum computed over the received bytes.
        actual: String,
    },
    /// The MessagePack document does not decode to a batch.
    #[error("malformed MessagePack batch: {0}")]
    MsgPack(String),
    /// A header is malformed.
    #[error("malformed header {name}: {value:?}")]
    BadHeader {
        /// Header name.
        name: &'static str,
        /// Header value as received.
        value: String,
    },
    /// A chunked message cannot be reassembled.
    #[error("chunk error: {0}")]
    Chunk(String),
    /// The batch cannot be encoded.
    #[error("cannot encode batch: {0}")]
    Encode(String),
}

"""Reference decoder of lclstream wire format v1, using only msgpack, lz4 and numpy.

See docs/wire-format.md. Typical use with nats-py:

    batch = decode(msg.headers, msg.data)          # one message
    for event in batch["events"]:
        image = event["arrays"]["jungfrau"]         # numpy array, no copy
"""

import struct
import zlib

import lz4.block
import msgpack
import numpy as np

CONTENT_TYPE = "application/vnd.lclstream.batch+msgpack"
MAX_RAW_BYTES = 512 * 1024 * 1024


class WireError(ValueError):
    """A message that is not a valid lclstream v1 batch."""


def decode(headers, payload, max_raw_bytes=MAX_RAW_BYTES):
    """Decodes one complete (not chunked, or reassembled) message into a dict."""
    headers = headers or {}
    if "Lclstream-Chunk" in headers:
        raise WireError("chunk of a split batch: reassemble it first (Reassembler)")
    if headers.get("Content-Type", CONTENT_TYPE) != CONTENT_TYPE:
        raise WireError(f"not an lclstream batch: {headers['Content-Type']!r}")
    if headers.get("Lclstream-Schema", "1") != "1":
        raise WireError(f"unsupported schema {headers['Lclstream-Schema']!r}")
    encoding = headers.get("Content-Encoding", "lz4")
    if encoding == "lz4":
        if len(payload) < 4:
            raise WireError("payload shorter than the LZ4 size prefix")
        (declared,) = struct.unpack("<I", payload[:4])
        if declared > max_raw_bytes:
            raise WireError(f"declared size {declared} exceeds {max_raw_bytes}")
        try:
            raw = lz4.block.decompress(payload)
        except Exception as e:  # lz4 raises LZ4BlockError
            raise WireError(f"corrupt LZ4 payload: {e}") from e
    elif encoding == "identity":
        raw = bytes(payload)
    else:
        raise WireError(f"unsupported encoding {encoding!r}")
    checksum = headers.get("Lclstream-Checksum")
    if checksum is not None and checksum.lower() != f"crc32:{zlib.crc32(raw):08x}":
        raise WireError("checksum mismatch")
    batch = msgpack.unpackb(raw, raw=False)
    for event in batch["events"]:
        event["arrays"] = {name: to_numpy(a) for name, a in event.get("arrays", {}).items()}
    return batch


def to_numpy(array):
    """Turns a wire array (dtype, shape, data, filter) into a numpy array."""
    dtype = np.dtype(array["dtype"])
    data = array["data"]
    filter_ = array.get("filter", "none")
    if filter_ == "shuffle":
        data = unshuffle(data, dtype.itemsize)
    elif filter_ == "bitshuffle":
        data = bitunshuffle(data, dtype.itemsize)
    elif filter_ != "none":
        raise WireError(f"unknown array filter {filter_!r}")
    return np.frombuffer(data, dtype=dtype).reshape(array["shape"])


def unshuffle(data, itemsize):
    """Inverts the byte shuffle: planes of byte 0, byte 1, ... back to elements."""
    n = len(data) // itemsize
    planes = np.frombuffer(data, np.uint8, count=n * itemsize).reshape(itemsize, n)
    return planes.T.tobytes() + bytes(data[n * itemsize:])


def bitshuffle_block_elements(itemsize):
    """Elements per block of the bitshuffle library (bshuf_default_block_size)."""
    return max(8192 // itemsize // 8 * 8, 128)


def _blocks(count, itemsize):
    """(start, elements) of each transposed block; the last < 8 elements are not."""
    block = bitshuffle_block_elements(itemsize)
    full = count // block
    blocks = [(i * block, block) for i in range(full)]
    last = (count - full * block) // 8 * 8
    if last:
        blocks.append((full * block, last))
    return blocks


def bitunshuffle(data, itemsize):
    """Inverts the bitshuffle filter (the bitshuffle library's transform, no compression).

    Each block of n elements holds 8 * itemsize bit planes of n / 8 bytes:
    plane 8 * j + k is bit k of byte j of every element, element 8 * m + b at
    bit b of byte m. Elements after the last multiple of 8 are stored as is.
    """
    if len(data) % itemsize:
        raise WireError(f"bitshuffled data of {len(data)} bytes is not whole {itemsize}-byte elements")
    raw = np.frombuffer(data, np.uint8)
    out = np.empty_like(raw)
    count = len(raw) // itemsize
    blocks = _blocks(count, itemsize)
    full = count // bitshuffle_block_elements(itemsize)
    # All full blocks in one go, then the shorter last block.
    groups = [(0, blocks[0][1], full)] if full else []
    groups += [(start, n, 1) for start, n in blocks[full:]]
    for start, n, nblocks in groups:
        lo, hi = start * itemsize, (start + n * nblocks) * itemsize
        # (block, byte j, bit k, m) -> (block, j, m, k): the 8 bytes of bit
        # rows k at column m form one 8 x 8 bit matrix in a little-endian u64.
        rows = raw[lo:hi].reshape(nblocks, itemsize, 8, n // 8).transpose(0, 1, 3, 2)
        words = _transpose_bits(np.ascontiguousarray(rows).view("<u8"))
        # Byte b of word (j, m) is byte j of element 8 * m + b.
        planes = words.view(np.uint8).reshape(nblocks, itemsize, n)
        out[lo:hi] = planes.transpose(0, 2, 1).reshape(-1)
    done = sum(n for _, n in blocks) * itemsize
    out[done:] = raw[done:]
    return out.tobytes()


def _transpose_bits(x):
    """Transposes the 8 x 8 bit matrix in each u64 (row b = byte b, little endian)."""
    t = (x ^ (x >> 7)) & np.uint64(0x00AA00AA00AA00AA)
    x = x ^ t ^ (t << 7)
    t = (x ^ (x >> 14)) & np.uint64(0x0000CCCC0000CCCC)
    x = x ^ t ^ (t << 14)
    t = (x ^ (x >> 28)) & np.uint64(0x00000000F0F0F0F0)
    return x ^ t ^ (t << 28)


def bitshuffle(data, itemsize):
    """The bitshuffle filter, the inverse of bitunshuffle (for tests and producers)."""
    raw = np.frombuffer(data, np.uint8)
    out = raw.copy()
    for start, n in _blocks(len(raw) // itemsize, itemsize):
        lo, hi = start * itemsize, (start + n) * itemsize
        bits = np.unpackbits(raw[lo:hi].reshape(n, itemsize, 1), axis=2, bitorder="little")  # (n, itemsize, 8)
        planes = bits.transpose(1, 2, 0).reshape(itemsize * 8, n)
        out[lo:hi] = np.packbits(planes, axis=1, bitorder="little").reshape(-1)
    return out.tobytes()


class Reassembler:
    """Collects chunks (header Lclstream-Chunk: i/n) until a batch is complete."""

    def __init__(self, max_chunks=1024):
        self.max_chunks = max_chunks
        self.partial = {}

    def push(self, headers, payload):
        """Returns (headers, payload) of a complete message, or None while chunks are missing."""
        chunk = (headers or {}).get("Lclstream-Chunk")
        if chunk is None:
            return headers, payload
        index, total = (int(x) for x in chunk.split("/"))
        if not 0 <= index < total <= self.max_chunks:
            raise WireError(f"bad chunk header {chunk!r}")
        key = headers["Lclstream-Batch-Id"]
        parts = self.partial.setdefault(key, [None] * total)
        parts[index] = bytes(payload)
        if any(p is None for p in parts):
            return None
        del self.partial[key]
        whole = dict(headers)
        del whole["Lclstream-Chunk"]
        return whole, b"".join(parts)

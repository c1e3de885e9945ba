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
    if array.get("filter", "none") == "shuffle":
        data = unshuffle(data, dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(array["shape"])


def unshuffle(data, itemsize):
    """Inverts the byte shuffle: planes of byte 0, byte 1, ... back to elements."""
    n = len(data) // itemsize
    planes = np.frombuffer(data, np.uint8, count=n * itemsize).reshape(itemsize, n)
    return planes.T.tobytes() + bytes(data[n * itemsize:])


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

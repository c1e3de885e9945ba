"""Cross-checks lclstream's bitshuffle filter against the bitshuffle library.

Usage: python3 bitshuffle_interop.py DIR

DIR/cases.json lists cases {"name", "dtype", "shape"}; DIR/<name>.in holds
the array's bytes and DIR/<name>.rust the bytes lclstream's filter made of
them. The library is the one HDF5 filter 32008 runs (hdf5plugin's build of
Kiyoshi Masui's bitshuffle), used without its compression:

- DIR/<name>.lib: the library's transform of the input, for the caller to
  compare with its own and to decode;
- stdout: JSON {name: {"lib_decodes_rust": bool, "numpy_decodes_lib": bool}}:
  whether the library, given lclstream's bytes as a stored chunk, reads back
  the original array, and whether the numpy decoder of docs/wire-format.md
  (lclstream_wire.bitunshuffle) inverts the library's bytes.
"""

import json
import os
import sys
import tempfile

import h5py
import hdf5plugin
import numpy as np

from lclstream_wire import bitunshuffle

FILTER = hdf5plugin.Bitshuffle(nelems=0, cname="none")


def library_transform(array, path):
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=array, chunks=array.shape, **FILTER)
    with h5py.File(path, "r") as f:
        mask, chunk = f["x"].id.read_direct_chunk((0,) * array.ndim)
    assert mask == 0, "the bitshuffle filter ran"
    return chunk


def library_decode(chunk, like, path):
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=like.shape, dtype=like.dtype, chunks=like.shape, **FILTER)
        d.id.write_direct_chunk((0,) * like.ndim, chunk)
    with h5py.File(path, "r") as f:
        return f["x"][...]


def main(directory):
    results = {}
    with open(os.path.join(directory, "cases.json")) as f:
        cases = json.load(f)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.h5")
        for case in cases:
            name = case["name"]
            base = os.path.join(directory, name)
            with open(base + ".in", "rb") as f:
                array = np.frombuffer(f.read(), np.dtype(case["dtype"])).reshape(case["shape"])
            with open(base + ".rust", "rb") as f:
                rust = f.read()
            lib = library_transform(array, path)
            with open(base + ".lib", "wb") as f:
                f.write(lib)
            back = library_decode(rust, array, path)
            results[name] = {
                "lib_decodes_rust": back.tobytes() == array.tobytes(),
                "numpy_decodes_lib": bitunshuffle(lib, array.dtype.itemsize) == array.tobytes(),
            }
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])

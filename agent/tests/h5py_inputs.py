"""Writes the HDF5 files of agent/tests/h5py_inputs.rs with h5py: what
LCLS and h5py users actually write (LZF, strings, booleans, float16,
uint64 above 2^63, a smalldata_tools layout, plugin filters)."""

import json
import sys

import h5py
import numpy as np

out = sys.argv[1]
n = 12
rng = np.random.default_rng(7)

with h5py.File(f"{out}/types.h5", "w") as f:
    # Detector frames with read noise, LZF-compressed in uneven chunks.
    frames = (1000 + rng.normal(0, 4, size=(n, 5, 7))).astype(np.uint16)
    f.create_dataset("frames", data=frames, compression="lzf", chunks=(5, 5, 7))
    f.create_dataset("energy", data=rng.normal(9.5, 0.01, n), compression="lzf", chunks=(5,))
    f.create_dataset("fixed", data=np.array([f"shot{i}".encode() for i in range(n)], dtype="S8"))
    utf8_10 = h5py.string_dtype("utf-8", 10)
    f.create_dataset("fixed_utf8", data=np.array([f"é{i}".encode() for i in range(n)], dtype=utf8_10))
    f.create_dataset("vlen", data=[f"run note {'x' * i}" for i in range(n)], dtype=h5py.string_dtype())
    f.create_dataset("vlen_ascii", data=[f"a{i}".encode() for i in range(n)],
                     dtype=h5py.string_dtype("ascii"))
    f.create_dataset("hit", data=np.arange(n) % 3 == 0)
    f.create_dataset("mask", data=rng.random((n, 3, 4)) > 0.5)
    half = rng.normal(0, 1, (n, 4)).astype(np.float16)
    half[0, 0] = np.nan
    f.create_dataset("half", data=half)
    f.create_dataset("half_scalar", data=np.linspace(0, 1, n).astype(np.float16))
    f.create_dataset("big", data=np.array([2**63 + i for i in range(n)], dtype=np.uint64))
    f.create_dataset("small_u64", data=np.arange(n, dtype=np.uint64))
    f.create_dataset("empty", data=np.zeros((n, 0), dtype=np.float32))
    f.create_dataset("be", data=np.arange(n * 2, dtype=">i4").reshape(n, 2))
    f.create_dataset("strings_2d", data=np.array([[b"a", b"b"]] * n, dtype="S1"))
    expected = {
        "frames": frames.astype("<u2").tobytes().hex(),
        "half": [[None if np.isnan(v) else float(v) for v in row] for row in half],
        "mask": f["mask"][()].astype(np.uint8).tobytes().hex(),
        "energy": [v.hex() for v in f["energy"][()].tolist()],
        "ipm2_sum": None,
        "half_scalar": [v.hex() for v in f["half_scalar"][()].astype(float).tolist()],
    }

with h5py.File(f"{out}/smalldata.h5", "w") as f:
    # The layout of LCLS smalldata_tools (LCLS-II: psana2 timestamps).
    sec = np.arange(n, dtype=np.uint64) + 1_100_000_000
    f.create_dataset("timestamp", data=(sec << np.uint64(32)) + np.uint64(123))
    f.create_dataset("fiducials", data=np.arange(n, dtype=np.int32) * 3)
    f.create_dataset("event_time", data=np.arange(n, dtype=np.uint64))
    f.create_dataset("ipm2/sum", data=rng.normal(1, 0.1, n).astype(np.float32))
    f.create_dataset("ipm2/xpos", data=rng.normal(0, 0.1, n).astype(np.float32))
    f.create_dataset("gas_detector/f_11_ENRC", data=rng.normal(2, 0.1, n))
    f.create_dataset("gas_detector/f_22_ENRC", data=rng.normal(2, 0.1, n))
    f.create_dataset("lightStatus/xray", data=(np.arange(n) % 4 != 0).astype(np.int32))
    f.create_dataset("lightStatus/laser", data=(np.arange(n) % 2).astype(np.int32))
    f.create_dataset("jungfrau1M/ROI_0_area", data=rng.normal(0, 3, (n, 6, 8)).astype(np.float32))
    f.create_dataset("jungfrau1M/ROI_0_sum", data=rng.normal(50, 3, n).astype(np.float32))
    f.create_dataset("epix_alc1/ROI_0_com", data=rng.normal(0, 3, (n, 2)))
    # Per-run configuration and sums: not events.
    f.create_dataset("UserDataCfg/jungfrau1M/ROI_0", data=np.array([[0, 6], [0, 8]]))
    f.create_dataset("Sums/jungfrau1M_calib", data=np.zeros((6, 8)))
    f.create_dataset("UserDataCfg/jungfrau1M/ROI_0_per_event_looking", data=np.zeros((n, 2)))
    f.attrs["run"] = 42
    expected["ipm2_sum"] = [v.hex() for v in f["ipm2/sum"][()].astype(float).tolist()]
    expected["roi"] = f["jungfrau1M/ROI_0_area"][()].astype("<f4").tobytes().hex()

try:
    import hdf5plugin
except ImportError:
    hdf5plugin = None
if hdf5plugin is None:
    with open(f"{out}/expected.json", "w") as fh:
        json.dump(expected, fh)
    sys.exit(0)
with h5py.File(f"{out}/plugins.h5", "w") as f:
    photons = (rng.poisson(0.05, (n, 16, 16)) * 12 + rng.normal(0, 3, (n, 16, 16)).round()).clip(0).astype(np.uint16)
    f.create_dataset("bitshuffle", data=photons, chunks=(4, 16, 16), **hdf5plugin.Bitshuffle(cname="lz4"))
    f.create_dataset("blosc", data=photons, chunks=(4, 16, 16), **hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    expected["photons"] = photons.astype("<u2").tobytes().hex()
expected["plugins_path"] = hdf5plugin.PLUGINS_PATH
with open(f"{out}/expected.json", "w") as fh:
    json.dump(expected, fh)

"""Reads one run with psana (LCLS-II xtc2) and writes its events to stdout.

The lclstream agent runs this helper (embedded in the agent binary) with the
Python interpreter named by the source's `python` key and reads its output.
Argument: one JSON object
    {"files": [...]} or {"exp": "...", "run": N, "dir": "..."},
    "fields": [{"detector": "xppcspad", "data": "raw", "field": "cspad"}, ...],
    "skip": N (events already delivered), "max_events": N or null.

Output: frames of a 4-byte big-endian length followed by one msgpack map:
    {"kind": "start", "detectors": [...]}
    {"kind": "event", "index": i, "time_ns": t, "scalars": {...},
     "arrays": {field: {"dtype": "<u2", "shape": [...], "data": bytes}}}
    {"kind": "end", "events": n}
    {"kind": "error", "what": "import" | "arguments" | "file" | "detector" | "data",
     "message": "..."}
The error frame is the last frame; the exit status is then 2.
"""

import json
import struct
import sys

# psana2 timestamps count seconds from the EPICS epoch (1990-01-01 UTC) in the
# upper 32 bits and nanoseconds in the lower 32.
EPICS_EPOCH_UNIX_S = 631152000

# Shorthands of `data`: the detector interface attribute to call.
DATA_METHODS = {
    "raw": "raw.raw",
    "calib": "raw.calib",
    "image": "raw.image",
    "waveforms": "raw.waveforms",
    "peaks": "raw.peaks",
}

WIRE_DTYPES = {"|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8"}

out = sys.stdout.buffer


class Failure(Exception):
    def __init__(self, what, message):
        super().__init__(message)
        self.what = what
        self.message = message


def send(msgpack, frame):
    body = msgpack.packb(frame, use_bin_type=True)
    out.write(struct.pack(">I", len(body)))
    out.write(body)


def wire_array(np, field, value):
    """A numpy array as a wire array map (little-endian, C order)."""
    a = np.asarray(value)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    dtype = a.dtype.str
    if dtype not in WIRE_DTYPES:
        raise Failure("data", f"field {field}: psana returned dtype {a.dtype}, which the wire format cannot carry")
    return {"dtype": dtype, "shape": [int(d) for d in a.shape], "data": a.tobytes()}


def put_value(np, field, value, scalars, arrays):
    """Stores one psana value: numbers become scalars, arrays arrays; dicts
    (hsd waveforms: channel -> {"times": ..., 0: ...}) are flattened with `_`
    (`hsd_0_times`), as field names are single HDF5 dataset names downstream."""
    if value is None:
        return
    if isinstance(value, dict):
        for key, inner in value.items():
            put_value(np, f"{field}_{key}", inner, scalars, arrays)
        return
    if isinstance(value, (bool, np.bool_)):
        scalars[field] = bool(value)
    elif isinstance(value, (int, np.integer)):
        v = int(value)
        if not -(2**63) <= v < 2**64:
            raise Failure("data", f"field {field}: integer {v} does not fit 64 bits")
        scalars[field] = v
    elif isinstance(value, (float, np.floating)):
        scalars[field] = float(value)
    elif isinstance(value, str):
        scalars[field] = value
    elif isinstance(value, bytes):
        scalars[field] = value.decode("utf-8", "replace")
    else:
        a = np.asarray(value)
        if a.dtype.kind in "OUS":
            raise Failure("data", f"field {field}: psana returned {type(value).__name__}, not numbers")
        if a.ndim == 0:
            put_value(np, field, a.item(), scalars, arrays)
        else:
            arrays[field] = wire_array(np, field, a)


def resolve(run, spec, detnames):
    """The callable giving a field's value for an event."""
    name = spec["detector"]
    data = spec.get("data") or "raw"
    try:
        det = run.Detector(name)
    except Exception as e:  # psana raises KeyError for unknown names
        known = sorted(detnames)
        raise Failure("detector", f"detector {name!r} is not in this run (detectors: {', '.join(known)}; "
                      f"epics and scan variables are named by their PV): {e}")
    if data in ("epics", "scalar", "value"):
        if not callable(det):
            raise Failure("detector", f"detector {name!r} is not an epics or scan variable; use data = \"raw\"")
        return det
    target = det
    for part in DATA_METHODS.get(data, data).split("."):
        if not hasattr(target, part):
            have = [a for a in dir(target) if not a.startswith("_")]
            raise Failure("detector", f"detector {name!r} has no {DATA_METHODS.get(data, data)!r} "
                          f"(at {part!r}: it has {', '.join(have)})")
        target = getattr(target, part)
    if not callable(target):
        raise Failure("detector", f"detector {name!r}: {data!r} is not a per-event method")
    return target


def main():
    try:
        import msgpack
    except Exception as e:
        sys.stderr.write(f"psana helper: cannot import msgpack: {e}\n")
        sys.exit(3)
    try:
        args = json.loads(sys.argv[1])
    except Exception as e:
        send(msgpack, {"kind": "error", "what": "arguments", "message": f"bad helper arguments: {e}"})
        sys.exit(2)
    try:
        try:
            import numpy as np
            from psana import DataSource
        except Exception as e:
            raise Failure("import", f"cannot import psana with {sys.executable}: {type(e).__name__}: {e}")
        kwargs = {"skip_calib_load": "all"} if args.get("skip_calib_load", True) else {}
        if args.get("files"):
            for f in args["files"]:
                try:
                    with open(f, "rb"):
                        pass
                except OSError as e:
                    raise Failure("file", f"cannot open xtc2 file {f}: {e.strerror}")
            source = {"files": args["files"] if len(args["files"]) > 1 else args["files"][0]}
        else:
            source = {"exp": args["exp"], "run": int(args["run"])}
            if args.get("dir"):
                source["dir"] = args["dir"]
        try:
            ds = DataSource(**source, **kwargs)
            run = next(ds.runs())
        except StopIteration:
            raise Failure("file", f"no run in {source}")
        except Failure:
            raise
        except Exception as e:
            raise Failure("file", f"psana cannot read {source}: {type(e).__name__}: {e}")
        detnames = set(run.detnames)
        for v in (getattr(run, "epicsinfo", None) or {}):
            detnames.add(v[0])
        for v in (getattr(run, "scaninfo", None) or {}):
            detnames.add(v[0])
        getters = []
        for spec in args["fields"]:
            data = spec.get("data") or "raw"
            field = spec.get("field") or (spec["detector"] if data in ("epics", "scalar", "value")
                                          else f"{spec['detector']}_{data.replace('.', '_')}")
            getters.append((field, resolve(run, spec, detnames)))
        send(msgpack, {"kind": "start", "detectors": sorted(detnames)})
        skip = int(args.get("skip") or 0)
        limit = args.get("max_events")
        index = 0
        for evt in run.events():
            if limit is not None and index >= limit:
                break
            if index < skip:
                index += 1
                continue
            ts = int(evt.timestamp)
            time_ns = ((ts >> 32) + EPICS_EPOCH_UNIX_S) * 1_000_000_000 + (ts & 0xFFFFFFFF)
            scalars = {"timestamp": ts}
            arrays = {}
            for field, get in getters:
                try:
                    value = get(evt)
                except Failure:
                    raise
                except Exception as e:
                    raise Failure("data", f"event {index}, field {field}: {type(e).__name__}: {e}")
                put_value(np, field, value, scalars, arrays)
            send(msgpack, {"kind": "event", "index": index, "time_ns": time_ns,
                           "scalars": scalars, "arrays": arrays})
            index += 1
        send(msgpack, {"kind": "end", "events": index})
        out.flush()
    except Failure as f:
        send(msgpack, {"kind": "error", "what": f.what, "message": f.message})
        out.flush()
        sys.exit(2)


if __name__ == "__main__":
    main()

"""`StreamDataset.state_dict()` / `load_state_dict()`, as torchdata's
StatefulDataLoader uses them, with plain Python: iterate part-way (stopping
in the middle of a batch), take the state, build a new dataset from it and
continue. With one puller the two parts are the published set exactly, also
when the first process was killed instead of stopped.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from collections import Counter

import lclstream
from conftest import EVENTS

FILTER = "lcls.mfx.mfxp1234.>"
ALL = [(7, i) for i in range(EVENTS)]


def dataset(url: str, label: str) -> lclstream.StreamDataset:
    return lclstream.StreamDataset(url, None, "ucsd", [FILTER], label,
                                   batch_messages=2, idle_timeout=8)


def test_resume_from_state_after_a_clean_stop(deployment) -> None:
    first_ds = dataset(deployment.url, "state-stop")
    events = iter(first_ds)
    first = [(e.run, e.index) for e in itertools.islice(events, 10)]  # 2.5 batches of 4
    state = first_ds.state_dict()
    events.close()  # the loader shuts its worker down: the pulled rest goes back
    assert state["events"] == 10 and state["current"]["yielded"] == 2
    json.dumps(state)  # a checkpoint is plain data

    resumed = dataset(deployment.url, "unused-label")
    resumed.load_state_dict(state)
    rest = [(e.run, e.index) for e in resumed]
    assert resumed.state_dict()["events"] == EVENTS
    assert Counter(first + rest).most_common(1)[0][1] == 1, "no overlap"
    assert sorted(first + rest) == ALL, "no gap"


KILLED = textwrap.dedent("""
    import itertools, json, os, sys, lclstream
    ds = lclstream.StreamDataset(sys.argv[1], None, "ucsd", ["lcls.mfx.mfxp1234.>"], "state-kill",
                                 batch_messages=2, idle_timeout=8)
    seen = [(e.run, e.index) for e in itertools.islice(iter(ds), 13)]
    print(json.dumps({"seen": seen, "state": ds.state_dict()}), flush=True)
    os._exit(9)  # no clean-up: the pulled batches stay unacknowledged
""")


def test_resume_from_state_after_a_killed_process(deployment) -> None:
    out = subprocess.run([sys.executable, "-c", KILLED, deployment.url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 9, out.stderr
    checkpoint = json.loads(out.stdout)
    first = [tuple(e) for e in checkpoint["seen"]]
    resumed = dataset(deployment.url, "state-kill")
    resumed.load_state_dict(checkpoint["state"])
    # The unacknowledged batches come back after the consumer's ack wait (3 s).
    rest = [(e.run, e.index) for e in resumed]
    assert Counter(first + rest).most_common(1)[0][1] == 1, "no overlap"
    assert sorted(first + rest) == ALL, "no gap"

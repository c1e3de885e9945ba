"""Opt-in: a real torch DataLoader (2 workers) over `StreamDataset` and a
tiny training loop on CPU. Skipped when torch is not installed (it is not by
default: its wheel is gigabytes). To run it:

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    (or plain `pip install torch`, which also brings the CUDA libraries)
    python3 -m pytest -q python/tests/test_torch.py

With torchdata installed it also resumes a StatefulDataLoader mid-stream.
"""

from __future__ import annotations

from collections import Counter

import pytest

import lclstream
from conftest import EVENTS

torch = pytest.importorskip("torch")

FILTER = "lcls.mfx.mfxp1234.>"


class Frames(torch.utils.data.IterableDataset):
    """The stream as (frame, index) pairs; each DataLoader worker pulls its
    own share of the same durable consumer."""

    def __init__(self, url: str, label: str) -> None:
        self.stream = lclstream.StreamDataset(url, None, "ucsd", [FILTER], label,
                                              batch_messages=1, idle_timeout=5)

    def __iter__(self):
        for event in self.stream:
            yield torch.from_numpy(event.arrays["jungfrau"].astype("float32")), event.index

    def state_dict(self):
        return self.stream.state_dict()

    def load_state_dict(self, state) -> None:
        self.stream.load_state_dict(state)


def test_dataloader_and_a_training_loop(deployment) -> None:
    loader = torch.utils.data.DataLoader(Frames(deployment.url, "torch"), batch_size=4,
                                         num_workers=2)
    model = torch.nn.Linear(16 * 24, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    seen, losses = [], []
    for frames, indices in loader:
        # Detector frames are ADU with bright Bragg peaks: raw values make
        # SGD diverge within a few steps, so compress the range first.
        x = torch.log1p(frames.clamp(min=0)).flatten(1)
        target = x.mean(dim=1, keepdim=True)
        loss = torch.nn.functional.mse_loss(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += indices.tolist()
        losses.append(loss.item())
    assert sorted(seen) == list(range(EVENTS)), "every event once across the workers"
    assert all(torch.isfinite(torch.tensor(losses)))


def test_stateful_dataloader_resumes_mid_stream(deployment) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    loader = stateful.StatefulDataLoader(Frames(deployment.url, "torch-state"), batch_size=None,
                                         num_workers=0)
    it = iter(loader)
    first = [int(next(it)[1]) for _ in range(10)]
    state = loader.state_dict()
    del it
    resumed = stateful.StatefulDataLoader(Frames(deployment.url, "torch-state"),
                                          batch_size=None, num_workers=0)
    resumed.load_state_dict(state)
    rest = [int(index) for _, index in resumed]
    assert Counter(first + rest).most_common(1)[0][1] == 1
    assert sorted(first + rest) == list(range(EVENTS))

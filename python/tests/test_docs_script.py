"""The training script of docs/partners.md is python/examples/train.py,
word for word, and it runs against a deployment behind the auth callout."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import EVENTS, ROOT

SCRIPT = ROOT / "python" / "examples" / "train.py"


def test_docs_show_the_example_script() -> None:
    docs = (ROOT / "docs" / "partners.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", docs, re.S)
    assert SCRIPT.read_text() in blocks, "docs/partners.md shows python/examples/train.py as is"


def test_the_example_script_trains_on_a_streamed_run(callout_deployment) -> None:
    d = callout_deployment
    out = subprocess.run([sys.executable, str(SCRIPT), d.url, str(d.seed("example-university")),
                          "example-university"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"trained on {EVENTS} events" in out.stdout, out.stdout

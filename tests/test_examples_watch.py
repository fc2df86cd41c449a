"""The plain-PyTorch example runs end to end in its fast mode and writes TensorBoard events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from builders import events

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_pytorch.py"


def test_plain_pytorch_example_fast(tmp_path):
    logdir = tmp_path / "runs"
    res = subprocess.run(
        [sys.executable, str(EXAMPLE), "--fast", "--logdir", str(logdir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done: 4 frames, last at step 3" in res.stdout  # 4 steps, all in the dense start
    ea = events(logdir)
    assert "initwatch/act_rms/decoder.03" in ea.Tags()["scalars"]
    assert "initwatch/summary/text_summary" in ea.Tags()["tensors"]

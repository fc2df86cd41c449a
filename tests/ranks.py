"""Launching the 2-process (gloo) test scripts of ``tests/ddp/`` and reading what each rank wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from paths import DDP

# 2 processes on this host under torchrun (each rank's RANK, WORLD_SIZE and rendezvous set)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launch(cmd: list[str], out: Path, prefix: str = "rank") -> list[dict]:
    """Run ``cmd`` (a script that writes ``out/<prefix><rank>.json`` per rank); the two JSONs.

    One retry: a rendezvous port taken by a concurrent job fails the first launch.
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    for attempt in range(2):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        if proc.returncode == 0:
            break
        if attempt == 1:
            raise AssertionError(f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return [json.loads((out / f"{prefix}{r}.json").read_text()) for r in (0, 1)]


def torchrun(script: str, out: Path, prefix: str = "rank") -> list[dict]:
    """:func:`launch` the ``tests/ddp/`` ``script`` under :data:`TORCHRUN` with ``--out out``;
    the two ranks' JSONs."""
    return launch([*TORCHRUN, str(DDP / script), "--out", str(out)], out, prefix)

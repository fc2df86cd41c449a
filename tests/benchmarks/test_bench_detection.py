"""bench/detection.py in its --fast mode: every shock alerted within 10 optimizer steps, every
healthy twin silent, in both frameworks, and the table printed."""

from __future__ import annotations

import pytest
from paths import ROOT, load_script

SCRIPT = ROOT / "bench" / "detection.py"

pytestmark = pytest.mark.filterwarnings("ignore")


def _load():
    return load_script(SCRIPT, "bench_detection")


@pytest.mark.slow
def test_fast_mode_alerts_every_shock_early_and_no_healthy_twin(capsys):
    bench = _load()
    rows = bench.run_all(fast=True, steps=8, pretrain_steps=30, frameworks=["hf", "lightning"])
    assert {r.framework for r in rows} == {"hf", "lightning"}
    assert len(rows) == 2 * 2 * len(bench.FAST)
    for row in rows:
        if row.run.name.endswith("(healthy twin)"):
            assert (row.step, row.kind, row.causes) == (None, "none", 0), row
        else:
            assert row.taken is not None and 1 <= row.taken <= 10, row
    out = capsys.readouterr().out
    assert out.count("| hf |") == out.count("| lightning |") == 2 * len(bench.FAST)

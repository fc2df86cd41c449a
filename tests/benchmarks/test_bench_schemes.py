"""Smoke tests of bench/schemes.py: it runs in its tiny --fast mode and prints a parseable table."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from paths import ROOT, load_script

SCRIPT = ROOT / "bench" / "schemes.py"
VARIANTS = ["vanilla", "deepnet", "t-fixup", "rezero", "xavier", "kaiming", "ds-init", "admin"]


def _load():
    return load_script(SCRIPT, "bench_schemes")


def _run(*args: str, tmp_path: Path) -> tuple[str, dict]:
    out = tmp_path / "res.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--threads", "1", "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _tables(stdout: str) -> list[list[list[str]]]:
    """Every Markdown table of the output, as rows of cells (header and rule dropped)."""
    tables, cur = [], None
    for line in stdout.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = {"header": cells, "rows": []}
                tables.append(cur)
            elif not set(line) <= set("|-: "):
                cur["rows"].append(cells)
        else:
            cur = None
    for t in tables:
        assert t["header"][0] == "scheme"
        assert t["header"][1].startswith("final loss")
        assert t["header"][2].startswith("steps to ")
        assert all(len(r) == len(t["header"]) for r in t["rows"])
    return [t["rows"] for t in tables]


def _check_row(row: list[str]) -> None:
    scheme, final, steps, grad, ratio, _note, wall = row
    assert math.isfinite(float(final)) and float(final) > 0
    assert steps == "never" or int(steps) >= 1
    assert math.isfinite(float(grad)) and float(grad) > 0
    float(ratio)
    assert float(wall) >= 0


@pytest.mark.slow
def test_fast_run_prints_one_row_per_scheme(tmp_path: Path) -> None:
    stdout, data = _run(tmp_path=tmp_path)
    assert stdout.startswith("# machine: ")
    assert "torch " + torch.__version__ in stdout
    assert "Post-LN nn.TransformerEncoder" in stdout
    tables = _tables(stdout)
    assert len(tables) == 1
    rows = tables[0]
    assert [r[0] for r in rows] == VARIANTS
    for row in rows:
        _check_row(row)
    # The JSON holds the same numbers and the full loss curves.
    by_scheme = {r["scheme"]: r for r in data["results"]}
    assert list(by_scheme) == VARIANTS
    for row in rows:
        r = by_scheme[row[0]]
        assert f"{r['final_loss']:.4f}" == row[1]
        assert len(r["losses"]) == data["config"]["steps"]


@pytest.mark.slow
def test_subset_and_seed_medians(tmp_path: Path) -> None:
    stdout, data = _run("--schemes", "vanilla,rezero", "--seeds", "2", tmp_path=tmp_path)
    tables = _tables(stdout)
    assert "## seed 0" in stdout and "## seed 1" in stdout and "## median over 2 seeds" in stdout
    assert len(tables) == 3
    for rows in tables:
        assert [r[0] for r in rows] == ["vanilla", "rezero"]
        for row in rows:
            _check_row(row)
    finals = [r["final_loss"] for r in data["results"] if r["scheme"] == "rezero"]
    assert f"{(finals[0] + finals[1]) / 2:.4f}" == tables[2][1][1]  # median of two


def test_unknown_scheme_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--schemes", "vanilla,nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "nonsense" in proc.stderr


def test_steps_to_target_and_medians() -> None:
    b = _load()
    assert b.steps_to([3.0, 2.0, 1.0, 0.4, 0.3], 0.5, window=1) == 4
    assert b.steps_to([3.0, 0.4, 0.4, 0.4], 0.5, window=2) == 3
    assert b.steps_to([3.0, float("nan"), 0.1, 0.1], 0.5, window=2) == 4
    assert b.steps_to([3.0, 2.0], 0.5, window=1) is None
    cfg = b.Config(schemes=("rezero",), seeds=3)
    rs = [
        b.Result("rezero", s, f, steps, 1.0, 1.0, "", 1.0)
        for s, (f, steps) in enumerate([(0.1, 50), (0.2, None), (0.3, None)])
    ]
    (med,) = b.medians(rs, cfg)
    assert med.final_loss == pytest.approx(0.2)
    assert med.steps_to_target is None  # two of three seeds never reached it
    assert "2/3" in med.note


def test_vanilla_layers_are_redrawn() -> None:
    b = _load()
    cfg = b.Config(depth=3, width=16, heads=2, ffn=32, vocab=8, length=6)
    layers = b.build(cfg, "vanilla", 0).encoder.layers
    w = [lay.linear1.weight for lay in layers]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    cfg.baseline = "copied"
    layers = b.build(cfg, "vanilla", 0).encoder.layers
    assert torch.equal(layers[0].linear1.weight, layers[2].linear1.weight)
    # Same seed, same starting weights for every variant before the scheme is applied.
    cfg.baseline = "redrawn"
    a, c = b.build(cfg, "vanilla", 0), b.build(cfg, "rezero", 0)
    assert torch.equal(a.encoder.layers[1].linear1.weight, c.encoder.layers[1].linear1.weight)


def test_tfixup_embedding_option() -> None:
    b = _load()
    cfg = b.Config(depth=4, width=64, heads=2, ffn=128, vocab=64, length=6)
    untouched = b.build(cfg, "t-fixup", 0).embed.weight
    assert torch.equal(untouched, b.build(cfg, "vanilla", 0).embed.weight)
    cfg.embedding = "literal"
    std = b.build(cfg, "t-fixup", 0).embed.weight.std().item()
    assert std == pytest.approx(64**-0.5 * (9 * 4) ** -0.25, rel=0.1)
    cfg.embedding = "effective"
    std = b.build(cfg, "t-fixup", 0).embed.weight.std().item()
    assert std == pytest.approx((9 * 4) ** -0.25, rel=0.1)


def test_pre_ln_and_resnet_suites_build_what_they_say() -> None:
    from torch import nn

    from initwatch.schemes.structure import RemovedNorm

    b = _load()
    cfg = b.Config(depth=3, width=16, heads=2, ffn=32, vocab=8, length=6, arch="pre")
    pre = b.build(cfg, "vanilla", 0)
    assert all(lay.norm_first for lay in pre.encoder.layers)
    assert isinstance(pre.encoder.norm, nn.LayerNorm)
    scaled = b.build(cfg, "scaled", 0)
    assert scaled.encoder.layers[0].linear2.weight.std().item() < 0.02  # 0.02/sqrt(6)
    cfg = b.Config(depth=4, vocab=4, arch="resnet")
    assert any(isinstance(m, nn.BatchNorm2d) for m in b.build(cfg, "bn", 0).modules())
    bare = b.build(cfg, "no-norm", 0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bare.modules())
    assert any(isinstance(m, RemovedNorm) for m in bare.modules())
    fixup = b.build(cfg, "fixup", 0)
    assert len(b.blocks_of(fixup)) == 4 and hasattr(b.blocks_of(fixup)[0], "fixup_scale")
    x, y = b.image_batch(cfg, torch.Generator().manual_seed(0))
    assert x.shape == (cfg.batch, 3, 8, 8) and set(y.tolist()) <= set(range(4))


def test_a_scheme_of_another_suite_is_refused() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--fast", "--arch", "resnet", "--schemes", "deepnet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "for --arch resnet" in proc.stderr

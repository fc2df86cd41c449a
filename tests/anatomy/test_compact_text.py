"""The text of inspect() and ReinitReport: compact, summary first, true after a scheme."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

import initwatch
from initwatch import zoo


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_inspect_collapses_identical_blocks_and_leads_with_the_summary() -> None:
    text = str(initwatch.inspect(zoo.build("torch_encoder", layers=24)))
    out = lines(text)
    assert len(out) <= 40  # was 244
    assert max(map(len, out)) <= 100
    assert out[0].startswith("TransformerEncoder — family torch, encoder-only, Post-LN (layernorm)")
    header = next(i for i, line in enumerate(out) if line.startswith("block "))
    assert any(line.startswith("scheme applied: none") for line in out[:header])
    assert any(line.startswith("schemes: ") for line in out[:header])  # not last any more
    rows = out[header + 2 :]
    assert len(rows) == 10  # one row per role of the one group of 24 identical blocks
    assert all(r.startswith("encoder.0-23 (24)") for r in rows)
    assert any("layers.*.linear1.weight" in r and "64x32" in r for r in rows)


def test_blocks_that_differ_are_not_collapsed() -> None:
    model = zoo.build("torch_encoder", layers=3)
    model.layers[1].linear1 = nn.Linear(32, 128)
    model.layers[1].linear2 = nn.Linear(128, 32)
    out = lines(str(initwatch.inspect(model)))
    ffn_in = [r for r in out if " ffn_in " in r]
    assert [r.split()[0] for r in ffn_in] == ["encoder.0", "encoder.1", "encoder.2"]
    assert "128x32" in ffn_in[1] and "64x32" in ffn_in[0]


@pytest.mark.parametrize("scheme", ["t-fixup", "rezero"])
def test_inspect_tells_the_truth_after_a_scheme_removed_the_norms(scheme: str) -> None:
    from initwatch.schemes.registry import SCHEMES

    model = zoo.build("torch_encoder", layers=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        initwatch.reinit(model, scheme)
    raw = str(initwatch.inspect(model))
    assert len(lines(raw)) <= 40
    text = raw.replace("\n  ", " ")  # the summary lines wrap at 100 columns
    assert "Post-LN (layernorm)" not in text and "Pre-LN (layernorm)" not in text
    title = SCHEMES[scheme].title
    assert f"no residual-path norms ({title} removed them; the blocks were Post-LN)" in text
    assert f"scheme applied: {title} ({scheme})" in text
    assert f"{scheme}: applies" not in text and "already applied" in text
    assert "norm (" not in text  # no norm rows: there are none


def test_hf_models_are_compact_too() -> None:
    for family in ("bert", "gpt2", "bart", "t5"):
        out = lines(str(initwatch.inspect(zoo.build(family, layers=12))))
        assert len(out) <= 48, (family, len(out))  # BART (two stacks) measured 44


def test_reinit_report_prints_a_summary_with_the_full_table_behind_a_method() -> None:
    model = zoo.build("torch_encoder", layers=24)
    report = initwatch.reinit(model, "deepnet")
    summary = str(report)
    out = lines(summary)
    assert len(out) <= 60 and max(map(len, out)) <= 100  # was 315 lines, 174 columns
    assert out[0] == (
        "deepnet on TransformerEncoder (torch): 288 parameter inits, 24 structural changes, "
        "0 skipped"
    )
    beta = report.constants["encoder"]["beta"]
    (vo,) = [r for r in out if r.split()[:4] == ["encoder.0-23", "(24)", "v,", "o"]]
    assert f"{beta:.4g}" in vo and "xavier_normal" in vo
    (biases,) = [r for r in out if " biases " in r]
    assert "zeros" in biases and "(24)" in biases  # 144 identical bias rows -> one
    assert "every parameter: report.table()" in summary
    table = lines(report.table())
    assert len(table) == 3 + len(report.changes)  # headline, header, rule, one row per change
    assert any("layers.23.linear2.bias" in r for r in table)
    assert report.headline().startswith(out[0]) and "alpha=2.632" in report.headline()

"""Each integration example runs in its fast mode (in this process, so imports are paid once)."""

from __future__ import annotations

import pytest
from builders import initwatch_tags
from paths import ROOT, load_script

EXAMPLES = ROOT / "examples"
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def load(name: str):
    return load_script(EXAMPLES / f"{name}.py", f"example_{name}")


def test_lightning_deepnet(tmp_path, capsys):
    watch = load("lightning_deepnet").main(["--fast", "--root", str(tmp_path)])
    assert watch.report.scheme == "deepnet"
    run = tmp_path / "lightning_logs" / "version_0"
    assert initwatch_tags(run) and "tensorboard --logdir" in capsys.readouterr().out


def test_hf_trainer_tfixup(tmp_path):
    watch = load("hf_trainer_tfixup").main(["--fast", "--output-dir", str(tmp_path)])
    assert watch.report.scheme == "t-fixup"
    (run,) = (tmp_path / "runs").iterdir()  # the Trainer's own run holds our statistics
    assert initwatch_tags(run)


def test_hf_finetune_safely(tmp_path, capsys):
    watch = load("hf_finetune_safely").main(["--fast", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "refused, as it should be" in out and "scheme=None" in out
    assert watch.context.pretrained
    assert any(a.kind == "update_ratio_high" for a in watch.alerts), out
    assert "remedy:" in out

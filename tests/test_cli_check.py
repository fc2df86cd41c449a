"""``initwatch check``: family names, config files and directories, end to end in a fast mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from initwatch.cli import main
from initwatch.commands.check import OWN, CheckSettings, Variant, recommend

FAST = ["--passes", "1", "--batch", "4", "--seq", "8"]


def check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["check", *argv, *FAST])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    return out


def test_deep_post_ln_own_init_alerts_and_a_scheme_is_recommended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "profile.png"
    out = check(
        [
            "torch_encoder",
            "--layers",
            "24",
            "--hidden",
            "32",
            "--lr",
            "3e-3",
            "--steps",
            "12",
            "--plot",
            str(png),
        ],
        capsys,
    )
    # The three side-by-side tables, one column per init, one row per block.
    for title in ("activation RMS per block", "backward-signal RMS per block", "gradient norm"):
        assert title in out
    header = next(line for line in out.splitlines() if line.startswith("block "))
    assert header.split() == ["block", "own", "init", "deepnet", "t-fixup", "rezero"]
    assert re.search(r"^encoder\.23 +\S+ -> \S+", out, re.M)
    # The own init's collapse is flagged with a remedy that names a scheme...
    flagged = out.split("What would alert:")[1]
    assert "own init, step" in flagged and "vanishing_gradient" in flagged
    assert 'scheme="deepnet"' in flagged
    # ... and a scheme is recommended, with the reason.
    rec = re.search(r"^Recommendation: (\S+)", out, re.M)
    assert rec and rec.group(1) in ("deepnet", "t-fixup", "rezero"), out
    assert "the own init raised vanishing_gradient" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_pre_ln_family_skips_deepnet_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    out = check(["gpt2", "--layers", "3", "--hidden", "32", "--steps", "4"], capsys)
    assert "deepnet: skipped: DeepNet does not apply" in out and "Pre-LN" in out
    header = next(line for line in out.splitlines() if line.startswith("block "))
    assert header.split() == ["block", "own", "init", "t-fixup", "rezero"]
    assert "decoder.2" in out
    assert "Recommendation:" in out


def test_config_json_file_and_saved_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    out = check([str(path), "--steps", "3", "--schemes", "deepnet"], capsys)
    assert "bert config; random weights" in out
    assert "encoder.2" in out and "encoder.3" not in out

    saved = tmp_path / "saved"
    config.save_pretrained(saved)
    out = check([str(saved), "--steps", "3", "--schemes", "none", "--layers", "2"], capsys)
    assert "encoder.1" in out and "encoder.2" not in out  # --layers overrides the config
    header = next(line for line in out.splitlines() if line.startswith("block "))
    assert header.split() == ["block", "own", "init"]


def test_hidden_override_keeps_the_config_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    path = tmp_path / "llama.json"
    path.write_text(json.dumps(cfg.to_dict()))
    out = check([str(path), "--hidden", "32", "--steps", "2", "--schemes", "rezero"], capsys)
    assert "decoder.1" in out


def test_recommendation_rules() -> None:
    settings = CheckSettings("bert")
    clean_own = Variant(OWN, losses=[3.0, 1.0])
    assert recommend([clean_own, Variant("rezero", losses=[3.0, 0.5])], settings)[0] == OWN

    from initwatch.alerts import Alert

    alert = Alert(4, "vanishing_gradient", "encoder.1", 1e-4, 1e-2, "warning", "m", "use deepnet")
    bad_own = Variant(OWN, losses=[3.0, 2.9], alerts=[alert])
    choice, reason = recommend(
        [bad_own, Variant("deepnet", losses=[3.0, 0.9]), Variant("rezero", losses=[3.0, 0.4])],
        settings,
    )
    assert choice == "rezero"
    assert "vanishing_gradient at encoder.1 by step 4" in reason and "also clean: deepnet" in reason

    everyone = [bad_own, Variant("deepnet", losses=[3.0, float("nan")], alerts=[alert])]
    choice, reason = recommend(everyone, settings)
    assert choice == OWN and "every init alerted" in reason and "use deepnet" in reason

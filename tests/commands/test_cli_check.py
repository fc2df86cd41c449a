"""``initwatch check``: family names, config files and directories, end to end in a fast mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from initwatch.cli import main
from initwatch.preflight import OWN, CheckSettings, Variant, recommend

FAST = ["--passes", "1", "--batch", "4", "--seq", "8"]


def check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["check", *argv, *FAST])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    return out


def header(out: str) -> list[str]:
    """The words of the first table's header line (``block own init ...``)."""
    return next(
        line for line in out.splitlines() if line.startswith("block ") and "own init" in line
    ).split()


def config_file(path: Path, config) -> Path:  # noqa: ANN001
    """``config`` (a transformers config) written to ``path`` as JSON."""
    path.write_text(json.dumps(config.to_dict()))
    return path


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
    # one column per registered scheme that applies (the others are skipped with the reason)
    from initwatch.schemes.registry import SCHEMES

    tried = [s for s in SCHEMES if f"{s}: skipped" not in out]
    assert {"deepnet", "t-fixup", "rezero"} <= set(tried)
    assert header(out) == ["block", "own", "init", *tried]
    assert re.search(r"^encoder\.23 +\S+ -> \S+", out, re.M)
    # The own init's collapse is flagged with a remedy that names a scheme...
    flagged = out.split("What would alert:")[1]
    assert "own init, step" in flagged and "vanishing_gradient" in flagged
    assert 'initwatch.reinit(model, "deepnet")' in flagged  # check runs a plain loop
    # ... and a scheme is recommended, with the reason.
    rec = re.search(r"^Recommendation: (\S+)", out, re.M)
    assert rec and rec.group(1) in SCHEMES, out
    assert "the own init raised vanishing_gradient" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_pre_ln_family_skips_deepnet_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    out = check(["gpt2", "--layers", "3", "--hidden", "32", "--steps", "4"], capsys)
    assert "deepnet: skipped: Pre-LN: DeepNet needs Post-LN" in out  # the registry's reason
    assert header(out)[:5] == ["block", "own", "init", "t-fixup", "rezero"]
    assert "deepnet" not in header(out)
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
    path = config_file(tmp_path / "config.json", config)
    out = check([str(path), "--steps", "3", "--schemes", "deepnet"], capsys)
    assert "bert config; random weights" in out
    assert "encoder.2" in out and "encoder.3" not in out

    saved = tmp_path / "saved"
    config.save_pretrained(saved)
    out = check([str(saved), "--steps", "3", "--schemes", "none", "--layers", "2"], capsys)
    assert "encoder.1" in out and "encoder.2" not in out  # --layers overrides the config
    assert header(out) == ["block", "own", "init"]


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
    path = config_file(tmp_path / "llama.json", cfg)
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


def test_header_comes_before_the_measurement_and_the_recommendation_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header is on stdout before anything is measured; the recommendation leads the
    result (streaming order, not timing)."""
    import io

    from initwatch import preflight
    from initwatch.cli import build_parser
    from initwatch.commands import check as command

    out = io.StringIO()
    seen: list[str] = []
    real = preflight.measure

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(out.getvalue())
        return real(*args, **kwargs)

    monkeypatch.setattr(preflight, "measure", spy)
    argv = ["check", "gpt2", "--depth", "2", "--hidden", "16", "--fast", "--schemes", "rezero"]
    assert command.run(build_parser().parse_args([*argv, "--no-progress"]), out=out) == 0
    assert len(seen) == 2  # own init, rezero
    first = seen[0].splitlines()
    assert first[0].startswith("initwatch check gpt2: own init and rezero")
    assert "model: gpt2 (family), 2 blocks per stack, hidden 16" in seen[0]
    result = out.getvalue()[len(seen[0]) :].lstrip("\n").splitlines()
    assert result[0].startswith("Recommendation: ")
    assert result[1].startswith("  why: ")


def test_progress_lines_on_stderr_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["check", "gpt2", "--depth", "2", "--hidden", "16", "--fast", "--schemes", "rezero"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.strip().startswith("measured ")]
    assert [ln.split("(")[0].split("measured ")[1].strip() for ln in lines] == [
        "own init",
        "rezero",
    ]
    assert "measured" not in out  # stdout stays the result only


def test_progress_counts_only_the_inits_that_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "gpt2", "--depth", "2", "--hidden", "16", "--fast"]
    assert main([*argv, "--schemes", "deepnet,rezero,fixup"]) == 0  # Pre-LN: deepnet, fixup skip
    out, err = capsys.readouterr()
    lines = [ln.strip() for ln in err.splitlines() if ln.strip().startswith("measured ")]
    assert [ln.split(" in ")[0] for ln in lines] == [
        "measured own init (1/2)",
        "measured rezero (2/2)",
    ]
    assert "deepnet" in out and "fixup" in out  # the skipped ones are still reported


def test_new_registry_schemes_are_tried_without_an_edit(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from initwatch import preflight
    from initwatch.commands import demo
    from initwatch.commands.args import scheme_list
    from initwatch.schemes import registry

    twin = dataclasses.replace(registry.SCHEMES["rezero"], name="rezero-twin", aliases=())
    monkeypatch.setitem(registry.SCHEMES, "rezero-twin", twin)
    assert preflight.default_schemes()[-1] == "rezero-twin"
    assert demo.variants(depth=2, width=16)[-1] == "rezero-twin"
    assert scheme_list("rezero-twin", "check") == ("rezero-twin",)
    result = preflight.run_check(
        CheckSettings("torch_encoder_pre", depth=2, hidden=16, steps=2, passes=1, batch=2, seq=4)
    )
    assert [v.name for v in result.variants][-1] == "rezero-twin"
    assert result.variants[-1].measured


def test_the_recommendation_weighs_noise_and_gradient_balance() -> None:
    """Two clean schemes whose losses are within noise: the one with the more even gradient
    across depth wins, although its last loss is a little higher."""
    from initwatch.preflight import rank

    blocks = ["encoder.0", "encoder.1", "encoder.2", "encoder.3"]
    even = {"grad_norm": dict(zip(blocks, [0.9, 1.0, 1.0, 1.0], strict=True))}
    skewed = {"grad_norm": dict(zip(blocks, [0.01, 0.5, 1.0, 1.0], strict=True))}
    noisy = [3.0, 3.1, 1.3, 1.0, 1.2, 0.9, 1.25, 0.95]  # end 1.075 ± 0.06
    a = Variant("a", blocks, after=skewed, losses=[*noisy[:-1], 0.90], batches=2)
    b = Variant("b", blocks, after=even, losses=noisy, batches=2)
    assert a.end_loss()[0] < b.end_loss()[0]
    assert [v.name for v in rank([a, b])] == ["b", "a"]
    # a loss lower by far more than the noise wins whatever the balance
    c = Variant(
        "c", blocks, after=skewed, losses=[3.0, 3.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], batches=2
    )
    assert [v.name for v in rank([b, c])] == ["c", "b"]
    # a loss that did not fall beyond its noise is not clean
    flat = Variant("flat", blocks, after=even, losses=[3.0, 1.0, 3.0, 1.0], batches=2)
    assert not flat.fell and rank([flat]) == []


def test_each_scheme_keeps_its_colour_whichever_others_are_plotted() -> None:
    from initwatch.plots import OWN_COLOUR, check_figure, scheme_colour
    from initwatch.schemes.registry import SCHEMES

    colours = [scheme_colour(s) for s in SCHEMES]
    assert len(set(colours)) == len(colours) and OWN_COLOUR not in colours

    def variant(name: str) -> Variant:
        return Variant(name, ["e.0"], {"act_rms": {"e.0": 1.0}}, {"act_rms": {"e.0": 2.0}}, [2, 1])

    def drawn(names: list[str]) -> dict[str, str]:
        from initwatch.preflight import CheckResult

        result = CheckResult("m", [variant(n) for n in names], OWN, "", CheckSettings("bert"))
        ax = check_figure(result).axes[0]
        return {
            ln.get_label(): ln.get_color() for ln in ax.lines if not ln.get_label().startswith("_")
        }

    one = drawn([OWN, "deepnet", "t-fixup", "rezero"])
    two = drawn([OWN, "rezero"])  # deepnet and t-fixup skipped: rezero keeps its colour
    assert one["rezero"] == two["rezero"] == scheme_colour("rezero")
    assert one[OWN] == two[OWN] == OWN_COLOUR
    assert len(set(one.values())) == 4


def test_zero_started_schemes_get_the_rules_grace_in_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """check hands the rules the scheme by name, so a scheme the registry marks
    ``starts_from_zero`` (ReZero: gates grow from 0) gets their grace: no exploding_gradient."""
    import initwatch.watch
    from initwatch.frame import Frame
    from initwatch.preflight import run_check
    from initwatch.rules.detectors import Inputs
    from initwatch.rules.thresholds import Thresholds
    from initwatch.schemes.registry import SCHEMES

    contexts = []

    class Spy(initwatch.watch.Watch):
        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
            contexts.append(kwargs.get("context"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(initwatch.watch, "Watch", Spy)
    settings = CheckSettings(
        "gpt2", depth=4, hidden=32, steps=12, passes=1, batch=4, seq=16, schemes=("rezero",)
    )
    result = run_check(settings)
    burst = [c for c in contexts if c is not None]
    assert [c.scheme for c in burst] == [None, "rezero"]
    assert SCHEMES["rezero"].starts_from_zero
    assert Inputs(Frame(0, [], {}), burst[1], Thresholds()).grace
    rezero = result.variants[1]
    assert rezero.measured and not [a for a in rezero.alerts if a.kind == "exploding_gradient"]


def test_the_header_reaches_a_pipe_before_the_measurement_ends() -> None:
    """Streaming through a real pipe: the first line is readable while the check still runs."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "initwatch.cli", "check", "torch_encoder", "--depth", "2"]
    cmd += ["--hidden", "16", "--fast", "--schemes", "rezero,t-fixup", "--no-progress"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        first = proc.stdout.readline()
        still_running = proc.poll() is None
        rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert first.startswith("initwatch check torch_encoder: own init, rezero and t-fixup")
    assert still_running, "the header came only when the check had ended"
    assert "Recommendation: " in rest

"""The depth-scaled inits without structure: the scaled init for Pre-LN (GPT-2 / Megatron) and
DS-Init for Post-LN. Per-role std against the formulas (written out here), guards, options and
the restore round trip (their checkpoints are plain ones: the forward is the model's own)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from scheme_stats import KURTOSIS, fan_sum, rms_close

import initwatch
from initwatch import zoo


def _branches(a: initwatch.Anatomy, stack: str) -> int:
    first = a.stack(stack).blocks[0]
    return len(first.sublayers) * a.depth[stack]  # 2 per block, 3 with cross-attention


@pytest.mark.parametrize(
    "family", ["gpt2", "llama", "gpt_neox", "torch_decoder_pre", "torch_transformer_pre"]
)
def test_scaled_init_per_role_std(family: str) -> None:
    model = zoo.build(family, layers=3, hidden=64, heads=4)
    a = initwatch.inspect(model)
    report = initwatch.reinit(model, "scaled", seed=0)
    for stack in a.stacks:
        n_res = _branches(a, stack.kind)
        assert report.constants[stack.kind]["branches"] == n_res
        for block in stack.blocks:
            for slot in block.slots:
                std = 0.02 / math.sqrt(n_res) if slot.role in ("o", "xo", "ffn_out") else 0.02
                rms_close(slot.weight_view(model), std, KURTOSIS["normal"])
                bias = slot.bias_view(model)
                assert bias is None or torch.count_nonzero(bias) == 0
        if stack.token_embedding:
            rms_close(model.get_submodule(stack.token_embedding).weight, 0.02, 3.0)


def test_scaled_init_counts_three_branches_with_cross_attention() -> None:
    report = initwatch.reinit(zoo.build("torch_decoder_pre", layers=4), "scaled", std=0.01)
    c = report.constants["decoder"]
    assert c["branches"] == 12 and c["residual_std"] == pytest.approx(0.01 / math.sqrt(12))
    gpt = initwatch.reinit(zoo.build("gpt2", layers=12), "scaled").constants["decoder"]
    assert gpt["residual_std"] == pytest.approx(0.00408, abs=1e-5)  # the published 0.02/sqrt(24)


@pytest.mark.parametrize("family", ["bert", "torch_encoder", "bart", "opt_post"])
@pytest.mark.parametrize("exponent", ["code", "paper"])
def test_ds_init_per_layer_std(family: str, exponent: str) -> None:
    model = zoo.build(family, layers=4, hidden=64, heads=4)
    a = initwatch.inspect(model)
    report = initwatch.reinit(model, "ds-init", exponent=exponent, seed=0)
    power = -0.25 if exponent == "code" else -0.5  # on the bound: l^-1/4 (code), l^-1/2 (paper)
    for stack in a.stacks:
        assert report.constants[stack.kind] == {"alpha": 1.0, "exponent": power}
        for block in stack.blocks:
            layer = block.index + 1  # 1-based within its own stack
            for slot in block.slots:
                view = slot.weight_view(model)
                std = layer**power * math.sqrt(2 / fan_sum(view))
                rms_close(view, std, KURTOSIS["uniform"])
                bound = std * math.sqrt(3)
                assert view.abs().max().item() <= bound * (1 + 1e-6)
    source = "official code" if exponent == "code" else "paper"
    assert all(source in c.note for c in report.parameters if c.action == "xavier_uniform")


def test_ds_init_alpha_and_layer_twelve_numbers() -> None:
    model = zoo.build("torch_encoder", layers=12, hidden=64)
    report = initwatch.reinit(model, "ds-init", alpha=0.5)
    top = [c for c in report.parameters if c.block == "encoder.11" and c.role == "ffn_in"][0]
    assert top.gain == pytest.approx(0.5 * 12**-0.25)  # 0.5 x 0.537
    assert "exponent=-0.25" in report.headline()


@pytest.mark.parametrize(
    ("scheme", "family", "needle"),
    [("scaled", "bert", "Post-LN"), ("ds-init", "llama", "Pre-LN")],
)
def test_wrong_layout_is_refused_and_nothing_changes(scheme: str, family: str, needle: str) -> None:
    model = zoo.build(family)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(initwatch.SchemeNotApplicableError, match=needle):
        initwatch.reinit(model, scheme)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "_initwatch_reinit")


@pytest.mark.parametrize(
    ("scheme", "options", "needle"),
    [
        ("scaled", {"std": -1}, "std=-1"),
        ("ds-init", {"exponent": "half"}, "exponent='half'"),
        ("ds-init", {"alpha": 0}, "alpha > 0"),
    ],
)
def test_bad_options(scheme: str, options: dict, needle: str) -> None:
    family = "gpt2" if scheme == "scaled" else "bert"
    with pytest.raises(ValueError, match=needle):
        initwatch.reinit(zoo.build(family), scheme, **options)


@pytest.mark.parametrize(("scheme", "family"), [("scaled", "gpt2"), ("ds-init", "bert")])
def test_guards_and_restore(scheme: str, family: str, trained_state, tmp_path) -> None:  # noqa: ANN001
    model = zoo.build(family, layers=2)
    keys = list(model.state_dict())
    initwatch.reinit(model, scheme, seed=0)
    # weights only: the same keys, no hook, no module replaced (the forward is the model's own)
    assert list(model.state_dict()) == keys
    assert initwatch.schemes.structure.applied_structure(model) == []
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(initwatch.AlreadyAppliedError):
        initwatch.reinit(model, scheme)
    trained = zoo.build(family)
    trained.load_state_dict(trained_state(family))
    with pytest.raises(initwatch.PretrainedWeightsError):
        initwatch.reinit(trained, scheme)
    model.eval()
    inputs = zoo.example_inputs(family, model)
    ref = zoo.output_tensor(model(**inputs))
    model.save_pretrained(tmp_path)
    fresh = type(model)(model.config).eval()
    assert initwatch.restore(fresh, tmp_path).scheme == scheme
    torch.testing.assert_close(zoo.output_tensor(fresh(**inputs)), ref, atol=0, rtol=0)

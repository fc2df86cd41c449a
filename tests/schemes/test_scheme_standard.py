"""Standard re-initialization ("xavier", "kaiming"): per-role std against the formulas with the
activation's gain, identical layers (PyTorch issue #72253) found by inspect and re-drawn, guards
and the restore round trip."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scheme_stats import KURTOSIS, fan_sum, rms_close
from torch import nn

import initwatch
from initwatch import zoo


def moment_gain_hermite(fn) -> float:  # noqa: ANN001
    """1/sqrt(E[f(z)^2]), z ~ N(0, 1), by Gauss-Hermite quadrature (independent of initwatch)."""
    x, w = np.polynomial.hermite_e.hermegauss(200)
    y = fn(torch.tensor(x)).double().numpy()
    return 1.0 / math.sqrt(float((w * y**2).sum() / math.sqrt(2 * math.pi)))


# family -> (activated role, the gain it needs)
EXPECTED_GAIN = {
    "torch_encoder": ("ffn_in", math.sqrt(2.0)),  # F.relu: calculate_gain('relu')
    "opt": ("ffn_in", math.sqrt(2.0)),  # nn.ReLU
    "t5": ("ffn_in", math.sqrt(2.0)),
    "bert": ("ffn_in", moment_gain_hermite(nn.functional.gelu)),
    "llama": ("ffn_gate", moment_gain_hermite(nn.functional.silu)),  # act(gate(x)) * up(x)
    "gpt2": ("ffn_in", moment_gain_hermite(lambda t: nn.functional.gelu(t, approximate="tanh"))),
}


@pytest.mark.parametrize("scheme", ["xavier", "kaiming"])
@pytest.mark.parametrize("family", list(EXPECTED_GAIN))
def test_per_role_std_matches_the_formula_with_the_activation_gain(
    scheme: str, family: str
) -> None:
    model = zoo.build(family, layers=2, hidden=64, heads=4)
    a = initwatch.inspect(model)
    report = initwatch.reinit(model, scheme, seed=0)
    activated, act_gain = EXPECTED_GAIN[family]
    dist = "uniform" if scheme == "xavier" else "normal"
    rows = {(c.target, c.role): c for c in report.parameters}
    assert {c.action for c in report.parameters} - {"zeros"} == {f"{scheme}_{dist}"}
    for block in a.blocks:
        for slot in block.slots:
            view = slot.weight_view(model)
            gain = act_gain if slot.role == activated else 1.0
            if not a.attn_scaled and slot.role in ("q", "xq"):
                gain /= math.sqrt(slot.fan_out // a.heads)
            if scheme == "xavier":
                std = gain * math.sqrt(2 / fan_sum(view))
            else:  # fan_in mode, per logical matrix (GPT-2's Conv1D stores (in, out))
                std = gain / math.sqrt(slot.fan_in)
            rms_close(view, std, KURTOSIS[dist])
            bias = slot.bias_view(model)
            assert bias is None or torch.count_nonzero(bias) == 0
            target = slot.param_name + (f"[{slot.fused} {slot.index}/3]" if slot.fused else "")
            assert rows[(target, slot.role)].std == pytest.approx(std, rel=1e-6)
    for vals in report.constants.values():
        assert vals["activation_gain"] == pytest.approx(act_gain, rel=1e-6)


def test_activation_option_and_distribution_option() -> None:
    model = zoo.build("torch_encoder", layers=2, hidden=64)
    report = initwatch.reinit(model, "kaiming", activation="tanh", distribution="uniform")
    assert report.constants["encoder"]["activation_gain"] == pytest.approx(5 / 3)
    w = model.layers[0].linear1.weight
    bound = 5 / 3 / math.sqrt(64) * math.sqrt(3)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.95 * bound  # uniform


def test_inspect_finds_the_identical_layers_of_torch_encoder_and_xavier_redraws_them() -> None:
    # PyTorch issue #72253: nn.TransformerEncoder deep-copies its layer
    model = zoo.build("torch_encoder", layers=4, hidden=32)
    a = initwatch.inspect(model)
    assert a.identical == [["encoder.0", "encoder.1", "encoder.2", "encoder.3"]]
    assert "identical blocks: encoder.0 = ... = encoder.3 (4 blocks)" in str(a)
    assert "reinit(model, 'xavier')" in str(a)
    initwatch.reinit(model, "xavier", seed=0)
    after = initwatch.inspect(model)
    assert after.identical == [] and "identical blocks" not in str(after)
    for i in range(3):  # every layer has its own draw
        for name in ("linear1.weight", "self_attn.in_proj_weight", "self_attn.out_proj.weight"):
            w0 = model.layers[i].get_parameter(name)
            w1 = model.layers[i + 1].get_parameter(name)
            assert not torch.equal(w0, w1)


def test_models_with_distinct_layers_report_none() -> None:
    assert initwatch.inspect(zoo.build("bert", layers=3)).identical == []
    assert initwatch.inspect(nn.Transformer(32, 4, 2, 2, 64, batch_first=True)).identical == []
    # a stack copied on purpose is found in a Hugging Face model too
    model = zoo.build("gpt2", layers=3)
    model.transformer.h[2].load_state_dict(model.transformer.h[0].state_dict())
    assert initwatch.inspect(model).identical == [["decoder.0", "decoder.2"]]
    shared = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), 1)
    shared.layers.append(shared.layers[0])  # one layer used twice (ALBERT-style): not copies
    shared.num_layers = 2
    assert initwatch.inspect(shared).identical == []


@pytest.mark.parametrize("scheme", ["xavier", "kaiming"])
def test_guards_applied_twice_and_pretrained(scheme: str, trained_state) -> None:  # noqa: ANN001
    model = zoo.build("gpt2")
    keys = list(model.state_dict())
    initwatch.reinit(model, scheme)
    # weights only: the same keys, no hook, no module replaced (the forward is the model's own)
    assert list(model.state_dict()) == keys
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(initwatch.AlreadyAppliedError):
        initwatch.reinit(model, scheme)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    trained = zoo.build("bert")
    trained.load_state_dict(trained_state("bert"))
    kept = copy.deepcopy(trained.state_dict())
    with pytest.raises(initwatch.PretrainedWeightsError):
        initwatch.reinit(trained, scheme)
    assert all(torch.equal(kept[k], v) for k, v in trained.state_dict().items())


def test_bad_options_leave_the_model_as_it_was() -> None:
    model = zoo.build("bert")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="activation='swishy'"):
        initwatch.reinit(model, "xavier", activation="swishy")
    with pytest.raises(ValueError, match="distribution='cauchy'"):
        initwatch.reinit(model, "kaiming", distribution="cauchy")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "_initwatch_reinit")


@pytest.mark.parametrize("scheme", ["xavier", "kaiming"])
def test_restore_round_trip(scheme: str, tmp_path) -> None:  # noqa: ANN001
    model = zoo.build("bert", layers=2)
    initwatch.reinit(model, scheme)
    model.eval()
    inputs = zoo.example_inputs("bert", model)
    ref = zoo.output_tensor(model(**inputs))
    fresh = zoo.build("bert", layers=2).eval()
    report = initwatch.restore(fresh, model.state_dict())
    assert report.scheme == "none"  # weights only: the checkpoint is a plain one
    torch.testing.assert_close(zoo.output_tensor(fresh(**inputs)), ref, atol=0, rtol=0)
    model.save_pretrained(tmp_path)  # the config records the scheme
    again = type(model)(model.config).eval()
    assert initwatch.restore(again, tmp_path).scheme == scheme
    torch.testing.assert_close(zoo.output_tensor(again(**inputs)), ref, atol=0, rtol=0)


def test_resume_check_accepts_a_plain_checkpoint_for_a_weights_only_scheme() -> None:
    from initwatch.integrations._common import check_checkpoint

    model = zoo.build("gpt2", layers=2)
    check_checkpoint(model, model.state_dict(), "xavier", "InitWatch(scheme={scheme!r})")
    with pytest.raises(initwatch.InitWatchError, match="without an initwatch scheme"):
        check_checkpoint(model, model.state_dict(), "rezero", "InitWatch(scheme={scheme!r})")

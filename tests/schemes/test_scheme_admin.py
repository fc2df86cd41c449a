"""Admin: LN(x * omega + G(x)) computed exactly (hand-written references), admin-torch's closed
form per stack, the one-batch profiling against a hand-written walk, guards and restore."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwatch
from initwatch import zoo


def omega_closed(n: int) -> float:
    return math.sqrt((n + 1) / math.log(n + 1) - 1)  # admin-torch, O(log n) target


@pytest.mark.parametrize(
    ("family", "per_block"),
    [("torch_encoder", {"encoder": 2}), ("opt_post", {"decoder": 2}),
     ("torch_decoder", {"decoder": 3}), ("bart", {"encoder": 2, "decoder": 3})],
)  # fmt: skip
def test_closed_form_omega_per_stack(family: str, per_block: dict) -> None:
    model = zoo.build(family, layers=3)
    report = initwatch.reinit(model, "admin")
    a = initwatch.inspect(model)
    for stack, k in per_block.items():
        n = k * 3
        assert report.constants[stack]["n"] == n
        assert report.constants[stack]["omega"] == pytest.approx(omega_closed(n))
        for block in a.stack(stack).blocks:
            module = model.get_submodule(block.path)
            omegas = [b for name, b in module.named_buffers() if name.startswith("admin_omega")]
            assert len(omegas) == k
            assert all(torch.all(w == omega_closed(n)) for w in omegas)
    assert omega_closed(24) == pytest.approx(2.601, abs=1e-3)  # the reference's example


def _ln(norm: nn.LayerNorm, t: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(t, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _randomize_omegas(model: nn.Module) -> None:
    with torch.no_grad():  # trained omegas are vectors, not constants: test the broadcast
        for name, p in model.named_parameters():
            if "admin_omega" in name:
                p.copy_(0.5 + torch.rand_like(p) * 2)


def test_admin_encoder_equals_handwritten_reference() -> None:
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
    initwatch.reinit(model, "admin", learnable=True, seed=0)
    _randomize_omegas(model)
    x = torch.randn(2, 7, 32, requires_grad=True)

    def ref() -> torch.Tensor:
        h = x
        for lay in model.layers:
            w1, w2 = lay.admin_omega_param_attn, lay.admin_omega_param_ffn
            h = _ln(lay.norm1, h * w1 + lay.self_attn(h, h, h, need_weights=False)[0])
            h = _ln(lay.norm2, h * w2 + lay.linear2(lay.activation(lay.linear1(h))))
        return h

    out, expected = model(x), ref()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    params = [x, *model.parameters()]
    w = torch.randn_like(out)
    got = torch.autograd.grad((out * w).sum(), params)
    want = torch.autograd.grad((expected * w).sum(), params)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the eval fast path must not bypass the hooks
        torch.testing.assert_close(model.eval()(x), expected, atol=1e-5, rtol=1e-5)


def test_admin_bert_equals_handwritten_reference() -> None:
    model = zoo.build("bert", layers=3).eval()
    report = initwatch.reinit(model, "admin")
    omega = report.constants["encoder"]["omega"]
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        h = x
        for lay in model.bert.encoder.layer:
            sa = lay.attention.self(h)[0]
            a = _ln(lay.attention.output.LayerNorm, omega * h + lay.attention.output.dense(sa))
            h = _ln(lay.output.LayerNorm, omega * a + lay.output.dense(lay.intermediate(a)))
        torch.testing.assert_close(model.bert.encoder(x).last_hidden_state, h, atol=1e-5, rtol=1e-5)


def test_profiling_equals_a_handwritten_walk_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
    model = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
    for lay in model.layers:  # distinct layers with sizeable branches
        for p in lay.parameters():
            if p.dim() == 2:
                nn.init.xavier_normal_(p, gain=2.0)
    batch = torch.randn(8, 10, 32)
    plain = copy.deepcopy(model).eval()
    with torch.no_grad():  # Transformer-Clinic: omega_i = r; r <- sqrt(Var(omega x) + Var(f))
        r, expected, h = 1.0, [], batch
        for lay in plain.layers:
            for norm, branch in (
                (lay.norm1, lambda t, lay=lay: lay.self_attn(t, t, t, need_weights=False)[0]),
                (lay.norm2, lambda t, lay=lay: lay.linear2(lay.activation(lay.linear1(t)))),
            ):
                f = branch(h)
                expected.append(r)
                new_r = math.sqrt((r * h.double()).var().item() + f.double().var().item())
                h = _ln(norm, r * h + f)
                r = new_r
    model.train()
    report = initwatch.reinit(model, "admin", profile_batch=batch)
    assert model.training  # the profiling pass ran on a copy, in eval mode
    got = [
        getattr(lay, f"admin_omega_{k}")[0].item() for lay in model.layers for k in ("attn", "ffn")
    ]
    assert got == pytest.approx(expected, rel=1e-5)
    assert expected[-1] > 1.5  # a real profile, not the constant
    c = report.constants["encoder"]
    assert c["omega_min"] == pytest.approx(1.0) and c["omega_max"] == pytest.approx(max(expected))
    assert "profiled" in report.structure[0].note


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"output_change": "fast"}, "output_change='fast'"),
        ({"omega": 1.0, "profile_batch": torch.randn(2, 4, 32)}, "not both"),
        ({"omega": -1.0}, "omega > 0"),
        ({"learnable": "yes"}, "learnable='yes'"),
        ({"profile_batch": {"nothing": 1}}, "profile_batch|got an unexpected keyword"),
    ],
)
def test_bad_options_leave_the_model_as_it_was(options: dict, needle: str) -> None:
    model = zoo.build("torch_encoder", layers=2)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises((ValueError, TypeError), match=needle):
        initwatch.reinit(model, "admin", **options)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert initwatch.schemes.structure.applied_structure(model) == []


def test_output_change_targets_and_pre_ln_refusal() -> None:
    c = initwatch.reinit(zoo.build("torch_encoder", layers=12), "admin", output_change="constant")
    assert c.constants["encoder"]["omega"] == pytest.approx(math.sqrt(24))
    model = zoo.build("gpt2")
    with pytest.raises(initwatch.SchemeNotApplicableError, match="Pre-LN"):
        initwatch.reinit(model, "admin")
    assert initwatch.schemes.structure.applied_structure(model) == []


def test_guards_applied_twice_and_pretrained(trained_state) -> None:  # noqa: ANN001
    model = zoo.build("bert")
    initwatch.reinit(model, "admin")
    with pytest.raises(initwatch.AlreadyAppliedError):
        initwatch.reinit(copy.deepcopy(model), "deepnet")  # the structure alone is detected
    trained = zoo.build("bert")
    trained.load_state_dict(trained_state("bert"))
    with pytest.raises(initwatch.PretrainedWeightsError):
        initwatch.reinit(trained, "admin")  # restructuring trained blocks changes them too


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("family", ["bart", "torch_encoder"])
def test_restore_round_trip(family: str, learnable: bool) -> None:
    model = zoo.build(family, layers=2)
    initwatch.reinit(model, "admin", learnable=learnable)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    inputs = zoo.example_inputs(family, model)
    ref = zoo.output_tensor(model(**inputs))
    fresh = zoo.build(family, layers=2).eval()
    report = initwatch.restore(fresh, model.state_dict())
    assert report.scheme == "admin"
    torch.testing.assert_close(zoo.output_tensor(fresh(**inputs)), ref, atol=0, rtol=0)
    trainable = {n for n, p in fresh.named_parameters() if "admin_omega" in n}
    assert bool(trainable) == learnable

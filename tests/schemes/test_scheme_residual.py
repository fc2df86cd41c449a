"""SkipInit and Fixup on residual networks that are not transformers (torchvision-shaped
ResNets from zoo.resnet, a residual MLP described by patterns): per-layer statistics against
the formulas, forward against hand-written references of the official blocks, guards, restore."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from scheme_stats import rms_close
from torch import nn

import initwatch
from initwatch import zoo
from initwatch.schemes import residual
from initwatch.schemes.structure import RemovedNorm


def _blocks(model: nn.Module) -> list[nn.Module]:
    out, i = [], 1
    while hasattr(model, f"layer{i}"):
        out += list(getattr(model, f"layer{i}"))
        i += 1
    return out


def _set_scalars(model: nn.Module, prefix: str) -> None:
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # trained scalars are not 0 / 1: make every one visible
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1].startswith(prefix):
                p.copy_(torch.rand(p.shape, generator=g) + 0.3)


def _assert_matches_reference(model: nn.Module, x: torch.Tensor, reference) -> None:  # noqa: ANN001
    """``model(x)`` and its gradients (input and every parameter) equal ``reference(model, x)``'s."""
    out, ref = model(x), reference(model, x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    params = [x, *model.parameters()]
    got = torch.autograd.grad(out.sum(), params)
    want = torch.autograd.grad(ref.sum(), params)
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_reading_recognised_and_described_blocks() -> None:
    model = zoo.resnet((2, 2), bottleneck=True)
    a = residual.read(model, {})
    assert [b.path for b in a.blocks] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert a.stacks[0].embedding_norm.path == "bn1"
    assert residual.read(model, {"blocks": "layer*.*"}).depth == {"encoder": 4}
    b = residual.branch_of(model, "layer2.0")
    assert b.depth == 3 and b.output == "layer2.0.bn3" and b.shortcut == "layer2.0.downsample"
    with pytest.raises(initwatch.AnatomyError, match="layers="):
        residual.read(nn.Sequential(nn.Linear(2, 2)), {})


def _ref_skipinit(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x + alpha * F(x) per block, every BatchNorm removed (SkipInit, De & Smith 2020)."""
    h = F.relu(model.conv1(x))
    for blk in _blocks(model):
        identity = h if blk.downsample is None else blk.downsample[0](h)
        if hasattr(blk, "conv3"):
            out = blk.conv3(F.relu(blk.conv2(F.relu(blk.conv1(h)))))
        else:
            out = blk.conv2(F.relu(blk.conv1(h)))
        h = F.relu(blk.skipinit_alpha * out + identity)
    return model.fc(model.avgpool(h).flatten(1))


@pytest.mark.parametrize("bottleneck", [False, True])
def test_skipinit_is_the_shortcut_at_init_and_matches_the_reference(bottleneck: bool) -> None:
    model = zoo.resnet((2, 2), width=8, bottleneck=bottleneck)
    bns = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    weights = {
        n: p.detach().clone() for n, p in model.named_parameters() if n.rsplit(".", 1)[0] not in bns
    }
    report = initwatch.reinit(model, "skipinit")
    assert report.constants == {"encoder": {"alpha_init": 0.0}}
    gates = [n for n, _ in model.named_parameters() if n.endswith("skipinit_alpha")]
    assert len(gates) == 4 and all(model.get_parameter(g).item() == 0 for g in gates)
    assert not [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for n, w in weights.items():  # SkipInit draws no weight
        assert torch.equal(model.get_parameter(n), w)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    torch.testing.assert_close(model(x), _ref_skipinit(model, x), atol=1e-6, rtol=1e-6)
    _set_scalars(model, "skipinit_alpha")
    _assert_matches_reference(model, x, _ref_skipinit)


def test_skipinit_keeps_norms_on_request_and_starts_small_on_request() -> None:
    model = zoo.resnet((2,), width=8)
    initwatch.reinit(model, "skipinit", norms="none", alpha_init=0.1)
    assert isinstance(model.layer1[0].bn2, nn.BatchNorm2d)
    assert model.layer1[0].skipinit_alpha.item() == pytest.approx(0.1)
    blocks_only = zoo.resnet((2,), width=8)
    initwatch.reinit(blocks_only, "skipinit", norms="blocks")
    assert isinstance(blocks_only.bn1, nn.BatchNorm2d)
    assert isinstance(blocks_only.layer1[0].bn1, RemovedNorm)


def _fan_out(w: torch.Tensor) -> int:
    return w.shape[0] * math.prod(w.shape[2:])


@pytest.mark.parametrize(("bottleneck", "m"), [(False, 2), (True, 3)])
def test_fixup_per_layer_statistics(bottleneck: bool, m: int) -> None:
    model = zoo.resnet((3, 3), width=16, bottleneck=bottleneck)
    report = initwatch.reinit(model, "fixup", seed=0)
    n_branches = 6
    scale = n_branches ** (-1 / (2 * m - 2))  # L^(-1/(2m-2))
    assert report.constants["encoder"]["scale"] == pytest.approx(scale)
    for blk in _blocks(model):
        layers = [blk.conv1, blk.conv2] + ([blk.conv3] if bottleneck else [])
        for conv in layers[:-1]:
            rms_close(conv.weight, math.sqrt(2 / _fan_out(conv.weight)) * scale, 3.0)
        assert torch.count_nonzero(layers[-1].weight) == 0  # last layer of the branch
        if blk.downsample is not None:
            w = blk.downsample[0].weight
            rms_close(w, math.sqrt(2 / _fan_out(w)), 3.0)  # not scaled
    assert torch.count_nonzero(model.fc.weight) == 0 and torch.count_nonzero(model.fc.bias) == 0
    assert not [n for n, mod in model.named_modules() if isinstance(mod, nn.BatchNorm2d)]


def _ref_fixup(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The official FixupBasicBlock / FixupBottleneck forward (hongyi-zhang/Fixup), with the
    ImageNet model's ``relu(conv1(x) + bias1)`` stem and ``fc(x + bias2)`` head; the layers
    are applied without their modules' hooks (``_conv_forward``, ``F.linear``)."""

    def conv(c: nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
        return c._conv_forward(t, c.weight, c.bias)

    h = F.relu(conv(model.conv1, x) + model.conv1.fixup_bias1)
    for blk in _blocks(model):
        layers = [blk.conv1, blk.conv2] + ([blk.conv3] if hasattr(blk, "conv3") else [])
        out = h
        for i, layer in enumerate(layers, start=1):
            out = conv(layer, out + getattr(blk, f"fixup_bias{i}a"))
            if i < len(layers):
                out = F.relu(out + getattr(blk, f"fixup_bias{i}b"))
        out = out * blk.fixup_scale + getattr(blk, f"fixup_bias{len(layers)}b")
        identity = h if blk.downsample is None else conv(blk.downsample[0], h + blk.fixup_bias1a)
        h = F.relu(out + identity)
    pooled = model.avgpool(h).flatten(1)
    return F.linear(pooled + model.fc.fixup_bias2, model.fc.weight, model.fc.bias)


@pytest.mark.parametrize("bottleneck", [False, True])
def test_fixup_forward_matches_the_official_block(bottleneck: bool) -> None:
    model = zoo.resnet((2, 2), width=8, bottleneck=bottleneck)
    initwatch.reinit(model, "fixup", seed=0)
    with torch.no_grad():  # move the zero-initialized layers so every path shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    _set_scalars(model, "fixup_")
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    _assert_matches_reference(model, x, _ref_fixup)


class ResMLP(nn.Module):
    """A residual MLP no recognition covers: described by patterns."""

    def __init__(self, d: int = 16, n: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"fc1": nn.Linear(d, 2 * d), "fc2": nn.Linear(2 * d, d)})
            for _ in range(n)
        )
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = x + b["fc2"](F.relu(b["fc1"](x)))
        return self.head(x)


def test_fixup_on_a_described_residual_mlp() -> None:
    model = ResMLP()
    report = initwatch.reinit(model, "fixup", blocks="blocks.*", layers=["fc1", "fc2"], seed=0)
    assert report.constants["encoder"]["branches"] == 4
    for b in model.blocks:
        rms_close(b["fc1"].weight, math.sqrt(2 / 32) * 4**-0.5, 3.0)  # fan_out = 32
        assert torch.count_nonzero(b["fc2"].weight) == 0 and torch.count_nonzero(b["fc2"].bias) == 0
    assert torch.count_nonzero(model.head.weight) == 0
    x = torch.randn(5, 16)
    assert torch.equal(model(x), torch.zeros(5, 3))  # every branch and the head start at 0


@pytest.mark.parametrize("scheme", ["skipinit", "fixup"])
def test_guards(scheme: str) -> None:
    bert = zoo.build("bert")
    with pytest.raises(initwatch.SchemeNotApplicableError, match="transformer blocks"):
        initwatch.reinit(bert, scheme, anatomy=initwatch.inspect(bert))
    model = zoo.resnet((2,), width=8)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(initwatch.PretrainedWeightsError):
        initwatch.reinit(model, scheme, pretrained=True)
    with pytest.raises(initwatch.AnatomyError, match="no module 'conv9'"):
        initwatch.reinit(model, scheme, layers=["conv1", "conv9"])
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert initwatch.schemes.structure.applied_structure(model) == []
    initwatch.reinit(model, scheme)
    with pytest.raises(initwatch.AlreadyAppliedError):
        initwatch.reinit(copy.deepcopy(model), scheme)


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize("scheme", ["skipinit", "fixup"])
def test_restore_round_trip(scheme: str, bottleneck: bool, tmp_path) -> None:  # noqa: ANN001
    model = zoo.resnet((2, 2), width=8, bottleneck=bottleneck)
    initwatch.reinit(model, scheme)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = zoo.resnet((2, 2), width=8, bottleneck=bottleneck)
    assert initwatch.restore(fresh, tmp_path / "m.pt").scheme == scheme
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
    outer = sorted(n for n, _ in fresh.named_parameters() if n.split(".")[0] in ("conv1", "fc"))
    extra = ["conv1.fixup_bias1", "fc.fixup_bias2"] if scheme == "fixup" else []
    assert outer == sorted(["conv1.weight", "fc.bias", "fc.weight", *extra])
    with pytest.raises(initwatch.AlreadyAppliedError):
        initwatch.reinit(fresh, scheme)


@pytest.fixture(scope="module")
def trained_resnet() -> nn.Module:
    """A zoo.resnet trained 30 SGD steps: its convolutions still look like an init (0 of 11
    matrices flagged), its BatchNorm affine parameters no longer do."""
    torch.manual_seed(0)
    model = zoo.resnet((2, 2), width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


@pytest.mark.parametrize("scheme", ["skipinit", "fixup"])
def test_a_trained_resnet_is_refused_and_left_untouched(trained_resnet, scheme: str) -> None:  # noqa: ANN001
    model = copy.deepcopy(trained_resnet)
    d = initwatch.decide_pretrained(model)
    assert d.pretrained and d.source == "norms" and len(d.norms) == 10  # every BatchNorm
    assert not d.trained  # the matrices alone would not have told
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(initwatch.PretrainedWeightsError, match="BatchNorm layers were trained"):
        initwatch.reinit(model, scheme)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert initwatch.schemes.structure.applied_structure(model) == []
    initwatch.reinit(model, scheme, pretrained=False)  # the caller overrides the guard
    assert not [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("scheme", ["skipinit", "fixup"])
@pytest.mark.parametrize("bottleneck", [False, True])
def test_a_fresh_resnet_is_accepted_even_after_a_forward_in_train_mode(
    scheme: str, bottleneck: bool
) -> None:
    model = zoo.resnet((2, 2), width=8, bottleneck=bottleneck)
    assert initwatch.decide_pretrained(model).source == "init"
    model(torch.randn(4, 3, 8, 8))  # moves every running statistic, trains nothing
    d = initwatch.decide_pretrained(model)
    assert not d.pretrained and d.source == "init" and d.norms == [] and len(d.norm_stats) > 0
    initwatch.reinit(model, scheme)

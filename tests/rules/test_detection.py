"""Detection suite: small runs with a known pathology, measured independently in each test.

Each faulty run must raise the right kind by a stated step and name the right layers; each
healthy run must raise nothing. The thresholds are the library defaults (no test tunes them).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings

import pytest
import torch
from builders import manual_step
from torch import nn

from initwatch.alerts import Alert
from initwatch.context import RunContext
from initwatch.policy import AlertWarning
from initwatch.watch import Watch

ce = nn.functional.cross_entropy


@pytest.fixture(autouse=True)
def one_thread():
    # Two busy cores: intra-op threads fighting each other make these runs ~20x slower.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- helpers
def mlp(act, n=4, d=32, din=16, dout=4, bias=None, gain=None, norm=False) -> nn.Sequential:
    """Linear, [LayerNorm], act, Linear, ... -> Linear; optional init std gain/sqrt(fan_in)."""
    layers: list[nn.Module] = [nn.Linear(din, d)]
    for _ in range(n):
        if norm:
            layers.append(nn.LayerNorm(d))
        layers += [act(), nn.Linear(d, d)]
    layers += [act(), nn.Linear(d, dout)]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            if gain is not None:
                nn.init.normal_(m.weight, 0.0, gain / math.sqrt(m.in_features))
            if bias is not None:
                nn.init.constant_(m.bias, bias)
    return model


def classification(din=16, dout=4, batch=64):
    g = torch.Generator().manual_seed(1)
    x_all = torch.randn(512, din, generator=g)
    y_all = (x_all @ torch.randn(din, dout, generator=g)).argmax(1)

    def get(step: int):
        i = torch.randint(0, 512, (batch,), generator=g)
        return x_all[i], y_all[i]

    return get


class TokenModel(nn.Module):
    """Embedding + learned positions -> nn.TransformerEncoder -> linear head."""

    def __init__(self, layers: int, norm_first: bool, d: int = 32, vocab: int = 50, seq: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, 4, 2 * d, dropout=0.0, batch_first=True, norm_first=norm_first
        )
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d) if norm_first else nn.Identity()
        self.head = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.enc(self.emb(x) + self.pos)))


def tokens(vocab=50, seq=16, batch=8):
    """Predict the previous token: needs attention and positions."""
    g = torch.Generator().manual_seed(2)

    def get(step: int):
        x = torch.randint(0, vocab, (batch, seq), generator=g)
        return x, torch.roll(x, 1, dims=1)

    return get


def lm_loss(out, y):
    logits = getattr(out, "logits", out)
    return ce(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def warmup(base: float, steps: int):
    def schedule(step: int, opt: torch.optim.Optimizer, watch: Watch) -> None:
        for group in opt.param_groups:
            group["lr"] = base * min(1.0, (step + 1) / steps)
        watch.context.in_warmup = step + 1 < steps
        watch.context.warmup_steps = steps
        watch.context.base_lr = base

    return schedule


def train(
    model,
    opt,
    batch,
    steps,
    *,
    every=1,
    loss_fn=ce,
    context=None,
    schedule=None,
    on_alert="ignore",
):
    watch = Watch(model, every=every, on_alert=on_alert, context=context)
    losses = []

    def loss(step: int) -> torch.Tensor:
        x, y = batch(step)
        return loss_fn(model(x), y)

    try:
        for step in range(steps):
            if schedule is not None:
                schedule(step, opt, watch)
            losses.append(manual_step(watch, opt, step, functools.partial(loss, step)).item())
    finally:
        watch.close()
    return watch, losses


def first(watch: Watch, kind: str) -> Alert:
    found = [a for a in watch.alerts if a.kind == kind and a.repeat == 0]
    assert found, f"no {kind} alert; got {[(a.step, a.kind, a.layer) for a in watch.alerts]}"
    return found[0]


def kinds(watch: Watch) -> set[str]:
    return {a.kind for a in watch.alerts}


def outputs(model: nn.Module, x: torch.Tensor, types) -> dict[str, torch.Tensor]:
    """Outputs of the submodules of the given types, by path (the test's own measurement)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, i, o, name=name: seen.__setitem__(name, o.detach()))
        for name, m in model.named_modules()
        if isinstance(m, types)
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def assert_silent(watch: Watch, caught) -> None:
    assert watch.alerts == [], [str(a) for a in watch.alerts]
    ours = [
        w
        for w in caught
        if issubclass(w.category, AlertWarning) or str(w.message).startswith("initwatch")
    ]
    assert ours == [], [str(w.message) for w in ours]


def train_silently(model, opt, batch, steps, **kw) -> tuple[Watch, list[float]]:
    """:func:`train` with alerts as warnings; asserts that no alert and no initwatch warning
    was raised (:func:`assert_silent`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch, losses = train(model, opt, batch, steps, on_alert="warn", **kw)
    assert_silent(watch, caught)
    return watch, losses


# a language model's run: logging every 2nd step, the lr warmed up over 10 steps
LM = dict(every=2, loss_fn=lm_loss, schedule=warmup(1e-3, 10))


# ----------------------------------------------------------------------------- faults
def test_deep_sigmoid_mlp_vanishing_gradient() -> None:
    model = mlp(nn.Sigmoid, n=10)
    batch = classification()
    # independent measurement: the first layer's gradient is ~1e-6 of the last hidden layer's
    probe = copy.deepcopy(model)
    x, y = batch(0)
    ce(probe(x), y).backward()
    ratio = probe[0].weight.grad.norm() / probe[-3].weight.grad.norm()
    assert ratio < 1e-4

    watch, _ = train(model, torch.optim.SGD(model.parameters(), lr=0.1), batch, 6)
    alert = first(watch, "vanishing_gradient")
    assert alert.step <= 2  # persistence 3 at every=1: frames 0, 1, 2
    assert alert.layer == "0"  # the first Linear: the worst
    assert {"0", "2", "4"} <= set(alert.extra["layers"])
    assert "ReLU" in alert.remedy and "DeepNet" not in alert.remedy
    # SGD on vanishing gradients also moves the lower weights by almost nothing
    assert kinds(watch) <= {"vanishing_gradient", "update_ratio_low"}


def test_tanh_with_too_large_init_saturates() -> None:
    model = mlp(nn.Tanh, n=4, gain=5.0)
    batch = classification()
    x, _ = batch(0)
    sat = {n: (o.abs() > 0.99).float().mean().item() for n, o in outputs(model, x, nn.Tanh).items()}
    saturated = {n for n, f in sat.items() if f > 0.5}
    assert len(saturated) >= 3

    watch, _ = train(model, torch.optim.SGD(model.parameters(), lr=0.01), batch, 6)
    alert = first(watch, "saturation")
    assert alert.step <= 2
    assert alert.layer in saturated and set(alert.extra["layers"]) <= set(sat)
    assert alert.value == pytest.approx(sat[alert.layer], abs=0.15)
    assert "gain" in alert.remedy
    assert kinds(watch) <= {"saturation", "vanishing_gradient"}


def test_dead_relus_from_large_negative_bias() -> None:
    model = mlp(nn.ReLU, n=4, bias=-3.0, gain=math.sqrt(2))
    batch = classification()
    x, _ = batch(0)
    zeros = {n: (o == 0).float().mean().item() for n, o in outputs(model, x, nn.ReLU).items()}
    dead = {n for n, f in zeros.items() if f > 0.95}
    assert len(dead) >= 4

    watch, _ = train(model, torch.optim.SGD(model.parameters(), lr=0.01), batch, 6)
    alert = first(watch, "dead_units")
    assert alert.step <= 2
    assert alert.layer in dead and set(alert.extra["layers"]) == dead
    assert "LeakyReLU" in alert.remedy and "bias" in alert.remedy
    # the all-zero outputs and gradients downstream are explained, not re-alerted
    assert kinds(watch) == {"dead_units"}


def test_exploding_init_gain() -> None:
    model = mlp(nn.ReLU, n=6, gain=4.0)
    batch = classification()
    x, _ = batch(0)
    rms = {
        n: o.pow(2).mean().sqrt().item() for n, o in outputs(model, x, (nn.Linear, nn.ReLU)).items()
    }
    # growth over depth against the first layer of the same type (Linear "0", ReLU "1")
    growth = {n: v / rms["0" if int(n) % 2 == 0 else "1"] for n, v in rms.items()}
    assert growth["12"] > 100  # the last hidden Linear

    watch, _ = train(model, torch.optim.SGD(model.parameters(), lr=1e-6), batch, 6)
    alert = first(watch, "exploding_activation")
    assert alert.step <= 2
    # the worst layer: the largest growth (Linear 12 and its ReLU 13 are within a few %)
    top = max(g for n, g in growth.items() if n != "14")  # the head "14" is not judged
    assert growth[alert.layer] >= 0.8 * top
    assert all(growth[n] > 100 for n in alert.extra["layers"])
    assert "init gain" in alert.remedy
    assert kinds(watch) <= {"exploding_activation", "exploding_gradient"}


def _update_ratio(model: nn.Module, opt_cls, lr: float, batch) -> float:
    probe = copy.deepcopy(model)
    opt = opt_cls(probe.parameters(), lr=lr)
    before = probe[4].weight.detach().clone()
    x, y = batch(0)
    ce(probe(x), y).backward()
    opt.step()
    return ((probe[4].weight.detach() - before).norm() / before.norm()).item()


def test_learning_rate_far_too_high() -> None:
    model = mlp(nn.ReLU, n=3, gain=math.sqrt(2), norm=True)
    batch = classification()
    assert _update_ratio(model, torch.optim.Adam, 1.0, batch) > 0.3  # 300x the ~1e-3 band

    watch, _ = train(model, torch.optim.Adam(model.parameters(), lr=1.0), batch, 6)
    alert = first(watch, "update_ratio_high")
    assert alert.step <= 2
    assert len(alert.extra["layers"]) >= 6  # every Linear: one alert for one cause
    assert "lower the Adam learning rate" in alert.remedy and "from 1 to" in alert.remedy


def test_learning_rate_far_too_low() -> None:
    model = mlp(nn.ReLU, n=3, gain=math.sqrt(2), norm=True)
    batch = classification()
    assert _update_ratio(model, torch.optim.Adam, 1e-8, batch) < 1e-6

    watch, _ = train(model, torch.optim.Adam(model.parameters(), lr=1e-8), batch, 6)
    alert = first(watch, "update_ratio_low")
    assert alert.step <= 2
    assert "raise the Adam learning rate" in alert.remedy
    assert kinds(watch) == {"update_ratio_low"}


def test_injected_inf_is_reported_at_once_naming_the_layer() -> None:
    model = mlp(nn.ReLU, n=3, gain=math.sqrt(2), norm=True)
    batch = classification()
    state = {"step": 0}

    def inject(module, inputs, output):
        if state["step"] >= 6:
            output = output.clone()
            output[:, 3] = float("inf")
            return output

    model[5].register_forward_hook(inject)

    def schedule(step, opt, watch):
        state["step"] = step

    x, _ = batch(0)
    state["step"] = 6
    seen = outputs(model, x, nn.Module)
    order = [n for n, _ in model.named_modules() if n in seen and n]
    first_bad = next(n for n in order if not torch.isfinite(seen[n]).all())
    assert first_bad == "5"
    state["step"] = 0

    watch, losses = train(
        model, torch.optim.Adam(model.parameters(), lr=1e-3), batch, 8, schedule=schedule
    )
    assert math.isfinite(losses[5]) and not math.isfinite(losses[6])
    alert = first(watch, "nonfinite")
    assert alert.step == 6 and alert.severity == "error" and alert.layer == "5"
    assert all(a.step >= 6 for a in watch.alerts if a.kind == "nonfinite")


@pytest.mark.slow
def test_deep_post_ln_transformer_without_warmup_vanishes() -> None:
    model = TokenModel(24, norm_first=False)
    batch = tokens()
    watch, _ = train(
        model, torch.optim.Adam(model.parameters(), lr=1e-3), batch, 18, every=2, loss_fn=lm_loss
    )
    # independent measurement after the run: dL/d(block output) of the lowest blocks vs the top
    grads: dict[int, torch.Tensor] = {}

    def keep(i):
        def hook(module, inputs, output):
            output.register_hook(lambda g: grads.__setitem__(i, g))

        return hook

    handles = [blk.register_forward_hook(keep(i)) for i, blk in enumerate(model.enc.layers)]
    x, y = batch(99)
    lm_loss(model(x), y).backward()
    for h in handles:
        h.remove()
    rms = [grads[i].pow(2).mean().sqrt().item() for i in range(24)]
    assert min(rms[:6]) / max(rms[-6:]) < 1e-2

    assert watch.context.layout == "post" and watch.context.depth == {"encoder": 24}
    alert = first(watch, "vanishing_gradient")
    assert alert.step <= 16
    lower = {f"encoder.{i}" for i in range(12)}
    assert alert.layer in lower
    listed = alert.extra["layers"]
    assert sum(n in lower for n in listed) >= 0.75 * len(listed)
    assert "alpha=(2N)^(1/4)=2.632" in alert.remedy
    assert 'initwatch.reinit(model, "deepnet")' in alert.remedy  # a plain loop: reinit


# ----------------------------------------------------------------------------- healthy
def test_healthy_pre_ln_transformer_with_adamw_and_warmup() -> None:
    model = TokenModel(6, norm_first=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    watch, losses = train_silently(model, opt, tokens(), 60, **LM)
    assert losses[-1] < losses[0]
    assert watch.context.layout == "pre"


@pytest.mark.slow
def test_healthy_small_gpt2() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    watch, losses = train_silently(model, opt, tokens(vocab=100, seq=32), 60, **LM)
    assert losses[-1] < losses[0]
    assert watch.context.family == "gpt2"


def test_healthy_normalized_relu_mlp() -> None:
    model = mlp(nn.ReLU, n=3, gain=math.sqrt(2), norm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    watch, losses = train_silently(model, opt, classification(), 60)
    assert losses[-1] < losses[0]
    assert "act_zero_frac" in watch.last_frame.values  # ~half the ReLU outputs are zero


def test_healthy_small_cnn() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    g = torch.Generator().manual_seed(3)
    x_all = torch.randn(256, 3, 16, 16, generator=g)
    y_all = (x_all.mean((1, 2, 3)) > 0).long() + 2 * (x_all[:, 0].mean((1, 2)) > 0).long()

    def batch(step):
        i = torch.randint(0, 256, (32,), generator=g)
        return x_all[i], y_all[i]

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    watch, losses = train_silently(model, opt, batch, 60, every=2)
    assert losses[-1] < losses[0]


def test_rezero_zero_block_gradients_at_start_are_silent() -> None:
    import initwatch

    model = TokenModel(6, norm_first=False)
    initwatch.reinit(model, "rezero")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    context = RunContext(scheme="rezero")
    watch, _ = train_silently(model, opt, tokens(), 30, every=2, loss_fn=lm_loss, context=context)
    step0 = watch.frames[0]
    assert step0.step == 0
    # by construction (init-schemes.md §4.4): every block weight has exactly zero gradient
    assert step0.get("grad_norm", "enc.layers.0.linear1.weight") == 0.0


def test_fp16_loss_scaler_skipped_steps_are_not_alerts() -> None:
    from initwatch.rules import Rules

    model = mlp(nn.ReLU, n=3, gain=math.sqrt(2), norm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # a huge initial loss scale overflows the fp16 backward until the scaler has halved it
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    watch = Watch(model, every=1, on_alert="ignore", context=RunContext(precision="16-mixed"))
    batch = classification()
    skipped_steps = []
    for step in range(30):
        watch.begin_step(step)
        x, y = batch(step)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = ce(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        watch.before_optimizer_step(opt)
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        skipped = scaler.get_scale() < scale  # independent: the scaler backed off
        if skipped:
            skipped_steps.append(step)
        watch.end_step(loss=loss, skipped=skipped)
    watch.close()
    assert len(skipped_steps) >= 10 and skipped_steps[0] == 0
    frame = watch.frames[0]
    assert frame.globals["skipped_step"] == 1.0
    assert sum(frame.values["grad_nonfinite"].values()) > 0  # overflowed, as the scaler said
    assert watch.alerts == [], [str(a) for a in watch.alerts]
    # control: the same frame, not marked as skipped, is a non-finite gradient
    frame.globals["skipped_step"] = 0.0
    (alert,) = Rules().update(frame, RunContext(precision="16-mixed"))
    assert alert.kind == "nonfinite" and "bf16" in alert.remedy

"""Remedies change with the context and quote the numbers they computed."""

from __future__ import annotations

import re

import pytest

from initwatch.alerts import AlertKind
from initwatch.context import RunContext
from initwatch.remedies import deepnet_constants, suggest, tfixup_scales

SCHEME_WORDS = ("deepnet", "t-fixup", "rezero", "scheme=", "reinit", "re-init")


def post(depth: int, **kw) -> RunContext:
    return RunContext(
        layout="post", depth={"encoder": depth}, optimizer="Adam", lr=1e-3, warmup_steps=0, **kw
    )


# ----------------------------------------------------------------------------- constants
@pytest.mark.parametrize(
    ("n", "alpha", "beta"),
    [(6, 1.8612, 0.3799), (12, 2.2134, 0.3195), (24, 2.6321, 0.2686), (48, 3.1302, 0.2259)],
)
def test_deepnet_single_stack_matches_the_paper_table(n: int, alpha: float, beta: float) -> None:
    a, b = deepnet_constants({"decoder": n})["decoder"]
    assert a == pytest.approx(alpha, abs=1e-4) and b == pytest.approx(beta, abs=1e-4)
    assert a * b == pytest.approx(2**-0.5)


@pytest.mark.parametrize(
    ("n", "m", "ea", "eb", "da", "db"),
    [(6, 6, 1.4179, 0.4970, 2.0598, 0.3433), (6, 12, 1.4807, 0.4759, 2.4495, 0.2887)],
)
def test_deepnet_encoder_decoder(n, m, ea, eb, da, db) -> None:
    c = deepnet_constants({"encoder": n, "decoder": m})
    assert c["encoder"] == pytest.approx((ea, eb), abs=1e-4)
    assert c["decoder"] == pytest.approx((da, db), abs=1e-4)


def test_tfixup_scales() -> None:
    assert tfixup_scales({"decoder": 12})["decoder"] == pytest.approx(0.3102, abs=1e-4)
    assert tfixup_scales({"encoder": 12})["encoder"] == pytest.approx(0.3600, abs=1e-4)


# ----------------------------------------------------------------------------- vanishing gradient
@pytest.mark.parametrize("depth", [24, 48])
def test_deep_post_ln_gets_deepnet_with_this_depths_constants(depth: int) -> None:
    text = suggest("vanishing_gradient", "encoder.0", {"ratio": 1e-3, "n_affected": 9}, post(depth))
    alpha, beta = (2 * depth) ** 0.25, (8 * depth) ** -0.25
    assert f"alpha=(2N)^(1/4)={alpha:.3f}" in text and f"beta=(8N)^(-1/4)={beta:.3f}" in text
    assert f"N={depth}" in text
    assert 'InitWatch(scheme="deepnet")' in text
    assert "T-Fixup" in text and "Pre-LN" in text and "warmup" in text


def test_deepnet_values_differ_with_depth() -> None:
    a = suggest("vanishing_gradient", "encoder.0", {}, post(24))
    b = suggest("vanishing_gradient", "encoder.0", {}, post(48))
    assert "2.632" in a and "0.269" in a and "3.130" in b and "0.226" in b and a != b


def test_encoder_decoder_constants_in_remedy() -> None:
    ctx = RunContext(layout="post", depth={"encoder": 6, "decoder": 6})
    text = suggest("vanishing_gradient", "decoder.0", {}, ctx)
    assert "encoder alpha=1.418, beta=0.497" in text and "decoder alpha=2.060, beta=0.343" in text


def test_depth_from_evidence_when_context_lacks_it() -> None:
    text = suggest(
        "vanishing_gradient",
        "encoder.0",
        {"n_layers": 24, "stack": "encoder"},
        RunContext(layout="post"),
    )
    assert "2.632" in text


def test_scheme_already_deepnet_gets_a_different_suggestion() -> None:
    fresh = suggest("vanishing_gradient", "encoder.0", {}, post(24))
    done = suggest("vanishing_gradient", "encoder.0", {}, post(24, scheme="deepnet"))
    assert done != fresh
    assert "already applied" in done and 'InitWatch(scheme="deepnet")' not in done
    assert "inspect" in done and "Pre-LN" in done


def test_pretrained_never_gets_a_scheme() -> None:
    ctx = post(24, pretrained=True)
    for kind in AlertKind:
        evidence = {
            "ratio": 0.5,
            "factor": 500.0,
            "target": 1e-3,
            "baseline": 1.0,
            "grad_norm": 50.0,
            "per_layer": 2.0,
            "fraction": 0.99,
            "source": "depth",
        }
        text = suggest(kind, "encoder.3", evidence, ctx).lower()
        assert text
        assert not any(w in text for w in SCHEME_WORDS), (kind, text)


def test_pre_ln_is_not_told_to_use_deepnet() -> None:
    ctx = RunContext(layout="pre", depth={"decoder": 24}, lr=1e-3)
    text = suggest("vanishing_gradient", "decoder.0", {}, ctx)
    assert "DeepNet" not in text and "warmup" in text


def test_mlp_without_transformer_context_gets_activation_and_init_advice() -> None:
    text = suggest("vanishing_gradient", "0", {"n_layers": 12}, RunContext())
    assert "ReLU" in text and "Kaiming" in text and "DeepNet" not in text


def test_existing_warmup_is_lengthened_not_added() -> None:
    ctx = RunContext(layout="post", depth={"encoder": 24}, warmup_steps=500)
    assert "lengthen the learning-rate warmup (now 500 steps, try 1000)" in suggest(
        "vanishing_gradient", "encoder.0", {}, ctx
    )


# ----------------------------------------------------------------------------- update ratio
def test_update_ratio_high_fine_tune_lowers_lr_by_measured_factor() -> None:
    ctx = RunContext(pretrained=True, lr=1e-3, optimizer="AdamW", depth={"encoder": 12})
    ev = {"ratio": 0.05, "target": 1e-3, "factor": 50.0, "lr": 1e-3}
    text = suggest("update_ratio_high", "encoder.11", ev, ctx)
    assert "~50x (from 0.001 to 2.0e-05)" in text
    assert "layer-wise learning-rate decay" in text and "warmup" in text
    assert not any(w in text.lower() for w in SCHEME_WORDS)


def test_update_ratio_factor_follows_the_measurement() -> None:
    ctx = RunContext(lr=1e-2)
    a = suggest("update_ratio_high", "l", {"ratio": 0.2, "target": 1e-3, "factor": 200.0}, ctx)
    b = suggest("update_ratio_high", "l", {"ratio": 0.5, "target": 1e-3, "factor": 500.0}, ctx)
    assert "200x (from 0.01 to 5.0e-05)" in a and "500x (from 0.01 to 2.0e-05)" in b


def test_update_ratio_low_raises_lr_by_the_factor() -> None:
    text = suggest("update_ratio_low", "l", {"ratio": 1e-7, "target": 1e-3}, RunContext(lr=1e-8))
    assert "raise the learning rate ~1.0e+04x (from 1.0e-08 to 1.0e-04)" in text


# ----------------------------------------------------------------------------- other kinds
def test_nonfinite_under_fp16_suggests_bf16_and_loss_scaling() -> None:
    fp16 = suggest(
        "nonfinite", "encoder.3", {"where": "activation"}, RunContext(precision="16-mixed", lr=1e-3)
    )
    assert "bf16" in fp16 and "GradScaler" in fp16 and "lower the" in fp16 and "encoder.3" in fp16
    fp32 = suggest("nonfinite", "encoder.3", {"where": "activation"}, RunContext(precision="32"))
    assert "bf16" not in fp32 and "max_norm" in fp32


def test_exploding_gradient_clip_value_from_history() -> None:
    text = suggest(
        "exploding_gradient", "*", {"grad_norm": 40.0, "baseline": 0.73}, RunContext(lr=3e-4)
    )
    assert "max_norm=1.5" in text and "median gradient norm 0.73" in text
    assert "gradient_clip_val=1.5" in text and "max_grad_norm=1.5" in text
    assert "lower the learning rate" in text and "warmup" in text
    no_history = suggest("exploding_gradient", "*", {"grad_norm": 5e4}, RunContext())
    assert "max_norm=1" in no_history


def test_dead_units_and_saturation_remedies() -> None:
    dead = suggest("dead_units", "net.3", {"fraction": 0.99}, RunContext(lr=0.1))
    assert "LeakyReLU" in dead and "GELU" in dead and "bias" in dead and "from 0.1 to 0.01" in dead
    sat = suggest("saturation", "net.1", {"fraction": 0.8}, RunContext())
    assert "gain" in sat and "normalization" in sat and "ReLU" in sat and "80%" in sat


def test_activation_remedies_use_the_measured_growth() -> None:
    grow = suggest("exploding_activation", "5", {"per_layer": 2.6, "source": "depth"}, RunContext())
    assert "divide the init gain by ~2.6" in grow
    shrink = suggest(
        "vanishing_activation", "5", {"per_layer": 0.5, "source": "depth"}, RunContext()
    )
    assert "multiply the init gain by ~2" in shrink
    fp16 = suggest(
        "exploding_activation",
        "encoder.2.ffn",
        {"source": "fp16"},
        RunContext(precision="16-mixed"),
    )
    assert "bf16" in fp16 and "65504" in fp16
    pre = suggest(
        "exploding_activation",
        "decoder.23",
        {"per_layer": 1.2, "source": "depth"},
        RunContext(layout="pre", depth={"decoder": 24}),
    )
    assert "1/sqrt(2N)=0.144" in pre and "DeepNet" not in pre


@pytest.mark.parametrize("kind", [k.value for k in AlertKind])
def test_every_kind_has_a_remedy_without_evidence_or_context(kind: str) -> None:
    text = suggest(kind, "layer")
    assert text and text.endswith(".") and "None" not in text
    assert not re.search(r"\bnan\b", text)


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        suggest("exploding_loss", "x")


def test_update_ratio_low_never_suggests_an_lr_past_the_optimizers_range() -> None:
    # Adam at 1e-3 with updates 450x too small (a starved layer): not "lr 0.45"
    ctx = RunContext(lr=1e-3, optimizer="Adam")
    text = suggest("update_ratio_low", "l", {"ratio": 2.2e-6, "target": 1e-3}, ctx)
    assert "~10x (from 0.001 to 0.01)" in text and "the gap is 450x" in text
    sgd = suggest(
        "update_ratio_low",
        "l",
        {"ratio": 2.2e-6, "target": 1e-3},
        RunContext(lr=1e-3, optimizer="SGD"),
    )
    assert "~450x (from 0.001 to 0.45)" in sgd


# ----------------------------------------------------------------------------- built from the context
def fw(framework: str | None, **kw) -> RunContext:
    ctx = post(24, **kw)
    if framework:
        ctx.extra["framework"] = framework
    return ctx


def test_scheme_remedy_names_the_frameworks_own_api() -> None:
    hf = suggest("vanishing_gradient", "encoder.0", {}, fw("transformers"))
    assert 'InitWatchCallback(scheme="deepnet")' in hf and "InitWatch(scheme" not in hf
    assert "TrainingArguments(warmup_steps=" in hf and "configure_optimizers" not in hf
    lr = suggest("loss_diverging", "*", {"ratio": 9.0, "baseline": 2.0}, fw("transformers"))
    assert "(from 0.001 to 1.0e-04) with `TrainingArguments(learning_rate=1.0e-04)`" in lr
    pl = suggest("vanishing_gradient", "encoder.0", {}, fw("lightning"))
    assert 'Trainer(callbacks=[InitWatch(scheme="deepnet")])' in pl
    assert "InitWatchCallback" not in pl and "TrainingArguments" not in pl
    assert "configure_optimizers" in pl
    plain = suggest("vanishing_gradient", "encoder.0", {}, fw("plain"))
    assert 'initwatch.reinit(model, "deepnet")' in plain
    assert "InitWatch" not in plain and "TrainingArguments" not in plain
    assert "scheduler.step()" in plain


@pytest.mark.parametrize(
    ("framework", "wanted", "unwanted"),
    [
        ("lightning", "Trainer(gradient_clip_val=1.5)", ("max_grad_norm", "clip_grad_norm_")),
        (
            "transformers",
            "TrainingArguments(max_grad_norm=1.5)",
            ("gradient_clip_val", "clip_grad_norm_"),
        ),
        (
            "plain",
            "clip_grad_norm_(model.parameters(), 1.5)",
            ("gradient_clip_val", "max_grad_norm"),
        ),
    ],
)
def test_clipping_and_bf16_in_the_frameworks_words(framework, wanted, unwanted) -> None:
    ctx = fw(framework)
    text = suggest("exploding_gradient", "*", {"grad_norm": 50.0, "baseline": 0.73}, ctx)
    assert wanted in text and not any(u in text for u in unwanted)
    ctx.precision = "16-mixed"
    bf16 = suggest("nonfinite", "encoder.3", {"where": "activation"}, ctx)
    words = {
        "lightning": 'Trainer(precision="bf16-mixed")',
        "transformers": "TrainingArguments(bf16=True)",
        "plain": "torch.autocast(device_type, dtype=torch.bfloat16)",
    }
    assert words[framework] in bf16
    assert not any(w in bf16 for k, w in words.items() if k != framework)


@pytest.mark.parametrize(
    ("family", "switch"),
    [
        ("torch", "norm_first=True"),
        ("opt", "OPTConfig(do_layer_norm_before=True)"),
        ("bert", None),
    ],
)
def test_layout_switch_is_the_familys_own(family, switch) -> None:
    text = suggest("vanishing_gradient", "encoder.0", {}, fw("transformers", family=family))
    if switch is None:
        assert "norm_first" not in text and "bert has no Pre-LN switch" in text
    else:
        assert f"switch to Pre-LN (`{switch}" in text
    if family != "torch":
        assert "norm_first" not in text


@pytest.mark.parametrize("scheme", ["t-fixup", "rezero", "deepnet", "scaled", "ds-init"])
def test_growth_after_a_scheme_never_suggests_what_it_already_did(scheme) -> None:
    from initwatch.schemes import registry

    ctx = fw("transformers", scheme=scheme)
    text = suggest("exploding_activation", "encoder.20", {"per_layer": 1.3, "source": "depth"}, ctx)
    title = registry.get(scheme).title
    assert f"under {title}, which already scales the residual branches" in text
    for redundant in ("1/sqrt(2N)", "Curse of Depth", "LayerNorm scaling", "ReZero, whose"):
        assert redundant not in text, (scheme, text)
    assert 'scheme="' not in text and "reinit(" not in text  # no second scheme on this model
    if registry.get(scheme).removes_norms:
        assert "removed the residual-path LayerNorms" in text
    # the numbers quoted are the registry's, not re-written
    for consts in registry.constants(scheme, {"encoder": 24}).values():
        for k, v in consts.items():
            if v:
                assert f"{k}={v:.3g}" in text
    fresh = suggest(
        "exploding_activation", "encoder.20", {"per_layer": 1.3, "source": "depth"}, fw(None)
    )
    assert "1/sqrt(2N)" in fresh  # without a scheme, branch scaling is the advice


def test_activation_advice_names_only_the_activations_present() -> None:
    ev = {"n_layers": 12}
    gelu = suggest("vanishing_gradient", "3", ev, RunContext(activations=["gelu"]))
    assert "sigmoid" not in gelu and "tanh" not in gelu and "GELU's own gain" in gelu
    sig = suggest("vanishing_gradient", "3", ev, RunContext(activations=["relu", "sigmoid"]))
    assert "replace its sigmoid by ReLU or GELU" in sig and "tanh" not in sig
    assert "Kaiming for ReLU" in sig and "Xavier (gain 1) for sigmoid" in sig
    tanh_sat = suggest("saturation", "act", {"fraction": 0.8}, RunContext(activations=["tanh"]))
    assert "gain 5/3 for tanh" in tanh_sat and "sigmoid" not in tanh_sat
    grow = suggest(
        "exploding_activation", "5", {"per_layer": 2.6}, RunContext(activations=["gelu"])
    )
    assert "tanh" not in grow and "ReLU:" not in grow


def test_activation_kinds_are_read_from_the_model() -> None:
    from torch import nn

    from initwatch import Watch
    from initwatch.selection import activation_kinds

    assert activation_kinds(nn.Sequential(nn.Linear(2, 2), nn.SiLU())) == ["silu"]
    layer = nn.TransformerEncoderLayer(8, 2, 16, activation="gelu")
    assert activation_kinds(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)) == ["gelu"]
    watch = Watch(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    assert watch.context.activations == ["tanh"] and watch.context.extra["framework"] == "plain"
    watch.close()


def test_per_layer_factor_comes_from_the_layers_that_grew() -> None:
    # outputs grow x3 per layer up to layer 4, then the last layers shrink back below layer 0:
    # last-vs-first would say "~0.75x per layer" (a shrink); the growth is 3x per layer.
    from initwatch.frame import Frame, LayerInfo
    from initwatch.rules.detectors import Inputs, activations
    from initwatch.rules.thresholds import Thresholds

    rms = [1.0, 3.0, 9.0, 27.0, 81.0 * 3, 0.5, 0.2, 0.1]
    infos = [LayerInfo(f"b{i}", "block", i, f"b{i}", block=i) for i in range(len(rms))]
    frame = Frame(0, infos, {"act_rms": {f"b{i}": v for i, v in enumerate(rms)}})
    (grow,) = [
        f
        for f in activations(Inputs(frame, RunContext(), Thresholds()))
        if f.kind == "exploding_activation"
    ]
    assert grow.layer == "b4"
    assert grow.evidence["per_layer"] == pytest.approx(243**0.25)
    assert "over the 4 layers up to it" in grow.message
    text = suggest(grow.kind, grow.layer, grow.evidence, RunContext())
    assert "grow ~3.9x per layer" in text and "divide the init gain by ~3.9" in text

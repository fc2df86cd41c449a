"""reinit(): per-role std against the papers' formulas, exact DeepNorm, ReZero identity,
T-Fixup norm removal, and what every scheme must leave alone."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from scheme_stats import fan_sum, rms_close
from torch import nn

import initwatch
from initwatch import zoo
from initwatch.anatomy import Anatomy
from initwatch.schemes.structure import RemovedNorm

POST_LN = [f for f in zoo.FAMILIES if initwatch.inspect(zoo.build(f, layers=1)).layout == "post"]


# --- the papers' constants, written out here independently of initwatch ---------------------
def deepnet_ab(kind: str, stack: str, n: int, m: int, cross: bool = False) -> tuple[float, float]:
    if kind == "encoder-decoder" or cross:  # three sublayers per decoder block
        if stack == "encoder":
            return 0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)
        return (3 * m) ** 0.25, (12 * m) ** -0.25
    depth = n if stack == "encoder" else m
    return (2 * depth) ** 0.25, (8 * depth) ** -0.25


def tfixup_scales(kind: str, stack: str, n: int, m: int) -> tuple[float, float]:
    """(layer scale, embedding scale)."""
    if stack == "encoder":
        return 0.67 * n**-0.25, (9 * n) ** -0.25
    return (9 * m) ** -0.25, (9 * m) ** -0.25


SCALED = {"v", "o", "xv", "xo", "ffn_in", "ffn_out"}


def expected_gain(scheme: str, a: Anatomy, stack: str, role: str, d_head: int) -> float:
    n, m = a.depth.get("encoder", 0), a.depth.get("decoder", 0)
    cross = any(s.kind == "cross" for b in a.blocks for s in b.sublayers)
    if scheme == "deepnet":
        gain = deepnet_ab(a.kind, stack, n, m, cross)[1] if role in SCALED else 1.0
    else:
        gain = tfixup_scales(a.kind, stack, n, m)[0] if role in SCALED else 1.0
    if not a.attn_scaled and role in ("q", "xq"):
        gain /= math.sqrt(d_head)
    return gain


SCHEME_FAMILIES = [("deepnet", f) for f in POST_LN] + [("t-fixup", f) for f in zoo.FAMILIES]


@pytest.mark.parametrize(("scheme", "family"), SCHEME_FAMILIES)
def test_per_role_std_matches_the_formula(scheme: str, family: str) -> None:
    model = zoo.build(family, layers=3, hidden=64, heads=4)
    a = initwatch.inspect(model)
    report = initwatch.reinit(model, scheme)
    kurt = 3.0 if scheme == "deepnet" else 1.8  # Xavier-normal vs Xavier-uniform
    rows = {(c.target, c.role): c for c in report.parameters}
    for stack in a.stacks:
        for block in stack.blocks:
            for slot in block.slots:
                view = slot.weight_view(model)
                d_head = slot.fan_out // a.heads
                gain = expected_gain(scheme, a, stack.kind, slot.role, d_head)
                std = gain * math.sqrt(2 / fan_sum(view))
                rms_close(view, std, kurt)
                bias = slot.bias_view(model)
                if bias is not None:
                    assert torch.count_nonzero(bias) == 0, f"{slot.module} bias not zeroed"
                target = slot.param_name + (f"[{slot.fused} {slot.index}/3]" if slot.fused else "")
                assert rows[(target, slot.role)].std == pytest.approx(std, rel=1e-9)
    if scheme == "deepnet":
        for stack, vals in report.constants.items():
            n, m = a.depth.get("encoder", 0), a.depth.get("decoder", 0)
            cross = family.startswith("torch_decoder")
            assert (vals["alpha"], vals["beta"]) == pytest.approx(
                deepnet_ab(a.kind, stack, n, m, cross)
            )


@pytest.mark.parametrize("family", ["gpt2", "bert", "t5", "bart", "gemma", "llama"])
def test_tfixup_token_embeddings(family: str) -> None:
    model = zoo.build(family, layers=3, hidden=64, vocab=512)
    a = initwatch.inspect(model)
    report = initwatch.reinit(model, "t-fixup", embedding="literal")
    first = a.stacks[0]
    emb = model.get_submodule(first.token_embedding)
    n, m = a.depth.get("encoder", 0), a.depth.get("decoder", 0)
    std = 64**-0.5 * tfixup_scales(a.kind, first.kind, n, m)[1]
    rows = emb.weight.detach().clone()
    if emb.padding_idx is not None:
        assert torch.count_nonzero(rows[emb.padding_idx]) == 0
        rows = torch.cat([rows[: emb.padding_idx], rows[emb.padding_idx + 1 :]])
    rms_close(rows, std, 3.0)
    if len(a.stacks) == 2:  # one shared table: scaled once, with the encoder's factor
        assert any("initialized once" in c.note for c in report.skipped)


def test_tfixup_effective_embedding_compensates_the_model_multiplier() -> None:
    model = zoo.build("gemma", layers=2, hidden=64, vocab=512)
    initwatch.reinit(model, "t-fixup", embedding="effective")
    target = (9 * 2) ** -0.25 / math.sqrt(64)  # Gemma multiplies embeddings by sqrt(d)
    rms_close(model.model.embed_tokens.weight, target, 3.0)


@pytest.mark.parametrize(
    ("family", "extra", "multiplier"),
    [
        ("bert", {}, 1.0),
        ("gpt2", {}, 1.0),
        ("llama", {}, 1.0),
        ("t5", {}, 1.0),
        ("opt", {}, 1.0),
        ("bart", {}, 1.0),
        ("bart", {"scale_embedding": True}, 8.0),  # fairseq's sqrt(d) multiplier
        ("gemma", {}, 8.0),
    ],
)
def test_tfixup_default_embedding_reaches_the_first_block_at_the_official_scale(
    family: str, extra: dict, multiplier: float
) -> None:
    """By default the embedding entering block 0 has fairseq's effective std (9N)^-1/4 (the
    stored N(0, d^-1/2) table times its sqrt(d) multiplier), whatever the host multiplies by."""
    model = zoo.build(family, layers=3, hidden=64, vocab=512, **extra)
    a = initwatch.inspect(model)
    initwatch.reinit(model, "t-fixup", seed=0)
    stack = a.stacks[0]
    n, m = a.depth.get("encoder", 0), a.depth.get("decoder", 0)
    fairseq_effective = 64**-0.5 * tfixup_scales(a.kind, stack.kind, n, m)[1] * math.sqrt(64)
    emb = model.get_submodule(stack.token_embedding)
    rows = emb.weight.detach()
    if emb.padding_idx is not None:
        rows = torch.cat([rows[: emb.padding_idx], rows[emb.padding_idx + 1 :]])
    assert stack.embed_scale == pytest.approx(multiplier)
    rms_close(rows * multiplier, fairseq_effective, 3.0)


@pytest.mark.parametrize("family", ["t5", "gpt_neo"])
def test_q_gain_corrected_without_logit_scaling(family: str) -> None:
    model = zoo.build(family, layers=2, hidden=64, heads=4)
    initwatch.reinit(model, "t-fixup")
    block = initwatch.inspect(model).blocks[0]
    q, k = block.slot("q").weight_view(model), block.slot("k").weight_view(model)
    ratio = q.pow(2).mean().sqrt() / k.pow(2).mean().sqrt()
    assert ratio.item() == pytest.approx(16**-0.5, rel=0.15)  # d_head = 16


def test_fused_qkv_slices_each_get_their_own_init() -> None:
    model = zoo.build("gpt2", layers=24, hidden=64)
    initwatch.reinit(model, "t-fixup")
    w = model.transformer.h[0].attn.c_attn.weight.detach()
    q, v = w[:, :64], w[:, 128:]
    scale = (9 * 24) ** -0.25
    rms_close(q, 64**-0.5, 1.8)
    rms_close(v, 64**-0.5 * scale, 1.8)
    # a whole-tensor Xavier would give one std over the fused (64, 192) tensor instead
    assert v.pow(2).mean().sqrt() < 0.5 * q.pow(2).mean().sqrt()


# --- DeepNet: exact LN(alpha * x + G(x)) ------------------------------------------------------
def _ln(norm: nn.LayerNorm, t: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(t, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _ref_encoder_layer(
    layer: nn.TransformerEncoderLayer, x: torch.Tensor, alpha: float
) -> torch.Tensor:
    h = _ln(layer.norm1, alpha * x + layer.self_attn(x, x, x, need_weights=False)[0])
    return _ln(layer.norm2, alpha * h + layer.linear2(layer.activation(layer.linear1(h))))


def _ref_decoder_layer(
    layer: nn.TransformerDecoderLayer, x: torch.Tensor, mem: torch.Tensor, alpha: float
) -> torch.Tensor:
    h = _ln(layer.norm1, alpha * x + layer.self_attn(x, x, x, need_weights=False)[0])
    h = _ln(layer.norm2, alpha * h + layer.multihead_attn(h, mem, mem, need_weights=False)[0])
    return _ln(layer.norm3, alpha * h + layer.linear2(layer.activation(layer.linear1(h))))


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], w: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad((out * w).sum(), inputs))


def _compare(model: nn.Module, run, ref, inputs: list[torch.Tensor]) -> None:  # noqa: ANN001
    params = list(model.parameters())
    out, expected = run(), ref()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    for g, e in zip(
        _grads(out, inputs + params, w), _grads(expected, inputs + params, w), strict=True
    ):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_deepnet_encoder_equals_handwritten_deepnorm() -> None:
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
    report = initwatch.reinit(model, "deepnet")
    alpha = report.constants["encoder"]["alpha"]
    assert alpha == pytest.approx(12**0.25)
    x = torch.randn(2, 7, 32, requires_grad=True)

    def ref() -> torch.Tensor:
        h = x
        for lay in model.layers:
            h = _ref_encoder_layer(lay, h, alpha)
        return h

    _compare(model, lambda: model(x), ref, [x])


def test_deepnet_encoder_decoder_equals_handwritten_deepnorm() -> None:
    model = nn.Transformer(32, 4, 3, 2, 64, dropout=0.0, batch_first=True)
    report = initwatch.reinit(model, "deepnet")
    a_enc, a_dec = report.constants["encoder"]["alpha"], report.constants["decoder"]["alpha"]
    assert a_enc == pytest.approx(0.81 * (3**4 * 2) ** (1 / 16))
    assert a_dec == pytest.approx(6**0.25)
    src = torch.randn(2, 5, 32, requires_grad=True)
    tgt = torch.randn(2, 4, 32, requires_grad=True)

    def ref() -> torch.Tensor:
        h = src
        for lay in model.encoder.layers:
            h = _ref_encoder_layer(lay, h, a_enc)
        mem = _ln(model.encoder.norm, h)
        y = tgt
        for lay in model.decoder.layers:
            y = _ref_decoder_layer(lay, y, mem, a_dec)
        return _ln(model.decoder.norm, y)

    _compare(model, lambda: model(src, tgt), ref, [src, tgt])


def test_deepnet_bert_equals_handwritten_deepnorm() -> None:
    model = zoo.build("bert", layers=3).eval()
    report = initwatch.reinit(model, "deepnet")
    alpha = report.constants["encoder"]["alpha"]
    x = torch.randn(2, 6, 32, requires_grad=True)

    def ref() -> torch.Tensor:
        h = x
        for lay in model.bert.encoder.layer:
            sa = lay.attention.self(h)[0]
            a = _ln(lay.attention.output.LayerNorm, alpha * h + lay.attention.output.dense(sa))
            h = _ln(lay.output.LayerNorm, alpha * a + lay.output.dense(lay.intermediate(a)))
        return h

    _compare(model.bert.encoder, lambda: model.bert.encoder(x).last_hidden_state, ref, [x])


def test_deepnet_standalone_decoder_uses_three_sublayer_constants() -> None:
    model = zoo.build("torch_decoder", layers=4)
    report = initwatch.reinit(model, "deepnet")
    assert report.constants["decoder"]["alpha"] == pytest.approx(12**0.25)
    assert report.constants["decoder"]["beta"] == pytest.approx(48**-0.25)


def test_deepnet_keeps_no_activation_after_forward() -> None:
    model = zoo.build("torch_encoder", layers=3)
    initwatch.reinit(model, "deepnet")
    out = model(torch.randn(2, 5, 32))
    del out
    held = [
        (k, v) for lay in model.layers for k, v in vars(lay).items() if "_initwatch_residual" in k
    ]
    assert held and all(v is None for _, v in held)


def test_deepnet_refuses_pre_ln_and_names_the_alternatives() -> None:
    model = zoo.build("llama")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(initwatch.SchemeNotApplicableError) as err:
        initwatch.reinit(model, "deepnet")
    msg = str(err.value)
    assert "Pre-LN" in msg and "t-fixup" in msg and "rezero" in msg and "LN(alpha*x + G(x))" in msg
    _assert_untouched(model, before)


# --- ReZero: identity at init -----------------------------------------------------------------
def _block_io(model: nn.Module, a: Anatomy) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(mod, args, kwargs, out):  # noqa: ANN001, ANN202
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("src", kwargs.get("tgt")))
        seen.append((x, out[0] if isinstance(out, tuple) else out))

    handles = [
        model.get_submodule(b.path).register_forward_hook(hook, with_kwargs=True) for b in a.blocks
    ]
    return seen, handles


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_rezero_blocks_are_the_identity_at_init(family: str) -> None:
    model = zoo.build(family, layers=3)
    a = initwatch.inspect(model)
    report = initwatch.reinit(model, "rezero")
    gates = [f"{b.path}.rezero_alpha" for b in a.blocks]
    state = model.state_dict()
    assert all(g in state and state[g].item() == 0.0 for g in gates)
    assert sum(c.action == "rezero_gate" for c in report.structure) == len(a.blocks)
    seen, handles = _block_io(model, a)
    out = zoo.output_tensor(model(**zoo.example_inputs(family, model)))
    for h in handles:
        h.remove()
    assert len(seen) == len(a.blocks)
    for x, y in seen:
        torch.testing.assert_close(y, x, atol=0, rtol=0)
    out.float().pow(2).mean().backward()
    assert all(model.get_parameter(g).grad is not None for g in gates)


def test_rezero_only_gates_get_gradient_at_step_zero() -> None:
    model = zoo.build("llama", layers=3)
    initwatch.reinit(model, "rezero")
    ids = zoo.example_inputs("llama", model)["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    layer = model.model.layers[1]
    assert layer.rezero_alpha.grad.abs().item() > 0
    assert torch.count_nonzero(layer.self_attn.q_proj.weight.grad) == 0
    assert torch.count_nonzero(layer.mlp.down_proj.weight.grad) == 0


def test_rezero_per_sublayer_option() -> None:
    model = zoo.build("torch_transformer", layers=2)
    initwatch.reinit(model, "rezero", per="sublayer")
    names = {n for n, _ in model.named_parameters() if "rezero" in n}
    assert "decoder.layers.0.rezero_alpha_cross" in names
    assert "encoder.layers.1.rezero_alpha_ffn" in names and len(names) == 2 * 2 + 2 * 3


# --- T-Fixup and ReZero remove the norms inside blocks ---------------------------------------
def _norms_left(module: nn.Module) -> list[str]:
    return [
        n
        for n, m in module.named_modules()
        if "norm" in type(m).__name__.lower() and not isinstance(m, RemovedNorm)
    ]


@pytest.mark.parametrize("family", zoo.FAMILIES)
@pytest.mark.parametrize("scheme", ["t-fixup", "rezero"])
def test_no_norm_left_inside_blocks(scheme: str, family: str) -> None:
    model = zoo.build(family, layers=2)
    a = initwatch.inspect(model)
    initwatch.reinit(model, scheme)
    for block in a.blocks:
        assert _norms_left(model.get_submodule(block.path)) == [], block.path
    for stack in a.stacks:  # norms="all": embedding and final norms too
        for norm in stack.stack_norms:
            assert isinstance(model.get_submodule(norm.path), RemovedNorm)
    out = zoo.output_tensor(model(**zoo.example_inputs(family, model)))
    out.float().pow(2).mean().backward()
    assert torch.isfinite(out).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_norms_blocks_keeps_stack_norms() -> None:
    model = zoo.build("gpt2")
    initwatch.reinit(model, "t-fixup", norms="blocks")
    assert isinstance(model.transformer.ln_f, nn.LayerNorm)
    assert isinstance(model.transformer.h[0].ln_1, RemovedNorm)


@pytest.mark.parametrize("family", POST_LN)
def test_deepnet_forward_backward_finite(family: str) -> None:
    model = zoo.build(family, layers=2)
    initwatch.reinit(model, "deepnet")
    out = zoo.output_tensor(model(**zoo.example_inputs(family, model)))
    out.float().pow(2).mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --- in place, tied, frozen, modes ------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["t-fixup", "rezero"])
def test_parameters_changed_in_place_ties_and_optimizers_kept(scheme: str) -> None:
    model = zoo.build("gpt2")
    before = {n: p for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters())
    initwatch.reinit(model, scheme)
    after = dict(model.named_parameters())
    for name, p in after.items():
        if name in before:
            assert p is before[name], name
    assert model.lm_head.weight is model.transformer.wte.weight
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in held for n, p in after.items() if n in before)


def test_frozen_tables_and_frozen_weights_are_left_alone() -> None:
    model = zoo.build("marian", layers=2)
    table = model.model.encoder.embed_positions.weight
    assert not table.requires_grad
    kept = table.detach().clone()
    q = model.model.encoder.layers[0].self_attn.q_proj.weight
    q.requires_grad_(False)
    q_before = q.detach().clone()
    report = initwatch.reinit(model, "t-fixup")
    torch.testing.assert_close(table, kept, atol=0, rtol=0)
    torch.testing.assert_close(q, q_before, atol=0, rtol=0)
    assert any("frozen" in c.note and "q_proj" in c.target for c in report.skipped)


@pytest.mark.parametrize("scheme", ["deepnet", "t-fixup", "rezero"])
def test_train_and_eval_mode_agree_on_torch_layers(scheme: str) -> None:
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    initwatch.reinit(model, scheme)
    if scheme == "rezero":
        for lay in model.layers:
            lay.rezero_alpha.data.fill_(0.5)
    x = torch.randn(2, 5, 32)
    train_out = model.train()(x)
    with torch.no_grad():
        eval_out = model.eval()(x)  # the fused fast path would ignore hooks and removed norms
    torch.testing.assert_close(eval_out, train_out, atol=1e-5, rtol=1e-5)


def test_report_table_and_plain_data() -> None:
    model = zoo.build("bert", layers=4)
    report = initwatch.reinit(model, "deepnet")
    text = report.table()
    assert text.startswith("deepnet on BertForMaskedLM (bert)")
    assert "bert.encoder.layer.3.output.dense.weight" in text and "gain beta" in text
    assert str(report).startswith("deepnet on BertForMaskedLM (bert)")
    data = report.to_dict()
    assert data["scheme"] == "deepnet" and len(data["changes"]) == len(report.changes)
    assert data["constants"]["encoder"]["alpha"] == pytest.approx(8**0.25)
    assert {c["action"] for c in data["changes"]} == {"xavier_normal", "zeros", "deepnorm_residual"}


def test_options_override_constants_and_choose_stacks() -> None:
    model = zoo.build("bart", layers=2, hidden=64)
    report = initwatch.reinit(
        model, "deepnet", alpha={"decoder": 3.0}, beta=0.5, stacks=["decoder"]
    )
    assert set(report.constants) == {"decoder"}
    assert report.constants["decoder"] == {"alpha": 3.0, "beta": 0.5}
    assert all(c.block.startswith("decoder") for c in report.parameters)
    assert model.model.decoder.layers[0].deepnorm_alpha.item() == 3.0
    assert not hasattr(model.model.encoder.layers[0], "deepnorm_alpha")
    deep = initwatch.reinit(zoo.build("bert", layers=2), "deepnet", depth=100)
    assert deep.constants["encoder"]["alpha"] == pytest.approx(200**0.25)


def test_seed_makes_the_draw_reproducible() -> None:
    a, b = zoo.build("llama"), zoo.build("llama")
    b.load_state_dict(a.state_dict())
    initwatch.reinit(a, "t-fixup", seed=3)
    initwatch.reinit(b, "t-fixup", seed=3)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0, msg=n)


def test_a_seeded_draw_leaves_the_callers_random_streams_alone(monkeypatch) -> None:  # noqa: ANN001
    # torch.manual_seed would re-seed every GPU's generator too, and fork_rng(devices=[])
    # restores none of them: a seeded reinit on a CPU model changed the caller's GPU streams.
    reseeded: list[str] = []
    for where in ("cuda", "xpu"):
        monkeypatch.setattr(
            getattr(torch, where), "manual_seed_all", lambda s, w=where: reseeded.append(w)
        )
    monkeypatch.setattr(torch.mps, "manual_seed", lambda s: reseeded.append("mps"))
    model = zoo.build("llama")
    before = torch.get_rng_state()
    initwatch.reinit(model, "t-fixup", seed=3)
    assert reseeded == [] and torch.equal(torch.get_rng_state(), before)


def test_deepcopy_keeps_working_structure() -> None:
    model = zoo.build("torch_encoder")
    initwatch.reinit(model, "rezero")
    twin = copy.deepcopy(model).eval()
    model.eval()
    for lay in twin.layers:
        lay.rezero_alpha.data.fill_(1.0)
    x = torch.randn(2, 4, 32)
    torch.testing.assert_close(model(x), x)  # the original's gates are still 0
    assert not torch.allclose(twin(x), x)


# --- bad input --------------------------------------------------------------------------------
def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=0, rtol=0)
    assert not hasattr(model, "_initwatch_reinit")
    assert initwatch.schemes.structure.applied_structure(model) == []


def test_unknown_scheme_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid schemes: 'deepnet', 't-fixup', 'rezero'") as info:
        initwatch.reinit(zoo.build("gpt2"), "fixupp")
    assert "unknown scheme 'fixupp' (did you mean 'fixup'?)" in str(info.value)
    assert str(info.value).endswith("e.g. initwatch.reinit(model, 'fixup')")
    with pytest.raises(ValueError) as far:
        initwatch.reinit(zoo.build("gpt2"), "magic")
    assert "did you mean" not in str(far.value)
    assert str(far.value).endswith("e.g. initwatch.reinit(model, 'deepnet')")


@pytest.mark.parametrize(
    ("scheme", "options", "needle"),
    [
        ("deepnet", {"alhpa": 2.0}, "unknown option(s) ['alhpa']"),
        ("deepnet", {"alpha": -1.0}, "alpha > 0"),
        ("rezero", {"per": "head"}, "per='head'"),
        ("t-fixup", {"norms": "some"}, "norms='some'"),
        ("t-fixup", {"distribution": "cauchy"}, "distribution='cauchy'"),
        ("t-fixup", {"stacks": ["decoder"]}, "this model has stacks ['encoder']"),
        ("deepnet", {"depth": "deep"}, "depth='deep'"),
        ("rezero", {"anatomy": "layers"}, "anatomy='layers'"),
    ],
)
def test_bad_options_raise_and_leave_the_model_as_it_was(
    scheme: str, options: dict, needle: str
) -> None:
    model = zoo.build("bert")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as err:
        initwatch.reinit(model, scheme, **options)
    assert needle in str(err.value)
    _assert_untouched(model, before)


def test_applying_twice_is_refused_and_changes_nothing() -> None:
    model = zoo.build("gpt2")
    initwatch.reinit(model, "rezero")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(initwatch.AlreadyAppliedError, match="already applied"):
        initwatch.reinit(model, "t-fixup")
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=0, rtol=0)
    # also detected from the structure alone, e.g. after copy.deepcopy drops nothing
    with pytest.raises(initwatch.AlreadyAppliedError):
        initwatch.reinit(copy.deepcopy(model), "rezero")


def test_pretrained_weights_are_refused_unless_allowed(tmp_path, trained_state) -> None:  # noqa: ANN001
    from transformers import GPT2LMHeadModel

    model = zoo.build("gpt2")
    model.load_state_dict(trained_state("gpt2"))
    model.save_pretrained(tmp_path)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert initwatch.is_pretrained(loaded)
    before = copy.deepcopy(loaded.state_dict())
    with pytest.raises(initwatch.PretrainedWeightsError) as err:
        initwatch.reinit(loaded, "t-fixup")
    msg = str(err.value)
    assert (
        "look pretrained" in msg
        and "weight matrices look trained" in msg
        and "allow_pretrained=True" in msg
        and "pretrained=False" in msg
        and "scheme=None" in msg
    )
    _assert_untouched(loaded, before)
    report = initwatch.reinit(loaded, "t-fixup", allow_pretrained=True)
    assert report.parameters
    assert not initwatch.is_pretrained(zoo.build("gpt2"))


@pytest.mark.parametrize("scheme", ["rezero", "deepnet"])
def test_structural_schemes_are_refused_on_pretrained_weights_too(
    scheme: str,
    tmp_path,  # noqa: ANN001
    trained_state,  # noqa: ANN001
) -> None:
    # ReZero re-initializes nothing, yet gating blocks and removing their norms changes what a
    # pretrained model computes: the guard covers the blocks a scheme restructures.
    from transformers import BertForMaskedLM

    model = zoo.build("bert")
    model.load_state_dict(trained_state("bert"))
    model.save_pretrained(tmp_path)
    loaded = BertForMaskedLM.from_pretrained(tmp_path)
    before = copy.deepcopy(loaded.state_dict())
    with pytest.raises(initwatch.PretrainedWeightsError, match="look trained"):
        initwatch.reinit(loaded, scheme)
    _assert_untouched(loaded, before)


def test_from_config_of_a_saved_model_is_not_pretrained(tmp_path) -> None:  # noqa: ANN001
    from transformers import AutoConfig, AutoModelForCausalLM

    zoo.build("gpt2").save_pretrained(tmp_path)
    fresh = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tmp_path))
    assert fresh.config._name_or_path  # the misleading hint is set ...
    initwatch.reinit(fresh, "t-fixup")  # ... and the weights are random: allowed


def test_report_columns_print_four_significant_digits_and_notes_wrap_at_words() -> None:
    report = initwatch.reinit(zoo.build("torch_encoder", layers=6), "deepnet")
    out = str(report).splitlines()
    beta, alpha = report.constants["encoder"]["beta"], report.constants["encoder"]["alpha"]
    (qk,) = [r for r in out if r.split()[2:4] == ["q,", "k"]]
    (vo,) = [r for r in out if r.split()[2:4] == ["v,", "o"]]
    assert qk.split()[5:7] == ["1.0000", "0.1768"]  # not "1" above "0.3799"
    assert vo.split()[5:7] == [
        f"{beta:.4f}",
        f"{beta * (2 / (32 + 32)) ** 0.5:.5f}",
    ]  # xavier: d = 32
    (block,) = [i for i, r in enumerate(out) if "deepnorm_residual" in r]
    assert out[block].split()[4] == f"{alpha:.4f}"
    note = " ".join(out[block].split()[5:] + out[block + 1].split())
    assert note == "LN(alpha*x + G(x)) on 2 sublayers (alpha in buffer deepnorm_alpha)"
    assert "..." not in str(report) and max(map(len, out)) <= 100
    assert out[block + 1].index("buffer") == out[block].index("LN(")  # under the note column


def test_a_restored_report_prints_no_empty_constants_line() -> None:
    trained = zoo.build("torch_encoder", layers=2)
    with pytest.warns(RuntimeWarning, match="token embedding"):
        initwatch.reinit(trained, "t-fixup")
    report = initwatch.restore(zoo.build("torch_encoder", layers=2), trained.state_dict())
    out = str(report).splitlines()
    assert report.scheme == "t-fixup" and report.constants == {}
    assert not [r for r in out if r.startswith("constants:")], out
    assert report.headline().endswith("0 skipped"), report.headline()

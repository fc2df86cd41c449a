"""Cross-attention variants of recognised families: BERT / RoBERTa / ELECTRA decoders
(``is_decoder=True, add_cross_attention=True``), the decoder of a bert2bert
``EncoderDecoderModel`` and GPT-2 with ``add_cross_attention=True`` are read with their third
sublayer, and every scheme treats it as the papers prescribe."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import transformers as tf
from torch import nn

import initwatch
from initwatch.schemes.structure import RemovedNorm

D, HEADS, VOCAB, LAYERS = 32, 4, 96, 3
BERTS = {
    "bert": (tf.BertConfig, tf.BertLMHeadModel),
    "roberta": (tf.RobertaConfig, tf.RobertaForCausalLM),
    "electra": (tf.ElectraConfig, tf.ElectraForCausalLM),
}
CASES = [*BERTS, "bert2bert", "gpt2"]


def _bert_config(family: str, decoder: bool) -> Any:
    extra = {"is_decoder": True, "add_cross_attention": True} if decoder else {}
    return BERTS[family][0](
        vocab_size=VOCAB,
        hidden_size=D,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * D,
        max_position_embeddings=64,
        **({"embedding_size": D} if family == "electra" else {}),
        **extra,
    )


def build(case: str) -> nn.Module:
    torch.manual_seed(0)
    if case in BERTS:
        return BERTS[case][1](_bert_config(case, decoder=True))
    if case == "bert2bert":
        return tf.EncoderDecoderModel(
            encoder=tf.BertModel(_bert_config("bert", decoder=False), add_pooling_layer=False),
            decoder=tf.BertLMHeadModel(_bert_config("bert", decoder=True)),
        )
    cfg = tf.GPT2Config(
        vocab_size=VOCAB, n_embd=D, n_layer=LAYERS, n_head=HEADS, add_cross_attention=True
    )
    return tf.GPT2LMHeadModel(cfg)


def inputs(case: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB - 2, (2, 6), generator=g)
    if case == "bert2bert":
        return {"input_ids": ids, "decoder_input_ids": torch.randint(3, VOCAB - 2, (2, 5))}
    return {"input_ids": ids, "encoder_hidden_states": torch.randn(2, 7, D, generator=g)}


def decoder_blocks(case: str, model: nn.Module) -> list[nn.Module]:
    a = initwatch.inspect(model)
    return [model.get_submodule(b.path) for b in a.stack("decoder").blocks]


@pytest.mark.parametrize("case", CASES)
def test_decoder_blocks_are_read_with_their_cross_attention(case: str) -> None:
    a = initwatch.inspect(build(case))
    dec = a.stack("decoder")
    assert dec is not None and dec.depth == LAYERS
    for block in dec.blocks:
        assert [s.kind for s in block.sublayers] == ["attn", "cross", "ffn"]
        assert {"xq", "xk", "xv", "xo"} <= {s.role for s in block.slots}
        assert block.sublayers[1].norm is not None
    assert a.kind == ("encoder-decoder" if case == "bert2bert" else "decoder-only")
    if case == "gpt2":  # k and v are the two column halves of the fused c_attn
        xk = dec.blocks[0].slot("xk")
        assert (xk.fused, xk.index, xk.parts, xk.fan_out) == ("cols", 0, 2, D)


@pytest.mark.parametrize("case", [*BERTS, "bert2bert"])
def test_deepnet_uses_three_sublayer_constants_and_alpha_on_the_cross_sublayer(case: str) -> None:
    model = build(case)
    report = initwatch.reinit(model, "deepnet", seed=0)
    m = LAYERS
    dec = report.constants["decoder"]
    assert dec["alpha"] == pytest.approx((3 * m) ** 0.25)
    assert dec["beta"] == pytest.approx((12 * m) ** -0.25)
    if case == "bert2bert":
        enc = report.constants["encoder"]
        assert enc["alpha"] == pytest.approx(0.81 * (m**4 * m) ** (1 / 16))
    residuals = [c for c in report.structure if c.action == "deepnorm_residual"]
    assert any("on 3 sublayers" in c.note for c in residuals)
    # the cross weights are re-drawn: q, k with gain 1, v, o with gain beta
    gains = {c.role: c.gain for c in report.parameters if c.block == "decoder.0" and c.gain}
    assert gains["xq"] == gains["xk"] == pytest.approx(1.0)
    assert gains["xv"] == gains["xo"] == pytest.approx(dec["beta"])

    # the cross norm computes LN(alpha * x + G(x)) exactly
    model.eval()
    block = decoder_blocks(case, model)[0]
    cross = block.crossattention
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        cross.self.query.register_forward_pre_hook(lambda m, a: seen.update(x=a[0])),
        cross.output.dense.register_forward_hook(lambda m, a, o: seen.update(g=o)),
        cross.output.LayerNorm.register_forward_hook(lambda m, a, o: seen.update(out=o)),
    ]
    model(**inputs(case))
    for h in hooks:
        h.remove()
    ln = cross.output.LayerNorm
    expected = nn.functional.layer_norm(
        dec["alpha"] * seen["x"] + seen["g"], ln.normalized_shape, ln.weight, ln.bias, ln.eps
    )
    torch.testing.assert_close(seen["out"], expected, rtol=0, atol=7e-7)


def _cross_norm(case: str, block: nn.Module) -> nn.Module:
    return block.ln_cross_attn if case == "gpt2" else block.crossattention.output.LayerNorm


def _cross_weights(case: str, block: nn.Module) -> list[torch.Tensor]:
    if case == "gpt2":
        c = block.crossattention
        return [c.q_attn.weight, c.c_attn.weight, c.c_proj.weight]
    c = block.crossattention
    return [c.self.query.weight, c.self.key.weight, c.self.value.weight, c.output.dense.weight]


@pytest.mark.parametrize("case", CASES)
def test_tfixup_removes_the_cross_norms_and_redraws_the_cross_weights(case: str) -> None:
    model = build(case)
    before = [
        w.detach().clone() for b in decoder_blocks(case, model) for w in _cross_weights(case, b)
    ]
    report = initwatch.reinit(model, "t-fixup", seed=0)
    blocks = decoder_blocks(case, model)
    assert all(isinstance(_cross_norm(case, b), RemovedNorm) for b in blocks)
    after = [w for b in blocks for w in _cross_weights(case, b)]
    assert all(not torch.equal(x, y) for x, y in zip(before, after, strict=True))
    # xv gets the decoder scale (9M)^(-1/4) times Xavier: check the std the report targets
    scale = (9 * LAYERS) ** -0.25
    xv = next(c for c in report.parameters if c.role == "xv" and c.block == "decoder.0")
    assert xv.gain == pytest.approx(scale)
    assert xv.std == pytest.approx(scale * math.sqrt(2 / (D + D)))
    rows = [c for c in report.structure if c.action == "remove_norm" and c.block == "decoder.0"]
    assert len(rows) == 3


@pytest.mark.parametrize("case", CASES)
def test_rezero_is_the_identity_at_init_with_cross_attention(case: str) -> None:
    model = build(case)
    initwatch.reinit(model, "rezero")
    model.eval()
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [
        b.register_forward_hook(
            lambda m, a, kw, o: pairs.append((a[0] if a else kw["hidden_states"], o)),
            with_kwargs=True,
        )
        for b in decoder_blocks(case, model)
    ]
    model(**inputs(case))
    for h in hooks:
        h.remove()
    assert len(pairs) == LAYERS
    for x, out in pairs:
        y = out[0] if isinstance(out, tuple) else out
        assert torch.equal(x, y)
    assert all(isinstance(_cross_norm(case, b), RemovedNorm) for b in decoder_blocks(case, model))


def test_remedy_constants_for_a_bert_decoder_equal_reinits() -> None:
    from initwatch.remedies import deepnet_constants

    model = build("bert")
    ctx = initwatch.Watch(model).context
    assert ctx.cross_attention and ctx.depth == {"decoder": LAYERS}
    (alpha, beta) = deepnet_constants(ctx.depth, ctx.cross_attention)["decoder"]
    applied = initwatch.reinit(model, "deepnet").constants["decoder"]
    assert (alpha, beta) == pytest.approx((applied["alpha"], applied["beta"]))

"""Schemes under activation (gradient) checkpointing: the recomputed forward must compute the
same function, so the gradients equal those of the run without checkpointing.

transformers 5 checkpoints a block's ``forward``, not ``__call__`` (``modeling_layers.py``), so
hooks on the block itself run outside the recomputed region; the DeepNorm skip must be captured
inside it.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import initwatch
from initwatch import zoo

HF_POST_LN = ["bert", "bart", "opt_post"]
SCHEMES = ["deepnet", "t-fixup", "rezero", "admin"]


def _loss(model: nn.Module, family: str) -> torch.Tensor:
    torch.manual_seed(123)  # same dropout masks in both runs
    inputs = zoo.example_inputs(family, model)
    for v in inputs.values():
        if v.is_floating_point():  # a reentrant checkpoint needs an input that requires grad
            v.requires_grad_()
    out = model(**inputs)
    return zoo.output_tensor(out).float().pow(2).mean()


def _grads(model: nn.Module, family: str) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    _loss(model, family).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(
    ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], only: str = ""
) -> None:
    assert set(ref) == set(got)
    ref = {n: g for n, g in ref.items() if only in n}
    worst = max(((got[n] - ref[n]).norm() / ref[n].norm().clamp_min(1e-12)).item() for n in ref)
    assert worst < 1e-5, f"relative gradient error {worst:.3g}"


def _pair(family: str, scheme: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = zoo.build(family, layers=3)
    initwatch.reinit(model, scheme, seed=0)
    if scheme == "rezero":  # gates at 0 make every branch gradient-free: open them
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "rezero_alpha" in name:
                    p.fill_(0.5)
    return model, copy.deepcopy(model)


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("family", HF_POST_LN)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_hf_gradient_checkpointing_gives_the_same_gradients(
    family: str, scheme: str, reentrant: bool
) -> None:
    plain, ckpt = _pair(family, scheme)
    ref = _grads(plain, family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the deprecated alias, still supported
        ckpt.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": reentrant}
        )
    # the checkpointed run really recomputes: the flag reached the blocks
    blocks = [b for b in ckpt.modules() if getattr(b, "gradient_checkpointing", False)]
    assert blocks
    # transformers' own limit, without any scheme: a reentrant checkpoint passes BART's
    # encoder_hidden_states as a keyword, so no gradient reaches the encoder through
    # cross-attention (115 % error on the encoder of a plain BART); compare the decoder there
    only = "decoder.layers" if family == "bart" and reentrant else ""
    _assert_same_grads(ref, _grads(ckpt, family), only)
    # the recomputation leaves no activation held by a block after the backward
    held = [v for b in blocks for k, v in vars(b).items() if k.startswith("_initwatch_residual")]
    assert all(v is None for v in held)


class _Checkpointed(nn.Module):
    """Runs each block of a torch stack through ``torch.utils.checkpoint``."""

    def __init__(self, stack: nn.TransformerEncoder, reentrant: bool) -> None:
        super().__init__()
        self.stack, self.reentrant = stack, reentrant

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        x = src
        for layer in self.stack.layers:
            x = checkpoint(layer, x, use_reentrant=self.reentrant)
        return self.stack.norm(x) if self.stack.norm is not None else x


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_torch_checkpoint_of_a_block_gives_the_same_gradients(scheme: str, reentrant: bool) -> None:
    plain, other = _pair("torch_encoder", scheme)
    ref = _grads(plain, "torch_encoder")
    wrapped = _Checkpointed(other, reentrant)
    got = _grads(wrapped, "torch_encoder")
    _assert_same_grads(ref, {n.removeprefix("stack."): g for n, g in got.items()})


@pytest.mark.parametrize("family", ["torch_encoder", "bert"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_checkpoint_wrapper_gives_the_same_gradients(scheme: str, family: str) -> None:
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
    )

    plain, wrapped = _pair(family, scheme)
    ref = _grads(plain, family)
    block_type = type(plain.get_submodule(initwatch.inspect(plain).blocks[0].path))
    apply_activation_checkpointing(wrapped, check_fn=lambda m: isinstance(m, block_type))
    assert any(type(m).__name__ == "CheckpointWrapper" for m in wrapped.modules())
    got = _grads(wrapped, family)
    _assert_same_grads(
        ref, {n.replace("._checkpoint_wrapped_module", ""): g for n, g in got.items()}
    )


def test_deepnet_on_bert_with_chunked_feed_forward_equals_the_unchunked_model() -> None:
    # the FFN's skip is read where the FFN reads its input, so BERT's chunk_size_feed_forward
    # (the FFN runs on slices of the sequence) gets the matching slice of the skip
    plain, chunked = _pair("bert", "deepnet")
    for layer in chunked.bert.encoder.layer:
        layer.chunk_size_feed_forward = 2
    for m in [*plain.modules(), *chunked.modules()]:
        if isinstance(m, nn.Dropout):  # per-chunk dropout draws different masks
            m.p = 0.0
    x = zoo.example_inputs("bert", plain)
    plain.eval(), chunked.eval()
    ref = zoo.output_tensor(plain(**x))
    assert torch.equal(zoo.output_tensor(chunked(**x)), ref)
    built = zoo.build("bert", layers=2, chunk_size_feed_forward=2)
    initwatch.reinit(built, "deepnet")
    assert all(lay.chunk_size_feed_forward == 2 for lay in built.bert.encoder.layer)  # kept
    _assert_same_grads(_grads(plain, "bert"), _grads(chunked, "bert"))


def test_deepnet_norm_called_without_its_block_raises_instead_of_dropping_alpha() -> None:
    model = zoo.build("torch_encoder", layers=2)
    initwatch.reinit(model, "deepnet")
    with pytest.raises(initwatch.InitWatchError, match="without its skip input"):
        model.layers[0].norm1(torch.randn(2, 3, 32))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_hf_checkpointing_of_a_bert_decoder_with_cross_attention(scheme: str) -> None:
    import transformers as tf

    cfg = tf.BertConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        is_decoder=True,
        add_cross_attention=True,
    )
    torch.manual_seed(0)
    plain = tf.BertLMHeadModel(cfg)
    initwatch.reinit(plain, scheme, seed=0)
    with torch.no_grad():
        for name, p in plain.named_parameters():
            if "rezero_alpha" in name:
                p.fill_(0.5)
    ckpt = copy.deepcopy(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    g = torch.Generator().manual_seed(1)
    ids, memory = torch.randint(3, 90, (2, 6), generator=g), torch.randn(2, 5, 32, generator=g)

    def grads(model: nn.Module) -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        model(input_ids=ids, encoder_hidden_states=memory).logits.pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads(plain)
    assert any("crossattention" in n for n in ref)
    _assert_same_grads(ref, grads(ckpt))

"""Module maps of the recognised families (verified against transformers 5.24, torch 2.13).

Each family says, relative to one block, where the roles and norms are, and, relative to the
stack's root module, where the embeddings and the final norm are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from initwatch.vocabulary import BlockResidual, Fused, NormKind, Placement, SublayerKind

# A sublayer description: kind, {role (or fused "qkv" / "xqkv" / "xkv"): path}, branch output
# path, output-is-tuple, norm path (or None).
SubSpec = tuple[SublayerKind, dict[str, str], str, bool, str | None]


@dataclass(frozen=True)
class Family:
    """How to read one family's blocks and stacks.

    ``sublayers(block, config)`` returns the block's :data:`SubSpec` list; ``layout(block, config)``
    returns ``"pre"`` or ``"post"``.
    """

    name: str
    block_classes: tuple[str, ...]  # "<module>.<ClassName>"
    sublayers: Callable[[nn.Module, object], list[SubSpec]]
    layout: Callable[[nn.Module, object], Placement]
    stack_up: int = 1
    token_embedding: str | None = None
    position_embedding: str | None = None
    embedding_norm: str | None = None
    final_norm: str | None = None
    norm_kind: NormKind = "layernorm"
    residual: Callable[[nn.Module, object], BlockResidual] = lambda b, c: "sequential"
    attn_scaled: bool = True
    fused: Fused | None = None  # "cols" (GPT-2), "heads" (GPT-NeoX), "rows" (torch MHA)
    # the family's own switch from Post-LN to Pre-LN, as the user writes it; None: it has none
    layout_switch: str | None = None


def _pre(block: nn.Module, config: object) -> Placement:
    return "pre"


def _post(block: nn.Module, config: object) -> Placement:
    return "post"


def _bert_attn(name: str, kind: SublayerKind) -> SubSpec:
    x = "x" if kind == "cross" else ""
    return (
        kind,
        {
            x + "q": f"{name}.self.query",
            x + "k": f"{name}.self.key",
            x + "v": f"{name}.self.value",
            x + "o": f"{name}.output.dense",
        },
        f"{name}.output.dense",
        False,
        f"{name}.output.LayerNorm",
    )


def _bert(block: nn.Module, config: object) -> list[SubSpec]:
    # a decoder (is_decoder=True, add_cross_attention=True) has a third sublayer between them
    cross = [_bert_attn("crossattention", "cross")] if hasattr(block, "crossattention") else []
    return [
        _bert_attn("attention", "attn"),
        *cross,
        (
            "ffn",
            {"ffn_in": "intermediate.dense", "ffn_out": "output.dense"},
            "output.dense",
            False,
            "output.LayerNorm",
        ),
    ]


def _distilbert(block: nn.Module, config: object) -> list[SubSpec]:
    a = "attention."
    return [
        (
            "attn",
            {"q": a + "q_lin", "k": a + "k_lin", "v": a + "v_lin", "o": a + "out_lin"},
            a + "out_lin",
            False,
            "sa_layer_norm",
        ),
        (
            "ffn",
            {"ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"},
            "ffn.lin2",
            False,
            "output_layer_norm",
        ),
    ]


def _gpt2(block: nn.Module, config: object) -> list[SubSpec]:
    # add_cross_attention=True: q from q_attn, k and v fused in c_attn (two column blocks)
    x = "crossattention."
    cross: list[SubSpec] = (
        [
            (
                "cross",
                {"xq": x + "q_attn", "xkv": x + "c_attn", "xo": x + "c_proj"},
                x + "c_proj",
                False,
                "ln_cross_attn",
            )
        ]
        if hasattr(block, "crossattention")
        else []
    )
    return [
        ("attn", {"qkv": "attn.c_attn", "o": "attn.c_proj"}, "attn.c_proj", False, "ln_1"),
        *cross,
        ("ffn", {"ffn_in": "mlp.c_fc", "ffn_out": "mlp.c_proj"}, "mlp.c_proj", False, "ln_2"),
    ]


def _gpt_neo(block: nn.Module, config: object) -> list[SubSpec]:
    a = "attn.attention."
    return [
        (
            "attn",
            {"q": a + "q_proj", "k": a + "k_proj", "v": a + "v_proj", "o": a + "out_proj"},
            a + "out_proj",
            False,
            "ln_1",
        ),
        ("ffn", {"ffn_in": "mlp.c_fc", "ffn_out": "mlp.c_proj"}, "mlp.c_proj", False, "ln_2"),
    ]


def _gpt_neox(block: nn.Module, config: object) -> list[SubSpec]:
    return [
        (
            "attn",
            {"qkv": "attention.query_key_value", "o": "attention.dense"},
            "attention.dense",
            False,
            "input_layernorm",
        ),
        (
            "ffn",
            {"ffn_in": "mlp.dense_h_to_4h", "ffn_out": "mlp.dense_4h_to_h"},
            "mlp.dense_4h_to_h",
            False,
            "post_attention_layernorm",
        ),
    ]


def _self_attn(prefix: str, out: str, cross: bool = False) -> dict[str, str]:
    x = "x" if cross else ""
    return {
        x + "q": prefix + "q_proj",
        x + "k": prefix + "k_proj",
        x + "v": prefix + "v_proj",
        x + "o": prefix + out,
    }


def _opt(block: nn.Module, config: object) -> list[SubSpec]:
    return [
        (
            "attn",
            _self_attn("self_attn.", "out_proj"),
            "self_attn.out_proj",
            False,
            "self_attn_layer_norm",
        ),
        ("ffn", {"ffn_in": "fc1", "ffn_out": "fc2"}, "fc2", False, "final_layer_norm"),
    ]


def _opt_layout(block: nn.Module, config: object) -> Placement:
    return "pre" if getattr(config, "do_layer_norm_before", True) else "post"


def _llama(block: nn.Module, config: object) -> list[SubSpec]:
    return [
        (
            "attn",
            _self_attn("self_attn.", "o_proj"),
            "self_attn.o_proj",
            False,
            "input_layernorm",
        ),
        (
            "ffn",
            {"ffn_gate": "mlp.gate_proj", "ffn_in": "mlp.up_proj", "ffn_out": "mlp.down_proj"},
            "mlp.down_proj",
            False,
            "post_attention_layernorm",
        ),
    ]


def _phi(block: nn.Module, config: object) -> list[SubSpec]:
    return [
        (
            "attn",
            _self_attn("self_attn.", "dense"),
            "self_attn.dense",
            False,
            "input_layernorm",
        ),
        # Phi's single norm feeds both parallel branches; it is listed once, on the attention.
        ("ffn", {"ffn_in": "mlp.fc1", "ffn_out": "mlp.fc2"}, "mlp.fc2", False, None),
    ]


def _t5(block: nn.Module, config: object) -> list[SubSpec]:
    def attn(i: int, name: str, kind: SublayerKind) -> SubSpec:
        p = f"layer.{i}.{name}."
        x = "x" if kind == "cross" else ""
        roles = {x + r: p + r for r in ("q", "k", "v", "o")}
        return (kind, roles, p + "o", False, f"layer.{i}.layer_norm")

    layer: Any = block.layer
    decoder = len(layer) == 3
    subs = [attn(0, "SelfAttention", "attn")]
    if decoder:
        subs.append(attn(1, "EncDecAttention", "cross"))
    f = len(subs)
    p = f"layer.{f}.DenseReluDense."
    ffn_mod = layer[f].DenseReluDense
    if hasattr(ffn_mod, "wi_0"):
        roles = {"ffn_gate": p + "wi_0", "ffn_in": p + "wi_1", "ffn_out": p + "wo"}
    else:
        roles = {"ffn_in": p + "wi", "ffn_out": p + "wo"}
    subs.append(("ffn", roles, p + "wo", False, f"layer.{f}.layer_norm"))
    return subs


def _bart(block: nn.Module, config: object) -> list[SubSpec]:
    subs: list[SubSpec] = [
        (
            "attn",
            _self_attn("self_attn.", "out_proj"),
            "self_attn.out_proj",
            False,
            "self_attn_layer_norm",
        )
    ]
    if hasattr(block, "encoder_attn"):
        subs.append(
            (
                "cross",
                _self_attn("encoder_attn.", "out_proj", cross=True),
                "encoder_attn.out_proj",
                False,
                "encoder_attn_layer_norm",
            )
        )
    subs.append(("ffn", {"ffn_in": "fc1", "ffn_out": "fc2"}, "fc2", False, "final_layer_norm"))
    return subs


def _vit(block: nn.Module, config: object) -> list[SubSpec]:
    return [
        (
            "attn",
            _self_attn("attention.", "o_proj"),
            "attention.o_proj",
            False,
            "layernorm_before",
        ),
        ("ffn", {"ffn_in": "mlp.fc1", "ffn_out": "mlp.fc2"}, "mlp.fc2", False, "layernorm_after"),
    ]


def _torch_layer(block: nn.Module, config: object) -> list[SubSpec]:
    subs: list[SubSpec] = [
        ("attn", {"qkv": "self_attn", "o": "self_attn"}, "self_attn", True, "norm1")
    ]
    ffn_norm = "norm2"
    if hasattr(block, "multihead_attn"):
        subs.append(
            (
                "cross",
                {"xqkv": "multihead_attn", "xo": "multihead_attn"},
                "multihead_attn",
                True,
                "norm2",
            )
        )
        ffn_norm = "norm3"
    subs.append(("ffn", {"ffn_in": "linear1", "ffn_out": "linear2"}, "linear2", False, ffn_norm))
    return subs


def _torch_layout(block: nn.Module, config: object) -> Placement:
    return "pre" if getattr(block, "norm_first", False) else "post"


def _neox_residual(block: nn.Module, config: object) -> BlockResidual:
    return "parallel" if getattr(block, "use_parallel_residual", True) else "sequential"


_HF = "transformers.models."
_BERT_STACK: dict[str, Any] = dict(
    stack_up=2,
    token_embedding="embeddings.word_embeddings",
    position_embedding="embeddings.position_embeddings",
    embedding_norm="embeddings.LayerNorm",
)
_LLAMA_STACK: dict[str, Any] = dict(
    token_embedding="embed_tokens", final_norm="norm", norm_kind="rmsnorm"
)

FAMILIES: tuple[Family, ...] = (
    Family("bert", (_HF + "bert.modeling_bert.BertLayer",), _bert, _post, **_BERT_STACK),
    Family(
        "roberta", (_HF + "roberta.modeling_roberta.RobertaLayer",), _bert, _post, **_BERT_STACK
    ),
    Family(
        "electra", (_HF + "electra.modeling_electra.ElectraLayer",), _bert, _post, **_BERT_STACK
    ),
    Family(
        "distilbert",
        (_HF + "distilbert.modeling_distilbert.TransformerBlock",),
        _distilbert,
        _post,
        **_BERT_STACK,
    ),
    Family(
        "gpt2",
        (_HF + "gpt2.modeling_gpt2.GPT2Block",),
        _gpt2,
        _pre,
        token_embedding="wte",
        position_embedding="wpe",
        final_norm="ln_f",
        fused="cols",
    ),
    Family(
        "gpt_neo",
        (_HF + "gpt_neo.modeling_gpt_neo.GPTNeoBlock",),
        _gpt_neo,
        _pre,
        token_embedding="wte",
        position_embedding="wpe",
        final_norm="ln_f",
        attn_scaled=False,
    ),
    Family(
        "gpt_neox",
        (_HF + "gpt_neox.modeling_gpt_neox.GPTNeoXLayer",),
        _gpt_neox,
        _pre,
        token_embedding="embed_in",
        final_norm="final_layer_norm",
        residual=_neox_residual,
        fused="heads",
    ),
    Family(
        "opt",
        (_HF + "opt.modeling_opt.OPTDecoderLayer",),
        _opt,
        _opt_layout,
        token_embedding="embed_tokens",
        position_embedding="embed_positions",
        final_norm="final_layer_norm",
        layout_switch="`OPTConfig(do_layer_norm_before=True)`",
    ),
    Family(
        "llama", (_HF + "llama.modeling_llama.LlamaDecoderLayer",), _llama, _pre, **_LLAMA_STACK
    ),
    Family(
        "mistral",
        (_HF + "mistral.modeling_mistral.MistralDecoderLayer",),
        _llama,
        _pre,
        **_LLAMA_STACK,
    ),
    Family(
        "qwen2", (_HF + "qwen2.modeling_qwen2.Qwen2DecoderLayer",), _llama, _pre, **_LLAMA_STACK
    ),
    Family(
        "gemma",
        (_HF + "gemma.modeling_gemma.GemmaDecoderLayer",),
        _llama,
        _pre,
        token_embedding="embed_tokens",
        final_norm="norm",
        norm_kind="rmsnorm_1p",
    ),
    Family(
        "phi",
        (_HF + "phi.modeling_phi.PhiDecoderLayer",),
        _phi,
        _pre,
        token_embedding="embed_tokens",
        final_norm="final_layernorm",
        residual=lambda b, c: "parallel",
    ),
    Family(
        "t5",
        (_HF + "t5.modeling_t5.T5Block",),
        _t5,
        _pre,
        token_embedding="embed_tokens",
        final_norm="final_layer_norm",
        norm_kind="rmsnorm",
        attn_scaled=False,
    ),
    Family(
        "bart",
        (_HF + "bart.modeling_bart.BartEncoderLayer", _HF + "bart.modeling_bart.BartDecoderLayer"),
        _bart,
        _post,
        token_embedding="embed_tokens",
        position_embedding="embed_positions",
        embedding_norm="layernorm_embedding",
        final_norm="layer_norm",
    ),
    Family(
        "marian",
        (
            _HF + "marian.modeling_marian.MarianEncoderLayer",
            _HF + "marian.modeling_marian.MarianDecoderLayer",
        ),
        _bart,
        _post,
        token_embedding="embed_tokens",
        position_embedding="embed_positions",
        embedding_norm="layernorm_embedding",
        final_norm="layer_norm",
    ),
    Family(
        "vit",
        (_HF + "vit.modeling_vit.ViTLayer",),
        _vit,
        _pre,
        token_embedding="embeddings.patch_embeddings.projection",  # the input embedding
        position_embedding="embeddings.position_embeddings",
        final_norm="layernorm",
    ),
    Family(
        "torch",
        (
            "torch.nn.modules.transformer.TransformerEncoderLayer",
            "torch.nn.modules.transformer.TransformerDecoderLayer",
        ),
        _torch_layer,
        _torch_layout,
        final_norm="norm",
        fused="rows",
        layout_switch="`norm_first=True` in `nn.TransformerEncoderLayer(...)` / `nn.TransformerDecoderLayer(...)`",
    ),
)

BY_BLOCK_CLASS: dict[str, Family] = {c: f for f in FAMILIES for c in f.block_classes}


def layout_switch(family: str) -> str | None:
    """How a family's model is switched from Post-LN to Pre-LN (its own argument), or None
    when the family has no such switch (BERT, BART, T5...: the layout is fixed by the
    architecture).

    Example::

        >>> layout_switch("opt")
        '`OPTConfig(do_layer_norm_before=True)`'
        >>> layout_switch("bert") is None
        True
    """
    for f in FAMILIES:
        if f.name == family:
            return f.layout_switch
    return None


def class_key(module: nn.Module) -> str:
    """``"<module>.<ClassName>"`` of a module's class, the key of :data:`BY_BLOCK_CLASS`."""
    cls = type(module)
    return f"{cls.__module__}.{cls.__name__}"


def family_of(module: nn.Module) -> Family | None:
    """The family whose block class ``module`` is (subclasses included), or None."""
    for cls in type(module).__mro__:
        fam = BY_BLOCK_CLASS.get(f"{cls.__module__}.{cls.__name__}")
        if fam is not None:
            return fam
    return None

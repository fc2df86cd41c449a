"""Reading a model: recognise known families, or follow the user's name patterns."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, get_args

import torch
from torch import nn

from initwatch.anatomy.embeddings import find_embeddings
from initwatch.anatomy.families import Family, SubSpec, family_of
from initwatch.anatomy.identical import identical_blocks
from initwatch.anatomy.model import (
    ROLES,
    Anatomy,
    Block,
    Norm,
    Slot,
    Stack,
    Sublayer,
    is_role,
    is_stack_kind,
)
from initwatch.errors import AnatomyError, ArgumentError
from initwatch.vocabulary import (
    BlockResidual,
    Fused,
    NormKind,
    NormPlacement,
    NormSite,
    Placement,
    Role,
    StackKind,
    SublayerKind,
)

_ENCODER_ONLY = {"bert", "roberta", "electra", "distilbert", "vit"}
_SEQ2SEQ = {"t5", "bart", "marian"}
_FUSED: tuple[Fused, ...] = get_args(Fused)
# fused roles and the equal parts they hold, in order (GPT-2's cross-attention fuses k and v)
_FUSED_ROLES = {"qkv": "qkv", "xqkv": "qkv", "xkv": "kv"}


def _get(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path) if path else model
    except AttributeError:
        return None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _config_for(model: nn.Module, path: str) -> object | None:
    """The Hugging Face config of the nearest ancestor of ``path`` that has one."""
    parts = path.split(".") if path else []
    for n in range(len(parts), -1, -1):
        mod = _get(model, ".".join(parts[:n]))
        cfg = getattr(mod, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            return cfg
    return None


def _heads(config: object | None, block: nn.Module) -> int:
    for attr in ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"):
        val = getattr(config, attr, None)
        if isinstance(val, int) and val > 0:
            return val
    for m in block.modules():
        for attr in ("num_heads", "num_attention_heads", "n_heads", "n_head"):
            val = getattr(m, attr, None)
            if isinstance(val, int) and val > 0:
                return val
    return 0


def _role(name: str) -> Role:
    """``name`` as a role of a slot (a fused name such as ``"qkv"`` is not one)."""
    if not is_role(name):
        raise AnatomyError(f"unknown role {name!r}; valid roles: {', '.join(ROLES)}")
    return name


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _slots_for(
    model: nn.Module,
    block_path: str,
    role: str,
    rel: str,
    fused: Fused | None,
    heads: int,
    qkv_sizes: tuple[int, int, int] | None = None,
) -> list[Slot]:
    path = _join(block_path, rel)
    mod = _get(model, path)
    if mod is None:
        raise AnatomyError(f"role {role!r}: no module at {path!r}")
    if isinstance(mod, nn.MultiheadAttention):
        if role in ("o", "xo"):
            w = mod.out_proj.weight
            return [Slot(_role(role), path + ".out_proj", "weight", "bias", w.shape[1], w.shape[0])]
        prefix = "x" if role.startswith("x") else ""
        d = mod.embed_dim
        if mod._qkv_same_embed_dim:
            return [
                Slot(_role(prefix + r), path, "in_proj_weight", "in_proj_bias", d, d, "rows", i)
                for i, r in enumerate("qkv")
            ]
        return [
            Slot(
                _role(prefix + r),
                path,
                f"{r}_proj_weight",
                None,
                getattr(mod, f"{r}_proj_weight").shape[1],
                d,
            )
            for r in "qkv"
        ]
    weight = getattr(mod, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise AnatomyError(f"role {role!r}: {path!r} ({type(mod).__name__}) has no 2-D weight")
    rows, cols = weight.shape
    fan_in, fan_out = (rows, cols) if _is_conv1d(mod) else (cols, rows)
    bias = "bias" if getattr(mod, "bias", None) is not None else None
    names = _FUSED_ROLES.get(role)
    if names is None:
        return [Slot(_role(role), path, "weight", bias, fan_in, fan_out)]
    layout = fused or ("cols" if _is_conv1d(mod) else "rows")
    if layout not in _FUSED:
        raise AnatomyError(f"fused={layout!r} is not one of {_FUSED}")
    if layout == "heads" and heads <= 0:
        raise AnatomyError(f"fused='heads' at {path!r} needs the number of heads (heads=...)")
    prefix = "x" if role.startswith("x") else ""
    n = len(names)
    if qkv_sizes is not None and n == 3:
        sizes = tuple(int(x) for x in qkv_sizes)
        if len(sizes) != 3 or min(sizes) <= 0 or sum(sizes) != fan_out:
            raise AnatomyError(
                f"qkv_sizes={qkv_sizes!r}: expected three positive widths summing to the "
                f"{fan_out} outputs of {path!r}"
            )
        if layout == "heads":
            raise AnatomyError(
                "qkv_sizes with fused='heads' is not supported: per-head interleaved q|k|v "
                "must split into equal parts"
            )
        return [
            Slot(_role(prefix + r), path, "weight", bias, fan_in, sizes[i], layout, i, 3, 1, sizes)
            for i, r in enumerate(names)
        ]
    if fan_out % n:
        raise AnatomyError(
            f"fused {role} at {path!r}: {fan_out} outputs do not split into {n} equal parts; "
            "give the widths with initwatch.inspect(..., qkv_sizes=(q, k, v))"
        )
    return [
        Slot(
            _role(prefix + r),
            path,
            "weight",
            bias,
            fan_in,
            fan_out // n,
            layout,
            i,
            n,
            max(heads, 1),
        )
        for i, r in enumerate(names)
    ]


def _norm_kind(module: nn.Module) -> NormKind:
    name = type(module).__name__.lower()
    if "gemma" in name:
        return "rmsnorm_1p"
    return "rmsnorm" if ("rms" in name or "t5layernorm" in name) else "layernorm"


def _norm(
    model: nn.Module, path: str | None, where: NormSite, placement: NormPlacement
) -> Norm | None:
    if path is None:
        return None
    mod = _get(model, path)
    if mod is None or isinstance(mod, nn.Identity):
        return None
    return Norm(path, where, placement, _norm_kind(mod))


def _block(
    model: nn.Module,
    stack: StackKind,
    index: int,
    path: str,
    specs: list[SubSpec],
    placement: Placement | None,
    fused: Fused | None,
    heads: int,
    at: Callable[[str], str] | None = None,
    qkv_sizes: tuple[int, int, int] | None = None,
) -> Block:
    full = at or functools.partial(_join, path)  # a path relative to the block -> full path
    subs = []
    for kind, roles, out, out_tuple, norm_rel in specs:
        slots = [
            s
            for role, rel in roles.items()
            for s in _slots_for(model, "", role, full(rel), fused, heads, qkv_sizes)
        ]
        _check_fused_split(slots, qkv_sizes)
        norm: Norm | None = None
        if norm_rel:
            if placement is None:  # inspect refuses norms given without their layout
                raise AnatomyError(f"norm {norm_rel!r}: give its layout ('pre' or 'post')")
            norm = _norm(model, full(norm_rel), kind, placement)
        subs.append(Sublayer(kind, slots, full(out), out_tuple, norm))
    return Block(stack, index, path, subs)


def _check_fused_split(slots: list[Slot], qkv_sizes: tuple[int, int, int] | None) -> None:
    """Refuse a fused q|k|v cut into equal thirds when the output projection says q is wider
    (multi-query / grouped-query attention): k and v would get each other's rows."""
    if qkv_sizes is not None:
        return
    for prefix in ("", "x"):
        q = next((s for s in slots if s.role == prefix + "q" and s.fused), None)
        o = next((s for s in slots if s.role == prefix + "o"), None)
        if q is None or o is None or o.fan_in == q.fan_out:
            continue
        raise AnatomyError(
            f"fused {prefix}qkv at {q.module!r}: {q.parts * q.fan_out} outputs cut into equal "
            f"thirds give q {q.fan_out} wide, but the output projection {o.module!r} takes "
            f"{o.fan_in} inputs: the parts are unequal (multi-query or grouped-query attention). "
            f"Give the widths: initwatch.inspect(..., qkv_sizes=(q, k, v)), e.g. "
            f"qkv_sizes=({o.fan_in}, {(q.parts * q.fan_out - o.fan_in) // 2}, "
            f"{(q.parts * q.fan_out - o.fan_in) // 2})"
        )


def _block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList, Family]]:
    found: list[tuple[str, nn.ModuleList, Family]] = []
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        fam = family_of(mod[0])
        if fam is None or len({type(m) for m in mod}) != 1:
            continue
        if any(path.startswith(p + ".") for p, _, _ in found):
            continue
        found.append((path, mod, fam))
    return found


def _stack_kind(fam: Family, path: str, first: nn.Module) -> StackKind:
    if fam.name == "torch":
        return "decoder" if hasattr(first, "multihead_attn") else "encoder"
    if fam.name in _ENCODER_ONLY:
        # BERT / RoBERTa / ELECTRA built as a decoder (is_decoder=True, e.g. the decoder of a
        # bert2bert EncoderDecoderModel) form a decoder stack
        return "decoder" if getattr(first, "is_decoder", False) else "encoder"
    if fam.name in _SEQ2SEQ:
        if fam.name == "t5":  # T5Block.layer: self-attention, (cross-attention,) feed-forward
            layer = getattr(first, "layer", None)
            return "decoder" if isinstance(layer, nn.ModuleList) and len(layer) == 3 else "encoder"
        return "decoder" if "Decoder" in type(first).__name__ else "encoder"
    return "decoder"


def _embed_scale(model: nn.Module, tok: str | None, root: str) -> float:
    for mod in (_get(model, tok) if tok else None, _get(model, root)):
        val = getattr(mod, "embed_scale", None) if mod is not None else None
        if isinstance(val, torch.Tensor) and val.numel() == 1:
            return float(val)
        if isinstance(val, (int, float)):
            return float(val)
    return 1.0


def _resolve(model: nn.Module, root: str, rel: str | None) -> str | None:
    if rel is None:
        return None
    path = _join(root, rel)
    parent, _, attr = path.rpartition(".")
    owner = _get(model, parent)
    if owner is None or getattr(owner, attr, None) is None:
        return None
    return path


def _stack(
    model: nn.Module,
    kind: StackKind,
    list_path: str,
    blocks: list[Block],
    root: str,
    token_embedding: str | None,
    position_embedding: str | None,
    embedding_norm: str | None,
    final_norm: str | None,
) -> Stack:
    tok = _resolve(model, root, token_embedding)
    return Stack(
        kind=kind,
        path=list_path,
        blocks=blocks,
        token_embedding=tok,
        position_embedding=_resolve(model, root, position_embedding),
        embedding_norm=_norm(model, _resolve(model, root, embedding_norm), "embedding", "stack"),
        final_norm=_norm(model, _resolve(model, root, final_norm), "final", "stack"),
        embed_scale=_embed_scale(model, tok, root),
    )


def _tied(model: nn.Module) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _hidden(blocks: list[Block]) -> int:
    for b in blocks:
        q = b.slot("q")
        if q is not None:
            return q.fan_in
    widths: tuple[tuple[Role, str], ...] = (
        ("o", "fan_out"),
        ("ffn_in", "fan_in"),
        ("ffn_out", "fan_out"),
    )
    for b in blocks:  # no attention described: the residual width from the other roles
        for role, fan in widths:
            slot = b.slot(role)
            if slot is not None:
                return getattr(slot, fan)
    return 0


def _known(model: nn.Module) -> Anatomy | None:
    lists = _block_lists(model)
    if not lists:
        return None
    stacks = []
    layouts: set[Placement] = set()
    residuals: set[BlockResidual] = set()
    fam = lists[0][2]
    heads = 0
    for path, mlist, f in lists:
        config = _config_for(model, path)
        first = mlist[0]
        kind = _stack_kind(f, path, first)
        heads = heads or _heads(config, first)
        layout = f.layout(first, config)
        layouts.add(layout)
        residuals.add(f.residual(first, config))
        blocks = [
            _block(
                model, kind, i, _join(path, str(i)), f.sublayers(b, config), layout, f.fused, heads
            )
            for i, b in enumerate(mlist)
        ]
        root = ".".join(path.split(".")[: max(0, len(path.split(".")) - f.stack_up)])
        stacks.append(
            _stack(
                model,
                kind,
                path,
                blocks,
                root,
                f.token_embedding,
                f.position_embedding,
                f.embedding_norm,
                f.final_norm,
            )
        )
    stacks.sort(key=lambda s: s.kind != "encoder")
    all_blocks = [b for s in stacks for b in s.blocks]
    return Anatomy(
        family=fam.name,
        stacks=stacks,
        layout=layouts.pop() if len(layouts) == 1 else "mixed",
        residual=residuals.pop() if len(residuals) == 1 else "mixed",
        norm_kind=fam.norm_kind,
        hidden=_hidden(all_blocks),
        heads=heads,
        attn_scaled=fam.attn_scaled,
        tied=_tied(model),
        model_class=type(model).__name__,
    )


def inspect(
    model: nn.Module,
    *,
    blocks: str | Mapping[str, str] | None = None,
    roles: Mapping[str, str] | None = None,
    norms: Mapping[str, str] | None = None,
    layout: Placement | None = None,
    fused: Fused | None = None,
    heads: int | None = None,
    residual: BlockResidual = "sequential",
    attn_scaled: bool = True,
    token_embedding: str | None = None,
    position_embedding: str | None = None,
    embedding_norm: str | None = None,
    final_norm: str | None = None,
    embed_scale: float | None = None,
    qkv_sizes: tuple[int, int, int] | None = None,
    group: int = 1,
) -> Anatomy:
    """Read a model's structure: stacks, blocks, roles, norms, layout.

    Known families (BERT, RoBERTa, DistilBERT, ELECTRA, GPT-2, GPT-Neo, GPT-NeoX, OPT, LLaMA,
    Mistral, Qwen2, Gemma, Phi, T5, BART, Marian, ViT and the ``torch.nn`` Transformer
    classes) are recognised wherever they sit in the model (a LightningModule wrapping a Hugging
    Face model works). Anything else is described with name patterns: give ``blocks`` and
    ``roles``, and the norms with their ``layout``.

    Args:
        model: the model.
        blocks: path of the block list (an ``nn.ModuleList``), or ``{"encoder": path,
            "decoder": path}``. A single path is an encoder stack; use ``{"decoder": path}``
            for a decoder-only model.
        roles: role -> module path relative to a block. Roles: ``q k v o`` (self-attention),
            ``xq xk xv xo`` (cross-attention), ``ffn_in ffn_gate ffn_out``, and ``qkv`` /
            ``xqkv`` for a fused projection (see ``fused``). A role may be absent from a whole
            stack (cross-attention in an encoder), not from some of its blocks.
        norms: sublayer -> norm path relative to a block, sublayers ``attn``, ``cross``, ``ffn``.
        layout: ``"post"`` (norm after the residual add) or ``"pre"``; required with ``norms``.
        fused: layout of a fused ``qkv``: ``"rows"`` (q, k, v row blocks of an (3d, d)
            weight), ``"cols"`` (column blocks of an (in, out) ``Conv1D`` weight) or
            ``"heads"`` (per-head interleaved rows, like GPT-NeoX; needs ``heads``).
        heads: number of attention heads (read from the model when not given).
        residual: ``"sequential"`` or ``"parallel"``.
        attn_scaled: False if attention logits are not divided by sqrt(d_head).
        token_embedding, position_embedding, embedding_norm, final_norm: module paths
            from the model root. Each is honoured on its own, also for a recognised family
            (e.g. the ``nn.Embedding`` next to an ``nn.TransformerEncoder``). When no token
            embedding is given or known, an ``nn.Embedding`` of the model's width outside the
            blocks is taken if it is the only candidate (see :func:`find_embeddings`).
        embed_scale: the factor the model's ``forward`` multiplies token embeddings by
            (``math.sqrt(d)`` for fairseq-style models); read from the model when it is an
            attribute (``embed_scale``), 1 otherwise. T-Fixup's default embedding rule uses it.
        qkv_sizes: output widths of q, k and v in a fused ``qkv`` when they differ
            (multi-query / grouped-query attention, e.g. ``(64, 16, 16)``); without it a fused
            projection must split into three equal parts matching the output projection.
        group: number of consecutive entries of the block list that form one block (an
            x-transformers-style list alternating attention and feed-forward entries:
            ``group=2``); role and norm paths then start with the entry's index in its
            group, e.g. ``{"q": "0.1.to_q", "ffn_in": "1.1.ff.0"}``.

    Paths are relative to the model passed in; a path relative to an inner module (``"layers"``
    for ``self.model.layers``) is accepted when exactly one module of the model ends with it.

    Returns:
        The :class:`~initwatch.anatomy.Anatomy`; ``print`` it for a table.

    Raises:
        AnatomyError: the model is not a known family and no patterns were given, or a
            pattern does not match; the message shows what was found and a call that fits.

    Example::

        >>> import initwatch
        >>> from initwatch import zoo
        >>> anatomy = initwatch.inspect(zoo.build("bert", layers=2))
        >>> anatomy.family, anatomy.layout, anatomy.depth
        ('bert', 'post', {'encoder': 2})

        A custom model, described by patterns::

            anatomy = initwatch.inspect(
                model, blocks="layers", layout="post",
                roles={"q": "attn.wq", "k": "attn.wk", "v": "attn.wv", "o": "attn.wo",
                       "ffn_in": "mlp.fc1", "ffn_out": "mlp.fc2"},
                norms={"attn": "norm1", "ffn": "norm2"},
            )
    """
    extras = {
        "token_embedding": token_embedding,
        "position_embedding": position_embedding,
        "embedding_norm": embedding_norm,
        "final_norm": final_norm,
    }
    _check_arguments(
        model, blocks, roles, norms, layout, fused, heads, residual, attn_scaled, extras,
        group=group, qkv_sizes=qkv_sizes,
    )  # fmt: skip
    _check_embed_scale(embed_scale)
    if blocks is None and roles is None:
        anatomy = _known(model)
        if anatomy is None:
            raise AnatomyError(_not_recognised(model))
    else:
        anatomy = _custom(
            model, blocks, roles, norms, layout, fused, heads, residual, attn_scaled, qkv_sizes,
            group,
        )  # fmt: skip
    _stack_extras(model, anatomy, extras, embed_scale)
    find_embeddings(model, anatomy)
    from initwatch.schemes.base import applied_scheme  # the schemes read anatomies: no cycle

    scheme = applied_scheme(model)
    anatomy.applied_scheme = None if scheme in (None, "none") else scheme
    anatomy.identical = identical_blocks(model, anatomy.stacks)
    return anatomy


def _check_embed_scale(embed_scale: Any) -> None:
    """``embed_scale`` is None or a positive number."""
    number = isinstance(embed_scale, (int, float)) and not isinstance(embed_scale, bool)
    if embed_scale is not None and not (number and embed_scale > 0):
        raise ArgumentError(
            f"embed_scale={embed_scale!r}: expected a positive number (the factor the model's "
            "forward multiplies token embeddings by), e.g. embed_scale=math.sqrt(512)"
        )


def locate(model: nn.Module, path: str) -> str | None:
    """``path`` if it names a module of ``model``; else the one module path ending with
    ``"." + path`` (a path relative to an inner module); else None.

    Example::

        >>> outer = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
        >>> locate(outer, "0.0"), locate(outer, "0"), locate(outer, "1")
        ('0.0', '0', None)
    """
    if _get(model, path) is not None:
        return path
    hits = [name for name, _ in model.named_modules() if name.endswith("." + path)]
    return hits[0] if len(hits) == 1 else None


def _must_locate(model: nn.Module, path: str, what: str) -> str:
    found = locate(model, path)
    if found is None:
        raise AnatomyError(
            f"{what}={path!r}: no such module in {type(model).__name__}; paths are relative to "
            f"the model passed to inspect ({type(model).__name__}, e.g. the LightningModule), "
            "or to an inner module when exactly one module path ends with them"
        )
    return found


def _stack_extras(
    model: nn.Module, anatomy: Anatomy, extras: Mapping[str, str | None], embed_scale: float | None
) -> None:
    """Put the embeddings, the embedding norm and the final norm the caller named on their
    stacks: embeddings on the encoder (or the single stack), the final norm on the last."""
    first, last = anatomy.stacks[0], anatomy.stacks[-1]
    given = {k: _must_locate(model, v, k) for k, v in extras.items() if v is not None}
    if "token_embedding" in given:
        first.token_embedding = given["token_embedding"]
        first.embed_scale = _embed_scale(model, first.token_embedding, "")
    if "position_embedding" in given:
        first.position_embedding = given["position_embedding"]
    if "embedding_norm" in given:
        first.embedding_norm = _norm(model, given["embedding_norm"], "embedding", "stack")
    if "final_norm" in given:
        last.final_norm = _norm(model, given["final_norm"], "final", "stack")
    if embed_scale is not None:
        if not isinstance(embed_scale, (int, float)) or embed_scale <= 0:
            raise AnatomyError(f"embed_scale={embed_scale!r}: expected a positive number")
        for stack in anatomy.stacks:
            stack.embed_scale = float(embed_scale)


def _check_arguments(
    model: Any,
    blocks: Any,
    roles: Any,
    norms: Any,
    layout: Any,
    fused: Any,
    heads: Any,
    residual: Any,
    attn_scaled: Any,
    paths: Mapping[str, Any],
    *,
    group: Any = 1,
    qkv_sizes: Any = None,
) -> None:
    """Types and choices of :func:`inspect`'s arguments, and that given paths exist."""
    from initwatch import validate as v

    call = "initwatch.inspect(model, blocks='layers', roles={'q': 'attn.q', ...})"
    v.module("model", model, "initwatch.inspect(model)")

    def mapping(name: str, value: Any, example: str) -> None:
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(p, str) for k, p in value.items()
        )
        if value is not None and not ok:
            raise ArgumentError(
                f"{name}={value!r}: expected a dict of names to module paths (str) or None; "
                f"e.g. {example}"
            )

    if blocks is not None and not isinstance(blocks, str):
        mapping("blocks", blocks, "blocks='layers' or blocks={'decoder': 'h'}")
    mapping("roles", roles, "roles={'q': 'attn.q', 'o': 'attn.out', 'ffn_out': 'mlp.fc2'}")
    mapping("norms", norms, "norms={'attn': 'norm1', 'ffn': 'norm2'}")
    v.choice("layout", layout, ("post", "pre", None), "layout='post'")
    v.choice("fused", fused, ("rows", "cols", "heads", None), "fused='rows'")
    v.choice("residual", residual, ("sequential", "parallel"), "residual='sequential'")
    if not isinstance(attn_scaled, bool):
        v.choice("attn_scaled", attn_scaled, (True, False), "attn_scaled=False")
    if heads is not None:
        v.positive_int("heads", heads, "heads=12")
    v.positive_int("group", group, "group=2 (a block is every 2 entries of the list)")
    if qkv_sizes is not None and not (
        isinstance(qkv_sizes, (tuple, list))
        and len(qkv_sizes) == 3
        and all(v.is_whole(n) and n > 0 for n in qkv_sizes)
    ):
        raise ArgumentError(
            f"qkv_sizes={qkv_sizes!r}: expected three positive whole numbers (rows of q, k and "
            "v in the fused weight) or None; e.g. qkv_sizes=(768, 256, 256)"
        )
    for name, path in paths.items():
        if path is None:
            continue
        if not isinstance(path, str) or locate(model, path) is None:
            raise AnatomyError(
                f"{name}={path!r}: expected the path of a module of {type(model).__name__}, or "
                f"None; paths are relative to the model passed to inspect (e.g. the "
                "LightningModule), or to an inner module when exactly one module path ends "
                f"with them; e.g. {name}="
                f"{next((n for n, _ in model.named_modules() if n), 'embed')!r}"
            )
    custom = blocks is not None or roles is not None
    given = [  # embeddings and stack norms are honoured on their own, also on a known family
        n
        for n, val in (
            ("norms", norms),
            ("layout", layout),
            ("fused", fused),
            ("heads", heads),
            ("qkv_sizes", qkv_sizes),
            ("group", None if group == 1 else group),
        )
        if val is not None
    ]
    if not custom and given:
        raise AnatomyError(
            f"{', '.join(given)} describe a custom model and are used only together with "
            f"blocks= and roles=; e.g. {call}. A known family is read without them: "
            "initwatch.inspect(model)"
        )


def _custom(
    model: nn.Module,
    blocks: str | Mapping[str, str] | None,
    roles: Mapping[str, str] | None,
    norms: Mapping[str, str] | None,
    layout: Placement | None,
    fused: Fused | None,
    heads: int | None,
    residual: BlockResidual,
    attn_scaled: bool,
    qkv_sizes: tuple[int, int, int] | None = None,
    group: int = 1,
) -> Anatomy:
    if blocks is None or not roles:
        raise AnatomyError(
            "a custom model needs both blocks=... (the block list) and roles={...}; "
            + _example_call(model)
        )
    unknown = set(roles) - set(ROLES) - {"qkv", "xqkv"}
    if unknown:
        raise AnatomyError(
            f"unknown role(s) {sorted(unknown)}; valid roles: {', '.join(ROLES)}, qkv, xqkv"
        )
    norms = dict(norms or {})
    bad = set(norms) - {"attn", "cross", "ffn"}
    if bad:
        raise AnatomyError(f"norms keys must be 'attn', 'cross' or 'ffn', got {sorted(bad)}")
    if norms and layout not in ("pre", "post"):
        raise AnatomyError(
            f"layout={layout!r}: with norms given, say where they sit: layout='post' "
            "(LN(x + G(x))) or layout='pre' (x + G(LN(x)))"
        )
    if residual not in ("sequential", "parallel"):
        raise AnatomyError(f"residual={residual!r}; expected 'sequential' or 'parallel'")
    named = {"encoder": blocks} if isinstance(blocks, str) else dict(blocks)
    stack_paths = {k: p for k, p in named.items() if is_stack_kind(k)}
    if not stack_paths or len(stack_paths) < len(named):
        raise AnatomyError(
            f"blocks={blocks!r}: give a path or a dict with keys 'encoder' and/or 'decoder'"
        )
    stacks = []
    n_heads = 0
    for kind, given in stack_paths.items():
        path = locate(model, given) or given
        mlist = _get(model, path)
        if not isinstance(mlist, (nn.ModuleList, nn.Sequential)) or len(mlist) == 0:
            raise AnatomyError(
                f"blocks: {given!r} is not a non-empty nn.ModuleList in "
                f"{type(model).__name__} (paths are relative to the model passed to inspect); "
                + _example_call(model)
            )
        if len(mlist) % group:
            raise AnatomyError(
                f"group={group}: {path!r} has {len(mlist)} entries, not a multiple of {group}"
            )
        n_heads = heads or _heads(_config_for(model, path), mlist[0])
        at = _entry_paths(path, group)
        n = len(mlist) // group
        specs = _custom_specs(model, path, n, roles, norms, at)
        blist = [
            _block(
                model,
                kind,
                i,
                _join(path, str(i * group)),
                specs,
                layout,
                fused,
                n_heads,
                at=functools.partial(at, i),
                qkv_sizes=qkv_sizes,
            )  # fmt: skip
            for i in range(n)
        ]
        stacks.append(_stack(model, kind, path, blist, "", None, None, None, None))
    found: set[str] = {s.role for st in stacks for b in st.blocks for s in b.slots}
    found |= {"qkv"} if {"q", "k", "v"} <= found else set()
    found |= {"xqkv"} if {"xq", "xk", "xv"} <= found else set()
    never = [r for r in roles if r not in found]
    if never:
        raise AnatomyError(
            f"role(s) {never} matched no module in any block "
            f"({', '.join(f'{r}={roles[r]!r}' for r in never)}); paths are relative to a block"
        )
    stacks.sort(key=lambda s: s.kind != "encoder")
    all_blocks = [b for s in stacks for b in s.blocks]
    kinds = {n.kind for b in all_blocks for n in b.norms}
    return Anatomy(
        family="custom",
        stacks=stacks,
        layout=layout or "none",
        residual=residual,
        norm_kind=kinds.pop() if len(kinds) == 1 else "layernorm",
        hidden=_hidden(all_blocks),
        heads=n_heads,
        attn_scaled=attn_scaled,
        tied=_tied(model),
        model_class=type(model).__name__,
    )


def _entry_paths(path: str, group: int) -> Callable[[int, str], str]:
    """``at(i, rel)``: the full path of ``rel`` in block ``i`` of the list at ``path``; with
    ``group > 1`` a block is ``group`` consecutive entries and ``rel`` starts with the index of
    the entry inside the block."""

    def at(i: int, rel: str) -> str:
        if group == 1:
            return _join(path, str(i), rel)
        head, _, rest = rel.partition(".")
        if not head.isdigit() or int(head) >= group:
            raise AnatomyError(
                f"with group={group}, a path inside a block starts with its entry's index "
                f"0..{group - 1} (e.g. '0.attn.q' or '1.ff.fc1'), got {rel!r}"
            )
        return _join(path, str(i * group + int(head)), rest)

    return at


def _custom_specs(
    model: nn.Module,
    path: str,
    n: int,
    roles: Mapping[str, str],
    norms: Mapping[str, str],
    at: Callable[[int, str], str],
) -> list[SubSpec]:
    for kind, rel in norms.items():
        if _get(model, at(0, rel)) is None:
            raise AnatomyError(
                f"norms={dict(norms)!r}: {kind!r} -> {rel!r} is no module of block "
                f"{_join(path, '0')!r}; paths are relative to a block, e.g. "
                f"norms={{{kind!r}: 'norm1'}}"
            )
    present = {}
    for role, rel in roles.items():
        hits = [_get(model, at(i, rel)) is not None for i in range(n)]
        if all(hits):
            present[role] = rel
        elif any(hits):
            missing = [i for i, h in enumerate(hits) if not h]
            raise AnatomyError(
                f"role {role!r}: {rel!r} exists in some blocks of {path!r} but not in "
                f"blocks {missing}"
            )
    groups: dict[SublayerKind, tuple[str, ...]] = {
        "attn": ("q", "k", "v", "o", "qkv"),
        "cross": ("xq", "xk", "xv", "xo", "xqkv"),
        "ffn": ("ffn_in", "ffn_gate", "ffn_out"),
    }
    specs = []
    for kind, members in groups.items():
        sub_roles = {r: present[r] for r in members if r in present}
        if not sub_roles:
            continue
        out_role = "ffn_out" if kind == "ffn" else ("xo" if kind == "cross" else "o")
        if out_role not in sub_roles:
            raise AnatomyError(
                f"the {kind} sublayer needs its output projection role {out_role!r} "
                f"(the module whose output is added to the residual stream)"
            )
        out_rel = sub_roles[out_role]
        out_mod = _get(model, at(0, out_rel))
        out_tuple = isinstance(out_mod, nn.MultiheadAttention)
        specs.append((kind, sub_roles, out_rel, out_tuple, norms.get(kind)))
    return specs


_GUESS = {
    "q": r"(query|q_proj|q_lin|wq|^q)$",
    "k": r"(key|k_proj|k_lin|wk|^k)$",
    "v": r"(value|v_proj|v_lin|wv|^v)$",
    "o": r"(out_proj|o_proj|out_lin|wo|c_proj|attn\.proj|attention\.dense|output\.dense)$",
    "ffn_in": r"(fc1|w1|lin1|up_proj|c_fc|linear1|ff\.0|mlp\.0|dense_h_to_4h)$",
    "ffn_out": r"(fc2|w2|lin2|down_proj|linear2|ff\.2|mlp\.2|dense_4h_to_h)$",
    "qkv": r"(qkv|c_attn|query_key_value|in_proj|qkv_proj)$",  # fused: only without q, k, v
}


def _candidates(model: nn.Module) -> list[tuple[str, nn.ModuleList | nn.Sequential]]:
    out: list[tuple[str, nn.ModuleList | nn.Sequential]] = []
    for path, mod in model.named_modules():
        if (
            isinstance(mod, (nn.ModuleList, nn.Sequential))
            and len(mod) > 1
            and len({type(m) for m in mod}) == 1
            and mod[0] is not None  # a list of None entries (x-transformers' absent norms)
            and any(True for _ in mod[0].children())
        ):
            out.append((path, mod))
    return out


def _example_call(model: nn.Module) -> str:
    cands = _candidates(model)
    if not cands:
        return (
            "describe it like: initwatch.inspect(model, blocks='layers', layout='post', "
            "roles={'q': 'attn.q', 'k': 'attn.k', 'v': 'attn.v', 'o': 'attn.out', "
            "'ffn_in': 'ff.fc1', 'ffn_out': 'ff.fc2'}, norms={'attn': 'norm1', 'ffn': 'norm2'})"
        )
    path, mlist = cands[0]
    first = mlist[0]
    linears = [n for n, m in first.named_modules() if isinstance(m, nn.Linear)]
    norms_found = [n for n, m in first.named_modules() if "norm" in type(m).__name__.lower()]
    roles: dict[str, str] = {}
    for role, pattern in _GUESS.items():
        hit = next((n for n in linears if re.search(pattern, n) and n not in roles.values()), None)
        if hit is not None and not (role == "qkv" and {"q", "k", "v"} & set(roles)):
            roles[role] = hit
    norm_guess = dict(zip(("attn", "ffn"), norms_found[:2], strict=False))
    return (
        f"found block list {path!r} ({len(mlist)} x {type(first).__name__}) with Linear "
        f"modules {linears} and norms {norms_found}. Describe it like: "
        f"initwatch.inspect(model, blocks={path!r}, roles={roles!r}, norms={norm_guess!r}, "
        f"layout='post' or 'pre')"
    )


def _has_attention(model: nn.Module) -> bool:
    """True when some module looks like attention (by class or attribute name)."""
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1].lower()
        kind = type(module).__name__.lower()
        if isinstance(module, nn.MultiheadAttention) or "attention" in kind or "attn" in leaf:
            return True
    return False


def _not_recognised(model: nn.Module) -> str:
    name = type(model).__name__
    if not _has_attention(model):
        return (
            f"{name} has no transformer blocks (no attention module was found), and the "
            "schemes (DeepNet, T-Fixup, ReZero) re-initialize transformer blocks: they do not "
            "apply to an MLP or a CNN. Watch it with scheme=None: InitWatch(scheme=None), "
            "InitWatchCallback(scheme=None) or initwatch.Watch(model) monitor any model, "
            "module by module."
        )
    return (
        f"initwatch does not recognise {name}: no block list of a known family "
        "(BERT, GPT-2, LLaMA, T5, BART, ViT, nn.TransformerEncoder, ...) was found. Describe it "
        "with initwatch.inspect and pass the result on as anatomy=: "
        "initwatch.reinit(model, 'rezero', anatomy=anatomy), InitWatch(scheme='rezero', "
        "anatomy=anatomy) or InitWatchCallback(scheme='rezero', anatomy=anatomy). "
        + _example_call(model)
    )

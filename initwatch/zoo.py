"""Tiny random-weight models of every recognised family, built from configs (no download), and
any model by family name, config file or ``save_pretrained`` directory (:func:`model_source`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

# FAMILIES (every family build() makes, in this order) is defined below the table of them.


def build(
    family: str, layers: int = 2, hidden: int = 32, heads: int = 4, vocab: int = 96, **extra: Any
) -> nn.Module:
    """Build a small model of ``family`` with random weights.

    Args:
        family: one of :data:`FAMILIES` (``"bert"``, ``"gpt2"``, ``"t5"``, ``"torch_encoder"``...).
        layers: blocks per stack.
        hidden: model width d.
        heads: attention heads.
        vocab: vocabulary size (token models).
        **extra: passed on to the Hugging Face config (e.g. ``use_parallel_residual=False``).

    Returns:
        The model (an LM / seq2seq / classification head model for Hugging Face families).

    Example::

        >>> from initwatch import zoo
        >>> model = zoo.build("gpt2", layers=2, hidden=32)
        >>> type(model).__name__
        'GPT2LMHeadModel'
    """
    ffn = 2 * hidden
    if family.startswith("torch_"):
        return _build_torch(family, layers, hidden, heads, ffn)
    spec = _HF.get(family)
    if spec is None:
        raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    import transformers as tf

    sizes = {spec.hidden: hidden, spec.positions: 128, "vocab_size": vocab if spec.tokens else None}
    sizes.update({k: layers for k in spec.layers})
    sizes.update({k: heads for k in spec.heads})
    sizes.update({k: ffn for k in spec.ffn})
    kw = {k: v for k, v in sizes.items() if k and v is not None}
    kw.update(_family_settings(family, hidden, layers, heads, vocab))
    config = getattr(tf, spec.config)(**kw, **extra)
    model: nn.Module = getattr(tf, spec.model)(config)
    return model


@dataclass(frozen=True)
class _HFFamily:
    """A Hugging Face family's config and model class, and its config's names for the sizes."""

    config: str
    model: str
    hidden: str = "hidden_size"
    layers: tuple[str, ...] = ("num_hidden_layers",)
    heads: tuple[str, ...] = ("num_attention_heads",)
    ffn: tuple[str, ...] = ("intermediate_size",)
    positions: str = "max_position_embeddings"  # "": the config has no such size
    tokens: bool = True  # a token model (vocab_size)


def _seq2seq(config: str, model: str) -> _HFFamily:
    """BART and Marian: the encoder's and the decoder's sizes."""
    return _HFFamily(
        config,
        model,
        "d_model",
        ("encoder_layers", "decoder_layers"),
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    )


_HF = {
    "bert": _HFFamily("BertConfig", "BertForMaskedLM"),
    "roberta": _HFFamily("RobertaConfig", "RobertaForMaskedLM"),
    "distilbert": _HFFamily(
        "DistilBertConfig", "DistilBertForMaskedLM", "dim", ("n_layers",), ("n_heads",),
        ("hidden_dim",), "",
    ),
    "electra": _HFFamily("ElectraConfig", "ElectraForMaskedLM"),
    "gpt2": _HFFamily("GPT2Config", "GPT2LMHeadModel", "n_embd", ("n_layer",), ("n_head",), (),
                      "n_positions"),
    "gpt_neo": _HFFamily("GPTNeoConfig", "GPTNeoForCausalLM", layers=("num_layers",),
                         heads=("num_heads",)),
    "gpt_neox": _HFFamily("GPTNeoXConfig", "GPTNeoXForCausalLM"),
    "opt": _HFFamily("OPTConfig", "OPTForCausalLM", ffn=("ffn_dim",)),
    "opt_post": _HFFamily("OPTConfig", "OPTForCausalLM", ffn=("ffn_dim",)),
    "llama": _HFFamily("LlamaConfig", "LlamaForCausalLM"),
    "mistral": _HFFamily("MistralConfig", "MistralForCausalLM"),
    "qwen2": _HFFamily("Qwen2Config", "Qwen2ForCausalLM"),
    "gemma": _HFFamily("GemmaConfig", "GemmaForCausalLM"),
    "phi": _HFFamily("PhiConfig", "PhiForCausalLM"),
    "t5": _HFFamily("T5Config", "T5ForConditionalGeneration", "d_model",
                    ("num_layers", "num_decoder_layers"), ("num_heads",), ("d_ff",), ""),
    "bart": _seq2seq("BartConfig", "BartForConditionalGeneration"),
    "marian": _seq2seq("MarianConfig", "MarianMTModel"),
    "vit": _HFFamily("ViTConfig", "ViTForImageClassification", positions="", tokens=False),
}  # fmt: skip
_TORCH = (
    "torch_encoder",
    "torch_encoder_pre",
    "torch_decoder",
    "torch_decoder_pre",
    "torch_transformer",
    "torch_transformer_pre",
)
FAMILIES = (*_HF, *_TORCH)


def _family_settings(
    family: str, hidden: int, layers: int, heads: int, vocab: int
) -> dict[str, Any]:
    """The config settings one family needs beyond the sizes."""
    if family == "electra":
        return {"embedding_size": hidden}
    if family in ("llama", "mistral", "qwen2", "gemma"):
        kv = {"num_key_value_heads": max(1, heads // 2)}
        return {**kv, "head_dim": hidden // heads} if family == "gemma" else kv
    if family == "gpt_neo":
        return {"attention_types": [[["global"], layers]]}
    if family in ("opt", "opt_post"):
        return {"word_embed_proj_dim": hidden, "do_layer_norm_before": family == "opt"}
    if family == "t5":
        return {"d_kv": hidden // heads}
    if family in ("bart", "marian"):
        bart = family == "bart"
        return {"pad_token_id": 1 if bart else vocab - 1,
                "decoder_start_token_id": 2 if bart else vocab - 1}  # fmt: skip
    if family == "vit":
        return {"image_size": 16, "patch_size": 8, "num_labels": 3}
    return {}


def _build_torch(family: str, layers: int, hidden: int, heads: int, ffn: int) -> nn.Module:
    pre = family.endswith("_pre")
    base = family.removesuffix("_pre")
    kw: dict[str, Any] = dict(
        d_model=hidden, nhead=heads, dim_feedforward=ffn, norm_first=pre, batch_first=True
    )
    if base == "torch_encoder":
        return nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**kw), num_layers=layers, enable_nested_tensor=False
        )
    if base == "torch_decoder":
        return nn.TransformerDecoder(nn.TransformerDecoderLayer(**kw), num_layers=layers)
    if base == "torch_transformer":
        return nn.Transformer(num_encoder_layers=layers, num_decoder_layers=layers, **kw)
    raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")


def example_inputs(family: str, model: nn.Module, batch: int = 2, seq: int = 8) -> dict[str, Any]:
    """Random inputs for one forward pass of a model made by :func:`build`.

    Example::

        >>> from initwatch import zoo
        >>> m = zoo.build("bert")
        >>> out = m(**zoo.example_inputs("bert", m))
    """
    import torch

    g = torch.Generator().manual_seed(0)
    if family.startswith("torch_"):
        d = _width(model)
        src = torch.randn(batch, seq, d, generator=g)
        if "transformer" in family:
            return {"src": src, "tgt": torch.randn(batch, seq, d, generator=g)}
        if "decoder" in family:
            return {"tgt": src, "memory": torch.randn(batch, seq, d, generator=g)}
        return {"src": src}
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    config: Any = model.config
    vocab = int(config.vocab_size)
    ids = torch.randint(3, vocab - 2, (batch, seq), generator=g)
    if family in ("t5", "bart", "marian"):
        dec = torch.randint(3, vocab - 2, (batch, seq), generator=g)
        return {"input_ids": ids, "decoder_input_ids": dec}
    return {"input_ids": ids}


def _width(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            return m.embed_dim
    raise ValueError("no nn.MultiheadAttention found")


def output_tensor(out: Any) -> Any:
    """The main tensor of a model output (logits, last hidden state or the tensor itself).

    Example::

        >>> import torch
        >>> output_tensor(torch.zeros(2)).shape
        torch.Size([2])
    """
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state"):
        val = getattr(out, key, None)
        if val is not None:
            return val
    return out[0]


def pretrain(
    family: str, model: nn.Module, steps: int = 100, lr: float = 3e-3, seed: int = 0
) -> nn.Module:
    """Train a model made by :func:`build` on a small learnable task, in place, so that its
    weights are trained weights (a stand-in for a pretrained checkpoint in tests and
    benchmarks; nothing is downloaded).

    Token models learn to map each token to ``(7 * token + 3) % vocab``, ViT to classify images
    by the sign of their mean, torch models to reverse their input sequence; AdamW at ``lr``,
    a fresh random batch each step, under a forked RNG (the caller's random state is kept).

    Example::

        >>> from initwatch import zoo
        >>> import initwatch
        >>> model = zoo.pretrain("gpt2", zoo.build("gpt2"), steps=60)
        >>> initwatch.is_pretrained(model)
        True
    """
    import torch
    import torch.nn.functional as F

    from initwatch.rng import seeded

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    with seeded(seed, model.parameters()):
        for _ in range(steps):
            if family.startswith("torch_"):
                inputs = example_inputs(family, model, batch=8, seq=12)
                inputs = {k: torch.randn_like(v) for k, v in inputs.items()}
                out = model(**inputs)
                target = next(iter(inputs.values())).flip(1)
                loss = F.mse_loss(out, target[:, : out.shape[1]])
            elif family == "vit":
                x = torch.randn(8, 3, 16, 16)
                logits = output_tensor(model(pixel_values=x))
                labels = (x.mean((1, 2, 3)) > 0).long() % logits.shape[-1]
                loss = F.cross_entropy(logits, labels)
            else:
                config: Any = model.config
                vocab = int(config.vocab_size)
                ids = torch.randint(3, vocab - 2, (8, 12))
                target = (7 * ids + 3) % vocab
                kw = {"input_ids": ids}
                if family in ("t5", "bart", "marian"):
                    kw["decoder_input_ids"] = ids
                logits = output_tensor(model(**kw))
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
            loss.backward()
            opt.step()
            opt.zero_grad()
    return model


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (same attribute names and forward): conv3x3-BN-ReLU-conv3x3-BN,
    plus the skip (a 1x1 conv + BN ``downsample`` when the shape changes), then ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x: Any) -> Any:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck``: 1x1-BN-ReLU, 3x3-BN-ReLU, 1x1 (x4 channels)-BN, skip, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x: Any) -> Any:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(inplanes: int, planes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == planes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


class ResNet(nn.Module):
    """A small torchvision-shaped ResNet (``conv1``, ``bn1``, ``layer1``..., ``fc``; torchvision
    itself is not a dependency), initialized as torchvision does (Kaiming-normal fan_out convs,
    BN weight 1, bias 0)."""

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2),
        width: int = 16,
        bottleneck: bool = False,
        classes: int = 10,
    ) -> None:
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, 2 if (j == 0 and i > 0) else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Any) -> Any:
        x = self.relu(self.bn1(self.conv1(x)))
        i = 1
        while hasattr(self, f"layer{i}"):
            x = getattr(self, f"layer{i}")(x)
            i += 1
        return self.fc(self.avgpool(x).flatten(1))


def resnet(
    layers: tuple[int, ...] = (2, 2), width: int = 16, bottleneck: bool = False, classes: int = 10
) -> ResNet:
    """A small torchvision-shaped ResNet for the residual-network schemes (SkipInit, Fixup).

    Example::

        >>> import torch
        >>> from initwatch import zoo
        >>> model = zoo.resnet((2, 2), width=8)
        >>> model(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 10])
    """
    return ResNet(tuple(layers), width, bottleneck, classes)


# ------------------------------------------------------------------ any model, by name or config

_DEPTH_KEYS = (
    "num_hidden_layers",
    "n_layer",
    "num_layers",
    "n_layers",
    "encoder_layers",
    "decoder_layers",
    "num_decoder_layers",
)
_WIDTH_KEYS = ("hidden_size", "n_embd", "d_model", "dim")
_FFN_KEYS = (
    "intermediate_size",
    "ffn_dim",
    "d_ff",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "n_inner",
    "hidden_dim",
)
_HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads")


@dataclass
class ModelSource:
    """How to build one model any number of times, identically, with random weights.

    Args:
        build: a function returning a fresh model with random weights.
        inputs: a function ``(model, batch, seq, generator) -> dict`` of random inputs.
        description: what the model is.

    Example::

        >>> src = model_source("gpt2", depth=2, hidden=32)
        >>> type(src.build()).__name__
        'GPT2LMHeadModel'
    """

    build: Callable[[], Any]
    inputs: Callable[[Any, int, int, Any], dict[str, Any]]
    description: str


def load_config(path: str) -> Any:
    """A Hugging Face config from a JSON file or a ``save_pretrained`` directory (only its
    ``config.json`` is read: nothing is downloaded, no weights are loaded).

    Raises:
        FileNotFoundError: no such file or directory.
        ValueError: a directory without ``config.json``, a file that is not JSON, a config
            without ``model_type``, or a ``model_type`` transformers cannot build.

    Example::

        >>> import json, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "c.json")
        >>> _ = open(path, "w").write(json.dumps({"model_type": "gpt2", "n_layer": 2}))
        >>> load_config(path).n_layer
        2
    """
    from transformers import AutoConfig

    if os.path.isdir(path):
        file = os.path.join(path, "config.json")
        if not os.path.isfile(file):
            raise ValueError(
                f"{path!r} is a directory without config.json; pass a save_pretrained "
                "directory, a config JSON file or a family name"
            )
    else:
        file = path
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {file!r} as a JSON config: {exc}") from None
    if not isinstance(data, dict) or not data.get("model_type"):
        raise ValueError(
            f'{file!r} is not a Hugging Face model config: it has no "model_type" '
            '(e.g. {"model_type": "bert", "num_hidden_layers": 12, ...})'
        )
    model_type = data.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ValueError(
            f"{file!r}: model_type {model_type!r} is not one transformers can build ({first})"
        ) from None


def resize_config(config: Any, depth: int | None = None, hidden: int | None = None) -> None:
    """Set a config's blocks per stack and width in place (its FFN width scales with the width,
    its head size follows).

    Raises:
        ValueError: the config has no depth or width field, or the width is not divisible by
            its attention heads.

    Example::

        >>> from transformers import BertConfig
        >>> cfg = BertConfig()
        >>> resize_config(cfg, depth=2, hidden=48)
        >>> cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size
        (2, 48, 192)
    """
    keys = config.to_dict()

    def fields_of(names: tuple[str, ...], arg: str, what: str) -> list[str]:
        found = [k for k in names if isinstance(keys.get(k), int)]
        if not found:
            raise ValueError(
                f"{arg}: this {config.model_type} config has no {what} field ({', '.join(names)})"
            )
        return found

    if depth is not None:
        for k in fields_of(_DEPTH_KEYS, "depth", "depth"):
            setattr(config, k, depth)
    if hidden is not None:
        found = fields_of(_WIDTH_KEYS, "hidden", "width")
        old = keys[found[0]]
        for k in _FFN_KEYS:
            if isinstance(keys.get(k), int):
                setattr(config, k, max(1, keys[k] * hidden // old))
        heads = next((keys[k] for k in _HEAD_KEYS if isinstance(keys.get(k), int)), None)
        if heads and hidden % heads:
            raise ValueError(
                f"hidden {hidden} is not divisible by the config's {heads} attention heads"
            )
        for k in ("head_dim", "d_kv"):
            if isinstance(keys.get(k), int) and heads:
                setattr(config, k, hidden // heads)
        for k in found:
            setattr(config, k, hidden)


def from_config(config: Any) -> nn.Module:
    """A model with random weights for a Hugging Face config: the seq2seq, causal-LM, masked-LM
    or image-classification head model, whichever transformers has, else the bare model.

    Example::

        >>> from transformers import GPT2Config
        >>> type(from_config(GPT2Config(n_layer=1, n_embd=32, n_head=4))).__name__
        'GPT2LMHeadModel'
    """
    import transformers as tf

    order = (["AutoModelForSeq2SeqLM"] if getattr(config, "is_encoder_decoder", False) else []) + [
        "AutoModelForCausalLM",
        "AutoModelForMaskedLM",
        "AutoModelForImageClassification",
        "AutoModel",
    ]
    last: Exception | None = None
    for name in order:
        try:
            return getattr(tf, name).from_config(config)
        except (ValueError, KeyError) as exc:
            last = exc
    raise ValueError(f"transformers has no model class for this config ({last})")


def random_inputs(model: nn.Module, batch: int, seq: int, gen: Any = None) -> dict[str, Any]:
    """Random inputs for a Hugging Face model (token ids, or pixels for an image model).

    Example::

        >>> sorted(random_inputs(build("t5"), batch=2, seq=4))
        ['decoder_input_ids', 'input_ids']
    """
    import torch

    config = model.config
    name = getattr(model, "main_input_name", "input_ids")
    if name == "pixel_values":
        size = getattr(config, "image_size", 32)
        size = size if isinstance(size, int) else size[0]
        channels = getattr(config, "num_channels", 3)
        return {"pixel_values": torch.randn(batch, channels, size, size, generator=gen)}
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab < 4:
        raise ValueError(f"cannot make random inputs for {type(model).__name__} (no vocab_size)")
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        seq = min(seq, limit)
    ids = torch.randint(3, vocab - 1, (batch, seq), generator=gen)
    out = {"input_ids": ids}
    if getattr(config, "is_encoder_decoder", False):
        out["decoder_input_ids"] = torch.randint(3, vocab - 1, (batch, seq), generator=gen)
    return out


def count_params(build: Callable[[], nn.Module]) -> int | None:
    """Parameters of the model ``build`` makes, counted on the meta device (no memory); None
    when it cannot be built there.

    Example::

        >>> count_params(lambda: nn.Linear(3, 2))
        8
    """
    import torch

    try:
        with torch.device("meta"):
            model = build()
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - only an estimate: None means "unknown"
        return None


def looks_like_path(spec: str) -> bool:
    """Whether a model argument was meant as a file (so "no such file" beats "unknown family").

    Example::

        >>> looks_like_path("cfg/config.json"), looks_like_path("bret")
        (True, False)
    """
    return os.sep in spec or spec.endswith(".json") or spec.startswith(".")


def model_source(
    spec: str,
    depth: int | None = None,
    hidden: int | None = None,
    max_params: int | None = None,
) -> ModelSource:
    """Resolve a family name, a config JSON file or a ``save_pretrained`` directory into a
    :class:`ModelSource` (random weights: only a config is ever read).

    Args:
        spec: a family of :data:`FAMILIES`, a config file or a directory.
        depth: blocks per stack (family default 12; for a config, overrides its depth).
        hidden: width (family default 64; for a config, overrides its width).
        max_params: refuse a model larger than this (None: any size).

    Raises:
        FileNotFoundError: ``spec`` looks like a path that does not exist.
        ValueError: an unknown family (with the closest name), an unreadable config, or a model
            over ``max_params``.

    Example::

        >>> model_source("bert", depth=2, hidden=32).description
        'bert (family), 2 blocks per stack, hidden 32'
    """
    from initwatch.errors import suggest

    if os.path.exists(spec):
        config = load_config(spec)
        resize_config(config, depth, hidden)

        def build_it() -> nn.Module:
            return from_config(config)

        desc = f"{spec} ({config.model_type} config; random weights)"
        inputs: Callable[[Any, int, int, Any], dict[str, Any]] = random_inputs
    elif spec in FAMILIES:
        layers = depth or 12
        width = hidden or 64
        heads = 4 if width % 4 == 0 else 1

        def build_it() -> nn.Module:
            return build(spec, layers=layers, hidden=width, heads=heads, vocab=256)

        def inputs(model: Any, batch: int, seq: int, gen: Any) -> dict[str, Any]:
            if spec.startswith("torch_"):
                return example_inputs(spec, model, batch=batch, seq=seq)
            return random_inputs(model, batch, seq, gen)

        desc = f"{spec} (family), {layers} blocks per stack, hidden {width}"
    elif looks_like_path(spec):
        raise FileNotFoundError(2, "No such file or directory", spec)
    else:
        raise ValueError(
            f"unknown model {spec!r}{suggest(spec, FAMILIES)}: expected a Hugging Face config "
            f"(JSON file or save_pretrained directory) or a family name ({', '.join(FAMILIES)})"
        )
    n = count_params(build_it) if max_params is not None else None
    if n is not None and max_params is not None and n > max_params:
        raise ValueError(
            f"{spec}: {n / 1e6:,.0f}M parameters is too large to check on the CPU "
            f"(max_params {max_params:,}); shrink it, e.g. a width of 256 (--hidden 256): "
            "depth matters more than width here"
        )
    return ModelSource(build=build_it, inputs=inputs, description=desc)

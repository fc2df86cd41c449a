"""Tiny random-weight models of every recognised family, built from configs (no download)."""

from __future__ import annotations

from typing import Any

from torch import nn

FAMILIES = (
    "bert",
    "roberta",
    "distilbert",
    "electra",
    "gpt2",
    "gpt_neo",
    "gpt_neox",
    "opt",
    "opt_post",
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "phi",
    "t5",
    "bart",
    "marian",
    "vit",
    "torch_encoder",
    "torch_encoder_pre",
    "torch_decoder",
    "torch_decoder_pre",
    "torch_transformer",
    "torch_transformer_pre",
)


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
    import transformers as tf

    common = dict(vocab_size=vocab)
    if family in ("bert", "roberta", "electra"):
        cfg_cls, model_cls = {
            "bert": (tf.BertConfig, tf.BertForMaskedLM),
            "roberta": (tf.RobertaConfig, tf.RobertaForMaskedLM),
            "electra": (tf.ElectraConfig, tf.ElectraForMaskedLM),
        }[family]
        kw = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=128,
        )
        if family == "electra":
            kw["embedding_size"] = hidden
        return model_cls(cfg_cls(**common, **kw, **extra))
    if family == "distilbert":
        cfg = tf.DistilBertConfig(
            **common, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=ffn, **extra
        )
        return tf.DistilBertForMaskedLM(cfg)
    if family == "gpt2":
        cfg = tf.GPT2Config(
            **common, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=128, **extra
        )
        return tf.GPT2LMHeadModel(cfg)
    if family == "gpt_neo":
        cfg = tf.GPTNeoConfig(
            **common,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            attention_types=[[["global"], layers]],
            max_position_embeddings=128,
            intermediate_size=ffn,
            **extra,
        )
        return tf.GPTNeoForCausalLM(cfg)
    if family == "gpt_neox":
        cfg = tf.GPTNeoXConfig(
            **common,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=128,
            **extra,
        )
        return tf.GPTNeoXForCausalLM(cfg)
    if family in ("opt", "opt_post"):
        cfg = tf.OPTConfig(
            **common,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            ffn_dim=ffn,
            word_embed_proj_dim=hidden,
            max_position_embeddings=128,
            do_layer_norm_before=family == "opt",
            **extra,
        )
        return tf.OPTForCausalLM(cfg)
    if family in ("llama", "mistral", "qwen2", "gemma"):
        cfg_cls, model_cls = {
            "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
            "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
            "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
            "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM),
        }[family]
        kw = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            intermediate_size=ffn,
            max_position_embeddings=128,
        )
        if family == "gemma":
            kw["head_dim"] = hidden // heads
        return model_cls(cfg_cls(**common, **kw, **extra))
    if family == "phi":
        cfg = tf.PhiConfig(
            **common,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            max_position_embeddings=128,
            **extra,
        )
        return tf.PhiForCausalLM(cfg)
    if family == "t5":
        cfg = tf.T5Config(
            **common,
            d_model=hidden,
            d_kv=hidden // heads,
            d_ff=ffn,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=heads,
            **extra,
        )
        return tf.T5ForConditionalGeneration(cfg)
    if family in ("bart", "marian"):
        cfg_cls, model_cls = {
            "bart": (tf.BartConfig, tf.BartForConditionalGeneration),
            "marian": (tf.MarianConfig, tf.MarianMTModel),
        }[family]
        cfg = cfg_cls(
            **common,
            d_model=hidden,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=heads,
            decoder_attention_heads=heads,
            encoder_ffn_dim=ffn,
            decoder_ffn_dim=ffn,
            max_position_embeddings=128,
            pad_token_id=1 if family == "bart" else vocab - 1,
            decoder_start_token_id=2 if family == "bart" else vocab - 1,
            **extra,
        )
        return model_cls(cfg)
    if family == "vit":
        cfg = tf.ViTConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=ffn,
            image_size=16,
            patch_size=8,
            num_labels=3,
            **extra,
        )
        return tf.ViTForImageClassification(cfg)
    raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")


def _build_torch(family: str, layers: int, hidden: int, heads: int, ffn: int) -> nn.Module:
    pre = family.endswith("_pre")
    base = family.removesuffix("_pre")
    kw = dict(d_model=hidden, nhead=heads, dim_feedforward=ffn, norm_first=pre, batch_first=True)
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
    vocab = model.config.vocab_size
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

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
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
                vocab = model.config.vocab_size
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

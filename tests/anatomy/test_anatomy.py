"""inspect(): families, roles, norms, fused layouts, custom patterns and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwatch
from initwatch import zoo
from initwatch.errors import AnatomyError

# family -> (anatomy family, kind, layout, residual, roles in block 0 of the first stack)
EXPECTED = {
    "bert": ("bert", "encoder-only", "post", "sequential", "q k v o ffn_in ffn_out"),
    "roberta": ("roberta", "encoder-only", "post", "sequential", "q k v o ffn_in ffn_out"),
    "distilbert": ("distilbert", "encoder-only", "post", "sequential", "q k v o ffn_in ffn_out"),
    "electra": ("electra", "encoder-only", "post", "sequential", "q k v o ffn_in ffn_out"),
    "gpt2": ("gpt2", "decoder-only", "pre", "sequential", "q k v o ffn_in ffn_out"),
    "gpt_neo": ("gpt_neo", "decoder-only", "pre", "sequential", "q k v o ffn_in ffn_out"),
    "gpt_neox": ("gpt_neox", "decoder-only", "pre", "parallel", "q k v o ffn_in ffn_out"),
    "opt": ("opt", "decoder-only", "pre", "sequential", "q k v o ffn_in ffn_out"),
    "opt_post": ("opt", "decoder-only", "post", "sequential", "q k v o ffn_in ffn_out"),
    "llama": ("llama", "decoder-only", "pre", "sequential", "q k v o ffn_gate ffn_in ffn_out"),
    "mistral": ("mistral", "decoder-only", "pre", "sequential", "q k v o ffn_gate ffn_in ffn_out"),
    "qwen2": ("qwen2", "decoder-only", "pre", "sequential", "q k v o ffn_gate ffn_in ffn_out"),
    "gemma": ("gemma", "decoder-only", "pre", "sequential", "q k v o ffn_gate ffn_in ffn_out"),
    "phi": ("phi", "decoder-only", "pre", "parallel", "q k v o ffn_in ffn_out"),
    "t5": ("t5", "encoder-decoder", "pre", "sequential", "q k v o ffn_in ffn_out"),
    "bart": ("bart", "encoder-decoder", "post", "sequential", "q k v o ffn_in ffn_out"),
    "marian": ("marian", "encoder-decoder", "post", "sequential", "q k v o ffn_in ffn_out"),
    "vit": ("vit", "encoder-only", "pre", "sequential", "q k v o ffn_in ffn_out"),
    "torch_encoder": ("torch", "encoder-only", "post", "sequential", "q k v o ffn_in ffn_out"),
    "torch_encoder_pre": ("torch", "encoder-only", "pre", "sequential", "q k v o ffn_in ffn_out"),
    "torch_decoder": (
        "torch",
        "decoder-only",
        "post",
        "sequential",
        "q k v o xq xk xv xo ffn_in ffn_out",
    ),
    "torch_decoder_pre": (
        "torch",
        "decoder-only",
        "pre",
        "sequential",
        "q k v o xq xk xv xo ffn_in ffn_out",
    ),
    "torch_transformer": (
        "torch",
        "encoder-decoder",
        "post",
        "sequential",
        "q k v o ffn_in ffn_out",
    ),
    "torch_transformer_pre": (
        "torch",
        "encoder-decoder",
        "pre",
        "sequential",
        "q k v o ffn_in ffn_out",
    ),
}


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_every_family_is_recognised(name: str) -> None:
    assert set(EXPECTED) == set(zoo.FAMILIES)
    model = zoo.build(name, layers=3)
    a = initwatch.inspect(model)
    fam, kind, layout, residual, roles = EXPECTED[name]
    assert (a.family, a.kind, a.layout, a.residual) == (fam, kind, layout, residual)
    assert all(d == 3 for d in a.depth.values())
    assert [s.role for s in a.stacks[0].blocks[0].slots] == roles.split()
    assert a.hidden == 32 and a.heads == 4
    for block in a.blocks:
        # every role points at a real parameter and every norm at a real module
        for slot in block.slots:
            assert slot.weight_view(model).numel() == slot.fan_in * slot.fan_out
        for norm in block.norms:
            assert "norm" in type(model.get_submodule(norm.path)).__name__.lower()
        for sub in block.sublayers:
            model.get_submodule(sub.output)
    # blocks of a stack are distinct module paths in order
    paths = [b.path for b in a.blocks]
    assert len(set(paths)) == len(paths)


def test_decoder_of_encoder_decoder_has_cross_attention() -> None:
    for name in ("t5", "bart", "marian", "torch_transformer"):
        a = initwatch.inspect(zoo.build(name))
        dec = a.stack("decoder")
        assert [s.kind for s in dec.blocks[0].sublayers] == ["attn", "cross", "ffn"], name
        assert {"xq", "xk", "xv", "xo"} <= {s.role for s in dec.blocks[0].slots}


def test_stack_parts_embeddings_norms_and_tying() -> None:
    a = initwatch.inspect(zoo.build("gpt2"))
    s = a.stacks[0]
    assert (s.token_embedding, s.position_embedding) == ("transformer.wte", "transformer.wpe")
    assert s.final_norm.path == "transformer.ln_f" and s.embedding_norm is None
    assert ["transformer.wte.weight", "lm_head.weight"] in a.tied
    t5 = initwatch.inspect(zoo.build("t5"))
    shared = next(g for g in t5.tied if "shared.weight" in g)
    assert {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"} <= set(shared)
    bert = initwatch.inspect(zoo.build("bert")).stacks[0]
    assert bert.embedding_norm.path == "bert.embeddings.LayerNorm" and bert.final_norm is None
    # OPT's Post-LN layout has no final norm; its Pre-LN layout does
    assert initwatch.inspect(zoo.build("opt_post")).stacks[0].final_norm is None
    assert initwatch.inspect(zoo.build("opt")).stacks[0].final_norm is not None
    # nn.Transformer always creates final norms, even Post-LN
    assert (
        initwatch.inspect(zoo.build("torch_transformer")).stack("encoder").final_norm.path
        == "encoder.norm"
    )


def test_model_specific_facts() -> None:
    assert not initwatch.inspect(zoo.build("t5")).attn_scaled
    assert not initwatch.inspect(zoo.build("gpt_neo")).attn_scaled
    assert initwatch.inspect(zoo.build("bert")).attn_scaled
    gemma = initwatch.inspect(zoo.build("gemma", hidden=32))
    assert gemma.norm_kind == "rmsnorm_1p"
    assert gemma.stacks[0].embed_scale == pytest.approx(math.sqrt(32))
    assert initwatch.inspect(zoo.build("llama")).norm_kind == "rmsnorm"
    neox = initwatch.inspect(zoo.build("gpt_neox", use_parallel_residual=False))
    assert neox.residual == "sequential"
    # GQA: k and v have the true fan-out n_kv_heads * head_dim
    k = initwatch.inspect(zoo.build("llama", hidden=32, heads=4)).blocks[0].slot("k")
    assert (k.fan_in, k.fan_out) == (32, 16)


def _x(d: int = 32) -> torch.Tensor:
    return torch.randn(2, 5, d)


def test_gpt2_fused_columns_are_q_k_v() -> None:
    model = zoo.build("gpt2")
    block = initwatch.inspect(model).blocks[0]
    c_attn = model.get_submodule(block.slot("q").module)
    x = _x()
    full = c_attn(x)
    for i, role in enumerate("qkv"):
        slot = block.slot(role)
        part = x @ slot.weight_view(model) + slot.bias_view(model)
        torch.testing.assert_close(part, full[..., i * 32 : (i + 1) * 32])


def test_gpt_neox_fused_rows_are_interleaved_per_head() -> None:
    model = zoo.build("gpt_neox", hidden=32, heads=4)
    block = initwatch.inspect(model).blocks[0]
    qkv = model.get_submodule(block.slot("v").module)
    x = _x()
    per_head = qkv(x).view(2, 5, 4, 3 * 8)
    for i, role in enumerate("qkv"):
        slot = block.slot(role)
        w = slot.weight_view(model).reshape(-1, 32)
        b = slot.bias_view(model).reshape(-1)
        expected = per_head[..., i * 8 : (i + 1) * 8].reshape(2, 5, 32)
        torch.testing.assert_close(F.linear(x, w, b), expected)
    # the naive contiguous third is NOT v
    naive = qkv.weight[64:96]
    assert not torch.allclose(naive, block.slot("v").weight_view(model).reshape(-1, 32))


def test_multihead_attention_rows_reproduce_the_module() -> None:
    model = zoo.build("torch_encoder").eval()  # no attention dropout
    block = initwatch.inspect(model).blocks[0]
    mha = model.layers[0].self_attn
    x = _x()
    q, k, v = (
        F.linear(x, block.slot(r).weight_view(model), block.slot(r).bias_view(model)) for r in "qkv"
    )
    heads = lambda t: t.view(2, 5, 4, 8).transpose(1, 2)  # noqa: E731
    att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(8), -1) @ heads(v)
    o = block.slot("o")
    manual = F.linear(
        att.transpose(1, 2).reshape(2, 5, 32), o.weight_view(model), o.bias_view(model)
    )
    torch.testing.assert_close(manual, mha(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)


def test_str_is_a_readable_table() -> None:
    text = str(initwatch.inspect(zoo.build("bert")))
    assert "family bert" in text and "Post-LN" in text
    header = [ln for ln in text.splitlines() if ln.startswith("block ")]
    assert header and "role" in header[0] and "module" in header[0]
    assert "bert.encoder.layer.*.attention.self.query.weight" in text  # blocks 0-1 collapsed
    assert "32x32" in text and "64x32" in text  # shapes (out x in)
    assert "deepnet" in text and "applies" in text
    pre = str(initwatch.inspect(zoo.build("llama")))
    assert "deepnet: not applicable" in pre and "Pre-LN" in pre


def test_found_inside_a_wrapper_module() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = zoo.build("gpt2")

    a = initwatch.inspect(Wrapper())
    assert a.family == "gpt2" and a.blocks[0].path == "net.transformer.h.0"
    assert a.stacks[0].token_embedding == "net.transformer.wte"


class Custom(nn.Module):
    """A transformer initwatch does not know: names of its own."""

    class Attn(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
            return self.wo(a @ v)

    class Block(nn.Module):
        def __init__(self, d: int) -> None:
            super().__init__()
            self.attn = Custom.Attn(d)
            self.ln1 = nn.LayerNorm(d)
            self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
            self.ln2 = nn.LayerNorm(d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.ln1(x + self.attn(x))
            return self.ln2(x + self.fc2(torch.relu(self.fc1(x))))

    def __init__(self, d: int = 32, n: int = 3) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, d)
        self.layers = nn.ModuleList(Custom.Block(d) for _ in range(n))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for layer in self.layers:
            x = layer(x)
        return x


PATTERNS = dict(
    blocks="layers",
    roles={
        "q": "attn.wq",
        "k": "attn.wk",
        "v": "attn.wv",
        "o": "attn.wo",
        "ffn_in": "fc1",
        "ffn_out": "fc2",
    },
    norms={"attn": "ln1", "ffn": "ln2"},
    layout="post",
    token_embedding="emb",
)


def test_custom_model_described_by_patterns() -> None:
    model = Custom()
    a = initwatch.inspect(model, **PATTERNS)
    assert (a.family, a.layout, a.depth) == ("custom", "post", {"encoder": 3})
    assert [s.role for s in a.blocks[2].slots] == ["q", "k", "v", "o", "ffn_in", "ffn_out"]
    assert a.blocks[1].sublayers[0].norm.path == "layers.1.ln1"
    assert a.stacks[0].token_embedding == "emb"


def test_unknown_model_error_shows_what_was_found_and_a_call() -> None:
    with pytest.raises(AnatomyError) as err:
        initwatch.inspect(Custom())
    msg = str(err.value)
    assert "Custom" in msg and "'layers'" in msg
    assert "initwatch.inspect(model, blocks='layers'" in msg
    assert "'q': 'attn.wq'" in msg and "'ffn_out': 'fc2'" in msg and "ln1" in msg


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"roles": {"query": "attn.wq"}}, "unknown role"),
        ({"layout": None}, "layout=None"),
        ({"blocks": "nope"}, "'nope' is not a non-empty nn.ModuleList"),
        ({"roles": {"q": "attn.nothing", "o": "attn.wo"}}, "matched no module in any block"),
        ({"roles": {"q": "attn.wq", "k": "attn.wk"}}, "output projection role 'o'"),
        ({"norms": {"mlp": "ln2"}}, "norms keys"),
    ],
)
def test_bad_patterns_raise_clear_errors(override: dict, needle: str) -> None:
    with pytest.raises(AnatomyError, match=None) as err:
        initwatch.inspect(Custom(), **{**PATTERNS, **override})
    assert needle in str(err.value)


def test_pattern_present_in_some_blocks_only_is_an_error() -> None:
    model = Custom()
    del model.layers[1].fc1
    with pytest.raises(
        AnatomyError, match=r"exists in some blocks of 'layers' but not in blocks \[1\]"
    ):
        initwatch.inspect(model, **PATTERNS)

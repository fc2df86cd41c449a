"""Schemes on the paths users take beyond the zoo: nested-tensor encoders, chunked FFNs,
models initwatch cannot read, unequal fused QKV, untied heads, custom embeddings."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from builders import lightning_trainer
from torch import nn

import initwatch
from initwatch import zoo
from initwatch.errors import AnatomyError


# --- crashes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["t-fixup", "rezero", "deepnet"])
def test_nested_tensor_encoder_in_eval_under_no_grad_with_padding_mask(scheme: str) -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True)
    initwatch.reinit(model, scheme, seed=0)
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    reference = model(x, src_key_padding_mask=mask)  # train mode: the eager path
    model.eval()
    with torch.no_grad():
        out = model(x, src_key_padding_mask=mask)
    keep = ~mask
    torch.testing.assert_close(out[keep], reference[keep].detach(), rtol=1e-5, atol=1e-6)


def test_deepnet_on_bert_with_chunked_feed_forward_equals_unchunked() -> None:
    chunked = zoo.build("bert", layers=2, chunk_size_feed_forward=4)
    plain = zoo.build("bert", layers=2)
    plain.load_state_dict(chunked.state_dict())
    initwatch.reinit(chunked, "deepnet", seed=0)
    initwatch.reinit(plain, "deepnet", seed=0)
    inputs = zoo.example_inputs("bert", plain, seq=8)
    chunked.eval(), plain.eval()
    torch.testing.assert_close(chunked(**inputs).logits, plain(**inputs).logits)


class _Absent(nn.Module):
    """An x-transformers-like layer list: entries are ``ModuleList([norms, block, residual])``
    where ``norms`` holds ``None`` for the absent norms."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for branch in (nn.Linear(d, d), nn.Sequential(nn.Linear(d, 2 * d), nn.Linear(2 * d, d))):
            norms = nn.ModuleList([None, None])
            self.layers.append(nn.ModuleList([norms, branch]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, branch in self.layers:
            x = x + branch(x)
        return x


def test_a_model_whose_reading_fails_is_watched_by_path_with_one_warning() -> None:
    from initwatch.integrations._common import read_anatomy

    model = _Absent()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_anatomy(model, None) is None
        watch = initwatch.Watch(model, every=1, rules=False)
    with pytest.raises(AnatomyError):  # the explicit call still says what is wrong
        initwatch.inspect(model)
    assert watch.anatomy is None
    watch.begin_step(0)
    model(torch.randn(3, 16)).sum().backward()
    watch.end_step()
    assert watch.last_frame.get("act_rms", "layers.0.1") > 0
    watch.close()
    assert len([w for w in caught if "could not read" in str(w.message)]) <= 1


# --- embeddings outside a recognised stack ----------------------------------------------------
class _EmbeddedEncoder(nn.Module):
    def __init__(self, d: int = 32, layers: int = 3) -> None:
        super().__init__()
        self.tok = nn.Embedding(200, d)
        self.pos = nn.Embedding(16, d)
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def test_tfixup_finds_the_token_table_next_to_a_torch_encoder() -> None:
    model = _EmbeddedEncoder()
    a = initwatch.inspect(model)
    assert (a.stacks[0].token_embedding, a.stacks[0].position_embedding) == ("tok", "pos")
    report = initwatch.reinit(model, "t-fixup", seed=0)
    target = (9 * 3) ** -0.25  # the effective rule, multiplier 1
    rms = model.tok.weight.detach().pow(2).mean().sqrt().item()
    assert abs(rms / target - 1) < 5 * (2 / (4 * 200 * 32)) ** 0.5  # normal: kurtosis 3
    assert report.constants["encoder"]["embedding_scale"] == pytest.approx(target)
    assert not report.skipped


def test_missing_token_embedding_is_reported_skipped_with_a_warning() -> None:
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    model = nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    with pytest.warns(RuntimeWarning, match="no token embedding found"):
        report = initwatch.reinit(model, "t-fixup", seed=0)
    assert [c.role for c in report.skipped] == ["token_embedding"]
    assert "token_embedding=" in report.skipped[0].note
    assert set(report.constants["encoder"]) == {"scale"}  # only what was applied
    assert "embedding_scale" not in report.headline()
    assert "1 skipped" in report.headline()


def test_a_shared_table_drawn_once_keeps_its_scale_out_of_the_other_stack() -> None:
    report = initwatch.reinit(zoo.build("bart", layers=2), "t-fixup", seed=0)
    assert "embedding_scale" in report.constants["encoder"]
    assert "embedding_scale" not in report.constants["decoder"]


def test_token_embedding_is_honoured_on_its_own() -> None:
    class Two(nn.Module):  # two candidate tables: discovery cannot choose
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(50, 32)
            self.chars = nn.Embedding(20, 32)
            self.encoder = _EmbeddedEncoder().encoder

    model = Two()
    assert initwatch.inspect(model).stacks[0].token_embedding is None
    a = initwatch.inspect(model, token_embedding="words", embed_scale=32**0.5)
    assert a.family == "torch" and a.stacks[0].token_embedding == "words"
    before = model.chars.weight.detach().clone()
    initwatch.reinit(model, "t-fixup", anatomy=a, seed=0)
    assert torch.equal(model.chars.weight, before)
    target = (9 * 3) ** -0.25 / 32**0.5  # the multiplier the caller gave is compensated
    rms = model.words.weight.detach().pow(2).mean().sqrt().item()
    assert abs(rms / target - 1) < 5 * (2 / (4 * 50 * 32)) ** 0.5
    with pytest.raises(AnatomyError, match="relative to the model passed to inspect"):
        initwatch.inspect(model, token_embedding="nope")


# --- fused QKV, heads, paths, alternating lists -----------------------------------------------
class _Fused(nn.Module):
    def __init__(self, d: int = 64, q: int = 64, kv: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, q + 2 * kv)
        self.o = nn.Linear(q, d)
        self.fc1 = nn.Linear(d, 2 * d)
        self.fc2 = nn.Linear(2 * d, d)


class _Stack(nn.Module):
    def __init__(self, **kw: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Fused(**kw), _Fused(**kw)])


_ROLES = {"qkv": "qkv", "o": "o", "ffn_in": "fc1", "ffn_out": "fc2"}


def test_unequal_fused_qkv_is_refused_without_sizes_and_exact_with_them() -> None:
    with pytest.raises(AnatomyError, match=r"qkv_sizes=\(64, 16, 16\)"):
        initwatch.inspect(_Stack(), blocks="layers", roles=_ROLES)
    model = _Stack()
    a = initwatch.inspect(model, blocks="layers", roles=_ROLES, qkv_sizes=(64, 16, 16))
    assert [a.blocks[0].slot(r).fan_out for r in "qkv"] == [64, 16, 16]
    initwatch.reinit(model, "t-fixup", anatomy=a, seed=0)
    w = model.layers[0].qkv.weight.detach()
    scale = 0.67 * 2**-0.25
    for rows, gain, fan_out in ((w[:64], 1.0, 64), (w[64:80], 1.0, 16), (w[80:], scale, 16)):
        bound = gain * (6 / (64 + fan_out)) ** 0.5  # Xavier uniform
        assert rows.abs().max() <= bound
        assert rows.abs().max() > 0.9 * bound
    with pytest.raises(AnatomyError, match="summing"):
        initwatch.inspect(model, blocks="layers", roles=_ROLES, qkv_sizes=(64, 16, 8))
    with pytest.raises(ValueError, match="qkv_sizes=96"):
        initwatch.inspect(model, blocks="layers", roles=_ROLES, qkv_sizes=96)
    with pytest.raises(ValueError, match="embed_scale=-1"):
        initwatch.inspect(model, blocks="layers", roles=_ROLES, embed_scale=-1)


def test_paths_relative_to_an_inner_module_are_accepted() -> None:
    class Lit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = _Stack(q=32, kv=32)

    a = initwatch.inspect(Lit(), blocks="layers", roles=_ROLES)
    assert a.stacks[0].path == "model.layers"
    assert a.blocks[1].slot("v").module == "model.layers.1.qkv"


def test_suggested_inspect_call_describes_a_timm_vit_completely() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(32, 96)
            self.proj = nn.Linear(32, 32)

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(32, 64)
            self.fc2 = nn.Linear(64, 32)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.attn = nn.LayerNorm(32), Attn()
            self.norm2, self.mlp = nn.LayerNorm(32), Mlp()

    class Vit(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(Block(), Block())

    model = Vit()
    with pytest.raises(AnatomyError) as err:
        initwatch.inspect(model)
    call = re.search(r"initwatch\.inspect\(model, (.*?layout='post' or 'pre')\)", str(err.value))
    assert call is not None, str(err.value)
    args = call.group(1).replace("'post' or 'pre'", "'pre'")
    kwargs = eval(f"dict({args})")  # noqa: S307 - the message's own call, followed literally
    a = initwatch.inspect(model, **kwargs)
    assert {s.role for s in a.blocks[0].slots} == {"q", "k", "v", "o", "ffn_in", "ffn_out"}
    assert a.hidden == 32


def test_alternating_attention_and_ffn_entries_describe_one_block_per_pair() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.to_q, self.to_k = nn.Linear(16, 16), nn.Linear(16, 16)
            self.to_v, self.to_out = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            att = (self.to_q(x) @ self.to_k(x).transpose(-1, -2) / 4).softmax(-1)
            return self.to_out(att @ self.to_v(x))

    class XT(nn.Module):  # x-transformers: [norm, branch] entries, attention and FFN alternate
        def __init__(self, depth: int = 2) -> None:
            super().__init__()
            self.layers = nn.ModuleList()
            for _ in range(depth):
                ff = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
                self.layers.append(nn.ModuleList([nn.LayerNorm(16), Attn()]))
                self.layers.append(nn.ModuleList([nn.LayerNorm(16), ff]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for norm, branch in self.layers:
                x = x + branch(norm(x))
            return x

    model = XT()
    roles = {"q": "0.1.to_q", "k": "0.1.to_k", "v": "0.1.to_v", "o": "0.1.to_out"}
    roles |= {"ffn_in": "1.1.0", "ffn_out": "1.1.2"}
    a = initwatch.inspect(
        model, blocks="layers", group=2, roles=roles, norms={"attn": "0.0", "ffn": "1.0"},
        layout="pre",
    )  # fmt: skip
    assert a.depth == {"encoder": 2}
    assert [s.kind for s in a.blocks[1].sublayers] == ["attn", "ffn"]
    assert a.blocks[1].slot("ffn_in").module == "layers.3.1.0"
    post = initwatch.inspect(
        XT(), blocks="layers", group=2, roles=roles, norms={"attn": "0.0", "ffn": "1.0"},
        layout="post",
    )  # fmt: skip
    with pytest.raises(initwatch.SchemeNotApplicableError, match="never calls"):
        initwatch.reinit(XT(), "deepnet", anatomy=post)
    initwatch.reinit(model, "rezero", anatomy=a)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(model(x), x)  # ReZero: the identity at init
    with pytest.raises(AnatomyError, match="entry's index"):
        initwatch.inspect(XT(), blocks="layers", group=2, roles={"q": "to_q", "o": "to_out"})


# --- what else T-Fixup re-draws ----------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "phi", "gpt_neox"])
def test_tfixup_gives_untied_output_heads_xavier(family: str) -> None:
    model = zoo.build(family, layers=2, hidden=64, vocab=512, tie_word_embeddings=False)
    head = model.get_output_embeddings()
    report = initwatch.reinit(model, "t-fixup", seed=0)
    assert [c.role for c in report.parameters].count("output_head") == 1
    bound = (6 / (64 + 512)) ** 0.5  # Xavier uniform, gain 1
    w = head.weight.detach()
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    if head.bias is not None:
        assert torch.count_nonzero(head.bias) == 0


def test_tfixup_leaves_a_tied_head_to_the_embedding_rule() -> None:
    model = zoo.build("gpt2", layers=2)
    report = initwatch.reinit(model, "t-fixup", seed=0)
    assert "output_head" not in [c.role for c in report.changes]
    assert model.get_output_embeddings().weight is model.transformer.wte.weight


def test_tfixup_vit_patch_projection_feeds_block_zero_at_the_embedding_scale() -> None:
    model = zoo.build("vit", layers=3)
    report = initwatch.reinit(model, "t-fixup", seed=0)
    proj = model.vit.embeddings.patch_embeddings.projection
    fan_in = proj.weight[0].numel()
    target = (9 * 3) ** -0.25  # encoder-only: (9N)^-1/4
    rms = proj.weight.detach().pow(2).mean().sqrt().item()
    assert abs(rms * fan_in**0.5 / target - 1) < 5 * (2 / (4 * proj.weight.numel())) ** 0.5
    assert torch.count_nonzero(proj.bias) == 0
    assert report.constants["encoder"]["embedding_scale"] == pytest.approx(target)
    out = proj(torch.randn(64, proj.in_channels, *proj.kernel_size))  # unit-variance pixels
    assert out.std().item() == pytest.approx(target, rel=0.15)


def test_lightning_watches_a_model_it_cannot_read_by_module_path(tmp_path) -> None:  # noqa: ANN001
    import lightning as L

    from initwatch.integrations.lightning import InitWatch

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _Absent()

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):  # noqa: ANN201
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    callback = InitWatch(scheme=None, logdir=str(tmp_path / "tb"), log_every_n_steps=1)
    data = torch.utils.data.TensorDataset(torch.randn(8, 16))
    trainer = lightning_trainer(tmp_path, [callback], max_steps=2)
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=4))
    assert callback.state_dict()["watch"]["step"] == 1

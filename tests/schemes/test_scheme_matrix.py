"""The cells of docs/schemes.md's "where it works" matrix not covered by a file of their own:
each scheme under torch.compile, under PEFT (LoRA wrap and merge) and under DDP."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from paths import DDP
from ranks import torchrun
from torch import nn

import initwatch
from initwatch import zoo

SCHEMES = ["deepnet", "t-fixup", "rezero", "admin"]
HERE = DDP


def _model(scheme: str, family: str = "bert") -> nn.Module:
    torch.manual_seed(0)
    model = zoo.build(family, layers=2)
    initwatch.reinit(model, scheme, seed=0)
    with torch.no_grad():  # trained gates are not 0: make the gate visible in the output
        for name, p in model.named_parameters():
            if "rezero_alpha" in name:
                p.fill_(0.7)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(m, nn.MultiheadAttention):
            m.dropout = 0.0
    return model


def _run(model: nn.Module, family: str = "bert") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = zoo.output_tensor(model(**zoo.example_inputs(family, model)))
    out.float().pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


@pytest.mark.parametrize("scheme", SCHEMES)
def test_torch_compile_computes_what_eager_computes(scheme: str) -> None:
    torch._dynamo.reset()  # a fresh cache, as in a new process (see the matrix's footnote)
    eager = _model(scheme, "torch_encoder")
    compiled_model = copy.deepcopy(eager)
    ref_out, ref_grads = _run(eager, "torch_encoder")
    compiled = torch.compile(compiled_model, backend="aot_eager")  # traces forward and backward
    out, grads = _run(compiled, "torch_encoder")
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    assert set(grads) == {f"_orig_mod.{n}" for n in ref_grads} or set(grads) == set(ref_grads)
    for name, g in ref_grads.items():
        got = grads.get(name, grads.get(f"_orig_mod.{name}"))
        torch.testing.assert_close(got, g, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_peft_lora_keeps_the_scheme_and_merging_keeps_the_function(scheme: str) -> None:
    from peft import LoraConfig, get_peft_model

    base = _model(scheme).eval()
    inputs = zoo.example_inputs("bert", base)
    ref = zoo.output_tensor(base(**inputs)).detach()
    # LoRA on q, v and on the branch output projections (ReZero's gates sit on those)
    cfg = LoraConfig(r=4, target_modules=["query", "value", "dense"], init_lora_weights=False)
    lora = get_peft_model(copy.deepcopy(base), cfg).eval()
    with lora.disable_adapter():
        torch.testing.assert_close(zoo.output_tensor(lora(**inputs)), ref, rtol=0, atol=0)
    with_lora = zoo.output_tensor(lora(**inputs)).detach()
    assert not torch.allclose(with_lora, ref, atol=1e-4)  # the adapter is live
    merged = lora.merge_and_unload()
    torch.testing.assert_close(zoo.output_tensor(merged(**inputs)), with_lora, rtol=1e-4, atol=1e-5)
    if scheme == "rezero":  # the gate scales the whole branch, LoRA delta included
        with torch.no_grad():
            for name, p in merged.named_parameters():
                if "rezero_alpha" in name:
                    p.zero_()
        emb = merged.bert.embeddings(inputs["input_ids"])
        torch.testing.assert_close(merged.bert(**inputs).last_hidden_state, emb, rtol=0, atol=0)


class _Embedded(nn.Module):
    """Token and position tables outside any recognised stack, then a torch encoder."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.tok = nn.Embedding(200, d)
        self.pos = nn.Embedding(16, d)
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        return self.encoder(self.tok(ids) + self.pos(pos))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_custom_embeddings_get_what_the_paper_prescribes(scheme: str) -> None:
    model = _Embedded()
    before = {n: model.get_parameter(f"{n}.weight").detach().clone() for n in ("tok", "pos")}
    report = initwatch.reinit(model, scheme, seed=0)
    assert not report.skipped
    touched = {c.target for c in report.parameters}
    if scheme == "t-fixup":  # T-Fixup re-draws the token table (tests/schemes/test_scheme_paths.py)
        assert "tok.weight" in touched and not torch.equal(model.tok.weight, before["tok"])
    else:  # DeepNet and ReZero prescribe nothing for embeddings: left exactly as they were
        assert not {"tok.weight", "pos.weight"} & touched
        assert torch.equal(model.tok.weight, before["tok"])
    assert torch.equal(model.pos.weight, before["pos"])  # position tables: no scheme draws them
    out = model(torch.randint(0, 200, (2, 8)))
    assert torch.isfinite(out).all()


@pytest.mark.slow
def test_ddp_gradients_equal_the_whole_batch_in_one_process(tmp_path: Path) -> None:
    sys.path.insert(0, str(HERE))
    from schemes_ddp import SCHEMES as DDP_SCHEMES
    from schemes_ddp import case, grads

    ranks = torchrun("schemes_ddp.py", tmp_path)
    for scheme in DDP_SCHEMES:
        model, batch = case(scheme)
        model.eval()
        ref = grads(model, batch)
        for rank in ranks:
            got = rank[scheme]
            assert set(got) == set(ref)
            for name, values in ref.items():
                torch.testing.assert_close(
                    torch.tensor(got[name]), torch.tensor(values), rtol=1e-5, atol=1e-7
                )

"""Schemes on the paths users take beyond the zoo: nested-tensor encoders, chunked FFNs,
models initwatch cannot read, unequal fused QKV, untied heads, custom embeddings."""

from __future__ import annotations

import warnings

import pytest
import torch
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

"""A scheme-trained Hugging Face model round-trips through save_pretrained: config.json records
the scheme, initwatch.restore rebuilds it exactly, a plain from_pretrained warns."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import transformers as tf

import initwatch
from initwatch import zoo
from initwatch.loadhook import PatchOnImport
from initwatch.schemes.saved import SchemeNotRestoredWarning

CASES = [("deepnet", "bert"), ("t-fixup", "gpt2"), ("rezero", "gpt2"), ("deepnet", "bart")]


def _trained(family: str, scheme: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.build(family, layers=2)
    initwatch.reinit(model, scheme, seed=0)
    with torch.no_grad():  # as after some training: gates open, weights moved
        for name, p in model.named_parameters():
            p.add_(0.5 if "rezero_alpha" in name else 0.01 * torch.randn_like(p))
    return model.eval()


def _out(model: torch.nn.Module, family: str) -> torch.Tensor:
    with torch.no_grad():
        return zoo.output_tensor(model(**zoo.example_inputs(family, model)))


@pytest.mark.parametrize(("scheme", "family"), CASES)
def test_save_pretrained_records_restore_rebuilds_plain_load_warns(
    scheme: str, family: str, tmp_path: Path
) -> None:
    model = _trained(family, scheme)
    reference = _out(model, family)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["initwatch"]
    assert saved["scheme"] == scheme and "restore" in saved["restore"]

    with pytest.warns(SchemeNotRestoredWarning, match=rf"{scheme!r}.*initwatch\.restore"):
        plain = type(model).from_pretrained(tmp_path)
    # what the warning is about: the plain load computes a different function
    assert not torch.allclose(_out(plain.eval(), family), reference, atol=1e-4)

    fresh = type(model)(tf.AutoConfig.from_pretrained(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemeNotRestoredWarning)
        report = initwatch.restore(fresh, tmp_path)
    assert report.scheme == scheme
    torch.testing.assert_close(_out(fresh.eval(), family), reference, rtol=0, atol=0)
    # saved again, the restored model still records its scheme
    fresh.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["initwatch"]["scheme"]


def test_a_model_without_a_scheme_loads_without_warning(tmp_path: Path) -> None:
    zoo.build("gpt2").save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemeNotRestoredWarning)
        tf.AutoModelForCausalLM.from_pretrained(tmp_path)


def test_restore_refuses_weights_that_disagree_with_the_recorded_scheme(tmp_path: Path) -> None:
    model = _trained("bert", "deepnet")
    fresh = type(model)(model.config)
    fresh.config.initwatch = {"scheme": "rezero"}
    with pytest.raises(initwatch.InitWatchError, match="records scheme 'rezero'"):
        initwatch.restore(fresh, model.state_dict())


def test_from_pretrained_is_wrapped_here() -> None:
    assert tf.PreTrainedModel.from_pretrained.__func__._initwatch_wrapped


def test_the_import_hook_wraps_from_pretrained_when_the_module_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # importing initwatch does not import transformers: a finder wraps from_pretrained when
    # transformers' modeling module is first imported (here a stand-in module of that shape)
    (tmp_path / "fake_modeling_iw.py").write_text(
        "class PreTrainedModel:\n"
        "    @classmethod\n"
        "    def from_pretrained(cls, path):\n"
        "        return 'loaded'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = PatchOnImport("fake_modeling_iw")
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    import fake_modeling_iw  # noqa: PLC0415

    assert finder not in sys.meta_path  # used once
    assert fake_modeling_iw.PreTrainedModel.from_pretrained.__func__._initwatch_wrapped
    assert fake_modeling_iw.PreTrainedModel.from_pretrained("x") == "loaded"
    monkeypatch.delitem(sys.modules, "fake_modeling_iw")

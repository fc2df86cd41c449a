"""The scheme registry is the one source of every scheme fact: reinit, remedies, inspect's
"schemes" line, the rules' grace and restore all read it, and agree."""

from __future__ import annotations

import pytest

import initwatch
from initwatch import zoo
from initwatch.remedies import deepnet_constants, suggest, tfixup_scales
from initwatch.rules import detectors
from initwatch.schemes import registry

# one Post-LN model per stack kind DeepNet distinguishes (cross: three sublayers per block)
POST_BY_KIND = {
    "encoder-only": "torch_encoder",
    "decoder-only": "opt_post",
    "decoder-only + cross-attention": "torch_decoder",
    "encoder-decoder": "bart",
}


def _watch_context(model):  # noqa: ANN001, ANN202
    return initwatch.Watch(model).context


@pytest.mark.parametrize("case", list(POST_BY_KIND))
def test_remedy_deepnet_constants_equal_what_reinit_applies(case: str) -> None:
    model = zoo.build(POST_BY_KIND[case], layers=3)
    ctx = _watch_context(model)
    quoted = deepnet_constants(ctx.depth, ctx.cross_attention)
    applied = initwatch.reinit(model, "deepnet").constants
    assert set(quoted) == set(applied)
    for stack, (alpha, beta) in quoted.items():
        assert alpha == pytest.approx(applied[stack]["alpha"], rel=1e-12)
        assert beta == pytest.approx(applied[stack]["beta"], rel=1e-12)


@pytest.mark.parametrize("family", ["torch_encoder", "gpt2", "torch_decoder", "bart"])
def test_remedy_tfixup_scales_equal_what_reinit_applies(family: str) -> None:
    model = zoo.build(family, layers=3)
    ctx = _watch_context(model)
    applied = initwatch.reinit(model, "t-fixup").constants
    assert tfixup_scales(ctx.depth) == pytest.approx({k: v["scale"] for k, v in applied.items()})


def test_remedy_text_for_a_cross_attention_decoder_quotes_reinits_alpha() -> None:
    # the drift of issue 9/10: the text said alpha=(2N)^(1/4)=1.861 while reinit applied 2.060
    model = zoo.build("torch_decoder", layers=6)
    ctx = _watch_context(model)
    text = suggest("vanishing_gradient", "decoder.0", {"ratio": 1e-3, "n_affected": 3}, ctx)
    alpha = initwatch.reinit(model, "deepnet").constants["decoder"]["alpha"]
    assert alpha == pytest.approx(18**0.25)
    assert f"alpha=(3M)^(1/4)={alpha:.3f}" in text and "1.861" not in text


def test_inspect_schemes_line_and_grace_read_the_registry() -> None:
    gpt2 = initwatch.inspect(zoo.build("gpt2"))
    reason = registry.SCHEMES["deepnet"].applies(gpt2)
    assert reason is not None and f"deepnet: not applicable ({reason})" in str(gpt2)
    assert "t-fixup: applies" in str(gpt2)
    assert set(detectors.GRACE_SCHEMES) == {
        n for n, s in registry.SCHEMES.items() if s.starts_from_zero
    }
    assert set(detectors.GRACE_SCHEMES) == {"t-fixup", "rezero", "skipinit", "fixup"}


def test_registry_resolves_aliases_and_refuses_unknown_names() -> None:
    assert registry.get(" DeepNorm ").name == "deepnet"
    assert registry.get("tfixup").name == "t-fixup"
    with pytest.raises(ValueError, match="valid schemes: 'deepnet', 't-fixup', 'rezero'"):
        registry.get("fixupp")


@pytest.mark.parametrize("scheme", ["deepnet", "t-fixup", "rezero", "admin"])
def test_restore_names_the_scheme_through_the_registry(scheme: str) -> None:
    trained = zoo.build("bart", layers=2)
    initwatch.reinit(trained, scheme)
    assert initwatch.restore(zoo.build("bart", layers=2), trained.state_dict()).scheme == scheme


def test_inspect_says_already_applied_instead_of_applies_after_a_scheme() -> None:
    model = zoo.build("bert", layers=2)
    assert "t-fixup: applies" in str(initwatch.inspect(model))
    initwatch.reinit(model, "t-fixup")
    text = str(initwatch.inspect(model))
    line = text[text.index("schemes: ") :].split("\nblock ")[0].replace("\n  ", " ")
    assert "t-fixup: already applied" in line and "t-fixup: applies" not in line
    assert "rezero: not applicable (t-fixup already applied" in line

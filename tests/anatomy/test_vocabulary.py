"""The anatomy's closed vocabularies are typed (``Literal``), and the types say the truth: every
value ``inspect`` (and the residual-network reader) produces is one of its field's literals."""

from __future__ import annotations

import types
from dataclasses import fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from torch import nn

import initwatch
from initwatch import zoo
from initwatch.anatomy.model import Anatomy, Block, Norm, Slot, Stack, Sublayer
from initwatch.schemes import residual
from initwatch.vocabulary import ModelKind


def _literals(cls: type) -> dict[str, tuple[Any, ...]]:
    """Field name -> the values its ``Literal`` type allows (None included when optional)."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        union = get_origin(hint) in (Union, types.UnionType)
        parts = get_args(hint) if union else (hint,)
        lits = [p for p in parts if get_origin(p) is Literal]
        if lits:
            out[name] = tuple(v for p in lits for v in get_args(p)) + (
                (None,) if type(None) in parts else ()
            )
    return out


TYPED = {
    Slot: {"role", "fused"},
    Norm: {"where", "placement", "kind"},
    Sublayer: {"kind"},
    Block: {"stack"},
    Stack: {"kind"},
    Anatomy: {"layout", "residual", "norm_kind"},
}


def test_the_closed_vocabularies_are_literal_types() -> None:
    assert {cls: set(_literals(cls)) for cls in TYPED} == TYPED


def _check(obj: Any, seen: dict[str, set[Any]]) -> None:
    allowed = _literals(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in allowed:
            assert value in allowed[f.name], (type(obj).__name__, f.name, value)
            seen.setdefault(f"{type(obj).__name__}.{f.name}", set()).add(value)
        for item in value if isinstance(value, list) else [value]:
            if is_dataclass(item) and not isinstance(item, type):
                _check(item, seen)


def _custom_without_norms() -> Anatomy:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))

    model = nn.Module()
    model.layers = nn.ModuleList([Block(), Block()])
    return initwatch.inspect(
        model, blocks={"decoder": "layers"}, roles={"q": "q", "k": "k", "v": "v", "o": "o"}
    )


@pytest.mark.parametrize("family", zoo.FAMILIES)
def test_every_value_inspect_reads_is_one_of_its_literals(family: str) -> None:
    anatomy = initwatch.inspect(zoo.build(family))
    seen: dict[str, set[Any]] = {}
    _check(anatomy, seen)
    assert anatomy.kind in get_args(ModelKind)
    assert seen["Anatomy.layout"] <= {"pre", "post"}  # a known family's blocks say where


def test_described_and_residual_models_stay_in_the_vocabulary() -> None:
    seen: dict[str, set[Any]] = {}
    custom = _custom_without_norms()
    _check(custom, seen)
    resnet = residual.read(zoo.resnet((2, 2)), {})
    _check(resnet, seen)
    assert custom.layout == resnet.layout == "none"
    assert seen["Block.stack"] == {"decoder", "encoder"}
    assert seen["Norm.kind"] == {"batchnorm"}  # the residual network's stem norm


def test_every_change_a_scheme_reports_is_one_report_category() -> None:
    """Each registered scheme, on a model it applies to: every change's action is a
    ``ChangeAction`` and falls in exactly one of the report's parameters, structure or skipped."""
    from initwatch.schemes.registry import SCHEMES
    from initwatch.vocabulary import ChangeAction

    actions = set(get_args(ChangeAction))
    for name, scheme in SCHEMES.items():
        if scheme.read is not None:  # residual networks (SkipInit, Fixup)
            model = zoo.resnet((2,), width=8)
        else:
            model = next(
                m
                for m in (zoo.build("gpt2"), zoo.build("bert"))
                if scheme.applies(initwatch.inspect(m)) is None
            )
        report = initwatch.reinit(model, name)
        assert {c.action for c in report.changes} <= actions, name
        parts = report.parameters + report.structure + report.skipped
        assert sorted(map(id, parts)) == sorted(map(id, report.changes)), name

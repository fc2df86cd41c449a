"""Deterministic cost counters for bench/overhead.py and the tests: top-level aten ops and
host reads of one call, counted with the PyTorch profiler (no timing involved).

A *top-level* aten op is one the caller dispatched (``aten::*`` with no ``aten::*`` ancestor):
on an accelerator each is at least one kernel launch or a host-side view. A *host read* is a
device-to-host transfer: an ``aten::_local_scalar_dense`` (``.item()``, ``float(t)``,
``bool(t)``) or a ``Tensor.tolist()`` / ``Tensor.numpy()`` call (not dispatched, so counted by
wrapping them).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class Counts:
    """What :func:`count` measured: top-level aten ops, host reads, and the op names."""

    ops: int
    host_reads: int
    names: dict[str, int]


@contextmanager
def _counting_reads(seen: list[int]):
    real = {n: getattr(torch.Tensor, n) for n in ("tolist", "numpy")}

    def wrap(name: str):
        def counted(self, *a, **k):
            seen[0] += 1
            return real[name](self, *a, **k)

        return counted

    for n in real:
        setattr(torch.Tensor, n, wrap(n))
    try:
        yield
    finally:
        for n, f in real.items():
            setattr(torch.Tensor, n, f)


def count(fn: Callable[[], object]) -> Counts:
    """Run ``fn`` once under the profiler and count its top-level aten ops and host reads."""
    from torch.profiler import ProfilerActivity, profile

    seen = [0]
    with _counting_reads(seen), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops, reads, names = 0, seen[0], {}
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        if e.name == "aten::_local_scalar_dense":
            reads += 1
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            ops += 1
            names[e.name] = names.get(e.name, 0) + 1
    return Counts(ops, reads, names)

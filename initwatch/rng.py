"""Random draws under a fixed seed that leave the caller's random streams as they were."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded"]


@contextmanager
def seeded(seed: int | None, tensors: Iterable[torch.Tensor] = ()) -> Iterator[None]:
    """Draw under ``seed`` inside the block, then restore every generator it seeded.

    The CPU generator and the generators of the GPUs ``tensors`` live on are forked and seeded;
    no other is touched. (``torch.manual_seed`` would re-seed every GPU's generator, and
    ``torch.random.fork_rng`` restores only the devices it is given, so the two together leave
    the caller's GPU streams changed.) ``seed=None``: no fork, the draws use the caller's streams.

    Example::

        >>> import torch
        >>> before = torch.get_rng_state()
        >>> with seeded(0):
        ...     a = torch.rand(2)
        >>> with seeded(0):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b), torch.equal(torch.get_rng_state(), before)
        (True, True)
    """
    if seed is None:
        yield
        return
    cuda = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(int(seed))
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(int(seed))
        yield

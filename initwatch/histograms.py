"""Histograms of block outputs and of dL/d(block output), counted on the device.

The bins are fixed, the same for every layer, step, rank and run: signed log-magnitude bins,
:data:`PER_DECADE` per decade of ``|x|`` from ``10**LO`` to ``10**HI`` on each side of zero, one
central bin for ``|x| < 10**LO`` (exact zeros included) and one for NaN. Fixed bins make the
counts plain sums, so a histogram is a SUM field of the stats buffer (:data:`HISTOGRAM_FIELDS`,
one row per bin): micro-batches and ranks add up like every other sum, and the histogram comes
back with the one host copy of the logging step. A vanishing layer's histogram sits decades
below the others' instead of collapsing into one bin around zero.

Example::

    >>> import torch
    >>> c = counts(torch.tensor([0.0, 1.5, -1.5, 2e-13, float("nan")]))
    >>> int(c.sum()), int(c[CENTRE]), int(c[NAN_BIN])
    (5, 2, 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from initwatch.stats import Field, Reduce

LO, HI = -12, 4  # log10 of the smallest and largest magnitude with bins of their own
PER_DECADE = 8  # bins per decade: neighbouring edges 1.33x apart
MAG = (HI - LO) * PER_DECADE  # magnitude bins on each side of zero
CENTRE = MAG  # the bin of |x| < 10**LO (and exact zeros)
NAN_BIN = 2 * MAG + 1
BINS = 2 * MAG + 2  # negative bins (largest |x| first), centre, positive bins, NaN
HISTOGRAM_FIELDS = (Field("count", Reduce.SUM),)  # a group of BINS rows per histogram


@torch.no_grad()
def counts(x: torch.Tensor) -> torch.Tensor:
    """The number of elements of ``x`` in each of the :data:`BINS` bins (float32, on ``x``'s
    device, one pass of elementwise ops and one ``bincount``; no host sync).

    Bin ``CENTRE + s * k`` holds the elements of sign ``s`` whose magnitude is in
    ``[10**(LO + (k-1)/PER_DECADE), 10**(LO + k/PER_DECADE))`` for ``k = 1..MAG`` (the last bin
    of each side also holds everything beyond ``10**HI``); ``CENTRE`` holds ``|x| < 10**LO``;
    ``NAN_BIN`` the NaN elements.

    Example::

        >>> c = counts(torch.tensor([1.0, 1.0, -1e-3, 1e9]))
        >>> [int(i) for i in torch.nonzero(c).flatten()], c[c > 0].tolist()
        ([55, 225, 256], [1.0, 2.0, 1.0])
    """
    a = x.detach().abs()
    a = a.float() if a.dtype != torch.float32 else a
    k = a.log10_().mul_(PER_DECADE).sub_(LO * PER_DECADE - 1).floor_().clamp_(0, MAG)
    idx = k.mul_(torch.sign(x.detach())).add_(CENTRE).nan_to_num_(nan=NAN_BIN)
    idx = idx.to(torch.int64).flatten()
    if idx.is_cuda and torch.are_deterministic_algorithms_enabled():
        # bincount has no deterministic CUDA kernel: count by sorting instead
        ends = torch.arange(BINS + 1, device=idx.device)
        return torch.searchsorted(idx.sort().values, ends).diff().to(torch.float32)
    return torch.bincount(idx, minlength=BINS).to(torch.float32)


def _magnitude(k: int) -> float:
    return 10.0 ** (LO + k / PER_DECADE)


def limits(absmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)`` edges of every bin but the NaN one (``2 * MAG + 1`` each, increasing),
    the outermost ones at ``±max(10**HI, absmax)``.

    Example::

        >>> left, right = limits()
        >>> float(left[CENTRE]), float(right[CENTRE]), float(right[CENTRE + 1])
        (-1e-12, 1e-12, 1.333521432163324e-12)
    """
    top = max(10.0**HI, absmax or 0.0) if absmax is None or math.isfinite(absmax) else 10.0**HI
    right = np.empty(2 * MAG + 1)
    for idx in range(2 * MAG + 1):
        s = idx - CENTRE
        right[idx] = _magnitude(s) if s > 0 else -_magnitude(-s - 1) if s < 0 else _magnitude(0)
    right[-1] = top
    left = np.concatenate([[-top], right[:-1]])
    return left, right


def tensorboard_histogram(
    bins: Sequence[float],
    absmax: float | None = None,
    total: float = 0.0,
    sumsq: float = 0.0,
) -> dict | None:
    """The fields of a TensorBoard ``HistogramProto`` for one histogram's counts: the buckets
    from the first to the last non-empty one (``bucket_limit``: right edges; ``min``: the left
    edge of the first), ``num`` the counted finite elements. NaN elements are left out (a layer's
    ``act_nonfinite`` counts them). None when every bin is empty.

    Example::

        >>> h = tensorboard_histogram(counts(torch.tensor([1.0, -1.0, 1.0])).tolist())
        >>> h["num"], h["bucket"][0], h["bucket"][-1], round(h["min"], 3), round(h["max"], 3)
        (3.0, 1.0, 2.0, -1.334, 1.334)
    """
    c = np.asarray(bins, dtype=np.float64)[: 2 * MAG + 1]
    nonzero = np.flatnonzero(c)
    if nonzero.size == 0:
        return None
    first, last = int(nonzero[0]), int(nonzero[-1])
    left, right = limits(absmax)
    kept = c[first : last + 1]
    return {
        "min": float(left[first]),
        "max": float(right[last]),
        "num": float(kept.sum()),
        "sum": float(total),
        "sum_squares": float(sumsq),
        "bucket_limit": right[first : last + 1].tolist(),
        "bucket": kept.tolist(),
    }

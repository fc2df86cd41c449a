"""Which elements of a parameter this rank holds and owns, under DDP, FSDP2 / HSDP and FSDP1.

Exact per-parameter statistics under sharding come from *partial sums over the elements each
rank owns*, reduced with SUM in the one collective of a logging step
(:meth:`~initwatch.stats.StatBuffer.reduce_across_ranks`). This module says, for one tensor,

* which local tensor holds this rank's elements (:func:`local_param`, :func:`local_grad`):
  ``to_local()`` of an FSDP2 DTensor, the 1-D view FSDP1 (``use_orig_params=True``) leaves,
  DeepSpeed ZeRO's partition of the flattened tensor (:mod:`initwatch.zero`), the tensor
  itself;
* whether this rank's elements count (:attr:`Layout.owner`, the *owner rule*): a rank owns its
  elements when its coordinate is 0 on every ``Replicate`` mesh dimension, so a copy held by
  several ranks is counted once (under DDP and on plain tensors: rank 0 only). Without it an
  HSDP mesh of 2 replicas reports norms sqrt(2) times too large;
* where the sampled coordinates of the update ratio sit in the local tensor
  (:meth:`Layout.local_positions`): the sample is drawn once in global flat indices from one
  seeded generator, identically on every rank, and each rank keeps the indices it owns, so the
  estimate equals the unsharded one.

Nothing here issues a collective.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from initwatch import zero
from initwatch.errors import ShardingError

if TYPE_CHECKING:
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor
    from typing_extensions import TypeIs


def _world_rank() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def is_dtensor(t: torch.Tensor) -> TypeIs[DTensor]:
    """True for a ``torch.distributed.tensor.DTensor`` (FSDP2, HSDP, tensor parallel).

    Example::

        >>> is_dtensor(torch.zeros(2))
        False
    """
    cls = _dtensor_class()
    return cls is not None and isinstance(t, cls)


@functools.cache
def _dtensor_class() -> type[DTensor] | None:
    """``DTensor``, imported once (an import statement per call costs ~1 µs, and a logging
    step asks for every parameter and gradient several times)."""
    try:
        from torch.distributed.tensor import DTensor
    except Exception:  # torch built without distributed
        return None
    return DTensor


@dataclass(frozen=True)
class Layout:
    """This rank's part of one tensor: a box of the full tensor (or a 1-D range of it, FSDP1).

    Args:
        owner: whether this rank's elements are counted (the owner rule).
        full_shape: shape of the full (unsharded) tensor.
        offset: start of the local box in the full tensor, one entry per dimension; for a
            1-D range of the flattened tensor (FSDP1), ``(start,)`` with ``flat=True``.
        local_shape: shape of the local box (``(length,)`` for a flat range).
        flat: the local part is a range of the flattened full tensor.

    Example::

        >>> lay = Layout(True, (4, 3), (2, 0), (2, 3))  # rows 2-3 of a 4x3 tensor
        >>> lay.local_positions(torch.tensor([0, 6, 7, 11]))  # of global flat indices
        [[1, 2, 3], [0, 1, 5]]
    """

    owner: bool
    full_shape: tuple[int, ...]
    offset: tuple[int, ...]
    local_shape: tuple[int, ...]
    flat: bool = False

    @property
    def whole(self) -> bool:
        """The local part is the whole tensor."""
        return not self.flat and tuple(self.local_shape) == tuple(self.full_shape)

    def local_positions(self, index: torch.Tensor) -> list[list[int]]:
        """``[positions in index, local flat indices]`` of the global flat ``index`` entries
        that fall in this rank's part (both empty when this rank owns none of them)."""
        if not self.owner:
            return [[], []]
        if self.whole:
            return [list(range(len(index))), index.tolist()]
        idx = index.to("cpu", torch.long)
        if self.flat:
            start, length = self.offset[0], self.local_shape[0]
            keep = (idx >= start) & (idx < start + length)
            local = idx - start
        else:
            keep = torch.ones_like(idx, dtype=torch.bool)
            local = torch.zeros_like(idx)
            rem = idx.clone()
            coords = []
            for size in reversed(self.full_shape):  # unravel, last dimension fastest
                coords.append(rem % size)
                rem = rem // size
            coords.reverse()
            for c, off, n in zip(coords, self.offset, self.local_shape, strict=True):
                keep &= (c >= off) & (c < off + n)
                local = local * n + (c - off)
        where = keep.nonzero().flatten()
        return [where.tolist(), local[where].tolist()]


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The elements of ``t`` this rank holds, as a plain tensor (``to_local()`` of a DTensor).

    Example::

        >>> local_tensor(torch.ones(3)).shape
        torch.Size([3])
    """
    return t.to_local() if is_dtensor(t) else t


def local_param(p: torch.Tensor) -> torch.Tensor:
    """The elements of parameter ``p`` this rank holds: :func:`local_tensor`, or DeepSpeed
    ZeRO's partition (flat).

    Example::

        >>> local_param(torch.ones(3)).shape
        torch.Size([3])
    """
    return zero.local_param(p) if zero.is_zero(p) else local_tensor(p)


def local_grad(p: torch.Tensor) -> torch.Tensor | None:
    """This rank's elements of the gradient of ``p`` (None: no gradient here). DeepSpeed keeps
    gradients outside ``p.grad`` (:func:`initwatch.zero.local_grad`).

    Raises:
        ShardingError: a DeepSpeed gradient read outside ``engine.backward`` .. ``engine.step``.

    Example::

        >>> local_grad(torch.ones(3)) is None
        True
    """
    if zero.is_zero(p):
        return zero.local_grad(p)
    return None if p.grad is None else local_tensor(p.grad)


def layout(t: torch.Tensor, fsdp1: dict[int, Layout] | None = None) -> Layout:
    """Where this rank's elements of ``t`` sit in the full tensor, and whether it owns them.

    Args:
        t: a parameter or gradient (a DTensor, an FSDP1 view, a DeepSpeed ZeRO parameter, or
            a plain tensor).
        fsdp1: layouts of FSDP1 views by ``id`` of the parameter (:func:`fsdp1_layouts`).

    Raises:
        ShardingError: a placement initwatch cannot read exactly (``Partial``, strided shards).

    Example::

        >>> layout(torch.zeros(2, 3))  # no process group: rank 0 owns the whole tensor
        Layout(owner=True, full_shape=(2, 3), offset=(0, 0), local_shape=(2, 3), flat=False)
    """
    if fsdp1 is not None and id(t) in fsdp1:
        return fsdp1[id(t)]
    where = zero.zero_range(t)
    if where is not None:  # DeepSpeed ZeRO: a range of the flattened full tensor
        start, length = where
        return Layout(length > 0, zero.full_shape(t), (start,), (length,), flat=True)
    shape = tuple(t.shape)
    if not is_dtensor(t):
        return Layout(_world_rank() == 0, shape, (0,) * len(shape), shape)
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh = t.device_mesh
    coord = mesh.get_coordinate()
    if coord is None:  # this rank is not on the mesh: it holds nothing
        return Layout(False, shape, (0,) * len(shape), (0,) * len(shape))
    owner = True
    for dim, placement in enumerate(t.placements):
        if isinstance(placement, Replicate):
            owner &= coord[dim] == 0
        elif type(placement) is not Shard:
            raise ShardingError(
                f"a parameter or gradient of shape {list(shape)} has placement {placement!r} "
                f"on mesh dimension {dim}; initwatch reads exact statistics from Shard and "
                "Replicate placements only (FSDP2 / HSDP). Exclude the parameter from the "
                "Watch (layers=...) or redistribute it to Shard(0)."
            )
    local_shape, offset = compute_local_shape_and_global_offset(shape, mesh, t.placements)
    return Layout(owner, shape, tuple(offset), tuple(local_shape))


def layouts(params: list[torch.Tensor]) -> list[Layout]:
    """:func:`layout` of every parameter, FSDP1 views found by themselves.

    FSDP1 marks the parameters it flattened; the units holding them are looked up once per
    call (the root unit wraps the model from outside, so it is found among live objects).

    Example::

        >>> [lay.owner for lay in layouts([torch.zeros(2), torch.zeros(3)])]
        [True, True]
    """
    fsdp1: dict[int, Layout] = {}
    if any(getattr(p, "_fsdp_flattened", False) and not is_dtensor(p) for p in params):
        fsdp1 = _fsdp1_units_layouts()
    return [layout(p, fsdp1) for p in params]


def _fsdp1_units_layouts() -> dict[int, Layout]:
    import gc

    return _units_layouts(gc.get_objects())


@functools.cache
def _fsdp1_class() -> type[FullyShardedDataParallel] | None:
    """FSDP1's ``FullyShardedDataParallel``, imported once (None: torch without it)."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except Exception:  # torch built without distributed
        return None
    return FullyShardedDataParallel


def _units_layouts(objects: Iterable[object]) -> dict[int, Layout]:
    """:func:`_unit_layouts` of every FSDP1 unit among ``objects``, merged."""
    cls = _fsdp1_class()
    if cls is None:
        return {}
    out: dict[int, Layout] = {}
    for obj in objects:
        if isinstance(obj, cls):
            out.update(_unit_layouts(obj))
    return out


def fsdp1_layouts(root: torch.nn.Module) -> dict[int, Layout]:
    """Layouts of the original parameters FSDP1 (``use_orig_params=True``) keeps as views.

    Read from every ``FullyShardedDataParallel`` unit inside ``root`` (the wrapper the user
    trains): each original parameter is a 1-D view of this rank's part of its flattened
    tensor. ``FULL_SHARD`` and ``SHARD_GRAD_OP`` ranks own their part; ``NO_SHARD`` is
    replicated (rank 0 owns it); hybrid strategies are refused.

    Raises:
        ShardingError: ``use_orig_params=False`` (only the flat parameter is visible) or a
            hybrid sharding strategy.

    Example::

        >>> fsdp1_layouts(torch.nn.Linear(2, 2))  # no FSDP1 unit inside
        {}
    """
    return _units_layouts(root.modules())


def _unit_layouts(unit: FullyShardedDataParallel) -> dict[int, Layout]:
    from torch.distributed.fsdp import ShardingStrategy

    handle = getattr(unit, "_handle", None)
    if handle is None:
        return {}
    flat = handle.flat_param
    strategy = unit.sharding_strategy
    if not getattr(handle, "_use_orig_params", False):
        raise ShardingError(
            "FSDP1 with use_orig_params=False shows only its flat parameter; initwatch "
            "needs the original parameters: wrap with "
            "FullyShardedDataParallel(..., use_orig_params=True), or use FSDP2 (fully_shard)."
        )
    if strategy not in (
        ShardingStrategy.FULL_SHARD,
        ShardingStrategy.SHARD_GRAD_OP,
        ShardingStrategy.NO_SHARD,
    ):
        raise ShardingError(
            f"FSDP1 sharding_strategy={strategy.name} is not supported by initwatch: use "
            "FULL_SHARD, SHARD_GRAD_OP or NO_SHARD, or FSDP2 with an HSDP mesh "
            "(fully_shard(model, mesh=init_device_mesh(..., (replicas, shards))))."
        )
    replicated = strategy == ShardingStrategy.NO_SHARD
    out: dict[int, Layout] = {}
    for param, info, shape in zip(flat._params, flat._shard_param_infos, flat._shapes, strict=True):
        full = tuple(shape)
        if replicated:
            out[id(param)] = Layout(_world_rank() == 0, full, (0,) * len(full), full)
        elif info.in_shard:
            start, end = info.intra_param_start_idx, info.intra_param_end_idx
            out[id(param)] = Layout(True, full, (start,), (end - start + 1,), flat=True)
        else:
            out[id(param)] = Layout(False, full, (0,), (0,), flat=True)
    return out


def refuse_sharded_reinit(model: torch.nn.Module) -> None:
    """Refuse to re-draw weights that are not all here: meta-device or already-sharded tensors.

    A scheme re-draws the full model *before* sharding (before ``fully_shard``,
    ``FullyShardedDataParallel(...)``, ``deepspeed.initialize`` or ``accelerator.prepare``);
    the wrap then keeps the draws and the structure. Drawing into shards instead gives each rank
    a piece of a different draw (a CPU DTensor ``normal_`` gave rank 1 a copy of rank 0's
    shard), and a meta-device model materialized with ``to_empty`` holds garbage in the buffers
    a scheme adds.

    Raises:
        ShardingError: naming the first offending tensor and the order that works.

    Example::

        >>> refuse_sharded_reinit(torch.nn.Linear(2, 2))  # a full model on a real device
        >>> refuse_sharded_reinit(torch.nn.Linear(2, 2, device="meta"))
        Traceback (most recent call last):
        ...
        initwatch.errors.ShardingError: weight is on the meta device...
    """
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, t in tensors:
        if t.is_meta:
            raise ShardingError(
                f"{name} is on the meta device: a scheme cannot re-draw weights that do not "
                "exist yet (and to_empty() would leave the buffers it adds as garbage). Build "
                "the model on a real device (e.g. torch.device('cpu')), apply the scheme, then "
                "shard it; or load a re-initialized checkpoint with initwatch.restore()."
            )
    for name, t in tensors:
        where = _sharded_by(t)
        if where:
            raise ShardingError(
                f"{name} is already sharded by {where}: re-drawing shards gives each rank part "
                "of a different draw. Apply the scheme to the full model before sharding "
                "(initwatch.reinit(model, ..., seed=S) with the same seed on every rank, then "
                "fully_shard / FullyShardedDataParallel / deepspeed.initialize)."
            )


def _sharded_by(t: torch.Tensor) -> str | None:
    if is_dtensor(t):
        return "FSDP2 / DTensor"
    if getattr(t, "_fsdp_flattened", False):
        return "FSDP1"
    if zero.is_partitioned(t):
        return "DeepSpeed ZeRO-3 (re-draw inside deepspeed.zero.GatheredParameters)"
    return None


def broadcast_from_rank0(model: torch.nn.Module) -> int:
    """Give every rank rank 0's parameters and buffers (before sharding); returns the number
    of broadcasts (one per tensor; 0 without a process group of several ranks).

    The adapters call it once, at setup, after applying a scheme under a sharding strategy:
    FSDP does not broadcast the weights it shards (``sync_module_states`` needs a GPU), so a
    rank-dependent draw would otherwise leave each rank a piece of a different model.

    Example::

        >>> broadcast_from_rank0(torch.nn.Linear(2, 2))  # no process group: nothing to do
        0
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return 0
    refuse_sharded_reinit(model)
    n = 0
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)
            n += 1
    return n


def refuse_replaced(model: torch.nn.Module, params: list[torch.Tensor], names: list[str]) -> None:
    """Refuse to measure parameters the model no longer holds: their values are stale.

    ``fully_shard`` replaces every parameter by a new DTensor parameter, FSDP1 with
    ``use_orig_params=False`` by its flat parameter: a Watch created before those would read
    tensors that no longer train.

    Raises:
        ShardingError: naming the first replaced parameter and when to create the Watch.

    Example::

        >>> lin = torch.nn.Linear(2, 2)
        >>> refuse_replaced(lin, [lin.weight], ["weight"])  # still the model's
    """
    current = {id(p) for p in model.parameters()}
    gone = [n for p, n in zip(params, names, strict=True) if id(p) not in current]
    if gone:
        raise ShardingError(
            f"{len(gone)} parameters the Watch measures are no longer the model's (e.g. "
            f"{gone[0]}): the model was sharded or rebuilt after the Watch was created, so "
            "their values are stale and no parameter statistics are recorded. Create the "
            "Watch after fully_shard (FSDP2), before FullyShardedDataParallel(..., "
            "use_orig_params=True) (FSDP1), or on the rebuilt model."
        )

"""DeepSpeed ZeRO-1/2/3: where this rank's elements of a parameter and of its gradient sit.

Under DeepSpeed ``p.grad`` is None at every stage: the averaged gradient exists only between
``engine.backward`` and ``engine.step``, partitioned over the data-parallel ranks.

* **ZeRO-1/2**: the parameter is whole on every rank; the optimizer's partition of this rank
  covers the range ``p._hp_mapping.lp_fragment_address`` of the flattened parameter (no
  mapping: this rank holds none of it), and ``get_lp_grad_fragment`` returns the gradient of
  that range. Weights and gradients are both read over that range, so every element is
  counted once over the ranks.
* **ZeRO-3**: the parameter is empty (shape ``(0,)``); rank ``r`` of its partition group holds
  the flat range ``[r * s, (r + 1) * s)`` of the full tensor in ``p.ds_tensor`` (``s`` its
  partition size), the gradient in the ZeRO-3 optimizer's partition. The last range is
  trimmed to the full size: its padding is not zero (inf was observed).

:mod:`initwatch.sharding` dispatches here; nothing here issues a collective, except
:func:`gathered` (the Watch's construction under ZeRO-3, once, never on a step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, cast

import torch
from torch import nn

from initwatch.errors import ShardingError

WINDOW = (
    "DeepSpeed ZeRO gradients exist only between engine.backward(loss) and engine.step(): "
    "call watch.before_optimizer_step(engine) right before engine.step(), or run the step "
    "inside `with watch.step(i, engine):` (the Watch then reads them when engine.step() starts)."
)


class _FragmentAddress(Protocol):
    """A range of a flattened parameter (DeepSpeed's ``fragment_address``)."""

    start: int
    numel: int


class _HpMapping(Protocol):
    """This rank's part of a ZeRO-1/2 parameter (DeepSpeed's ``tensor_fragment``)."""

    lp_fragment_address: _FragmentAddress

    def get_lp_grad_fragment(self, index_in_param_group: int) -> torch.Tensor | None: ...


class _Partition(Protocol):
    """``p.ds_tensor``: this rank's flat part of a ZeRO-3 parameter."""

    ds_numel: int

    def detach(self) -> torch.Tensor: ...


class _DeepSpeedParam(Protocol):
    """The attributes DeepSpeed sets on a parameter it manages (read through :func:`_ds`)."""

    ds_shape: tuple[int, ...]  # ZeRO-3: the full shape (the parameter itself is empty)
    ds_numel: int  # ZeRO-3: the full number of elements
    ds_tensor: _Partition  # ZeRO-3
    _hp_mapping: _HpMapping | None  # ZeRO-1/2 (None: this rank holds none of it)
    _index_in_param_group: int  # ZeRO-1/2


def _ds(p: torch.Tensor) -> _DeepSpeedParam:
    """``p`` seen with the attributes DeepSpeed set on it. They exist only at run time, so the
    type checker cannot see them on a Tensor; callers check which are there first
    (:func:`is_zero3`, :func:`is_zero12`)."""
    return cast(_DeepSpeedParam, p)


def is_zero3(p: torch.Tensor) -> bool:
    """A parameter partitioned by ZeRO-3 (``ds_tensor`` holds this rank's part).

    Example::

        >>> is_zero3(torch.nn.Parameter(torch.zeros(2)))
        False
    """
    return hasattr(p, "ds_id") and hasattr(p, "ds_tensor")


def is_partitioned(p: torch.Tensor) -> bool:
    """A ZeRO-3 parameter whose full values are not here now (outside a
    ``deepspeed.zero.GatheredParameters`` block, e.g. :func:`gathered`).

    Example::

        >>> is_partitioned(torch.nn.Parameter(torch.zeros(2)))
        False
    """
    return is_zero3(p) and _partitioned(p)


def is_zero12(p: torch.Tensor) -> bool:
    """A parameter of a ZeRO-1/2 optimizer (it set ``_hp_mapping``, None where this rank
    holds none of the parameter).

    Example::

        >>> is_zero12(torch.nn.Parameter(torch.zeros(2)))
        False
    """
    return hasattr(p, "_hp_mapping") and not is_zero3(p)


def is_zero(p: torch.Tensor) -> bool:
    """A parameter of a DeepSpeed ZeRO optimizer (any stage).

    Example::

        >>> is_zero(torch.zeros(2))
        False
    """
    return is_zero3(p) or is_zero12(p)


def full_shape(p: torch.Tensor) -> tuple[int, ...]:
    """The parameter's full shape (ZeRO-3 leaves ``p.shape == (0,)``).

    Example::

        >>> full_shape(torch.zeros(2, 3))
        (2, 3)
    """
    return tuple(_ds(p).ds_shape) if is_zero3(p) else tuple(p.shape)


def full_numel(p: torch.Tensor) -> int:
    """Number of elements of the full parameter.

    Example::

        >>> full_numel(torch.zeros(2, 3))
        6
    """
    return int(_ds(p).ds_numel) if is_zero3(p) else p.numel()


def _zero3_range(p: torch.Tensor) -> tuple[int, int]:
    """(start, length) of this rank's elements of a ZeRO-3 parameter, padding trimmed."""
    dist = torch.distributed
    size = int(_ds(p).ds_tensor.ds_numel)
    group = getattr(p, "ds_process_group", None)
    rank = dist.get_rank(group=group) if dist.is_available() and dist.is_initialized() else 0
    start = rank * size
    return start, max(0, min(size, int(_ds(p).ds_numel) - start))


def zero_range(p: torch.Tensor) -> tuple[int, int] | None:
    """(start, length) in the flattened full parameter of the elements this rank owns; None
    for a tensor DeepSpeed does not partition.

    Example::

        >>> zero_range(torch.zeros(3)) is None
        True
    """
    if is_zero3(p):
        return _zero3_range(p)
    if is_zero12(p):
        mapping = _ds(p)._hp_mapping
        if mapping is None:
            return 0, 0
        address = mapping.lp_fragment_address
        return int(address.start), int(address.numel)
    return None


def local_param(p: torch.Tensor) -> torch.Tensor:
    """This rank's elements of a ZeRO parameter, flat (the model's weights, not the fp32
    master copy).

    Example::

        >>> local_param(torch.ones(2, 2)).shape  # not a ZeRO parameter: itself
        torch.Size([2, 2])
    """
    where = zero_range(p)
    if where is None:
        return p
    start, length = where
    if is_zero3(p):
        return _ds(p).ds_tensor.detach().reshape(-1).narrow(0, 0, length)
    return p.detach().reshape(-1).narrow(0, start, length)


def local_grad(p: torch.Tensor) -> torch.Tensor | None:
    """This rank's part of a ZeRO parameter's averaged gradient, flat (None where this rank
    holds none of it).

    Raises:
        ShardingError: outside the window between ``engine.backward`` and ``engine.step``.

    Example::

        >>> local_grad(torch.zeros(2)) is None  # not a ZeRO parameter, no gradient
        True
    """
    where = zero_range(p)
    if where is None:
        return p.grad
    start, length = where
    if length == 0:
        return None
    try:
        if is_zero3(p):
            opt = getattr(p, "_z3_optimizer", None)
            grad = opt.get_local_fp32_grad_for_param(p) if opt is not None else None
        else:
            ds = _ds(p)
            mapping = ds._hp_mapping
            assert mapping is not None  # zero_range gave a length > 0
            grad = mapping.get_lp_grad_fragment(ds._index_in_param_group)
    except (ValueError, KeyError) as exc:
        raise ShardingError(WINDOW) from exc
    if grad is None:
        return None
    grad = grad.detach().reshape(-1)
    if is_zero12(p) and grad.numel() == p.numel() != length:  # a full buffer (bf16 optimizer)
        return grad.narrow(0, start, length)
    return grad.narrow(0, 0, length)


def is_engine(obj: Any) -> bool:
    """A ``deepspeed.DeepSpeedEngine`` (found by class name: deepspeed need not be imported).

    Example::

        >>> is_engine(torch.nn.Linear(2, 2))
        False
    """
    return any(c.__name__ == "DeepSpeedEngine" for c in type(obj).__mro__)


def refuse_engine(engine: Any) -> None:
    """Refuse engine settings whose gradients initwatch cannot read exactly.

    Raises:
        ShardingError: fp16 (the partitioned gradients stay multiplied by the loss scale until
            ``engine.step``), or a pipeline-parallel engine.

    Example::

        >>> refuse_engine(torch.nn.Linear(2, 2))  # not an engine: nothing to check
    """
    if not is_engine(engine):
        return
    if any(c.__name__ == "PipelineEngine" for c in type(engine).__mro__):
        raise ShardingError(
            "initwatch does not support DeepSpeed's PipelineEngine: each rank holds other "
            "layers. Use ZeRO-1/2/3 data parallelism (deepspeed.initialize on the whole model)."
        )
    if engine.fp16_enabled():
        raise ShardingError(
            "initwatch does not support DeepSpeed fp16: its partitioned gradients stay scaled "
            "by the dynamic loss scale until engine.step(), so per-layer gradient norms would "
            'be wrong. Use "bf16": {"enabled": true} or fp32, or train without the Watch.'
        )


class EngineStepHook:
    """Calls ``pre()`` before and ``post(applied)`` after each ``engine.step()`` that steps the
    optimizer (a gradient-accumulation boundary); :meth:`remove` restores ``engine.step``.

    Example::

        >>> class Engine:  # a stand-in with DeepSpeed's boundary test
        ...     def step(self): print("step")
        ...     def is_gradient_accumulation_boundary(self): return True
        ...     def was_step_applied(self): return True
        >>> e = Engine()
        >>> hook = EngineStepHook(e, lambda: print("pre"), lambda ok: print("post", ok))
        >>> e.step()
        pre
        step
        post True
        >>> hook.remove(); e.step()
        step
    """

    def __init__(self, engine: Any, pre: Any, post: Any) -> None:
        self.engine = engine
        original = engine.step

        def step(*args: Any, **kwargs: Any) -> Any:
            boundary = engine.is_gradient_accumulation_boundary()
            if boundary:
                pre()
            out = original(*args, **kwargs)
            if boundary:
                post(bool(engine.was_step_applied()))
            return out

        engine.step = step
        self._step = step

    def remove(self) -> None:
        """Restore ``engine.step`` (idempotent)."""
        if self.engine.__dict__.get("step") is self._step:
            del self.engine.step


def _partitioned(p: torch.Tensor) -> bool:
    """Not gathered already (by an enclosing :func:`gathered`)."""
    status = getattr(p, "ds_status", None)
    return getattr(status, "name", "NOT_AVAILABLE") == "NOT_AVAILABLE"


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Inside the block, ZeRO-3 partitioned parameters hold their full values (read-only:
    ``deepspeed.zero.GatheredParameters(..., modifier_rank=None)``); nothing to do otherwise.

    The Watch is built inside it (names, shapes, the transformer anatomy and the update
    sample need the full tensors): one gather at construction, the full model on every rank
    for that moment.

    Example::

        >>> with gathered(torch.nn.Linear(2, 2)):  # no ZeRO-3 parameter: a no-op
        ...     pass
    """
    params = [p for p in model.parameters() if is_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield

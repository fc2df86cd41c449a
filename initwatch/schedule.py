"""What an optimizer and its learning-rate scheduler say about the schedule: the configured
(peak) learning rate, the warmup length, deliberate restarts. :class:`~initwatch.Watch` reads them
at each measured step, so plain loops and both adapters get the same facts.

Example::

    >>> import torch
    >>> from torch import nn
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
    >>> schedule_facts(sched, opt, max_steps=100)
    {'base_lr': 0.1, 'warmup_steps': 5, 'lr_restarts': False}
"""

from __future__ import annotations

from typing import Any

import torch

_WARMUP_PROBE_LIMIT = 100_000


def torch_optimizer(optimizer: Any) -> Any:
    """The ``torch.optim.Optimizer`` inside Lightning's / accelerate's wrappers.

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> torch_optimizer(opt) is opt
        True
    """
    for attr in ("optimizer", "_optimizer"):
        inner = getattr(optimizer, attr, None)
        if inner is not None and hasattr(inner, "param_groups"):
            return torch_optimizer(inner)
    return optimizer


def _lambda_warmup(fn: Any, limit: int, whole_run: bool = False) -> int | None:
    """Steps a multiplicative LR lambda keeps rising from step 0 (0: no warmup); a lambda
    still rising at ``limit`` gives ``limit`` when ``whole_run`` (the limit is the run's
    ``max_steps``: the warmup lasts the whole run), else None (unknown)."""
    try:
        prev = float(fn(0))
        for i in range(1, limit + 1):
            cur = float(fn(i))
            if cur <= prev:
                return i - 1
            prev = cur
    except Exception:
        return None
    return limit if whole_run else None


def warmup_steps_of(scheduler: Any, max_steps: int | None = None) -> int | None:
    """Number of warmup steps of a per-step LR scheduler, 0 for none, None when unknown.

    Recognises ``LinearLR`` (rising), ``OneCycleLR``, ``SequentialLR`` starting with a warmup,
    and ``LambdaLR`` / ``MultiplicativeLR``-free lambdas (the Hugging Face schedules), whose
    multiplier is probed step by step until it stops rising.

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
        >>> warmup_steps_of(sched)
        9
        >>> warmup_steps_of(sched, max_steps=5)  # still rising when the run ends
        5
    """
    sched = torch.optim.lr_scheduler
    if scheduler is None:
        return None
    if isinstance(scheduler, sched.LinearLR):
        rising = scheduler.start_factor < scheduler.end_factor
        return int(scheduler.total_iters) if rising else 0
    if isinstance(scheduler, sched.OneCycleLR):
        phases = getattr(scheduler, "_schedule_phases", None)
        return int(phases[0]["end_step"]) if phases else None
    if isinstance(scheduler, sched.SequentialLR):
        inner = getattr(scheduler, "_schedulers", [])
        milestones = getattr(scheduler, "_milestones", [])
        if inner and milestones and warmup_steps_of(inner[0], max_steps):
            return int(milestones[0])
        return 0 if inner else None
    if isinstance(scheduler, sched.LambdaLR) and len(scheduler.lr_lambdas) >= 1:
        limit = min(max_steps or _WARMUP_PROBE_LIMIT, _WARMUP_PROBE_LIMIT)
        return _lambda_warmup(scheduler.lr_lambdas[0], limit, whole_run=limit == max_steps)
    if isinstance(scheduler, (sched.ConstantLR, sched.StepLR, sched.ExponentialLR)):
        return 0
    return None


def base_lr_of(scheduler: Any, optimizer: Any) -> float | None:
    """The configured (peak) learning rate: the scheduler's ``base_lrs[0]``, else the
    optimizer's ``initial_lr`` / ``lr``.

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> base_lr_of(None, opt)
        0.1
    """
    base = getattr(scheduler, "base_lrs", None)
    if base:
        return float(base[0])
    opt = torch_optimizer(optimizer)
    groups = getattr(opt, "param_groups", None)
    if not groups:
        return None
    lr = groups[0].get("initial_lr", groups[0].get("lr"))
    return float(lr) if isinstance(lr, (int, float)) else None


def restarts_of(scheduler: Any) -> bool:
    """True for a schedule that returns to ~0 and restarts on purpose (SGDR): PyTorch's
    ``CosineAnnealingWarmRestarts`` and Hugging Face's cosine with hard restarts
    (``lr_scheduler_type="cosine_with_restarts"``). ``lr_schedule_collapse`` exempts them.

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> restarts_of(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10))
        True
        >>> restarts_of(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10))
        False
    """
    sched = torch.optim.lr_scheduler
    if isinstance(scheduler, sched.CosineAnnealingWarmRestarts):
        return True
    if isinstance(scheduler, sched.SequentialLR):
        return any(restarts_of(s) for s in getattr(scheduler, "_schedulers", []))
    if isinstance(scheduler, sched.LambdaLR) and scheduler.lr_lambdas:
        fn = scheduler.lr_lambdas[0]
        name = getattr(getattr(fn, "func", fn), "__name__", "")
        return "restarts" in name
    return False


def peak_lr_of(scheduler: Any, optimizer: Any, max_steps: int | None = None) -> float | None:
    """The learning rate a per-step schedule rises to (its warmup's end), else
    :func:`base_lr_of`: a ``LambdaLR`` (the Hugging Face schedules) at the step its multiplier
    stops rising, ``OneCycleLR``'s ``max_lr``, a rising ``LinearLR``'s end factor.

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(2.0, (s + 1) / 5))
        >>> peak_lr_of(sched, opt)
        0.2
    """
    sched = torch.optim.lr_scheduler
    base = base_lr_of(scheduler, optimizer)
    try:
        if isinstance(scheduler, sched.OneCycleLR):
            return float(torch_optimizer(optimizer).param_groups[0]["max_lr"])
        if base is None:
            return None
        if isinstance(scheduler, sched.LinearLR):
            return base * max(float(scheduler.start_factor), float(scheduler.end_factor))
        if isinstance(scheduler, sched.LambdaLR) and scheduler.lr_lambdas:
            limit = min(max_steps or _WARMUP_PROBE_LIMIT, _WARMUP_PROBE_LIMIT)
            fn = scheduler.lr_lambdas[0]
            top = _lambda_warmup(fn, limit, whole_run=limit == max_steps)
            return base * float(fn(top)) if top is not None else base
    except Exception:
        return base
    return base


def schedule_facts(scheduler: Any, optimizer: Any, max_steps: int | None = None) -> dict[str, Any]:
    """The run-context facts a per-step scheduler and its optimizer give: ``base_lr`` (the
    peak the schedule rises to, else the configured lr), ``warmup_steps`` (0: none, None:
    unknown) and ``lr_restarts`` (deliberate warm restarts).

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> schedule_facts(None, opt)
        {'base_lr': 0.1, 'warmup_steps': None, 'lr_restarts': False}
    """
    return {
        "base_lr": peak_lr_of(scheduler, optimizer, max_steps) or base_lr_of(scheduler, optimizer),
        "warmup_steps": warmup_steps_of(scheduler, max_steps),
        "lr_restarts": restarts_of(scheduler),
    }


def steps_done(scheduler: Any) -> int | None:
    """How many times a scheduler has stepped (``last_epoch``), None without one: the number
    of optimizer steps before this one for a per-step schedule.

    Example::

        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.ConstantLR(opt)
        >>> opt.step(); sched.step(); steps_done(sched)
        1
    """
    done = getattr(scheduler, "last_epoch", None)
    return int(done) if isinstance(done, int) and not isinstance(done, bool) else None

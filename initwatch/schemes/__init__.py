"""Re-initialization schemes (every scheme is listed in :mod:`initwatch.schemes.registry`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from initwatch.adapters import refuse_peft
from initwatch.anatomy import inspect
from initwatch.schemes import registry
from initwatch.schemes.base import execute, xavier_std
from initwatch.schemes.pretrained import decide_pretrained, is_pretrained
from initwatch.schemes.registry import SCHEMES
from initwatch.schemes.report import Change, ReinitReport
from initwatch.schemes.restore import restore
from initwatch.schemes.spec import Scheme
from initwatch.sharding import refuse_sharded_reinit


def scheme_name(scheme: str, call: str = "initwatch.reinit(model, {})") -> str:
    """The canonical name of a scheme; ``ValueError`` naming the closest and the valid ones
    otherwise, with ``call`` (``{}`` where the scheme goes) as the example.

    Example::

        >>> scheme_name("T-Fixup")
        't-fixup'
    """
    return registry.get(scheme, call).name


def reinit(model: nn.Module, scheme: str, **options: Any) -> ReinitReport:
    """Re-initialize ``model`` in place with a scheme and report every change.

    Parameters are changed in place (tied weights and optimizers keep their references);
    structural edits are hooks or small modules that keep existing ``state_dict`` keys. All
    checks run before anything is touched: a refused call leaves the model as it was.

    Args:
        model: the model (any ``nn.Module`` holding a recognised family, or one described by
            ``anatomy=initwatch.inspect(model, blocks=..., roles=...)``).
        scheme: a registered scheme (:data:`SCHEMES`): ``"deepnet"``, ``"t-fixup"``,
            ``"rezero"``, ``"xavier"``, ``"kaiming"``, ``"scaled"``, ``"ds-init"``, ``"admin"``,
            ``"skipinit"``, ``"fixup"`` (the last two for residual networks such as ResNets).
        **options: common to all schemes:

            * ``pretrained`` (None): whether the weights are trained. None: decide from the
              weights and loading markers (:func:`initwatch.decide_pretrained`); True: they
              are (the scheme is refused); False: they are not (the scheme is applied).
            * ``allow_pretrained`` (False): overwrite trained weights on purpose.
            * ``anatomy``: an :class:`~initwatch.anatomy.Anatomy` (for custom models).
            * ``stacks``: which stacks to touch, e.g. ``["decoder"]`` (default: all).
            * ``depth``: N (and M) used in the constants: an int or ``{"encoder": N,
              "decoder": M}`` (default: the model's depths).
            * ``seed``: seed the random draws (default: the global RNG). Under
              ``torch.distributed``, give every rank the same seed before sharding (a DDP
              wrap or ``deepspeed.initialize`` also broadcasts rank 0's weights; FSDP does not).

            DeepNet: ``alpha``, ``beta`` (number or ``{stack: number}``).
            T-Fixup: ``scale``, ``embedding_scale`` (number or dict), ``embedding``
            (``"effective"``, default: the token embedding reaching the first block has std
            ``embedding_scale``, as in the official fairseq code, whatever the model's own
            embedding multiplier; ``"literal"``: the official code's stored table
            N(0, d^-1/2) times the scale, which only matches on hosts that multiply by
            sqrt(d)), ``norms`` (``"all"`` default,
            ``"blocks"``), ``distribution`` (``"uniform"`` as the official code, or
            ``"normal"``).
            ReZero: ``per`` (``"block"``, default, or ``"sublayer"``), ``norms`` (``"all"``
            default, ``"blocks"``, ``"none"``).
            Xavier / Kaiming: ``distribution`` (``"uniform"`` / ``"normal"``), ``activation``
            (default: read from the model; its gain goes on the matrix it follows).
            Scaled: ``std`` (sigma, 0.02). DS-Init: ``exponent`` (``"code"``, default, or
            ``"paper"``), ``alpha``. Admin: ``omega``, ``output_change`` (``"log"``),
            ``learnable`` (False), ``profile_batch``. SkipInit: ``blocks``, ``layers``,
            ``norms``, ``alpha_init``. Fixup: ``blocks``, ``layers``, ``head``.

    Returns:
        A :class:`ReinitReport`: print it for a table, ``.to_dict()`` for plain data.

    Raises:
        ValueError: unknown scheme or option.
        SchemeNotApplicableError: e.g. DeepNet on a Pre-LN model, or any scheme on a
            PEFT-wrapped model (apply it to the base model before ``get_peft_model``).
        PretrainedWeightsError: the weights look trained or came from a checkpoint (see
            ``pretrained`` and ``allow_pretrained``).
        AlreadyAppliedError: a scheme was already applied to this model.
        AnatomyError: the model's structure could not be read.
        ShardingError: meta-device or already-sharded parameters (apply the scheme to the
            full model before sharding, with the same ``seed`` on every rank).

    Example::

        >>> import initwatch
        >>> from initwatch import zoo
        >>> model = zoo.build("bert", layers=4)
        >>> report = initwatch.reinit(model, "deepnet")
        >>> round(report.constants["encoder"]["beta"], 4)
        0.4204
    """
    from initwatch import validate

    validate.module("model", model, "initwatch.reinit(model, 'deepnet')")
    name = scheme_name(scheme)
    validate.reinit_options(options)
    refuse_sharded_reinit(model)
    refuse_peft(model, name)
    spec = SCHEMES[name]
    anatomy = options.get("anatomy")
    if anatomy is None:  # residual-network schemes read what inspect (transformers) does not
        anatomy = spec.read(model, options) if spec.read is not None else inspect(model)
    plan = spec.plan(model, anatomy, options)
    return execute(model, anatomy, plan, options)


__all__ = [
    "SCHEMES",
    "Change",
    "ReinitReport",
    "Scheme",
    "decide_pretrained",
    "is_pretrained",
    "reinit",
    "restore",
    "scheme_name",
    "xavier_std",
]

"""The scheme registry: every scheme initwatch knows, each declared once in its own module.

Adding a scheme is one new module that defines ``SCHEME = Scheme(...)`` and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping

from initwatch.anatomy.model import Anatomy
from initwatch.errors import closest
from initwatch.schemes import (
    admin,
    deepnet,
    dsinit,
    fixup,
    rezero,
    scaled,
    skipinit,
    standard,
    tfixup,
)
from initwatch.schemes.spec import Constants, Scheme, stack_kind

SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        deepnet.SCHEME,
        tfixup.SCHEME,
        rezero.SCHEME,
        standard.XAVIER,
        standard.KAIMING,
        scaled.SCHEME,
        dsinit.SCHEME,
        admin.SCHEME,
        skipinit.SCHEME,
        fixup.SCHEME,
    )
}
ALIASES: dict[str, str] = {a: s.name for s in SCHEMES.values() for a in s.aliases}


def get(name: str, call: str = "initwatch.reinit(model, {})") -> Scheme:
    """The registered scheme called ``name`` (canonical or alias, any case).

    Args:
        name: the scheme's name.
        call: the caller's call, ``{}`` where the scheme goes, for the error's example.

    Raises:
        ValueError: an unknown scheme, naming the closest and the valid ones.

    Example::

        >>> get("T-Fixup").title
        'T-Fixup'
        >>> get("rezer", "InitWatch(scheme={})")
        Traceback (most recent call last):
        ValueError: unknown scheme 'rezer' (did you mean 'rezero'?); valid schemes: 'deepnet', \
't-fixup', 'rezero', 'xavier', 'kaiming', 'scaled', 'ds-init', 'admin', 'skipinit', 'fixup'; \
e.g. InitWatch(scheme='rezero')
    """
    if not isinstance(name, str):
        raise ValueError(f"scheme={name!r}: expected one of {', '.join(map(repr, SCHEMES))}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in SCHEMES:
        close = closest(name.strip(), SCHEMES, ALIASES)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(
            f"unknown scheme {name!r}{hint}; valid schemes: {', '.join(map(repr, SCHEMES))}; "
            f"e.g. {call.format(repr(close or 'deepnet'))}"
        )
    return SCHEMES[key]


def constants(name: str, depth: Mapping[str, int], cross: bool = False) -> Constants:
    """A scheme's constants for a model with ``depth`` blocks per stack.

    Args:
        name: the scheme.
        depth: blocks per stack, e.g. ``{"encoder": 6, "decoder": 6}``.
        cross: whether the decoder's blocks have cross-attention (three sublayers).

    Example::

        >>> round(constants("deepnet", {"decoder": 6}, cross=True)["decoder"]["alpha"], 4)
        2.0598
    """
    depth = {k: int(v) for k, v in depth.items() if v}
    if not depth:
        return {}
    return get(name).constants(stack_kind(depth), depth, cross)


def key_scheme(name: str) -> str:
    """The scheme a checkpoint's keys can show for a model carrying ``name``: ``name`` itself,
    or ``"none"`` for a scheme that only draws weights (its checkpoints are plain ones).

    Example::

        >>> key_scheme("rezero"), key_scheme("xavier"), key_scheme("none")
        ('rezero', 'none', 'none')
    """
    spec = SCHEMES.get(name)
    return "none" if spec is None or spec.weights_only else spec.name


def grace_schemes() -> tuple[str, ...]:
    """Schemes whose residual branches start from zero, so the rules grant a grace period.

    Example::

        >>> grace_schemes()
        ('t-fixup', 'rezero', 'skipinit', 'fixup')
    """
    return tuple(s.name for s in SCHEMES.values() if s.starts_from_zero)


def applicability(anatomy: Anatomy) -> dict[str, str]:
    """For each scheme, ``"applies"``, ``"already applied"`` or ``"not applicable (<reason>)"``.

    Example::

        >>> from initwatch import inspect, reinit, zoo
        >>> model = zoo.build("gpt2")
        >>> applicability(inspect(model))["deepnet"]
        'not applicable (Pre-LN: DeepNet needs Post-LN)'
        >>> _ = reinit(model, "t-fixup")
        >>> applicability(inspect(model))["t-fixup"]
        'already applied'
    """
    done = anatomy.applied_scheme
    if done is not None:  # reinit refuses a second scheme (AlreadyAppliedError)
        return {
            name: "already applied"
            if name == done
            else f"not applicable ({done} already applied: build a fresh model)"
            for name in SCHEMES
        }
    out = {}
    for name, scheme in SCHEMES.items():
        reason = scheme.applies(anatomy)
        out[name] = "applies" if reason is None else f"not applicable ({reason})"
    return out

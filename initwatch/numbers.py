"""How a number reads wherever initwatch shows one to a person: alert text and remedies, the
run summary, ``initwatch check`` / ``report`` / ``demo`` tables, the pre-flight reasons, the
scheme-detection evidence and the benchmark tables. The rules are written once, here:

* ``None`` (or anything that is not a number): ``?``, a value that is not known;
* nan and the infinities as Python spells them: ``nan``, ``inf``, ``-inf``;
* zero: ``0`` (``0.00`` with ``fixed``), never ``-0``;
* a magnitude below ``1e-3`` or from ``1e4``: scientific, ``digits`` significant digits
  (``1.2e-05``, ``3.1e+04``);
* in between, prose (the default): ``digits`` significant digits, trailing zeros dropped and
  whole numbers never rounded (``0.0052``, ``0.35``, ``1``, ``12``, ``314``);
* in between, ``fixed=True`` (a column or a list of values that are compared with each other):
  ``digits`` decimals below 10 and one fewer from 10, trailing zeros kept, and more decimals
  where a small value would otherwise show fewer than ``digits`` significant digits
  (``1.00``, ``0.96``, ``0.012``, ``0.0094``, ``12.3``).

Nothing here imports torch or numpy (``initwatch --help`` stays light).
"""

from __future__ import annotations

import math

__all__ = ["SCIENTIFIC_BELOW", "SCIENTIFIC_FROM", "fmt"]

SCIENTIFIC_BELOW = 1e-3  # smaller magnitudes print in scientific notation
SCIENTIFIC_FROM = 1e4  # and so do magnitudes from this one on


def fmt(x: float | None, digits: int = 2, *, fixed: bool = False) -> str:
    """``x`` as initwatch prints numbers (the rules are in the module docstring).

    Args:
        x: the number; ``None`` (or something that is not a number) prints ``?``.
        digits: significant digits (at least 1); with ``fixed``, the decimals below 10.
        fixed: keep a fixed number of decimals (trailing zeros too), for values that stand
            in a column or a list and are compared; the default drops trailing zeros, for prose.

    Example::

        >>> [fmt(v) for v in (0.000123456, 0.005, 0.35, 1.0, 12.0, 314.2, -2e5)]
        ['1.2e-04', '0.005', '0.35', '1', '12', '314', '-2.0e+05']
        >>> [fmt(v, fixed=True) for v in (0.0094, 0.012, 0.96, 1.0, 12.34, 0.0)]
        ['0.0094', '0.012', '0.96', '1.00', '12.3', '0.00']
        >>> fmt(float("nan")), fmt(float("-inf")), fmt(None), fmt(4.567, 3)
        ('nan', '-inf', '?', '4.57')
    """
    if x is None or isinstance(x, (str, bytes)):
        return "?"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "?"
    if not math.isfinite(v):
        return str(v)
    digits = max(1, int(digits))
    if v == 0:  # -0.0 too: no sign
        return f"{0:.{digits}f}" if fixed else "0"
    if abs(v) < SCIENTIFIC_BELOW or abs(v) >= SCIENTIFIC_FROM:
        return f"{v:.{digits - 1}e}"
    # the decimals follow the magnitude as printed: 0.00998 shows as 0.010 (two significant
    # digits), so it gets the decimals of 0.01, not one more as a value below 0.01 would
    mag = abs(float(f"{v:.{digits - 1}e}"))
    # decimals that show `digits` significant digits (none for the whole part's own digits)
    significant = max(digits - 1 - math.floor(math.log10(mag)), 0)
    if fixed:
        decimals = max(digits if mag < 10 else digits - 1, significant)
        return f"{v:.{decimals}f}"
    text = f"{v:.{significant}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text

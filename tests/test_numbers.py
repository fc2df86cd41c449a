"""The one number formatter (initwatch.numbers.fmt): its rules, pinned, and that the alert text,
the command-line tables and the library read numbers through it."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from initwatch.alert_text import value_text
from initwatch.alerts import Alert
from initwatch.numbers import SCIENTIFIC_BELOW, SCIENTIFIC_FROM, fmt
from tests.paths import ROOT

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize(
    ("x", "text"),
    [
        (None, "?"),
        ("0.5", "?"),  # not a number: not known, never its repr
        (object(), "?"),
        (NAN, "nan"),
        (INF, "inf"),
        (-INF, "-inf"),
        (1.234e-5, "1.2e-05"),  # tiny: scientific, 2 significant digits
        (-1.234e-5, "-1.2e-05"),
        (9.99e-4, "1.0e-03"),  # below the cut-off even though it rounds to it
        (3.14e7, "3.1e+07"),  # huge
        (-2e5, "-2.0e+05"),
        (1e4, "1.0e+04"),  # the upper cut-off is scientific
        (1e300, "1.0e+300"),
    ],
)
def test_rules_shared_by_prose_and_tables(x: object, text: str, fixed: bool) -> None:
    assert fmt(x, fixed=fixed) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("x", "prose", "table"),
    [
        (0.0, "0", "0.00"),  # zero: never in scientific notation, never signed
        (-0.0, "0", "0.00"),
        (0, "0", "0.00"),
        (1e-3, "0.001", "0.0010"),  # the lower cut-off is not scientific
        (0.0094, "0.0094", "0.0094"),  # 1e-3..1e-2: the old table said 9.4e-03
        (0.012, "0.012", "0.012"),  # the old table said 0.01 (one significant digit)
        (-0.0052, "-0.0052", "-0.0052"),
        (0.35, "0.35", "0.35"),
        (0.5, "0.5", "0.50"),
        (1.0, "1", "1.00"),
        (1.234, "1.2", "1.23"),
        (-12.34, "-12", "-12.3"),
        (314.2, "314", "314.2"),  # whole numbers are never rounded
        (9999.0, "9999", "9999.0"),
    ],
)
def test_prose_and_fixed(x: float, prose: str, table: str) -> None:
    assert fmt(x) == prose
    assert fmt(x, fixed=True) == table


def test_digits_and_numpy_scalars() -> None:
    assert [fmt(v, 3) for v in (4.567, 13.44, 752.4, 6.884e-6)] == [
        "4.57",
        "13.4",
        "752",
        "6.88e-06",
    ]
    assert fmt(1.2345, 3, fixed=True) == "1.234"  # fixed: `digits` decimals below 10
    assert fmt(np.float32(0.25)) == "0.25" and fmt(np.float64(NAN)) == "nan"  # type: ignore[arg-type]
    assert (SCIENTIFIC_BELOW, SCIENTIFIC_FROM) == (1e-3, 1e4)


@pytest.mark.parametrize(
    ("x", "prose", "table"),
    [
        # a value that rounds up to a power of ten takes the decimals of that power: the
        # column reads 0.010 next to 0.0096, not 0.0100
        (0.00998, "0.01", "0.010"),
        (0.0996, "0.1", "0.10"),
        (9.9999, "10", "10.0"),
        (0.0096, "0.0096", "0.0096"),
        (99.97, "100", "100.0"),
    ],
)
def test_values_that_round_up_to_a_power_of_ten(x: float, prose: str, table: str) -> None:
    assert fmt(x) == prose and fmt(x, fixed=True) == table
    assert fmt(x, fixed=True) == fmt(float(f"{x:.1e}"), fixed=True)  # as the rounded value


def test_alert_text_and_tables_share_the_cut_off() -> None:
    # A value between 1e-3 and 1e-2 reads the same in an alert and in a CLI table (one rule;
    # before, the table switched to scientific notation at 1e-2 and alerts at 1e-3).
    a = Alert(8, "vanishing_gradient", "encoder.2", 0.0064, 0.01, "warning", "m", "r",
              extra={"evidence": {"source": "depth"}})  # fmt: skip
    assert value_text(a).startswith("ratio 0.0064 (") and fmt(0.0064, fixed=True) == "0.0064"


def test_the_library_does_not_import_the_command_line() -> None:
    """Only ``cli.py`` and ``commands/`` import ``initwatch.commands`` (the formatter the
    pre-flight check used to borrow from it now lives in ``initwatch.numbers``)."""
    pkg = ROOT / "initwatch"
    offenders = []
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg).as_posix()
        if rel == "cli.py" or rel.startswith("commands/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n == "initwatch.commands" or n.startswith("initwatch.commands.") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []

"""Plain-text helpers shared by the subcommands: tables, wrapping, a progress bar (numbers:
:func:`initwatch.numbers.fmt`).

Nothing here imports torch at import time (``initwatch --help`` stays fast)."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["Progress", "table", "threads", "wrap"]


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table (:func:`initwatch.anatomy.render.table`).

    Example::

        >>> print(table(["a", "b"], [["1", "22"]]))
        a  b
        -  --
        1  22
    """
    from initwatch.anatomy.render import table as render_table

    return render_table(head, rows)


def wrap(text: str, indent: str = "    ", width: int = 100) -> str:
    """Wrap ``text`` to ``width`` columns with every line indented.

    Example::

        >>> print(wrap("a b c", indent="  ", width=4))
          a
          b
          c
    """
    return textwrap.fill(
        " ".join(text.split()),
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: leave it), then restore it.

    The commands train tiny models, whose matrices are too small to gain from several threads;
    on a busy machine, threads that wait for each other make every operation many times slower.

    Example::

        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Progress:
    """A one-line progress bar on stderr, redrawn in place; silent when disabled.

    Enabled by default only when the stream is a terminal, so that piped or captured output
    stays parseable.

    Args:
        total: units of work in all.
        stream: where to draw (default ``sys.stderr``).
        enabled: True / False, or None for "when ``stream`` is a terminal".
        width: characters of the bar itself.

    Example::

        >>> bar = Progress(10, enabled=False)
        >>> bar.update(5, "half way")
        >>> bar.done
        5
        >>> bar.close()
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 28,
    ) -> None:
        self.total = max(1, int(total))
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.width = width
        self.done = 0
        self.status = ""
        self._last = 0.0
        self._drawn = 0

    def update(self, done: int, status: str | None = None, force: bool = False) -> None:
        """Set the work done so far (and the status text); redraw at most 10 times a second."""
        self.done = min(self.total, max(0, int(done)))
        if status is not None:
            self.status = status
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1 and self.done < self.total:
            return
        self._last = now
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {100 * self.done // self.total:3d}%  {self.status}"[:118]
        pad = " " * max(0, self._drawn - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._drawn = len(line)

    def message(self, text: str) -> None:
        """Print a line above the bar (or just print it when the bar is off)."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self._drawn = 0
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.update(self.done, force=True)

    def close(self) -> None:
        """Erase the bar."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0


def alert_lines(run: str, alerts: Sequence[Any]) -> list[str]:
    """One run's alerts as indented lines: headline, message, remedy (a remedy already shown for
    the same kind is not repeated).

    Example::

        >>> from initwatch.alerts import Alert
        >>> a = Alert(3, "nonfinite", "encoder.1", float("nan"), 0.0, "error", "NaN", "lower lr")
        >>> print("\\n".join(alert_lines("vanilla", [a, a])))
          vanilla, step 3: error nonfinite at encoder.1
            NaN
            remedy: lower lr
          vanilla, step 3: error nonfinite at encoder.1
            NaN
            remedy: as for nonfinite above
    """
    lines: list[str] = []
    shown: set[str] = set()
    for a in alerts:
        lines.append(f"  {run}, step {a.step}: {a.severity} {a.kind} at {a.layer}")
        lines.append(wrap(a.message, indent="    "))
        remedy = f"as for {a.kind} above" if a.kind in shown else a.remedy
        lines.append(wrap("remedy: " + remedy, indent="    "))
        shown.add(a.kind)
    return lines

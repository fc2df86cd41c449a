"""What a re-initialization did: every parameter touched and every structural change."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, get_args

from initwatch.anatomy.render import table
from initwatch.numbers import fmt
from initwatch.vocabulary import ChangeAction, InitAction, StructureAction


@dataclass
class Change:
    """One parameter (or slice of one) re-initialized, or one structural edit.

    Args:
        target: parameter name (with ``[rows 0/3]``-style slice for fused tensors) or module path.
        action: an init (``"xavier_normal"``, ``"kaiming_uniform"``, ``"normal"``,
            ``"zeros"``...), a structural edit (``"remove_norm"``, ``"deepnorm_residual"``,
            ``"rezero_gate"``...) or ``"skip"``: :data:`~initwatch.vocabulary.ChangeAction`.
        role: anatomy role (``"q"``, ``"ffn_out"``, ``"token_embedding"``, ``"norm"``...).
        block: block name (``"encoder.3"``) or stack name.
        gain: the Xavier gain used, or None.
        std: the standard deviation the init targets, or None.
        note: why (e.g. "beta for v/o/ffn", "shared with encoder: scaled once").

    Example::

        >>> Change("layers.0.linear1.weight", "xavier_normal", "ffn_in", "encoder.0", 0.3, 0.02).role
        'ffn_in'
    """

    target: str
    action: ChangeAction
    role: str
    block: str
    gain: float | None = None
    std: float | None = None
    note: str = ""


@dataclass
class ReinitReport:
    """The result of :func:`initwatch.reinit`: what changed and why.

    Args:
        scheme: ``"deepnet"``, ``"t-fixup"`` or ``"rezero"``.
        constants: the constants used, e.g. ``{"encoder": {"alpha": 2.21, "beta": 0.32}}``.
        changes: every parameter initialized and every structural edit, in order.
        model_class: the model's class name.
        family: the anatomy family.

    Example::

        >>> import initwatch
        >>> from initwatch import zoo
        >>> report = initwatch.reinit(zoo.build("torch_encoder", layers=4), "deepnet")
        >>> round(report.constants["encoder"]["alpha"], 4)
        1.6818
        >>> print(report)  # doctest: +ELLIPSIS
        deepnet on TransformerEncoder...
    """

    scheme: str
    constants: dict[str, dict[str, float]]
    changes: list[Change] = field(default_factory=list)
    model_class: str = ""
    family: str = ""

    @property
    def parameters(self) -> list[Change]:
        """Changes that re-initialized parameter values."""
        return [c for c in self.changes if c.action in _INIT_ACTIONS]

    @property
    def structure(self) -> list[Change]:
        """Structural edits (norms removed, residual scaling, added gates)."""
        return [c for c in self.changes if c.action in _STRUCT_ACTIONS]

    @property
    def skipped(self) -> list[Change]:
        """What the scheme would have touched but left alone, with the reason."""
        return [c for c in self.changes if c.action == "skip"]

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"scheme", "constants", "changes": [dict, ...], ...}``."""
        return {
            "scheme": self.scheme,
            "constants": {k: dict(v) for k, v in self.constants.items()},
            "changes": [asdict(c) for c in self.changes],
            "model_class": self.model_class,
            "family": self.family,
        }

    def headline(self) -> str:
        """One line: the scheme, the model, how many changes, the constants.

        Example::

            >>> import initwatch
            >>> from initwatch import zoo
            >>> initwatch.reinit(zoo.build("torch_encoder", layers=4), "deepnet").headline()
            'deepnet on TransformerEncoder (torch): 48 parameter inits, 4 structural changes, 0 skipped; encoder: alpha=1.682 beta=0.4204'
        """
        return self._head()

    def _head(self) -> str:
        consts = ", ".join(
            f"{stack}: " + " ".join(f"{k}={v:.4g}" for k, v in vals.items())
            for stack, vals in self.constants.items()
            if vals
        )
        return (
            f"{self.scheme} on {self.model_class} ({self.family}): {len(self.parameters)} "
            f"parameter inits, {len(self.structure)} structural changes, "
            f"{len(self.skipped)} skipped" + (f"; {consts}" if consts else "")
        )

    def table(self) -> str:
        """The full table: one row per parameter (or slice) and per structural edit.

        Example::

            >>> import initwatch
            >>> from initwatch import zoo
            >>> report = initwatch.reinit(zoo.build("torch_encoder", layers=2), "deepnet")
            >>> print(report.table().splitlines()[1])  # doctest: +NORMALIZE_WHITESPACE
            block role target action gain std note
        """
        rows = [
            [
                c.block,
                c.role,
                c.target,
                c.action,
                _num(c.gain),
                _num(c.std),
                c.note,
            ]
            for c in self.changes
        ]
        header = ["block", "role", "target", "action", "gain", "std", "note"]
        return self._head() + "\n" + table(header, rows)

    def summary(self, width: int = 100) -> str:
        """What the scheme did, grouped: one row per kind of change (role, action, gain, std,
        note) with the blocks it was applied to (``encoder.0-23``), the structural edits and
        what was skipped; at most ``width`` columns. ``str(report)`` is this summary;
        :meth:`table` has every parameter.

        Example::

            >>> import initwatch
            >>> from initwatch import zoo
            >>> report = initwatch.reinit(zoo.build("torch_encoder", layers=24), "deepnet")
            >>> text = report.summary()
            >>> len(text.splitlines()) <= 60, max(map(len, text.splitlines())) <= 100
            (True, True)
        """
        import textwrap

        from initwatch.anatomy.render import block_ranges

        def grouped(changes: list[Change]) -> list[list[str]]:
            by_change: dict[tuple, list[str]] = {}
            for c in changes:
                key = (c.role, c.action, _num(c.gain), _num(c.std), c.note)
                by_change.setdefault(key, []).append(c.block)
            # roles that got the same change in the same blocks share a row ("q, k")
            rows: dict[tuple, list[str]] = {}
            for (role, *rest), blocks in by_change.items():
                where = block_ranges(blocks) + (f" ({len(blocks)})" if len(blocks) > 1 else "")
                roles = rows.setdefault((where, *rest), [])
                bare = role.removesuffix(" bias")
                roles.append(bare if role.endswith(" bias") and rest[0] == "zeros" else role)
            out = []
            for (where, action, gain, std, note), roles in rows.items():
                label = ", ".join(roles)
                if note.startswith("bias of"):  # one row for the biases of many roles
                    label, note = "biases", f"of {label}"
                out.append([where, label, action, gain, std, note])
            return out

        head, _, consts = self._head().partition("; ")
        lines = [head]  # a restored model's report has no constants (restore reads structure)
        if consts:
            lines += textwrap.wrap(f"constants: {consts}", width, subsequent_indent="  ")
        header = ["blocks", "role", "action", "gain", "std", "note"]
        for title, changes in (("inits", self.parameters), ("structure", self.structure)):
            if not changes:
                continue
            rows = grouped(changes)
            text = table(header, rows)
            over = max(map(len, text.splitlines())) - width
            if over > 0:  # the note is the one free-text column: wrap it at word boundaries
                keep = max(10, max(len(r[5]) for r in rows) - over)
                wrapped = []
                for r in rows:
                    note = textwrap.wrap(r[5], keep, break_on_hyphens=False) or [""]
                    wrapped += [r[:5] + note[:1]] + [[""] * 5 + [more] for more in note[1:]]
                text = table(header, wrapped)
            lines += ["", f"{title}:", text]
        skipped = self.skipped
        if skipped:
            lines += ["", f"skipped ({len(skipped)}):"]
            for c in skipped[:10]:
                lines += textwrap.wrap(
                    f"- {c.block} {c.role} {c.target}: {c.note}", width, subsequent_indent="    "
                )
            if len(skipped) > 10:
                lines.append(f"  (+{len(skipped) - 10} more)")
        lines += ["", "every parameter: report.table()"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _num(x: float | None) -> str:
    """A gain or std as the report's columns print it: four significant digits, trailing
    zeros kept (``1.0000`` above ``0.3799``); empty for None."""
    return "" if x is None else fmt(x, 4, fixed=True)


_INIT_ACTIONS: frozenset[str] = frozenset(get_args(InitAction))
_STRUCT_ACTIONS: frozenset[str] = frozenset(get_args(StructureAction))

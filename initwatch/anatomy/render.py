"""Plain-text tables for anatomies (``str(anatomy)``)."""

from __future__ import annotations

from collections.abc import Sequence

from initwatch.anatomy.identical import describe
from initwatch.anatomy.model import Anatomy, Slot


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header.

    Example::

        >>> print(table(["a", "b"], [[1, "x"]]))
        a  b
        -  -
        1  x
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def _shape(slot: Slot) -> str:
    shape = f"{slot.fan_out}x{slot.fan_in}"
    return f"{shape} ({slot.fused} {slot.index}/{slot.parts})" if slot.fused else shape


def render(anatomy: Anatomy) -> str:
    """The anatomy as a readable table: block, role, module path, shape."""
    head = (
        f"{anatomy.model_class} — family {anatomy.family}, {anatomy.kind}, "
        f"{'Post-LN' if anatomy.layout == 'post' else 'Pre-LN' if anatomy.layout == 'pre' else 'layout ' + anatomy.layout}"
        f" ({anatomy.norm_kind}), {anatomy.residual} residual, d={anatomy.hidden}, "
        f"heads={anatomy.heads}, depth {anatomy.depth}"
        + ("" if anatomy.attn_scaled else ", no 1/sqrt(d_head) attention scaling")
    )
    rows: list[list[object]] = []
    for stack in anatomy.stacks:
        for label, path in (
            ("token_embedding", stack.token_embedding),
            ("position_embedding", stack.position_embedding),
        ):
            if path:
                rows.append([stack.kind, label, path, ""])
        for norm in stack.stack_norms:
            rows.append([stack.kind, f"norm ({norm.where})", norm.path, norm.kind])
        for block in stack.blocks:
            for sub in block.sublayers:
                for slot in sub.slots:
                    rows.append([block.name, slot.role, slot.param_name, _shape(slot)])
                if sub.norm is not None:
                    rows.append(
                        [
                            block.name,
                            f"norm ({sub.norm.placement}-{sub.kind})",
                            sub.norm.path,
                            sub.norm.kind,
                        ]
                    )
                rows.append([block.name, f"{sub.kind} output", sub.output, ""])
    lines = [head, table(["block", "role", "module", "shape"], rows)]
    if anatomy.tied:
        lines.append("tied: " + "; ".join(" = ".join(g) for g in anatomy.tied))
    lines += [line for line in [describe(anatomy.identical)] if line]
    lines.append("schemes: " + "; ".join(f"{k}: {v}" for k, v in applicability(anatomy).items()))
    return "\n".join(lines)


def applicability(anatomy: Anatomy) -> dict[str, str]:
    """For each registered scheme, ``"applies"`` or the reason it does not (read from the
    scheme modules through :mod:`initwatch.schemes.registry`)."""
    from initwatch.schemes.registry import applicability as from_registry

    return from_registry(anatomy)

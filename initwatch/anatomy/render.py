"""Plain-text tables for anatomies (``str(anatomy)``)."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

from initwatch.anatomy.identical import describe
from initwatch.anatomy.model import Anatomy, Block, Slot


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


def block_ranges(names: Sequence[str]) -> str:
    """Block names compressed into index ranges: ``encoder.0-23``, ``decoder.0-2, 5``.

    Example::

        >>> block_ranges(["encoder.0", "encoder.1", "encoder.2", "encoder.5", "decoder.0"])
        'encoder.0-2, 5; decoder.0'
    """
    stacks: dict[str, list[int]] = {}
    other: list[str] = []
    for name in names:
        head, _, idx = name.rpartition(".")
        if head and idx.isdigit():
            stacks.setdefault(head, []).append(int(idx))
        else:
            other.append(name)
    parts = []
    for head, idxs in stacks.items():
        idxs = sorted(set(idxs))
        runs: list[str] = []
        lo = prev = idxs[0]
        for i in [*idxs[1:], None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            runs.append(str(lo) if lo == prev else f"{lo}-{prev}")
            if i is not None:
                lo = prev = i
        parts.append(f"{head}.{', '.join(runs)}")
    return "; ".join(parts + other)


def _template(block: Block, path: str) -> str:
    """A module path with the block's own index replaced by ``*`` (``layers.*.linear1``)."""
    prefix = block.path
    star = re.sub(r"\d+$", "*", prefix)
    if prefix and path.startswith(prefix + ".") or path == prefix:
        return star + path[len(prefix) :]
    return path


def _block_rows(block: Block) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for sub in block.sublayers:
        for slot in sub.slots:
            rows.append((slot.role, _template(block, slot.param_name), _shape(slot)))
        if sub.norm is not None:
            rows.append(
                (
                    f"norm ({sub.norm.placement}-{sub.kind})",
                    _template(block, sub.norm.path),
                    sub.norm.kind,
                )
            )
        rows.append((f"{sub.kind} output", _template(block, sub.output), ""))
    return rows


def layout_text(anatomy: Anatomy) -> str:
    """The layout as the model is now: ``Post-LN (layernorm)``, or, when a scheme removed
    every residual-path norm, that there are none left (T-Fixup, ReZero).

    Example::

        >>> from initwatch import inspect, reinit, zoo
        >>> model = zoo.build("torch_encoder", layers=2)
        >>> layout_text(inspect(model))
        'Post-LN (layernorm)'
        >>> _ = reinit(model, "rezero")
        >>> layout_text(inspect(model))
        'no residual-path norms (ReZero removed them; the blocks were Post-LN)'
    """
    name = {"post": "Post-LN", "pre": "Pre-LN"}.get(anatomy.layout, f"layout {anatomy.layout}")
    norms = sum(1 for b in anatomy.blocks for sub in b.sublayers if sub.norm is not None)
    if anatomy.applied_scheme and anatomy.blocks and norms == 0:
        from initwatch.schemes.registry import SCHEMES

        scheme = SCHEMES.get(anatomy.applied_scheme)
        if scheme is not None and scheme.removes_norms:
            return f"no residual-path norms ({scheme.title} removed them; the blocks were {name})"
    return f"{name} ({anatomy.norm_kind})"


def render(anatomy: Anatomy) -> str:
    """The anatomy as readable text: a summary first (family, layout as it is now, the scheme
    applied, which schemes apply), then one table row per role of each group of structurally
    identical consecutive blocks (``encoder.0-23``, module paths with ``*`` for the index).

    Example::

        >>> from initwatch import inspect, zoo
        >>> text = str(inspect(zoo.build("torch_encoder", layers=24)))
        >>> len(text.splitlines()) <= 40, "encoder.0-23" in text
        (True, True)
    """
    head = (
        f"{anatomy.model_class} — family {anatomy.family}, {anatomy.kind}, "
        f"{layout_text(anatomy)}, {anatomy.residual} residual, d={anatomy.hidden}, "
        f"heads={anatomy.heads}, depth {anatomy.depth}"
        + ("" if anatomy.attn_scaled else ", no 1/sqrt(d_head) attention scaling")
    )
    lines = textwrap.wrap(head, 100, subsequent_indent="  ", break_on_hyphens=False)
    if anatomy.applied_scheme:
        from initwatch.schemes.registry import SCHEMES

        scheme = SCHEMES.get(anatomy.applied_scheme)
        title = scheme.title if scheme is not None else anatomy.applied_scheme
        lines.append(f"scheme applied: {title} ({anatomy.applied_scheme})")
    else:
        lines.append("scheme applied: none")
    schemes = "; ".join(f"{k}: {v}" for k, v in applicability(anatomy).items())
    lines += textwrap.wrap(
        "schemes: " + schemes, 100, subsequent_indent="  ", break_on_hyphens=False
    )
    if anatomy.tied:
        tied = "tied: " + "; ".join(" = ".join(g) for g in anatomy.tied)
        lines += textwrap.wrap(tied, 100, subsequent_indent="  ", break_on_hyphens=False)
    for line in [describe(anatomy.identical)]:
        lines += textwrap.wrap(line, 100, subsequent_indent="  ", break_on_hyphens=False)
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
        groups: list[tuple[list[tuple[str, str, str]], list[str]]] = []
        for block in stack.blocks:
            mine = _block_rows(block)
            if groups and groups[-1][0] == mine:
                groups[-1][1].append(block.name)
            else:
                groups.append((mine, [block.name]))
        for mine, names in groups:
            label = block_ranges(names) + (f" ({len(names)})" if len(names) > 1 else "")
            rows += [[label, role, path, shape] for role, path, shape in mine]
    lines.append(table(["block", "role", "module", "shape"], rows))
    return "\n".join(lines)


def applicability(anatomy: Anatomy) -> dict[str, str]:
    """For each registered scheme, ``"applies"`` or the reason it does not (read from the
    scheme modules through :mod:`initwatch.schemes.registry`)."""
    from initwatch.schemes.registry import applicability as from_registry

    return from_registry(anatomy)

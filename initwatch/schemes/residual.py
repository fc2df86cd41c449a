"""Reading residual networks that are not transformers (torchvision-style ResNets) for the
residual-branch schemes (SkipInit, Fixup): which modules are the blocks, the weight layers of
each block's branch in order, the norms inside it, its projection shortcut and the head."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from initwatch.anatomy.model import Anatomy, Block, Norm, Stack
from initwatch.errors import AnatomyError

WEIGHTS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORMS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)
SHORTCUTS = ("downsample", "shortcut", "skip")
_RECOGNISED = (("conv1", "conv2", "conv3"), ("conv1", "conv2"))  # Bottleneck, BasicBlock


@dataclass
class Branch:
    """The residual branch of one block.

    Args:
        block: the block's path.
        layers: the branch's weight layers (convolutions, linears) in forward order.
        norms: the norms inside the branch (and the shortcut), in order.
        output: the module whose output is the branch output (its last norm, else its last
            layer).
        shortcut: the projection shortcut's path (torchvision's ``downsample``), or None.

    Example::

        >>> Branch("layer1.0", ["layer1.0.conv1", "layer1.0.conv2"], [], "layer1.0.conv2").depth
        2
    """

    block: str
    layers: list[str]
    norms: list[str]
    output: str
    shortcut: str | None = None

    @property
    def depth(self) -> int:
        """m, the number of weight layers in the branch."""
        return len(self.layers)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORMS) or type(module).__name__ == "RemovedNorm"


def branch_of(model: nn.Module, path: str, layers: Sequence[str] | None = None) -> Branch:
    """Read the branch of the block at ``path``: ``layers`` (names relative to the block, in
    forward order) or, by default, torchvision's ``conv1, conv2[, conv3]``.

    Example::

        >>> from initwatch import zoo
        >>> b = branch_of(zoo.resnet(), "layer2.0")
        >>> b.layers, b.output, b.shortcut
        (['layer2.0.conv1', 'layer2.0.conv2'], 'layer2.0.bn2', 'layer2.0.downsample')
    """
    block = model.get_submodule(path)
    if layers is None:
        names = next(
            (
                list(c)
                for c in _RECOGNISED
                if all(isinstance(getattr(block, n, None), WEIGHTS) for n in c)
            ),
            None,
        )
        if names is None:
            raise AnatomyError(
                f"{path!r} ({type(block).__name__}) is not a torchvision-style residual block "
                "(conv1, conv2[, conv3]); describe its branch with layers=['conv1', 'conv2']"
            )
    else:
        names = list(layers)
    for n in names:
        try:
            mod = block.get_submodule(n)
        except AttributeError:
            raise AnatomyError(f"layers: {path!r} has no module {n!r}") from None
        if not isinstance(mod, WEIGHTS):
            raise AnatomyError(
                f"layers: {path}.{n} is a {type(mod).__name__}, not a convolution or linear layer"
            )
    shortcut = next((s for s in SHORTCUTS if isinstance(getattr(block, s, None), nn.Module)), None)
    norms = [f"{path}.{n}" for n, m in block.named_modules() if n and _is_norm(m)]
    last = names[-1]
    # the branch output: the norm that follows the last layer (torchvision: bn<m>), else the layer
    follow = last.replace("conv", "bn") if last.startswith("conv") else None
    output = (
        f"{path}.{follow}"
        if follow and _is_norm(getattr(block, follow, None) or nn.Module())
        else f"{path}.{last}"
    )
    return Branch(
        path,
        [f"{path}.{n}" for n in names],
        norms,
        output,
        f"{path}.{shortcut}" if shortcut else None,
    )


def _glob(path: str, pattern: str) -> bool:
    """fnmatch per dotted segment: ``"layer*.*"`` matches ``layer1.0``, not ``layer1.0.conv1``."""
    parts, pats = path.split("."), pattern.split(".")
    return len(parts) == len(pats) and all(map(fnmatch.fnmatchcase, parts, pats))


def _block_paths(model: nn.Module, blocks: Any) -> list[str]:
    if blocks is None:
        return [
            n
            for n, m in model.named_modules()
            if n and all(isinstance(getattr(m, c, None), WEIGHTS) for c in ("conv1", "conv2"))
        ]
    if isinstance(blocks, str):
        names = [n for n, _ in model.named_modules() if n]
        matched = [n for n in names if _glob(n, blocks)]
        if not matched:
            raise AnatomyError(f"blocks={blocks!r} matches no module of {type(model).__name__}")
        return matched
    return list(blocks)


def read(model: nn.Module, options: Mapping[str, Any]) -> Anatomy:
    """The residual network as an :class:`~initwatch.anatomy.Anatomy` with one stack of blocks
    (no transformer roles), for the residual-branch schemes. Blocks: ``options["blocks"]`` (a
    glob over module paths like ``"layer*.*"``, or a list of paths), or every torchvision-style
    block found (``conv1``, ``conv2`` convolutions); the branch layers: ``options["layers"]``.

    Example::

        >>> from initwatch import zoo
        >>> a = read(zoo.resnet((2, 2)), {})
        >>> a.family, a.depth, [b.path for b in a.blocks][:2]
        ('resnet', {'encoder': 4}, ['layer1.0', 'layer1.1'])
    """
    paths = _block_paths(model, options.get("blocks"))
    if not paths:
        raise AnatomyError(
            f"no residual blocks found in {type(model).__name__}: initwatch recognises "
            "torchvision-style blocks (conv1, conv2[, conv3] with a skip); describe others with "
            "blocks='layer*.*' (a glob over module paths) and layers=['conv1', 'conv2']"
        )
    layers = options.get("layers")
    for p in paths:
        branch_of(model, p, layers)  # every block must read
    inside = tuple(p + "." for p in paths)
    outside = [
        n for n, m in model.named_modules() if n and _is_norm(m) and not n.startswith(inside)
    ]
    norms = [
        Norm(n, "embedding" if i == 0 else "final", "stack", "batchnorm")
        for i, n in enumerate(outside[:2])
    ]
    stack = Stack(
        "encoder",
        "",
        [Block("encoder", i, p, []) for i, p in enumerate(paths)],
        embedding_norm=norms[0] if norms else None,
        final_norm=norms[1] if len(norms) > 1 else None,
    )
    return Anatomy(family="resnet", stacks=[stack], layout="none", model_class=type(model).__name__)


def head_of(model: nn.Module, anatomy: Anatomy) -> str | None:
    """The classification layer: the last ``nn.Linear`` outside the blocks (torchvision ``fc``).

    Example::

        >>> from initwatch import zoo
        >>> model = zoo.resnet()
        >>> head_of(model, read(model, {}))
        'fc'
    """
    inside = tuple(b.path + "." for b in anatomy.blocks)
    linears = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith(inside)
    ]
    return linears[-1] if linears else None


def removal_steps(
    model: nn.Module, anatomy: Anatomy, branches: Sequence[Branch], which: str
) -> list[tuple[Any, Any]]:
    """Structural steps removing the norms of residual blocks (``which="blocks"``), and also
    the stem norm(s) outside them (``"all"``); ``"none"`` keeps them.

    Example::

        >>> from initwatch import zoo
        >>> model = zoo.resnet((1,))
        >>> a = read(model, {})
        >>> [c.target for c, _ in removal_steps(model, a, [branch_of(model, "layer1.0")], "all")]
        ['layer1.0.bn1', 'layer1.0.bn2', 'bn1']
    """
    from initwatch.schemes.base import bind, removes_norms
    from initwatch.schemes.report import Change
    from initwatch.schemes.structure import remove_norm

    if not removes_norms(which):
        return []
    found = [(b.block, n) for b in branches for n in b.norms]
    if which == "all":
        found += [("stem", n.path) for s in anatomy.stacks for n in s.stack_norms]
    blocks = {b.path: b.name for b in anatomy.blocks}
    return [
        (
            Change(
                path,
                "remove_norm",
                "norm",
                blocks.get(owner, owner),
                note=type(model.get_submodule(path)).__name__,
            ),
            bind(remove_norm, model, path),
        )
        for owner, path in found
    ]


def missing_norms(model: nn.Module, branch: Branch, state: Mapping[str, Any]) -> list[str]:
    """The norms of ``branch`` whose parameters a checkpoint lacks (removed by a scheme).

    Example::

        >>> from initwatch import zoo
        >>> m = zoo.resnet((1,))
        >>> missing_norms(m, branch_of(m, "layer1.0"), m.state_dict())
        []
    """
    from initwatch.schemes.structure import norm_missing

    return [path for path in branch.norms if norm_missing(model, path, state)]


def rebuild_branch(model: nn.Module, path: str, state: Mapping[str, Any]) -> Branch:
    """The branch of the block at ``path`` on a fresh model, with the norms a checkpoint of
    SkipInit or Fixup lacks removed (the first step of their ``rebuild``).

    Example::

        >>> from initwatch import zoo
        >>> m = zoo.resnet((1,))
        >>> state = {k: v for k, v in m.state_dict().items() if ".bn" not in k}
        >>> rebuild_branch(m, "layer1.0", state).output, type(m.layer1[0].bn2).__name__
        ('layer1.0.bn2', 'RemovedNorm')
    """
    from initwatch.schemes.structure import remove_norm

    branch = branch_of(model, path)
    for norm in missing_norms(model, branch, state):
        remove_norm(model, norm)
    return branch

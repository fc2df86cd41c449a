"""Were these weights trained? Decided from the weights themselves and from loading markers.

A freshly initialized weight matrix is a sample of i.i.d. draws from the distribution its
model's own init produces (Hugging Face's ``_init_weights`` with the config's
``initializer_range``, PyTorch's ``reset_parameters``: kaiming-uniform bound ``1/sqrt(fan_in)``
for ``nn.Linear``, ``N(0, 1)`` for ``nn.Embedding``...). Training moves it away from that draw
in ways an i.i.d. sample cannot show. Each matrix is compared with a fresh draw of its own
module's init (made on a copy, under a forked RNG seeding only the generators it forks, so
neither the model nor the caller's random streams, CPU or GPU, change) by three tests, each
with a tolerance derived from the matrix's size:

* scale: the standard deviation against the init's (relative standard error of a sample std
  ``sqrt((kurtosis - 1) / (4 n))``), and at least :data:`MIN_SCALE_CHANGE` off;
* shape: the kurtosis against the init's (standard error ``sqrt(24 / n)``), one-sided: trained
  weights grow heavy tails;
* structure: the spread of row and of column norms. In an i.i.d. matrix the squared norm of a
  row of ``m`` entries has variance ``m (mu4 - sigma^4)``, whatever the init's scale; the
  spread of ``k`` such norms is skewed like a chi-square of about ``k - 1`` degrees of freedom
  and is turned into a normal z (Wilson-Hilferty's cube root). Trained matrices have rows
  (units) and columns (input features) of unequal importance.

PyTorch's ``reset_parameters`` is only a reference for the structure: plain models are often
re-initialized by hand (``normal_(std=0.02)``, a gain), so outside Hugging Face models the scale
is not tested and the kurtosis only beyond a normal's (3); any i.i.d. init passes.

Each statistic is in standard errors beyond the init. A matrix counts as trained when one
exceeds :data:`Z` (8: a fresh model of hundreds of matrices is not flagged by chance; the
largest seen on fresh models of every zoo family over 12 seeds is 3.6), and the model counts
as trained when one matrix is and at least :data:`TRAINED_FRACTION` of its examined matrices
exceed :data:`Z_MODEL` (5). Loading markers (Hugging Face's ``_is_hf_initialized``) decide
only where no matrix could be examined: a fresh init saved and loaded again still looks like
an init and is not called pretrained. A model loaded with :func:`initwatch.restore` counts as
pretrained.

BatchNorm layers (:func:`inspect_norms`) add evidence the matrices may not show yet (a ResNet
trained 60 steps still has init-like convolutions). Every init fills a BatchNorm's affine
``weight`` / ``bias`` with one constant per layer (1 / 0, or 0 for a zero-initialized last norm of
a block); only an optimizer makes them differ across channels. A layer counts as trained when
its affine weight or bias is not constant across channels *and* it has seen batches in train
mode (``num_batches_tracked > 0``, running statistics moved off 0 / 1): one trained layer makes
the model count as trained (``source="norms"``). The second condition keeps a random init of
the affine parameters (DCGAN's ``normal_(1, 0.02)``) on a model never run from being taken for
training; such a model after a forward in train mode is (pass ``pretrained=False``). Running
statistics alone also move on a forward pass in train mode without any training, so they are a
weak marker, like loading markers: they decide only where no matrix and no affine parameter
could be examined. Layers without running statistics (``track_running_stats=False``) give no
evidence.

What it cannot see: weights whose training left them statistically an init draw. A few hundred
Adam steps on random data move each coordinate by a noise-like amount: a tiny BERT / GPT-2 /
LLaMA (hidden 32) trained with AdamW at lr 3e-3 is recognised after 60 steps (``zoo.pretrain``),
at lr 1e-3 after ~30-100 steps, at lr 1e-4 only after ~300; a tiny T5 was not recognised within
300 steps although its weights moved by half their std, nor plain ``torch_*`` models after 60. Real
pretrained checkpoints differ from their init by far more (scale, heavy tails, outlier
features). Inits a model does not perform through ``_init_weights`` / ``reset_parameters`` are
judged by their row/column structure only; an init that depends on the block index would be
compared with block 0's. Pass ``pretrained=True`` / ``False`` where the inference is wrong.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from initwatch.numbers import fmt
from initwatch.rng import seeded

Z = 8.0  # standard errors beyond the init that mark one matrix as trained
Z_MODEL = 5.0  # ... that count towards the whole model's verdict (TRAINED_FRACTION of them)
MIN_SCALE_CHANGE = 0.03  # relative change of the std below which scale is no evidence
TRAINED_FRACTION = 0.25  # share of examined matrices that must look trained
MIN_DIM = 8  # smallest side of a matrix that is examined
MAX_SIDE = 1024  # larger matrices are examined on their top-left MAX_SIDE x MAX_SIDE block
MAX_PARENT_RATIO = 8  # a leaf's parent is copied for its init when at most this many times larger
LOAD_MARK = "_is_hf_initialized"
REFERENCE_SEED = 0x1417  # the fresh reference draws are the same on every call


@dataclass
class MatrixVerdict:
    """How one weight matrix looked against its init.

    Args:
        name: the parameter's name.
        trained: True when a test flagged it.
        reasons: what flagged it, with the numbers (empty when it looks like an init).
        std: its standard deviation; init_std: the init's (None: no init to compare with).
        score: the strongest test statistic, in standard errors beyond the init.

    Example::

        >>> v = MatrixVerdict("fc.weight", True, ["std 0.05 vs 0.02 at init"], 0.05, 0.02)
        >>> v.describe()
        'fc.weight: std 0.05 vs 0.02 at init'
    """

    name: str
    trained: bool
    reasons: list[str] = field(default_factory=list)
    std: float = math.nan
    init_std: float | None = None
    score: float = 0.0

    def describe(self) -> str:
        """``name: reason; reason`` (or ``name: looks like an init``)."""
        return f"{self.name}: {'; '.join(self.reasons) or 'looks like an init'}"


@dataclass
class PretrainedDecision:
    """Whether a model's weights count as pretrained, and why.

    Args:
        pretrained: the decision.
        source: ``"given"`` (the caller said so), ``"weights"`` (the statistics decided),
            ``"restored"`` (loaded with :func:`initwatch.restore`), ``"norms"`` (BatchNorm
            layers were trained, see the module docstring), ``"markers"`` (loading markers or
            moved running statistics, no matrix could be examined), or ``"init"`` (nothing
            says trained).
        verdicts: every examined matrix.
        marked: names of parameters a loader marked as loaded.
        norms: BatchNorm layers that were trained (affine parameters vary across channels,
            running statistics moved), with what showed it.
        norm_stats: BatchNorm layers whose running statistics moved (a weak marker).

    Example::

        >>> from initwatch import zoo
        >>> _ = torch.manual_seed(0)  # the example's weights do not depend on earlier draws
        >>> d = decide_pretrained(zoo.build("bert"))
        >>> d.pretrained, d.source, len(d.trained)
        (False, 'init', 0)
    """

    pretrained: bool
    source: str
    verdicts: list[MatrixVerdict] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    norm_stats: list[str] = field(default_factory=list)

    @property
    def trained(self) -> list[MatrixVerdict]:
        """The examined matrices that lean trained (``score > Z_MODEL``), strongest first."""
        return sorted((v for v in self.verdicts if v.score > Z_MODEL), key=lambda v: -v.score)

    def describe(self) -> str:
        """One sentence on how the weights looked, for errors and logs.

        Example::

            >>> PretrainedDecision(False, "init", [MatrixVerdict("w", False)]).describe()
            '0 of 1 weight matrices look trained'
        """
        n, t = len(self.verdicts), self.trained
        if self.source == "given":
            return f"pretrained={self.pretrained} was passed"
        if self.source == "restored":
            return "the model was loaded with initwatch.restore"
        text = f"{len(t)} of {n} weight matrices look trained"
        if t:
            text += " (e.g. " + "; ".join(v.describe() for v in t[:2]) + ")"
        if self.norms:
            text += f"; {len(self.norms)} BatchNorm layers were trained (e.g. {self.norms[0]})"
        elif self.norm_stats:
            text += f"; {len(self.norm_stats)} BatchNorm layers' running statistics moved"
            if self.source == "markers":
                text += " and no matrix could be examined"
        if self.marked:
            text += f"; {len(self.marked)} parameters carry a loading marker"
            if self.source == "markers":
                text += " and no matrix could be examined"
            elif not self.pretrained:
                text += ", but their values look like an initialization"
        return text


def decide_pretrained(model: nn.Module, pretrained: bool | None = None) -> PretrainedDecision:
    """Decide whether ``model`` holds trained weights (a fine-tune).

    Args:
        model: the model.
        pretrained: True / False to decide it yourself (``source="given"``); None to infer it
            from the weights and loading markers (see the module docstring).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(64, 64)
        >>> decide_pretrained(layer).pretrained
        False
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(torch.linspace(0.2, 3.0, 64)[:, None])  # units of unequal size
        >>> d = decide_pretrained(layer)
        >>> d.pretrained, d.source
        (True, 'weights')
        >>> decide_pretrained(layer, pretrained=False).pretrained
        False
    """
    from initwatch import validate

    validate.pretrained_or_none(pretrained, "initwatch.decide_pretrained(model, pretrained=True)")
    if pretrained is not None:
        return PretrainedDecision(pretrained, "given")
    from initwatch.schemes.base import MARKER

    marker = getattr(model, MARKER, None) or {}
    if marker.get("restored"):
        return PretrainedDecision(True, "restored")
    mine = marker.get("params", set())
    marked = [
        n for n, p in model.named_parameters() if getattr(p, LOAD_MARK, False) and id(p) not in mine
    ]
    verdicts = inspect_weights(model, skip=mine)
    norms, stats = inspect_norms(model, skip=mine)
    extra = {"norms": norms, "norm_stats": stats}
    if verdicts:
        leaning = sum(v.score > Z_MODEL for v in verdicts)
        is_trained = any(v.trained for v in verdicts) and leaning >= TRAINED_FRACTION * len(
            verdicts
        )
        if is_trained:
            return PretrainedDecision(True, "weights", verdicts, marked, **extra)
    if norms:
        return PretrainedDecision(True, "norms", verdicts, marked, **extra)
    if verdicts:
        return PretrainedDecision(False, "init", verdicts, marked, **extra)
    weak = bool(marked or stats)
    return PretrainedDecision(weak, "markers" if weak else "init", [], marked, **extra)


def inspect_norms(model: nn.Module, skip: set[int] | None = None) -> tuple[list[str], list[str]]:
    """BatchNorm layers that were trained, and those whose running statistics moved.

    A layer was trained when it has seen batches (``num_batches_tracked > 0``, running
    statistics off 0 / 1) and its affine weight or bias is not one constant across channels
    (every init fills them with one; an optimizer moves each channel differently). The second
    list holds the layers whose running statistics moved (also by a forward pass in train
    mode, without training). ``skip``: ids of parameters to leave out (a layer with one is).

    Example::

        >>> import torch
        >>> from torch import nn
        >>> bn = nn.BatchNorm1d(4)
        >>> _ = bn(torch.randn(8, 4))  # a forward in train mode moves the running statistics
        >>> inspect_norms(nn.Sequential(bn))
        ([], ['0'])
        >>> with torch.no_grad():
        ...     _ = bn.weight.add_(torch.tensor([0.01, -0.02, 0.0, 0.03]))  # an optimizer step
        >>> inspect_norms(nn.Sequential(bn))
        (['0 (weight 0.98..1 over 4 channels after 1 batches)'], ['0'])
    """
    skip = skip or set()
    trained: list[str] = []
    moved: list[str] = []
    for path, m in model.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        if any(id(p) in skip for p in m.parameters(recurse=False)):
            continue
        mean, var, count = m.running_mean, m.running_var, m.num_batches_tracked
        if mean is None or var is None or count is None or int(count) <= 0:
            continue
        if mean.device.type == "meta" or not (bool((mean != 0).any()) or bool((var != 1).any())):
            continue
        name = path or type(m).__name__
        moved.append(name)
        for what in ("weight", "bias"):
            p = getattr(m, what, None)
            if isinstance(p, torch.Tensor) and p.numel() > 1 and p.device.type != "meta":
                lo, hi = float(p.detach().min()), float(p.detach().max())
                if lo != hi:
                    span = f"{what} {fmt(lo)}..{fmt(hi)} over {p.numel()} channels"
                    trained.append(f"{name} ({span} after {int(count)} batches)")
                    break
    return trained, moved


def inspect_weights(model: nn.Module, skip: set[int] | None = None) -> list[MatrixVerdict]:
    """Compare every floating-point weight matrix (shared tensors once) with its own init.

    ``skip``: ids of parameters to leave out (those initwatch itself re-initialized).

    Example::

        >>> from torch import nn
        >>> [v.trained for v in inspect_weights(nn.Sequential(nn.Linear(32, 32), nn.ReLU()))]
        [False]
    """
    skip = skip or set()
    owners = _hf_owners(model)
    modules = dict(model.named_modules())
    seen: set[int] = set()
    refs: dict[tuple, dict[str, torch.Tensor | None]] = {}
    out = []
    for path, module in modules.items():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen or id(p) in skip or not _examinable(p):
                continue
            seen.add(id(p))
            name = f"{path}.{pname}" if path else pname
            try:
                ref = _reference(model, modules, owners, path, module, pname, refs)
                hf = _owner(owners, path) is not None
                out.append(judge(name, p.detach(), ref, authoritative=hf))
            except Exception:  # a module that cannot be copied or re-initialized: no evidence
                continue
    return out


def judge(
    name: str, weight: torch.Tensor, ref: torch.Tensor | None, authoritative: bool = True
) -> MatrixVerdict:
    """Test one matrix against a fresh draw ``ref`` of its init (None: structure only).

    ``authoritative``: ``ref`` is the init the model's own code performs (Hugging Face's
    ``_init_weights``). PyTorch's ``reset_parameters`` is not (plain models are often
    re-initialized by hand, e.g. ``normal_(std=0.02)`` or a gain): then the scale is not
    tested, and the kurtosis only beyond a normal's (3), so any i.i.d. init passes.

    ``score`` is the largest test statistic in standard errors; ``trained`` is ``score > Z``;
    ``reasons`` lists the tests beyond :data:`Z_MODEL`.

    Example::

        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> init = torch.randn(256, 256, generator=g) * 0.02
        >>> judge("w", torch.randn(256, 256, generator=g) * 0.02, init).trained
        False
        >>> v = judge("w", torch.randn(256, 256, generator=g) * 0.03, init)
        >>> v.trained, v.reasons
        (True, ['std 0.03 vs 0.02 at init (1.5x)'])
    """
    w = _matrix(weight)
    w = w[w.abs().sum(1) > 0] if w.shape[0] > 1 else w  # padding rows are zero by design
    s2, kurt = _moments(w)
    v = MatrixVerdict(name, False, std=math.sqrt(s2))
    if s2 <= 0 or w.shape[0] < MIN_DIM:
        return v
    n = w.numel()
    tests: list[tuple[float, str]] = []
    ref_z = 0.0
    if ref is not None:
        r = _matrix(ref)
        r = r[r.abs().sum(1) > 0] if r.shape[0] > 1 else r
        r2, rkurt = _moments(r)
        v.init_std = math.sqrt(r2)
        if r.shape == w.shape and torch.equal(w, r.to(w)):
            return v  # a deterministic init (zeros, a sinusoid) reproduced exactly
        if not authoritative:
            rkurt = max(rkurt, 3.0)
        if r2 > 0:
            se = math.sqrt(max(kurt - 1, 0.1) / (4 * n) + max(rkurt - 1, 0.1) / (4 * r.numel()))
            change = 0.5 * math.log(s2 / r2)
            if authoritative and abs(change) > math.log1p(MIN_SCALE_CHANGE):
                ratio = fmt(math.exp(change))
                tests.append(
                    (
                        abs(change) / se,
                        f"std {fmt(v.std)} vs {fmt(v.init_std)} at init ({ratio}x)",
                    )
                )
            se_k = math.sqrt(24 / n + 24 / r.numel())
            tests.append(((kurt - rkurt) / se_k, f"kurtosis {fmt(kurt)} vs {fmt(rkurt)} at init"))
            ref_z = max(_spread_z(r))
    if ref_z < Z_MODEL:  # an init that is not i.i.d. (e.g. per-slice gains) says nothing here
        for what, z, spread in zip(("row", "column"), _spread_z(w), _spread(w), strict=True):
            tests.append((z, f"{what} norms {fmt(spread)}x as spread as an init's (z={z:.0f})"))
    v.score = max((z for z, _ in tests), default=0.0)
    v.reasons = [text for z, text in sorted(tests, key=lambda t: -t[0]) if z > Z_MODEL]
    v.trained = v.score > Z
    return v


# ---- internals ------------------------------------------------------------------------------


def _examinable(p: torch.Tensor) -> bool:
    return (
        p.dim() >= 2
        and p.is_floating_point()
        and p.device.type != "meta"
        and min(p.shape[0], p[0].numel()) >= MIN_DIM
    )


def _matrix(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    t = t.reshape(t.shape[0], -1)[:MAX_SIDE, :MAX_SIDE]
    return t.to(device="cpu", dtype=torch.float64)


def _moments(w: torch.Tensor) -> tuple[float, float]:
    """Second moment about zero and kurtosis (an init is centred at zero)."""
    x2 = w * w
    s2 = float(x2.mean())
    return s2, float((x2 * x2).mean()) / s2**2 if s2 > 0 else 0.0


def _spread_z(w: torch.Tensor) -> tuple[float, float]:
    """z of the variance of squared row norms, then column norms, against the i.i.d. value.

    With ``k`` norms of ``m`` entries each, the ratio of their sample variance to the i.i.d.
    value ``m (mu4 - sigma^4)`` (estimated from the same matrix) has variance
    ``2 (m - 1) / (m (k - 1))`` whatever the entries' kurtosis (it cancels between the two
    estimates) and is skewed like a chi-square over its ``nu = (k - 1) m / (m - 1)`` degrees of
    freedom; :func:`_chi2_z` maps it to a standard normal z (a plain ``(ratio - 1) / se``
    exceeds 5 on ~1e-4 of i.i.d. 32 x 32 matrices instead of a normal's 3e-7).
    """
    out = []
    x2 = w * w
    s2 = float(x2.mean())
    var1 = float((x2 * x2).mean()) - s2 * s2  # variance of one squared entry
    for sums, m, k in ((x2.sum(1), w.shape[1], w.shape[0]), (x2.sum(0), w.shape[0], w.shape[1])):
        if k < MIN_DIM or m < 2 or var1 <= 0:
            out.append(0.0)
            continue
        ratio = float(sums.var()) / (m * var1)
        out.append(_chi2_z(ratio, (k - 1) * m / (m - 1)))
    return out[0], out[1]


def _chi2_z(ratio: float, nu: float) -> float:
    """Standard normal z of ``ratio`` distributed as ``chi2(nu) / nu`` (Wilson-Hilferty's cube
    root: accurate in the tails from a few degrees of freedom on).

    Example::

        >>> round(_chi2_z(94 / 31, 31), 2)  # P(chi2(31) > 94) = 2.9e-8, a normal's at z = 5.42
        5.37
    """
    a = 2.0 / (9.0 * nu)
    return (max(ratio, 0.0) ** (1.0 / 3.0) - (1.0 - a)) / math.sqrt(a)


def _spread(w: torch.Tensor) -> tuple[float, float]:
    """Observed over i.i.d. standard deviation of squared row / column norms."""
    x2 = w * w
    s2 = float(x2.mean())
    var1 = float((x2 * x2).mean()) - s2 * s2

    def observed(sums: torch.Tensor, m: int) -> float:
        return math.sqrt(max(float(sums.var()), 0.0) / (m * var1)) if var1 > 0 else 0.0

    return observed(x2.sum(1), w.shape[1]), observed(x2.sum(0), w.shape[0])


def _hf_owners(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> Hugging Face ``PreTrainedModel`` (whose ``_init_weights`` inits it)."""
    return {
        path: m
        for path, m in model.named_modules()
        if callable(getattr(m, "_init_weights", None)) and hasattr(m, "config")
    }


def _init_weights(owner: nn.Module) -> Callable[[nn.Module], None]:
    """The per-module init of a Hugging Face ``PreTrainedModel`` (``_hf_owners`` keeps only
    modules that have one)."""
    init = getattr(owner, "_init_weights", None)
    if not callable(init):
        raise TypeError(f"{type(owner).__name__} has no _init_weights(module) method")
    return init


def _owner(owners: dict[str, nn.Module], path: str) -> nn.Module | None:
    best, best_len = None, -1
    for prefix, m in owners.items():
        if (prefix == "" or path == prefix or path.startswith(prefix + ".")) and len(
            prefix
        ) > best_len:
            best, best_len = m, len(prefix)
    return best


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _reference(
    model: nn.Module,
    modules: dict[str, nn.Module],
    owners: dict[str, nn.Module],
    path: str,
    module: nn.Module,
    pname: str,
    cache: dict[tuple, dict[str, torch.Tensor | None]],
) -> torch.Tensor | None:
    """A fresh draw of the init of ``module.<pname>``: the module (with its parent when that
    is small, since Hugging Face inits some weights from the parent, e.g. GPT-2's ``c_proj``)
    is copied, filled with NaN and re-initialized as its model would; None when nothing
    re-initializes it. Identical modules (the same class, config and shapes) share one draw."""
    owner = _owner(owners, path)
    outer = None if owner is not None else _outer_reset(modules, path)
    parent_path, _, child = path.rpartition(".")
    parent = modules.get(parent_path) if path else None
    use_parent = (
        parent is not None
        and parent is not owner
        and _numel(parent) <= MAX_PARENT_RATIO * max(_numel(module), 1)
    )
    if outer is not None:  # e.g. nn.Transformer re-draws all its matrices (xavier)
        rel = f"{path[len(outer) :].lstrip('.')}.{pname}".lstrip(".")
        root = modules[outer]
    elif use_parent and parent is not None:  # use_parent implies a parent
        root, rel = parent, f"{child}.{pname}"
    else:
        root, rel = module, pname
    key = (
        id(owner),
        type(root),
        rel,
        tuple((n, tuple(p.shape)) for n, p in root.named_parameters()),
    )
    if key not in cache:
        cache[key] = _draw(root, owner)
    return cache[key].get(rel)


@torch.no_grad()
def _draw(root: nn.Module, owner: nn.Module | None) -> dict[str, torch.Tensor | None]:
    clone = copy.deepcopy(root)
    for m in clone.modules():
        m.__dict__.pop(LOAD_MARK, None)
    for p in clone.parameters():
        p.__dict__.pop(LOAD_MARK, None)
        if p.is_floating_point():
            p.fill_(math.nan)
    with seeded(
        REFERENCE_SEED, clone.parameters()
    ):  # the caller's random streams stay as they were
        if owner is not None:
            clone.apply(_init_weights(owner))  # post-order, as initialize_weights does
        else:
            clone.apply(_reset)
    return {n: (None if torch.isnan(p).any() else p.detach()) for n, p in clone.named_parameters()}


def _outer_reset(modules: dict[str, nn.Module], path: str) -> str | None:
    """The outermost proper ancestor of ``path`` whose own ``reset_parameters`` /
    ``_reset_parameters`` runs at construction and may re-draw its descendants."""
    parts = path.split(".") if path else []
    for i in range(len(parts)):
        prefix = ".".join(parts[:i])
        m = modules.get(prefix)
        if m is not None and not isinstance(m, nn.MultiheadAttention) and _resets(m):
            return prefix
    return None


def _resets(m: nn.Module) -> bool:
    return any(
        name in cls.__dict__
        for cls in type(m).__mro__
        if cls is not nn.Module
        for name in ("reset_parameters", "_reset_parameters")
    ) and any(True for _ in m.children())


def _reset(m: nn.Module) -> None:
    fn: Any = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
    if callable(fn):
        fn()


def is_pretrained(model: nn.Module, pretrained: bool | None = None) -> bool:
    """True when ``model`` holds trained weights (a fine-tune): see :func:`decide_pretrained`.

    Example::

        >>> from initwatch import zoo
        >>> is_pretrained(zoo.build("gpt2")), is_pretrained(zoo.build("gpt2"), pretrained=True)
        (False, True)
    """
    return decide_pretrained(model, pretrained).pretrained


__all__ = [
    "MatrixVerdict",
    "PretrainedDecision",
    "decide_pretrained",
    "inspect_norms",
    "inspect_weights",
    "is_pretrained",
    "judge",
]

"""PEFT adapters (LoRA): finding them, refusing a scheme on them, and the effective update.

A LoRA layer computes ``W x + s B A x`` with the pretrained ``W`` frozen, ``B`` starting at
zero and ``s = lora_alpha / r``. The update that matters is the one of the adapted weight
``W + s B A``: per step ``||s (B' A' - B A)||_F / ||W||_F``, computed from ``r x r`` Gram
matrices (the ``out x in`` product is never formed): with ``X = B A``,
``||X' - X||^2 = ||X'||^2 + ||X||^2 - 2 <X', X>``, ``||B A||^2 = sum((B^T B) * (A A^T))`` and
``<B' A', B A> = sum((B'^T B) * (A' A^T))``. ``A`` and ``B`` themselves are not judged by the
update-ratio and gradient rules (``B`` starts at zero, so its own ratio is infinite and ``A``'s
gradient is zero by construction at first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from initwatch.errors import SchemeNotApplicableError

LORA_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_dropout")


def is_lora_layer(module: nn.Module) -> bool:
    """True for a PEFT LoRA layer (``lora_A`` / ``lora_B`` dicts around a ``base_layer``).

    Example::

        >>> is_lora_layer(nn.Linear(2, 2))
        False
    """
    return (
        isinstance(getattr(module, "lora_A", None), nn.ModuleDict)
        and isinstance(getattr(module, "lora_B", None), nn.ModuleDict)
        and isinstance(getattr(module, "base_layer", None), nn.Module)
    )


def is_peft(model: nn.Module) -> bool:
    """True when ``model`` is or holds a PEFT model or adapter layer.

    Example::

        >>> is_peft(nn.Linear(2, 2))
        False
    """
    return any(type(m).__module__.startswith("peft.") or is_lora_layer(m) for m in model.modules())


def in_adapter(name: str) -> bool:
    """True for a module / parameter name inside a LoRA layer's adapter parts.

    Example::

        >>> in_adapter("h.0.attn.c_attn.lora_B.default.weight"), in_adapter("h.0.attn.c_attn")
        (True, False)
    """
    return any(part in LORA_PARTS for part in name.split("."))


def refuse_peft(model: nn.Module, scheme: str) -> None:
    """Refuse a scheme on a PEFT-wrapped model: it would be half-applied (the frozen base
    weights are skipped, the structural edits happen anyway).

    Example::

        >>> refuse_peft(nn.Linear(2, 2), "rezero")
    """
    if not is_peft(model):
        return
    layers = [n for n, m in model.named_modules() if is_lora_layer(m)]
    where = f" (LoRA on {len(layers)} layers, e.g. {layers[0]})" if layers else ""
    raise SchemeNotApplicableError(
        f"scheme {scheme!r} on a PEFT-wrapped {type(model).__name__}{where}: the base weights "
        "are frozen, so a scheme would skip their re-initialization while still removing "
        "norms and adding gates around the pretrained blocks - half-applied, it changes what "
        "the pretrained model computes. To train from scratch, apply the scheme to the base "
        f"model before get_peft_model (initwatch.reinit(base, {scheme!r}), then wrap it); to "
        "fine-tune with adapters, use scheme=None and let initwatch watch the adapters' "
        "effective update."
    )


@dataclass
class _Adapter:
    name: str  # the LoRA layer's module name
    layer: nn.Module
    key: str  # adapter name
    scale: float
    before: tuple[torch.Tensor, torch.Tensor] | None = None


class LoraProbe:
    """Effective update ratio of each active LoRA adapter, measured on logging steps.

    Example::

        >>> LoraProbe(nn.Linear(2, 2)).adapters
        []
    """

    def __init__(self, model: nn.Module) -> None:
        self.adapters: list[_Adapter] = []
        for name, m in model.named_modules():
            if not is_lora_layer(m):
                continue
            parts_a, parts_b = _parts(m, "lora_A"), _parts(m, "lora_B")
            active = getattr(m, "active_adapters", None) or list(parts_a.keys())
            for key in active if isinstance(active, (list, tuple)) else [active]:
                if key in parts_a and key in parts_b:
                    scale = float(getattr(m, "scaling", {}).get(key, 1.0))
                    self.adapters.append(_Adapter(name, m, key, scale))

    def _ab(self, a: _Adapter) -> tuple[torch.Tensor, torch.Tensor]:
        return _matrix(a.layer, "lora_A", a.key), _matrix(a.layer, "lora_B", a.key)

    @torch.no_grad()
    def snapshot(self) -> None:
        """Keep A and B (``r x in`` and ``out x r``: small) before the optimizer step."""
        for a in self.adapters:
            A, B = self._ab(a)
            a.before = (A.clone(), B.clone())

    @torch.no_grad()
    def measure(self) -> dict[str, dict[str, float]]:
        """``{layer name: {"update_ratio", "weight_norm", "adapter_norm"}}`` since the snapshot.

        Example::

            >>> LoraProbe(nn.Linear(2, 2)).measure()
            {}
        """
        out: dict[str, dict[str, float]] = {}
        for a in self.adapters:
            if a.before is None:
                continue
            A0, B0 = a.before
            A1, B1 = self._ab(a)
            a.before = None
            n1 = _gram(B1, B1, A1, A1)
            n0 = _gram(B0, B0, A0, A0)
            cross = _gram(B1, B0, A1, A0)
            delta = max(n1 + n0 - 2 * cross, 0.0) ** 0.5 * abs(a.scale)
            w = _weight(a.layer)
            norm = float(w.detach().float().norm()) if w is not None else float("nan")
            out[a.name] = {
                "update_ratio": delta / norm if norm > 0 else float("nan"),
                "weight_norm": norm,
                "adapter_norm": abs(a.scale) * max(n1, 0.0) ** 0.5,
            }
        return out


def _gram(B1: torch.Tensor, B0: torch.Tensor, A1: torch.Tensor, A0: torch.Tensor) -> float:
    """``<B1 A1, B0 A0>_F`` through ``r x r`` matrices."""
    return float(((B1.T @ B0) * (A1 @ A0.T)).sum())


def _parts(layer: nn.Module, part: str) -> nn.ModuleDict:
    """``layer.lora_A`` or ``layer.lora_B`` of a LoRA layer: the adapters' parts by name."""
    parts = getattr(layer, part)
    assert isinstance(parts, nn.ModuleDict)  # is_lora_layer(layer) checked it
    return parts


def _matrix(layer: nn.Module, part: str, key: str) -> torch.Tensor:
    """The weight of adapter ``key``'s ``part`` (``lora_A``: ``r x in``, ``lora_B``:
    ``out x r``) as a float32 matrix (a convolution's kernel dimensions flattened)."""
    weight = _parts(layer, part)[key].weight
    assert isinstance(weight, torch.Tensor)  # PEFT's parts are Linear / Conv layers
    return weight.detach().float().reshape(weight.shape[0], -1)


def _weight(layer: nn.Module) -> torch.Tensor | None:
    """The frozen base weight under a (possibly nested) LoRA layer; None: the base has none."""
    base = layer.get_submodule("base_layer")
    while is_lora_layer(base):
        base = base.get_submodule("base_layer")
    weight = getattr(base, "weight", None)
    return weight if isinstance(weight, torch.Tensor) else None


__all__ = ["LoraProbe", "in_adapter", "is_lora_layer", "is_peft", "refuse_peft"]

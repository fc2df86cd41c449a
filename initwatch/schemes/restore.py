"""Loading a re-initialized checkpoint into a fresh model: rebuild the structure, then load."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar, cast

import torch
from torch import nn

from initwatch.anatomy import Anatomy, inspect
from initwatch.errors import AlreadyAppliedError, AnatomyError, InitWatchError
from initwatch.schemes.base import MARKER
from initwatch.schemes.registry import SCHEMES, key_scheme
from initwatch.schemes.report import Change, ReinitReport
from initwatch.schemes.saved import quiet_load, record, recorded_scheme
from initwatch.schemes.structure import (
    REZERO_PARAM,
    RemovedNorm,
    applied_structure,
    keep_eager,
    norm_missing,
    remove_norm,
)

Source = Mapping[str, torch.Tensor] | str | os.PathLike
_V = TypeVar("_V")  # the values of a state dict whose keys are aligned


def load_state(source: Source) -> dict[str, torch.Tensor]:
    """A state dict from a dict, a ``torch.save`` file, a Lightning ``.ckpt`` or a
    ``save_pretrained`` directory (safetensors, sharded or not, or ``pytorch_model.bin``).

    Example::

        >>> load_state({"w": torch.zeros(1)})["w"].shape
        torch.Size([1])
    """
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        return _load_dir(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects beyond tensors
        raise InitWatchError(
            f"could not load {str(path)!r} with torch.load(weights_only=True): {exc}. Load it "
            "yourself and pass the state dict: initwatch.restore(model, "
            "torch.load(path, weights_only=False)['state_dict'])"
        ) from exc
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        return dict(data["state_dict"])  # a Lightning checkpoint
    if isinstance(data, Mapping):
        return dict(data)
    raise InitWatchError(f"{str(path)!r} holds a {type(data).__name__}, not a state dict")


def _load_dir(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(load_file(str(path / shard)))
        return out
    if (path / "model.safetensors").exists():
        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"{str(path)!r} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def _align_prefix(state: dict[str, _V], keys: set[str]) -> dict[str, _V]:
    """Strip or add a leading module prefix (``model.``) so the keys meet the model's."""

    def hits(sd: Mapping[str, _V]) -> int:
        return sum(k in keys for k in sd)

    best, best_hits = state, hits(state)
    prefixes = {k.split(".", 1)[0] + "." for k in list(state)[:50] + list(keys)[:50] if "." in k}
    for pre in prefixes:
        stripped = {k[len(pre) :]: v for k, v in state.items() if k.startswith(pre)}
        added = {pre + k: v for k, v in state.items()}
        for cand in (stripped, added):
            h = hits(cand)
            if h > best_hits:
                best, best_hits = cand, h
    return best


def restore(model: nn.Module, source: Source, *, anatomy: Anatomy | None = None) -> ReinitReport:
    """Load a checkpoint of a re-initialized model into a freshly built one.

    The structure the scheme added (DeepNorm residuals, ReZero gates, removed norms) is read
    from the checkpoint's keys and rebuilt, then the weights are loaded strictly (keys of tied
    weights that ``save_pretrained`` leaves out are accepted). The model ends up computing
    exactly what the saved model computed.

    Args:
        model: a fresh model of the same architecture (e.g. ``Model(config)``), not yet
            re-initialized.
        source: a state dict, a ``torch.save`` file, a Lightning ``.ckpt`` (its
            ``state_dict``; a ``model.`` prefix is matched automatically) or a directory
            written by ``save_pretrained``.
        anatomy: for custom models, the result of ``initwatch.inspect(model, ...)``.

    Returns:
        A :class:`ReinitReport` whose ``scheme`` is the one found (``"none"`` if the
        checkpoint carries no initwatch structure) and whose changes are the rebuilt structure.

    Example::

        >>> import initwatch
        >>> from initwatch import zoo
        >>> trained = zoo.build("gpt2")
        >>> _ = initwatch.reinit(trained, "rezero")
        >>> fresh = zoo.build("gpt2")
        >>> initwatch.restore(fresh, trained.state_dict()).scheme
        'rezero'
    """
    hf_dir = _hf_dir(model, source)
    state = _load_hf_dir(model, hf_dir) if hf_dir is not None else load_state(source)
    if applied_structure(model) or getattr(model, MARKER, None) is not None:
        raise AlreadyAppliedError(
            "restore() needs a freshly built model; this one already carries initwatch "
            "structure. Build a new instance (e.g. Model(config)) and restore into it."
        )
    anatomy = anatomy or _read(model)
    state = _align_prefix(state, set(model.state_dict()))
    changes: list[Change] = []
    schemes: set[str] = set()
    eager: set[str] = set()
    for stack in anatomy.stacks:
        for block in stack.blocks:
            for spec in SCHEMES.values():
                change = spec.rebuild(model, block, state) if spec.rebuild else None
                if change is not None:
                    changes.append(change)
                    schemes.add(spec.name)
            for norm in block.norms:
                if norm_missing(model, norm.path, state):
                    remove_norm(model, norm.path)
                    changes.append(Change(norm.path, "remove_norm", "norm", block.name))
                    eager.add(block.path)
        for norm in stack.stack_norms:
            if norm_missing(model, norm.path, state):
                remove_norm(model, norm.path)
                changes.append(Change(norm.path, "remove_norm", "norm", stack.kind))
    for path in eager:
        layer = model.get_submodule(path)
        if isinstance(layer, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
            keep_eager(model, path)
    _load_strict(model, state)
    scheme = _identify(schemes, any(c.action == "remove_norm" for c in changes))
    saved = recorded_scheme(model)
    if saved is not None and scheme == "none" and key_scheme(saved) == "none":
        scheme = saved  # a weights-only scheme: its checkpoint is plain, the config names it
    if saved is not None and saved != scheme:
        raise InitWatchError(
            f"the saved config records scheme {saved!r} (config.initwatch), but the checkpoint's "
            f"weights show {scheme!r}: the weights and the config come from different models. "
            "Restore from the directory save_pretrained wrote, with a model built from its config."
        )
    if scheme != "none" and saved is None:
        record(model, scheme, {})
    object.__setattr__(
        model, MARKER, {"scheme": scheme, "constants": {}, "params": set(), "restored": True}
    )
    return ReinitReport(scheme, {}, changes, anatomy.model_class, anatomy.family)


def _read(model: nn.Module) -> Anatomy:
    """``inspect(model)``; for a model it does not read, the residual-network reading of the
    schemes that declare one (a ResNet restored after SkipInit or Fixup)."""
    try:
        return inspect(model)
    except AnatomyError:
        for spec in SCHEMES.values():
            if spec.read is not None:
                try:
                    return spec.read(model, {})
                except AnatomyError:
                    continue
        raise


def _identify(found: set[str], removed_norms: bool) -> str:
    """The scheme a checkpoint's structure shows: the registered scheme whose own structure was
    found; else, when only norms are missing, the scheme whose whole structure is removed norms;
    else ``"none"``."""
    for name in SCHEMES:
        if name in found:
            return name
    if removed_norms:
        for spec in SCHEMES.values():
            if spec.removes_norms and spec.rebuild is None:
                return spec.name
    return "none"


def _hf_dir(model: nn.Module, source: Source) -> Path | None:
    """The directory ``source`` when it was written by ``save_pretrained`` for a Hugging Face
    ``model``, else None."""
    if isinstance(source, Mapping) or not Path(source).is_dir():
        return None
    from transformers import PreTrainedModel

    path = Path(source)
    return path if isinstance(model, PreTrainedModel) and (path / "config.json").exists() else None


def _load_hf_dir(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Weights of a ``save_pretrained`` directory in the model's own key names.

    Hugging Face renames some keys on save (GPT-NeoX ``lm_head`` -> ``embed_out``), so the
    weights go through ``from_pretrained``; what it does not know (ReZero gates, DeepNorm
    alphas) comes from the raw files, and norms the checkpoint lacks stay missing.
    """
    from transformers import PreTrainedModel
    from transformers.utils import logging as hf_logging

    assert isinstance(model, PreTrainedModel)  # _hf_dir gave the path for such models only
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with quiet_load():
            # transformers annotates from_pretrained as returning the model alone; with
            # output_loading_info=True it returns (model, loading info)
            loaded, info = cast(
                tuple[nn.Module, dict[str, list[str]]],
                type(model).from_pretrained(path, output_loading_info=True),
            )
    finally:
        hf_logging.set_verbosity(level)
    missing = set(info.get("missing_keys", ()))
    state = {k: v for k, v in loaded.state_dict().items() if k not in missing}
    raw = _load_dir(path)
    state.update({k: v for k, v in raw.items() if _scheme_of_key(k) is not None})
    return state


def _scheme_of_key(key: str) -> str | None:
    """The registered scheme whose structure adds the state_dict entry ``key``, or None.

    Example::

        >>> _scheme_of_key("encoder.layer.0.deepnorm_alpha"), _scheme_of_key("h.0.attn.weight")
        ('deepnet', None)
    """
    leaf = key.rsplit(".", 1)[-1]
    return next((s.name for s in SCHEMES.values() if any(map(leaf.startswith, s.keys))), None)


def _gate_shapes(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ReZero gates in the model's shape: checkpoints of 0-dim and of shape-(1,) gates load."""
    params = dict(model.named_parameters())
    out = dict(state)
    for key, value in state.items():
        p = params.get(key)
        if REZERO_PARAM in key and p is not None and value.numel() == p.numel() == 1:
            out[key] = value.reshape(p.shape)
    return out


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    state = _gate_shapes(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(p), []).append(name)
    covered = {n for names in tied.values() if any(x in state for x in names) for n in names}
    really_missing = [k for k in missing if k not in covered]
    if really_missing or unexpected:
        raise InitWatchError(
            f"the checkpoint does not fit this model: missing {really_missing[:8]}"
            f"{'...' if len(really_missing) > 8 else ''}, unexpected {list(unexpected)[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}. Build the model with the same config "
            "as the one that was saved."
        )


def scheme_of_state(model: nn.Module, keys: Iterable[str]) -> str:
    """The scheme whose structure a checkpoint's keys show for ``model``'s architecture: the
    keys a registered scheme adds (ReZero gates, DeepNorm's ``deepnorm_alpha``...), or norms of ``model`` whose weights the checkpoint
    lacks; ``"none"`` for a plain checkpoint. Keys are matched to ``model``'s own names.

    Example::

        >>> from initwatch import reinit, zoo
        >>> trained = zoo.build("gpt2")
        >>> _ = reinit(trained, "t-fixup")
        >>> scheme_of_state(zoo.build("gpt2"), trained.state_dict())
        't-fixup'
        >>> scheme_of_state(zoo.build("gpt2"), zoo.build("gpt2").state_dict())
        'none'
    """
    own = dict(model.state_dict())
    state = _align_prefix(dict.fromkeys(keys), set(own))
    found = {s for s in map(_scheme_of_key, state) if s is not None}
    removed = False
    for path, module in model.named_modules():
        if "norm" not in type(module).__name__.lower() or isinstance(module, RemovedNorm):
            continue
        names = [f"{path}.{n}" if path else n for n, _ in module.named_parameters()]
        if names and not any(n in state for n in names):
            removed = True
            break
    return _identify(found, removed)

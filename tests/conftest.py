"""Shared test settings: small thread count, quiet transformers, deterministic seeds."""

from __future__ import annotations

import functools
import os
import warnings

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(1)  # tiny models: one thread is as fast, and robust on a busy 2-core machine
warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")

try:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
except Exception:  # pragma: no cover - transformers is a dependency
    pass


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@functools.cache
def _trained_state(family: str) -> dict[str, torch.Tensor]:
    from initwatch import zoo

    torch.manual_seed(1)
    model = zoo.pretrain(family, zoo.build(family), steps=60)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def trained_state():
    """``trained_state(family)``: the state dict of a ``zoo.build(family)`` model trained by
    ``zoo.pretrain`` (made once per session): weights that look pretrained."""
    return lambda family: dict(_trained_state(family))

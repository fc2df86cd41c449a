"""initwatch.sharding without a process group: layouts, sample positions, refusals."""

from __future__ import annotations

import pytest
import torch

import initwatch
from initwatch import zoo
from initwatch.sharding import Layout


def test_sample_positions_of_a_box_and_of_a_flat_range():
    full = torch.arange(7 * 5).reshape(7, 5)
    index = torch.randperm(35, generator=torch.Generator().manual_seed(0))[:12].sort().values
    box = Layout(True, (7, 5), (4, 0), (3, 5))  # rows 4-6, the second of two chunks of 7
    kept, local = box.local_positions(index)
    assert full[4:].flatten()[local].tolist() == index[kept].tolist()
    rng = Layout(True, (7, 5), (9,), (13,), flat=True)  # FSDP1: elements 9..21
    kept, local = rng.local_positions(index)
    assert full.flatten()[9:22][local].tolist() == index[kept].tolist()
    assert [i for i in index.tolist() if 9 <= i < 22] == index[kept].tolist()
    assert Layout(False, (7, 5), (0, 0), (7, 5)).local_positions(index) == [[], []]


def test_reinit_refuses_meta_device_models():
    with torch.device("meta"):
        model = zoo.build("gpt2", layers=2, hidden=32)
    with pytest.raises(initwatch.ShardingError, match="meta device.*real device"):
        initwatch.reinit(model, "t-fixup")

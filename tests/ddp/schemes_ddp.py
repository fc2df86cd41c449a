"""Each scheme under DDP (2 gloo ranks, torchrun): the all-reduced gradients of one step on
half a batch per rank, written per rank to JSON; the test compares them with the whole batch
in one process (tests/schemes/test_scheme_matrix.py)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from initwatch import reinit, zoo

SCHEMES = ("deepnet", "t-fixup", "rezero")


def case(scheme: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (scheme applied, ReZero gates opened) and the whole batch."""
    torch.manual_seed(0)
    model = zoo.build("torch_encoder", layers=2)
    reinit(model, scheme, seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "rezero_alpha" in name:
                p.fill_(0.5)
    return model, torch.randn(4, 6, 32, generator=torch.Generator().manual_seed(1))


def grads(model: torch.nn.Module, batch: torch.Tensor) -> dict[str, list[float]]:
    model.zero_grad(set_to_none=True)
    model(batch).pow(2).mean().backward()
    return {
        n.removeprefix("module."): p.grad.flatten().tolist()
        for n, p in model.named_parameters()
        if p.grad is not None
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = Path(ap.parse_args().out)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result = {}
    for scheme in SCHEMES:
        model, batch = case(scheme)
        model.eval()  # no dropout: the ranks' halves must add up to the whole batch exactly
        ddp = DistributedDataParallel(model)
        half = batch[2 * rank : 2 * rank + 2]
        result[scheme] = grads(ddp, half)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

"""Each scheme under DDP (2 gloo ranks, torchrun): the all-reduced gradients of one step on
half a batch per rank, written per rank to JSON; the test compares them with the whole batch
in one process (tests/schemes/test_scheme_matrix.py)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from _record import out_arg, write_json  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from initwatch import reinit, zoo  # noqa: E402

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
    out = out_arg()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    result = {}
    for scheme in SCHEMES:
        model, batch = case(scheme)
        model.eval()  # no dropout: the ranks' halves must add up to the whole batch exactly
        ddp = DistributedDataParallel(model)
        half = batch[2 * rank : 2 * rank + 2]
        result[scheme] = grads(ddp, half)
    write_json(out, f"rank{rank}", result)
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

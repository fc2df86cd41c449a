"""Shared by the DDP scripts: their ``--out`` argument, the JSON each rank writes there, and
what each rank records about the Watch and the weights."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Mapping

import torch
from torch import nn


def out_arg() -> str:
    """The folder given as ``--out``, the one argument of every script here."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    return parser.parse_args().out


def write_json(out: str, name: str, data: object) -> None:
    """``data`` as ``out/<name>.json`` (``name``: e.g. ``rank0``), the folder made if missing."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(data, f)


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """A hash of a state dict's names and values (identical weights give identical hashes)."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_hash(model: nn.Module) -> str:
    """The :func:`state_hash` of every parameter and buffer of ``model``."""
    return state_hash(model.state_dict())


class Recorder:
    """Counts collectives inside each ``Watch.end_step`` and keeps each frame's numbers."""

    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}
        self.collectives: list[tuple[int, bool, int]] = []  # (step, logging, all_reduce calls)
        self.frames: list[dict] = []
        self.local_act: list[float] = []  # this rank's own block-output RMS on logging steps
        self._calls = 0

    def attach(self, watch, block: nn.Module) -> None:
        """Wrap the Watch's end_step and ``torch.distributed`` collectives to count calls."""
        dist = torch.distributed
        original_reduce, original_gather = dist.all_reduce, dist.all_gather

        def counting_reduce(*args, **kwargs):
            self._calls += 1
            return original_reduce(*args, **kwargs)

        def counting_gather(*args, **kwargs):
            self._calls += 1
            return original_gather(*args, **kwargs)

        dist.all_reduce = counting_reduce
        dist.all_gather = counting_gather
        original_end = watch.end_step

        def end_step(*args, **kwargs):
            logging = watch.is_logging
            self._calls = 0
            out = original_end(*args, **kwargs)
            self.collectives.append((watch.step_index, logging, self._calls))
            frame = watch.last_frame
            if logging and frame is not None:
                self.frames.append(
                    {
                        "step": frame.step,
                        "grad_norm_global": frame.globals.get("grad_norm_global"),
                        "act_rms": frame.values.get("act_rms", {}),
                    }
                )
            return out

        watch.end_step = end_step

        def local(module, args, output):
            if watch.is_logging:
                out = output[0] if isinstance(output, tuple) else output
                self.local_act.append(float(out.detach().float().pow(2).mean().sqrt()))

        block.register_forward_hook(local)

    def dump(self, out: str, rank: int, **extra) -> None:
        data = {
            "hashes": self.hashes,
            "collectives": self.collectives,
            "frames": self.frames,
            "local_act": self.local_act,
            "pid": os.getpid(),
            **extra,
        }
        write_json(out, f"rank{rank}", data)

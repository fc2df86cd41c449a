"""Statistical checks shared by the scheme tests: tolerances derived from the sample size."""

from __future__ import annotations

import math

import torch

Z = 5.0  # sigmas: ~100s of checks per run stay far from a false failure
KURTOSIS = {"normal": 3.0, "uniform": 1.8}


def rms_close(t: torch.Tensor, std: float, kurtosis: float) -> None:
    """The RMS (true mean 0) of ``t`` matches ``std`` within Z standard errors.

    Var(mean(x^2)) = (kurtosis - 1) std^4 / n, so the relative standard error of the RMS is
    sqrt((kurtosis - 1) / (4 n)) (normal: kurtosis 3, uniform: 1.8).
    """
    n = t.numel()
    tol = Z * math.sqrt((kurtosis - 1) / (4 * n))
    rms = t.detach().double().pow(2).mean().sqrt().item()
    assert abs(rms / std - 1) < tol, f"rms {rms:.5g} vs std {std:.5g} (n={n}, tol {tol:.3g})"


def fan_sum(view: torch.Tensor) -> int:
    # Xavier is symmetric in the fans: fan_in + fan_out = rows + columns of the logical matrix
    return view.numel() // view.shape[-1] + view.shape[-1]

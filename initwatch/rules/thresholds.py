"""Default thresholds of the alert rules, each with where it comes from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

FRACTIONS = ("dead_frac", "sat_frac", "grad_spike_share", "anneal_fraction")  # in (0, 1]


@dataclass
class Thresholds:
    """Every threshold the rules use. Defaults and their sources are listed in docs/alerts.md.

    Source keys (their public sources are listed in docs/alerts.md): SMD = SageMaker Debugger
    built-in rules, KARP = Karpathy's makemore part 3, MEG = Megatron-LM, OC = OLMo-core,
    HF-DBG = Hugging Face ``DebugUnderflowOverflow``. "initwatch" marks a value we chose and
    calibrated on the fault-injection suite (``tests/rules/test_detection.py``), because no anchor
    defines one.

    Args:
        grad_floor: vanishing_gradient when the gradient norm of a whole layer or block is below
            this. SMD VanishingGradient flags mean ``|grad|`` < 1e-7; the L2 norm of a layer is at
            least its mean ``|grad|``, so this floor is never stricter than SMD's.
        grad_depth_ratio: vanishing_gradient when a lower block's gradient norm (or its
            backward signal ``out_grad_rms``) is below this fraction of the largest of the top
            quarter of blocks (initwatch; no anchor defines a depth rule, monitoring.md §3 #25.
            Measured: healthy Pre-LN 2-7x *larger* at the bottom, healthy shallow Post-LN
            0.1-0.7x, 24-layer Post-LN with Adam and no warmup 1e-2 after ~5 steps, 3e-4 after 40).
        min_layers: depth rules need at least this many layers in a stack.
        grad_spike_factor: exploding_gradient when the global gradient norm exceeds this multiple
            of the median of its own recent history (MEG: 10x the early maximum).
        grad_spike_share: a single block (module) whose gradient norm exceeds
            ``grad_spike_factor`` times its own median raises exploding_gradient on its own when
            it is at least this share of the global norm (initwatch; smaller layers may rise
            without harm, e.g. ReZero blocks whose gradients grow from zero).
        grad_norm_ceiling: exploding_gradient when the global gradient norm exceeds this, history
            or not (initwatch: ~1e3x the O(1) norms of mean-reduced losses).
        act_depth_growth: exploding_activation when a block's output RMS exceeds this multiple of
            the lowest block's (initwatch; SMD PoorInitialization flags a 10x *variance* spread,
            i.e. ~3x RMS, but a healthy Pre-LN stream grows ~sqrt(depth): 8x over 24 blocks).
        act_depth_decay: vanishing_activation when a block's output RMS is below this fraction of
            the lowest block's (initwatch, mirror of ``act_depth_growth``).
        act_time_factor: exploding_activation (vanishing_activation) when a layer's output RMS is
            above (below) this multiple (fraction) of the median of its own recent history
            (initwatch; same form as the gradient spike rule).
        fp16_absmax: exploding_activation under fp16 when an output's abs-max exceeds this
            (fp16's largest finite value is 65504; HF-DBG points at values near it).
        dead_frac: dead_units when the fraction of exact zeros of an activation's output exceeds
            this. SMD flags a layer with > 50% of units dead (active < 1% of steps); a per-batch
            zero fraction cannot see units, and ~0.5 is normal for ReLU, so the bar is high.
        sat_frac: saturation when the fraction of tanh/sigmoid outputs in the saturation band
            exceeds this (SMD flags a layer with > 50% of units saturated; KARP shows 2-3% when
            healthy).
        update_ratio_target: the healthy update/weight ratio (KARP: log10 ratio ~ -3).
        update_ratio_high: update_ratio_high above this when training from scratch (100x the
            target; Adam's first steps give ~lr/rms(W), e.g. 0.05 for lr 1e-3 on std-0.02 weights).
        update_ratio_high_pretrained: the same for a fine-tune of pretrained weights (10x the
            target; fine-tunes at lr 1e-5..5e-5 measure ~1e-4..1e-3).
        update_ratio_low: update_ratio_low below this (100x under the target; SMD's coarse rule
            flags < 1e-8).
        update_ratio_low_pretrained: the same for a fine-tune (1e-6, since fine-tunes go as
            low as lr 1e-6).
        update_ratio_high_lora: the same for a LoRA-adapted weight's effective update
            ``||d(s B A)|| / ||W||`` (a tiny GPT-2, r=8, alpha=16, AdamW: ~1e-3 at lr 1e-4,
            2e-3..6e-3 at 3e-4, 7e-3..2e-2 at 1e-3, 0.1..0.2 at 1e-2; the largest at step 0).
        update_ratio_low_lora: update_ratio_low for it (1e-6).
        anneal_fraction: update_ratio_low is not raised while the learning rate is below this
            fraction of the peak (the schedule is annealing on purpose).
        loss_diverge_factor: loss_diverging when the loss exceeds this multiple of its early
            baseline, the median of the first ``warmup_frames`` measured losses of the run
            (initwatch: a training loss rarely rises far above its value at the start; the
            shocks reported in issue 8 reached 28-36x).
        far_factor: a finding this many times past its threshold (``score`` >= log10 of it)
            alerts on its first frame, without waiting for persistence, for the kinds that do
            damage in one step (exploding_gradient, exploding_activation, update_ratio_high,
            loss_diverging); persistence is for borderline values (initwatch: an update ratio
            of 1.0 from scratch, 0.1 in a fine-tune, is a step as large as the weights).
        attn_onehot_frac: attention_collapse when more than this fraction of a self-attention
            sublayer's sampled rows (over all heads) are one-hot (largest probability > 0.99;
            initwatch: attention entropy collapse, Zhai et al. 2023, turns nearly every row of
            nearly every head one-hot, while heads that attend sharply on purpose, such as
            attention sinks, are a minority of a healthy model's).
        lr_collapse_fraction: lr_schedule_collapse when the learning rate falls below this
            fraction of the largest learning rate the run has measured...
        lr_collapse_progress: ...before this fraction of the planned ``max_steps`` (initwatch: a
            cosine decay is above 1% of its peak until 94% of its steps, a linear one until
            99%; a schedule sized in epochs but stepped per batch reaches ~0 within its first
            few percent).
        history: number of logging frames kept per series for the robust (median) baselines.
        scheme_grace_steps: under ReZero and T-Fixup, block weights have zero or small gradients
            by construction in the first steps (init-schemes.md §4.4, §9 item 10); vanishing
            gradient rules skip block weights for this many steps, and during warmup.

    Example::

        >>> th = Thresholds(dead_frac=0.98)
        >>> th.dead_frac, th.grad_floor
        (0.98, 1e-07)
    """

    grad_floor: float = 1e-7
    grad_depth_ratio: float = 1e-2
    min_layers: int = 3
    grad_spike_factor: float = 10.0
    grad_spike_share: float = 0.1
    grad_norm_ceiling: float = 1e3
    act_depth_growth: float = 100.0
    act_depth_decay: float = 1e-2
    act_time_factor: float = 10.0
    fp16_absmax: float = 1e4
    dead_frac: float = 0.95
    sat_frac: float = 0.5
    update_ratio_target: float = 1e-3
    update_ratio_high: float = 1e-1
    update_ratio_high_pretrained: float = 1e-2
    update_ratio_low: float = 1e-5
    update_ratio_low_pretrained: float = 1e-6
    update_ratio_high_lora: float = 2e-2
    update_ratio_low_lora: float = 1e-6
    anneal_fraction: float = 0.1
    loss_diverge_factor: float = 4.0
    far_factor: float = 10.0
    attn_onehot_frac: float = 0.9
    lr_collapse_fraction: float = 1e-2
    lr_collapse_progress: float = 0.5
    history: int = 32
    scheme_grace_steps: int = 100

    def __post_init__(self) -> None:
        from initwatch.validate import threshold_value

        for f in fields(self):
            whole = f.type in ("int", int)
            threshold_value(f.name, getattr(self, f.name), whole, f.name in FRACTIONS)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for reports).

        Example::

            >>> Thresholds().to_dict()["sat_frac"]
            0.5
        """
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        """The names of every threshold.

        Example::

            >>> "grad_floor" in Thresholds.names()
            True
        """
        return [f.name for f in fields(cls)]

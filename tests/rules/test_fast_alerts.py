"""Alerting as fast as the evidence allows: far-past values on their first frame, warmup judged
at its peak lr, a diverging loss, and no remedy that the run already applies (issue 8 items 3-4).
"""

from __future__ import annotations

from test_rules import POST, feed, new, transformer

from initwatch.context import RunContext
from initwatch.remedies import suggest
from initwatch.rules import Rules


def kinds(alerts) -> list[str]:
    return [a.kind for a in alerts]


# ---- far past the threshold: the first frame ---------------------------------------------------


def test_update_ratio_far_past_alerts_on_its_first_frame() -> None:
    # an update as large as 50x the weights at step 0 is an emergency, not a streak to confirm
    out = feed(Rules(), [transformer(0, update=lambda i: 50.0)])
    (alert,) = out[0]
    assert alert.kind == "update_ratio_high" and alert.step == 0 and alert.extra["frames"] == 1


def test_borderline_values_still_need_persistence() -> None:
    # 2x the from-scratch threshold 0.1: three frames, as before
    out = feed(Rules(), [transformer(s, update=lambda i: 0.2) for s in range(3)])
    assert out[0] == [] and out[1] == [] and kinds(out[2]) == ["update_ratio_high"]
    # exactly at the far factor (10x = 1.0) is immediate; just under it is not
    assert kinds(feed(Rules(), [transformer(0, update=lambda i: 1.0)])[0]) == ["update_ratio_high"]
    assert feed(Rules(), [transformer(0, update=lambda i: 0.99)])[0] == []


def test_far_factor_is_a_threshold_and_can_be_turned_off() -> None:
    frames = [transformer(0, update=lambda i: 50.0)]
    assert feed(Rules(far_factor=1e9), frames)[0] == []
    assert kinds(feed(Rules(far_factor=100.0), frames)[0]) == ["update_ratio_high"]  # 500x
    assert feed(Rules(far_factor=1000.0), frames)[0] == []


def test_too_small_signals_keep_persistence_even_far_past() -> None:
    # a vanishing gradient 1e8x below the floor does no damage in one step, and zero gradients
    # are often zero by construction at step 0: persistence applies
    grad = lambda i: 1e-15 if i < 3 else 0.1  # noqa: E731
    out = feed(Rules(), [transformer(s, grad=grad) for s in range(3)], POST)
    assert out[0] == [] and out[1] == [] and "vanishing_gradient" in kinds(out[2])


def test_a_mid_run_spike_is_reported_at_the_first_frame_after_onset() -> None:
    rules = Rules()
    calm = [transformer(s, grad_norm_global=1.0) for s in range(10)]
    assert all(a == [] for a in feed(rules, calm))
    (alert,) = rules.update(transformer(10, grad_norm_global=500.0), RunContext())
    assert alert.kind == "exploding_gradient" and alert.step == 10 and alert.first_step == 10
    # a borderline spike (20x the median: 2x the spike threshold) waits for persistence
    rules = Rules()
    feed(rules, calm)
    assert rules.update(transformer(10, grad_norm_global=20.0), RunContext()) == []


# ---- warmup: judged at the peak lr it heads to -------------------------------------------------


def warm(step: int, ratio: float, lr: float):
    return transformer(step, update=lambda i: ratio, lr=lr)


def test_warmup_to_a_destructive_peak_is_flagged_at_its_first_steps() -> None:
    # step 1 of 20 warmup steps towards lr 0.1: lr 0.005 gives a ratio of 0.06 (below 0.1), which
    # the peak multiplies by 20: 1.2, far past the threshold
    ctx = RunContext(in_warmup=True, base_lr=0.1, warmup_steps=20)
    (alert,) = Rules().update(warm(1, 0.06, 0.005), ctx)
    assert alert.kind == "update_ratio_high" and alert.step == 1
    assert alert.value == 0.06 * 20
    assert "peak lr 0.1" in alert.message and "x20" in alert.message
    assert "from 0.1 to" in alert.remedy, "the lr to lower is the peak, not this step's"


def test_a_healthy_warmup_stays_silent() -> None:
    # the same warmup towards lr 1e-3 on the same weights: 1e-3 / 0.005 times smaller
    ctx = RunContext(in_warmup=True, base_lr=1e-3, warmup_steps=20)
    frames = [warm(s, 0.06 * (1e-3 / 0.1) * (s / 20), 1e-3 * s / 20) for s in range(1, 20)]
    assert all(a == [] for a in feed(Rules(), frames, ctx))
    # tiny updates early in a warmup are not update_ratio_low
    frames = [warm(s, 1e-9, 1e-9) for s in range(1, 6)]
    assert all(a == [] for a in feed(Rules(), frames, ctx))


def test_warmup_without_a_known_peak_judges_the_ratio_as_is() -> None:
    ctx = RunContext(in_warmup=True, base_lr=None)
    assert all(a == [] for a in feed(Rules(), [warm(s, 0.06, 0.005) for s in range(5)], ctx))


# ---- loss_diverging ---------------------------------------------------------------------------


def lossy(step: int, loss: float):
    return transformer(step, loss=loss)


def test_loss_far_above_its_early_baseline() -> None:
    rules = Rules()
    early = [lossy(s, v) for s, v in enumerate([4.0, 3.9, 4.1, 3.8, 4.0])]
    assert all(a == [] for a in feed(rules, early))
    # 5x the baseline 4.0 (threshold 4x): borderline, three frames
    out = feed(rules, [lossy(s, 20.0) for s in range(5, 8)])
    assert out[0] == [] and out[1] == [] and kinds(out[2]) == ["loss_diverging"]
    alert = out[2][0]
    assert alert.threshold == 16.0 and alert.extra["evidence"]["baseline"] == 4.0
    assert "5x its early baseline 4" in alert.message


def test_loss_shock_far_past_alerts_at_once_and_never_enters_the_baseline() -> None:
    rules = Rules()
    # 4 -> 200: 50x the baseline, 12.5x the 4x threshold (far factor 10): the first frame
    out = feed(rules, [lossy(0, 4.0), lossy(1, 200.0)])
    assert out[0] == [] and kinds(out[1]) == ["loss_diverging"]
    assert rules.state_dict()["history"]["loss_early"] == [4.0]
    # 4 -> 145 (36x, the clipped run of issue 8) is 9x the threshold: three frames
    rules = Rules()
    out = feed(rules, [lossy(0, 4.0)] + [lossy(s, 145.0) for s in range(1, 4)])
    assert [kinds(a) for a in out] == [[], [], [], ["loss_diverging"]]


def test_a_loss_ramping_up_from_the_first_step_cannot_drag_its_baseline_along() -> None:
    # the shape of a destructive lr measured every step: each value < 4x the one before
    rules = Rules()
    out = feed(rules, [lossy(s, v) for s, v in enumerate([4.5, 8.5, 16.0, 30.0, 55.0, 60.0])])
    assert rules.state_dict()["history"]["loss_early"] == [4.5, 8.5]
    assert [kinds(a) for a in out] == [[], [], [], [], [], ["loss_diverging"]]


def test_loss_diverging_silent_on_a_falling_or_noisy_loss_and_negative_losses() -> None:
    falling = [lossy(s, 4.0 * 0.9**s + 0.1 * (-1) ** s) for s in range(40)]
    assert all(a == [] for a in feed(Rules(), falling))
    negative = [lossy(s, -1.0 + 0.01 * s) for s in range(10)] + [lossy(10, 50.0)]
    assert all(a == [] for a in feed(Rules(), negative))


# ---- remedies never suggest what the run already does ---------------------------------------


def test_no_clipping_advice_when_the_run_clips() -> None:
    ev = {"grad_norm": 70.0, "baseline": 1.0}
    free = suggest("exploding_gradient", "h.0", ev, RunContext(lr=1e-3))
    clipped = suggest("exploding_gradient", "h.0", ev, RunContext(lr=1e-3, grad_clip=1.0))
    assert "clip" in free.lower() and "max_grad_norm" in free
    assert "clip" not in clipped.lower() and "learning rate" in clipped
    for kind in ("nonfinite", "exploding_activation"):
        text = suggest(kind, "h.0", {"source": "time", "ratio": 50.0}, RunContext(grad_clip=0.5))
        assert "clip_grad_norm_" not in text and "max_grad_norm" not in text, kind


def test_loss_diverging_remedy_names_the_clipping_that_did_not_help() -> None:
    ev = {"ratio": 36.0, "baseline": 4.0, "lr": 0.1}
    text = suggest("loss_diverging", "*", ev, RunContext(grad_clip=1.0, optimizer="AdamW"))
    assert "36x its early value 4" in text and "clipping at 1 is on" in text
    assert "from 0.1 to 0.01" in text and "max_grad_norm" not in text
    assert "max_grad_norm" in suggest("loss_diverging", "*", ev, RunContext())


def test_new_alerts_only_once_per_cause() -> None:
    out = feed(Rules(), [transformer(s, update=lambda i: 50.0) for s in range(5)])
    assert [len(new(a)) for a in out] == [1, 0, 0, 0, 0]

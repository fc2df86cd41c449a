"""The rule engine: findings that persist become alerts, one per cause, with spaced updates."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, cast

from initwatch.alerts import Alert, AlertKind
from initwatch.context import RunContext
from initwatch.frame import Frame
from initwatch.plain import to_plain
from initwatch.rules.detectors import DETECTORS, Finding, Inputs, explain
from initwatch.rules.thresholds import Thresholds
from initwatch.vocabulary import Severity

STATE_VERSION = 1
# kinds whose far-past-threshold findings alert on their first frame (Thresholds.far_factor)
# Within this factor of each other, two layers' values are the same within noise: a "still"
# update keeps naming the layer of the original alert instead of hopping between them.
SAME_WITHIN = 2.0
FAST_KINDS = frozenset(
    k.value
    for k in (
        AlertKind.EXPLODING_GRADIENT,
        AlertKind.EXPLODING_ACTIVATION,
        AlertKind.UPDATE_RATIO_HIGH,
        AlertKind.LOSS_DIVERGING,
    )
)


def _merge(findings: list[Finding]) -> dict[str, Finding]:
    """One finding per cause: the worst one, with the affected layers of all of them."""
    out: dict[str, Finding] = {}
    for f in findings:
        cur = out.get(f.key)
        if cur is None:
            out[f.key] = f
            continue
        best, other = (f, cur) if f.score > cur.score else (cur, f)
        best.layers = best.layers + [n for n in other.layers if n not in best.layers]
        best.evidence = {**other.evidence, **best.evidence}
        out[f.key] = best  # best.layer_values stay its own (the other's may be another unit)
    return out


class Rules:
    """Turns frames into alerts: detection, persistence, de-duplication, "still" updates.

    A condition must hold for ``persistence`` consecutive logging frames before it becomes an
    alert. Non-finite values alert at once, and so does a finding of a kind that does damage in
    one step (exploding gradient or activation, too-large update, diverging loss) when it is
    ``far_factor`` (default 10) times past its threshold: persistence is for borderline values. A cause (an alert kind within a scope such as a
    stack) gives one alert naming its worst layer and listing the others; while it lasts, a
    "still" update (``repeat`` = 1, 2, ...) follows every ``still_every`` frames; it carries the
    remedy chosen from the frame that raised the alert (one cause, one advice: an lr factor is
    not recomputed from weights the cause has since inflated). A cause that is absent for
    ``persistence`` frames is cleared, and may alert again later (with a remedy of its own). Rules that do not
    apply to a frame (gradient rules on a step the AMP scaler skipped, update-ratio rules during
    warmup or at lr 0) leave their counters untouched.

    Args:
        thresholds: a :class:`Thresholds`; None for the defaults.
        persistence: consecutive frames a condition must hold (k, default 3).
        warmup_frames: frames of history collected before rules that compare a value with its
            own history (gradient spikes, activation growth over time) may fire.
        still_every: frames between two "still" updates of an ongoing alert.
        **overrides: individual thresholds, e.g. ``Rules(dead_frac=0.98)`` (applied on top of
            ``thresholds``).

    Example::

        >>> from initwatch.frame import Frame, LayerInfo
        >>> from initwatch.context import RunContext
        >>> acts = [LayerInfo(f"relu{i}", "act", i, f"net.{i}") for i in range(3)]
        >>> rules = Rules(persistence=2)
        >>> def frame(step):
        ...     return Frame(step, acts, {"act_zero_frac": {"relu0": 0.5, "relu1": 0.99, "relu2": 0.5}})
        >>> rules.update(frame(0), RunContext())
        []
        >>> [(a.kind, a.layer) for a in rules.update(frame(1), RunContext())]
        [('dead_units', 'relu1')]
    """

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        persistence: int = 3,
        warmup_frames: int = 5,
        still_every: int = 10,
        **overrides: float,
    ) -> None:
        from initwatch import remedies  # noqa: F401  (now, not at the first frame: ~10 ms)
        from initwatch.validate import positive_int

        for name, value in (
            ("persistence", persistence),
            ("warmup_frames", warmup_frames),
            ("still_every", still_every),
        ):
            positive_int(name, value, f"rules={{{name!r}: 3}}")
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        unknown = sorted(set(overrides) - set(Thresholds.names()))
        if unknown:
            raise ValueError(
                f"unknown threshold(s) {', '.join(map(repr, unknown))}; expected "
                f"{', '.join(Thresholds.names())}, e.g. Rules(dead_frac=0.98)"
            )
        if overrides:
            given: dict[str, Any] = dict(overrides)  # whole-number fields checked above
            self.thresholds = replace(self.thresholds, **given)
        self.persistence = persistence
        self.warmup_frames = warmup_frames
        self.still_every = still_every
        self.frames = 0
        # cause -> {"count": consecutive frames seen, "since": step first seen in this streak}
        self._streak: dict[str, dict[str, int]] = {}
        # cause -> {"first_step", "repeat", "since_emit", "absent"} of alerts raised
        self._active: dict[str, dict[str, int]] = {}
        self._history: dict[str, list[float]] = {}
        # cause -> the remedy of the alert that raised it (repeated by its "still" updates)
        self._remedies: dict[str, str] = {}
        # cause -> the layer the alert named (kept by its updates while within noise)
        self._layers: dict[str, str] = {}

    # ------------------------------------------------------------------ main entry
    def update(self, frame: Frame, context: RunContext | None = None) -> list[Alert]:
        """Judge one frame; return new alerts and "still" updates (``repeat > 0``) only.

        Args:
            frame: the statistics of one logging step.
            context: what is known about the run (layout, scheme, lr, warmup...).

        Returns:
            Alerts raised by this frame, oldest cause first.

        Example::

            >>> from initwatch.frame import Frame
            >>> Rules().update(Frame(0, [], {}, {"loss": float("nan")}))[0].severity
            'error'
        """
        from initwatch.remedies import suggest

        ctx = context if context is not None else RunContext()
        x = Inputs(frame, ctx, self.thresholds, self._history, self.warmup_frames)
        findings: list[Finding] = []
        judged: set[str] = set()
        for detector, kinds, applies in DETECTORS:
            if applies(x):
                judged.update(kinds)
                findings += detector(x)
        found = _merge(explain(findings))
        self.frames += 1

        alerts: list[Alert] = []
        for key in list(self._streak) + [k for k in self._active if k not in self._streak]:
            if key in found or key.split("/", 1)[0] not in judged:
                continue
            self._streak.pop(key, None)
            state = self._active.get(key)
            if state is not None:
                state["absent"] += 1
                if state["absent"] >= self.persistence:
                    del self._active[key]
                    self._remedies.pop(key, None)
                    self._layers.pop(key, None)

        for key, f in found.items():
            streak = self._streak.setdefault(key, {"count": 0, "since": frame.step})
            streak["count"] += 1
            state = self._active.get(key)
            if state is not None:
                state["absent"] = 0
                state["since_emit"] += 1
                if state["since_emit"] >= self.still_every:
                    state["since_emit"] = 0
                    state["repeat"] += 1
                    alerts.append(self._alert(f, frame, ctx, state, streak, suggest))
            elif f.immediate or streak["count"] >= self.persistence or self._far(f):
                state = {"first_step": frame.step, "repeat": 0, "since_emit": 0, "absent": 0}
                self._active[key] = state
                alerts.append(self._alert(f, frame, ctx, state, streak, suggest))
        return alerts

    def _far(self, f: Finding) -> bool:
        """A finding of a one-step-damage kind ``far_factor`` times past its threshold."""
        far = self.thresholds.far_factor
        return f.kind in FAST_KINDS and 1 < far < math.inf and f.score >= math.log10(far)

    def _stable_layer(self, f: Finding) -> tuple[str, float]:
        """The layer (and its value) an update names: the original alert's while it is still
        affected and its value is within :data:`SAME_WITHIN` of the worst one's, else the
        worst layer of this frame."""
        first = self._layers.get(f.key)
        if first is None or first == f.layer or first not in f.layers:
            return f.layer, float(f.value)
        mine = f.layer_values.get(first)
        if mine is None:  # no per-layer value: one cause, one name
            return first, float(f.value)
        worst = float(f.value)
        if mine > 0 and worst > 0 and abs(math.log10(mine / worst)) <= math.log10(SAME_WITHIN):
            return first, float(mine)
        return f.layer, worst

    def _alert(
        self,
        f: Finding,
        frame: Frame,
        ctx: RunContext,
        state: dict[str, int],
        streak: dict[str, int],
        suggest: Any,
    ) -> Alert:
        frames = streak["count"]
        if state["repeat"]:
            note = f" (for {frames} logging frames since step {streak['since']})"
        elif frames > 1:
            note = f" (held for {frames} logging frames since step {streak['since']})"
        else:
            note = ""
        evidence = dict(f.evidence)
        evidence["layers"] = list(f.layers)
        evidence["value"] = f.value
        evidence["threshold"] = f.threshold
        remedy = self._remedies.get(f.key) if state["repeat"] else None
        if remedy is None:
            remedy = self._remedies[f.key] = suggest(f.kind, f.layer, evidence, ctx)
        if state["repeat"]:
            layer, value = self._stable_layer(f)
        else:
            layer, value = f.layer, float(f.value)
            self._layers[f.key] = f.layer
        layers = [layer] + [n for n in f.layers if n != layer]
        return Alert(
            step=frame.step,
            kind=f.kind,
            layer=layer,
            value=value,
            threshold=float(f.threshold),
            severity=cast(Severity, f.severity),  # checked by Alert
            message=f.message + note,
            remedy=remedy,
            first_step=state["first_step"],
            repeat=state["repeat"],
            extra={
                "cause": f.key,
                "layers": layers,
                "since_step": streak["since"],
                "frames": frames,
                "evidence": to_plain(evidence, numbers=True),
            },
        )

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Persistence counters, ongoing alerts and history baselines, as plain data.

        Loadable with ``torch.load(..., weights_only=True)``.

        Example::

            >>> Rules().state_dict()["frames"]
            0
        """
        return {
            "version": STATE_VERSION,
            "frames": self.frames,
            "streak": copy.deepcopy(self._streak),
            "active": copy.deepcopy(self._active),
            "history": {k: [float(v) for v in vs] for k, vs in self._history.items()},
            "remedies": dict(self._remedies),
            "layers": dict(self._layers),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (e.g. when training resumes).

        Example::

            >>> a, b = Rules(), Rules()
            >>> b.load_state_dict(a.state_dict())
        """
        version = state.get("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise ValueError(f"unknown Rules state version {version!r}; expected {STATE_VERSION}")
        self.frames = int(state.get("frames", 0))
        self._streak = {k: {a: int(b) for a, b in v.items()} for k, v in state["streak"].items()}
        self._active = {k: {a: int(b) for a, b in v.items()} for k, v in state["active"].items()}
        self._history = {k: [float(v) for v in vs] for k, vs in state["history"].items()}
        self._remedies = {str(k): str(v) for k, v in state.get("remedies", {}).items()}
        self._layers = {str(k): str(v) for k, v in state.get("layers", {}).items()}

    @property
    def active(self) -> list[str]:
        """The causes (``kind/scope``) currently alerting.

        Example::

            >>> Rules().active
            []
        """
        return sorted(self._active)

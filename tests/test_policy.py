"""AlertPolicy: warn once per cause, stop, raise, call, ignore; clear errors."""

from __future__ import annotations

import logging
import warnings

import pytest

from initwatch.alerts import Alert
from initwatch.errors import AlertError
from initwatch.policy import AlertPolicy, AlertWarning


def alert(kind="dead_units", layer="net.3", step=10, repeat=0, cause=None, severity="warning"):
    return Alert(
        step=step,
        kind=kind,
        layer=layer,
        value=0.99,
        threshold=0.95,
        severity=severity,
        message="99% of the outputs are zeros",
        remedy="use GELU",
        repeat=repeat,
        extra={"cause": cause or f"{kind}/model"},
    )


def test_warn_once_per_cause(recwarn, caplog) -> None:
    policy = AlertPolicy("warn")
    with caplog.at_level(logging.INFO, logger="initwatch"):
        policy.handle(alert(step=10))
        policy.handle(alert(step=20, repeat=1))  # "still" update of the same cause
        policy.handle(alert(step=30, layer="net.5"))  # same cause, another worst layer
        policy.handle(alert(kind="saturation", step=30))  # a new cause
    warned = [w for w in recwarn.list if issubclass(w.category, AlertWarning)]
    assert len(warned) == 2
    assert "dead_units" in str(warned[0].message) and "use GELU" in str(warned[0].message)
    assert "saturation" in str(warned[1].message)
    assert len(caplog.records) == 4  # every alert is logged
    assert [r.levelno for r in caplog.records] == [
        logging.WARNING,
        logging.INFO,
        logging.WARNING,
        logging.WARNING,
    ]
    assert not policy.should_stop


def test_warn_points_at_the_caller() -> None:
    with pytest.warns(AlertWarning, match=r"\[warning\] step 10 dead_units at net.3"):
        AlertPolicy().handle(alert())


def test_warned_causes_survive_state_dict() -> None:
    first = AlertPolicy("warn")
    with pytest.warns(AlertWarning):
        first.handle(alert())
    second = AlertPolicy("warn")
    second.load_state_dict(first.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlertWarning)
        second.handle(alert(step=99))  # no second warning for the same cause


def test_stop_sets_should_stop(caplog) -> None:
    policy = AlertPolicy("stop")
    assert policy.should_stop is False
    with caplog.at_level(logging.WARNING, logger="initwatch"):
        policy.handle(alert(kind="nonfinite", severity="error"))
    assert policy.should_stop is True
    assert "stopping training" in caplog.text
    assert "should_stop" not in AlertPolicy("stop").state_dict()


def test_raise_raises_alert_error_carrying_the_alert() -> None:
    a = alert(kind="nonfinite", severity="error")
    with pytest.raises(AlertError, match="nonfinite") as info:
        AlertPolicy("raise").handle(a)
    assert info.value.alert is a


def test_callable_receives_every_alert() -> None:
    seen: list[Alert] = []
    policy = AlertPolicy(seen.append)
    policy.handle(alert())
    policy.handle(alert(repeat=1))
    assert [a.repeat for a in seen] == [0, 1]
    assert policy.mode == "callable" and not policy.should_stop


def test_ignore_does_nothing(recwarn) -> None:
    policy = AlertPolicy("ignore")
    policy.handle(alert())
    assert not recwarn.list and not policy.should_stop


@pytest.mark.parametrize("bad", ["warning", "Stop", "", 3, None])
def test_invalid_on_alert_lists_valid_values(bad) -> None:
    with pytest.raises(ValueError) as info:
        AlertPolicy(bad)
    text = str(info.value)
    assert repr(bad) in text
    for valid in ("'warn'", "'stop'", "'raise'", "'ignore'", "callable"):
        assert valid in text

"""AlertPolicy: warn once per cause, stop, raise, call, ignore; clear errors."""

from __future__ import annotations

import logging
import warnings
from typing import get_args

import pytest

from initwatch import vocabulary
from initwatch.alerts import Alert, Severity
from initwatch.errors import AlertError
from initwatch.policy import VALID, AlertPolicy, AlertWarning, OnAlert


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
    with pytest.warns(AlertWarning, match=r"initwatch: dead_units at net.3 \(step 10\)") as seen:
        AlertPolicy().handle(alert())
    assert seen[0].filename == __file__  # the user's line, not policy.py or watch.py


def test_watch_alert_points_at_the_users_training_loop() -> None:
    import torch

    from initwatch import Watch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every ReLU output is zero: dead_units
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    watch = Watch(model, every=1, on_alert="warn")
    with pytest.warns(AlertWarning) as seen:
        for step in range(4):
            watch.begin_step(step)
            loss = model(torch.randn(8, 4)).sum()
            opt.zero_grad()
            loss.backward()
            watch.before_optimizer_step(opt)
            opt.step()
            watch.end_step(loss=loss)  # the line the warning names
    watch.close()
    ours = [w for w in seen if issubclass(w.category, AlertWarning)]
    assert ours and all(w.filename == __file__ for w in ours)


_SCRIPT = """
import sys, time
import tqdm
from initwatch.alerts import Alert
from initwatch.policy import AlertPolicy

a = Alert(10, "dead_units", "net.3", 0.99, 0.95, "warning", "99% of the outputs are zeros " * 8,
          "Use GELU instead of ReLU; or lower the learning rate ~10x (from 0.1 to 0.01)",
          extra={"cause": "dead_units/model"})
policy = AlertPolicy("warn")
bar = tqdm.tqdm(total=4, file=sys.stderr, mininterval=0, ascii=True)
for step in range(4):
    bar.update(1)
    if step == 1:
        policy.handle(a)  # the user's line
    if step == 2:
        policy.handle(Alert(20, "dead_units", "net.3", 0.99, 0.95, "warning", "m", "r",
                            repeat=1, first_step=10, extra={"cause": "dead_units/model"}))
bar.close()
"""


def test_console_prints_each_alert_once_wrapped_on_lines_of_its_own(tmp_path) -> None:
    """No logging configured, a live tqdm bar: the alert appears once (not also through
    Python's last-resort log handler), names the user's script, and starts on a line of its
    own (the bar is cleared first), wrapped to a readable width."""
    import os
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    err = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    ).stderr
    assert err.count("dead_units at net.3") == 1, err  # the "still" update prints nothing
    lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]
    head = [line for line in lines if "AlertWarning" in line]
    assert len(head) == 1 and head[0].startswith(f"{script}:15: AlertWarning: initwatch:"), err
    start = lines.index(head[0])
    body = lines[start + 1 : start + 8]
    assert body[0].strip() == "zero fraction 99% (alert above 95%)"
    assert "  what to do:" in body and "  - Use GELU instead of ReLU" in body
    assert max(len(line) for line in body) <= 88


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


def test_the_enums_spell_the_typed_vocabularies() -> None:
    # The run-time enums and the Literal types mypy checks are both spelled out (neither can
    # be derived from the other and stay checkable); this pins them to the same values.
    assert tuple(m.value for m in OnAlert) == VALID == get_args(vocabulary.OnAlertAction)
    assert tuple(m.value for m in Severity) == get_args(vocabulary.Severity)

"""The mistakes new users make (issue 15): each gets a clear error at construction, or a warning,
never a silently disabled monitor or a half-applied model."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
from builders import Tiny, gpt2, hf_dataset, hf_trainer, loader, scalar_steps, training_args
from builders import lightning_trainer as lit_trainer
from torch import nn

import initwatch
from initwatch import zoo
from initwatch.integrations.lightning import InitWatch
from initwatch.integrations.transformers import InitWatchCallback

ADAPTERS = [InitWatch, InitWatchCallback]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def watch(**kw):
    return initwatch.Watch(mlp(), **kw)


def lightning(**kw):
    return InitWatch(**kw)


def hf(**kw):
    return InitWatchCallback(**kw)


def interval_kw(make, value):
    return {"log_every_n_steps" if make is lightning else "logging_steps": value}


# ---- 1. every argument checked at construction, with a message that quotes, expects, shows ----

BAD = [
    # (keyword arguments, exception, what the message must contain)
    ({"rules": {"dead_frac": "high"}}, ValueError, "dead_frac='high'"),
    ({"rules": {"dead_frac": None}}, ValueError, "dead_frac=None"),
    ({"rules": {"dead_frac": 1.5}}, ValueError, "dead_frac=1.5"),
    ({"rules": {"dead_fraq": 0.9}}, ValueError, "'dead_fraq'"),
    ({"rules": {"persistence": 0}}, ValueError, "persistence=0"),
    ({"rules": {"history": 2.5}}, ValueError, "history=2.5"),
    ({"rules": "strict"}, ValueError, "rules='strict'"),
    ({"rules": True}, ValueError, "rules=True"),
    ({"update_sample": 0}, ValueError, "update_sample=0"),
    ({"update_sample": 10.5}, ValueError, "update_sample=10.5"),
    ({"logdir": 123}, TypeError, "logdir=123"),
    ({"logdir": ""}, TypeError, "logdir=''"),
    ({"anatomy": "encoder"}, TypeError, "anatomy='encoder'"),
    ({"layers": []}, ValueError, "layers=[]"),
    ({"layers": ["h.*", 3]}, ValueError, "layers=['h.*', 3]"),
    ({"on_alert": "panic"}, ValueError, "on_alert='panic'"),
]


@pytest.mark.parametrize("make", [watch, lightning, hf], ids=["Watch", "InitWatch", "HF"])
@pytest.mark.parametrize(("kw", "exc", "quoted"), BAD, ids=[repr(b[0]) for b in BAD])
def test_bad_arguments_are_refused_at_construction(make, kw, exc, quoted):
    with pytest.raises(exc) as info:
        make(**kw)
    message = str(info.value)
    assert quoted in message
    assert "expected" in message or "valid" in message
    assert "e.g." in message


@pytest.mark.parametrize("make", [watch, lightning, hf], ids=["Watch", "InitWatch", "HF"])
def test_a_logdir_that_is_a_file_is_refused_at_construction(make, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    inside = f"is inside {str(afile)!r}, which is a file"
    for given, what in ((afile, "is a file"), (afile / "run1", inside)):
        with pytest.raises(ValueError) as info:
            make(logdir=given)
        message = str(info.value)
        assert f"logdir={str(given)!r} {what}, not a directory" in message and "e.g." in message
    assert afile.read_text() == "keep me"  # nothing written over it
    make(logdir=tmp_path / "new" / "run")  # a directory that does not exist yet is fine


@pytest.mark.parametrize("make", [lightning, hf], ids=["InitWatch", "HF"])
@pytest.mark.parametrize("value", [2.5, 0, "50", True])
def test_bad_logging_interval_is_refused_not_truncated(make, value):
    name = next(iter(interval_kw(make, value)))
    with pytest.raises(ValueError, match=f"{name}={value!r}: expected a positive whole number"):
        make(**interval_kw(make, value))


@pytest.mark.parametrize("value", [2.5, 0, "50", True])
def test_bad_every_is_refused(value):
    with pytest.raises(ValueError, match=rf"every={value!r}: expected .*e\.g\. initwatch\.Watch"):
        watch(every=value)


def test_watch_refuses_a_non_module_writer_and_context():
    with pytest.raises(TypeError, match=r"model='net'.*torch\.nn\.Module"):
        initwatch.Watch("net")
    with pytest.raises(TypeError, match=r"writer='runs/x'.*logdir='runs/x'"):
        watch(writer="runs/x")
    with pytest.raises(TypeError, match=r"context=\{\}.*RunContext"):
        watch(context={})


@pytest.mark.parametrize("make", [lightning, hf], ids=["InitWatch", "HF"])
def test_scheme_options_are_checked_at_construction(make):
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sed'\] for scheme 'rezero'"):
        make(scheme="rezero", scheme_options={"sed": 0})
    with pytest.raises(ValueError, match=r"seed='0': expected a whole number"):
        make(scheme="deepnet", scheme_options={"seed": "0"})
    with pytest.raises(TypeError, match=r"scheme_options=\['seed'\]"):
        make(scheme="deepnet", scheme_options=["seed"])


def test_reinit_checks_its_arguments():
    model = zoo.build("bert", layers=2)
    with pytest.raises(TypeError, match=r"model=.*expected a torch\.nn\.Module"):
        initwatch.reinit({"w": 1}, "deepnet")
    with pytest.raises(ValueError, match=r"depth=0: expected a whole number >= 1"):
        initwatch.reinit(model, "deepnet", depth=0)
    with pytest.raises(ValueError, match=r"allow_pretrained='yes': expected True or False"):
        initwatch.reinit(model, "deepnet", allow_pretrained="yes")
    with pytest.raises(TypeError, match=r"anatomy='encoder'.*initwatch\.inspect"):
        initwatch.reinit(model, "deepnet", anatomy="encoder")
    assert initwatch.schemes.base.applied_scheme(model) is None  # nothing was touched


def test_inspect_checks_its_arguments():
    model = zoo.build("bert", layers=2)
    with pytest.raises(ValueError, match=r"layout='Post': expected one of 'post', 'pre', None"):
        initwatch.inspect(model, blocks="x", roles={"o": "y"}, layout="Post")
    with pytest.raises(ValueError, match=r"heads=0: expected a positive whole number"):
        initwatch.inspect(model, blocks="x", roles={"o": "y"}, heads=0)
    with pytest.raises(TypeError, match=r"roles=\['q'\]"):
        initwatch.inspect(model, blocks="x", roles=["q"])
    with pytest.raises(initwatch.AnatomyError, match=r"layout describe a custom model"):
        initwatch.inspect(model, layout="pre")  # silently ignored before
    with pytest.raises(ValueError, match=r"group=0: expected a positive whole number"):
        initwatch.inspect(model, group=0)
    with pytest.raises(ValueError, match=r"qkv_sizes=\(1, 2\): expected three positive"):
        initwatch.inspect(model, qkv_sizes=(1, 2))
    with pytest.raises(initwatch.AnatomyError, match=r"qkv_sizes, group describe a custom"):
        initwatch.inspect(model, qkv_sizes=(8, 8, 8), group=2)  # silently ignored before


def test_inspect_refuses_paths_that_name_no_module():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    model = nn.Module()
    model.layers = nn.ModuleList([layer, nn.TransformerEncoderLayer(8, 2, 16)])
    model.norm = nn.LayerNorm(8)
    roles = {"ffn_in": "linear1", "ffn_out": "linear2"}
    ok = initwatch.inspect(model, blocks="layers", roles=roles, final_norm="norm")
    assert ok.stacks[0].final_norm.path == "norm"
    with pytest.raises(initwatch.AnatomyError, match=r"final_norm='nrom'"):
        initwatch.inspect(model, blocks="layers", roles=roles, final_norm="nrom")
    with pytest.raises(initwatch.AnatomyError, match=r"'ffn' -> 'norm9' is no module"):
        initwatch.inspect(
            model, blocks="layers", roles=roles, norms={"ffn": "norm9"}, layout="post"
        )


def test_good_arguments_still_work():
    w = watch(every=2, rules={"dead_frac": 0.9, "persistence": 2}, layers=["0"], logdir=None)
    assert [t.target.info.name for t in w._probes.probes] == ["0"]
    w.close()
    assert InitWatch(log_every_n_steps=5, rules={"sat_frac": 0.6}).log_every_n_steps == 5
    assert InitWatchCallback(logging_steps=3, rules=False).logging_steps == 3


# ---- 2. a raising on_alert stops the run (hooks removed); internal failures warn once --------


def dead_mlp() -> nn.Sequential:
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every ReLU unit is dead: dead_units at the first frame
    return model


def abort(alert):
    raise RuntimeError(f"abort the run: {alert.kind}")


def hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_raising_on_alert_stops_a_plain_loop_with_hooks_removed():
    model = dead_mlp()
    watch = initwatch.Watch(model, every=1, on_alert=abort, rules={"persistence": 1})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert hooks(model) > 0
    steps = []
    with pytest.raises(RuntimeError, match="abort the run: dead_units"):
        for step in range(4):
            with watch.step(step, opt) as scope:
                scope.loss = model(torch.randn(8, 4)).pow(2).mean()
                scope.loss.backward()
                opt.step()
                opt.zero_grad()
            steps.append(step)
    assert steps == []  # stopped at step 0, where the alert fired
    assert hooks(model) == 0
    assert [a.kind for a in watch.alerts] == ["dead_units"]


class DeadLit(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = dead_mlp()

    def training_step(self, batch, batch_idx):
        return self.net(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def data(n: int = 16) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.randn(n, 4), batch_size=4)


@pytest.mark.filterwarnings("ignore")
def test_raising_on_alert_stops_a_lightning_fit_with_hooks_removed(tmp_path):
    module = DeadLit()
    cb = InitWatch(log_every_n_steps=1, on_alert=abort, rules={"persistence": 1})
    trainer = lit_trainer(tmp_path, [cb])
    with pytest.raises(RuntimeError, match="abort the run: dead_units"):
        trainer.fit(module, data())
    assert trainer.global_step == 1  # stopped after the step whose alert was raised
    assert hooks(module) == 0
    assert [a.kind for a in cb.alerts] == ["dead_units"]


class DeadHF(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = dead_mlp()

    def forward(self, x, labels=None):
        return {"loss": self.net(x).pow(2).mean()}


def dead_hf_trainer(tmp_path, model, cb, steps: int, optimizers=(None, None)):
    """A Trainer of ``steps`` steps of batch 4 over random rows for a :class:`DeadHF`."""
    from transformers import Trainer

    args = training_args(str(tmp_path), max_steps=steps, per_device_train_batch_size=4)
    rows = [{"x": torch.randn(4)} for _ in range(4 * steps)]
    return Trainer(
        model=model, args=args, train_dataset=rows, callbacks=[cb], optimizers=optimizers
    )


@pytest.mark.filterwarnings("ignore")
def test_raising_on_alert_stops_an_hf_train_with_hooks_removed(tmp_path):
    model = DeadHF()
    cb = InitWatchCallback(logging_steps=1, on_alert=abort, rules={"persistence": 1})
    trainer = dead_hf_trainer(tmp_path, model, cb, steps=4)
    with pytest.raises(RuntimeError, match="abort the run: dead_units"):
        trainer.train()
    assert trainer.state.global_step == 1
    assert hooks(model) == 0


def test_internal_failures_warn_once_with_where_and_the_traceback(caplog):
    model = mlp()
    watch = initwatch.Watch(model, every=1)

    def broken(frame, context):
        raise KeyError("boom")

    watch._rules.update = broken
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as seen, caplog.at_level(logging.DEBUG, "initwatch"):
        warnings.simplefilter("always")
        for step in range(3):  # training goes on
            with watch.step(step, opt) as scope:
                scope.loss = model(torch.randn(8, 4)).pow(2).mean()
                scope.loss.backward()
                opt.step()
    failures = [str(w.message) for w in seen if "failed and was skipped" in str(w.message)]
    assert len(failures) == 1
    assert "KeyError('boom')" in failures[0]
    assert "test_mistakes.py" in failures[0] and "in broken" in failures[0]
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1 and records[0].exc_info[0] is KeyError
    assert watch.step_index == 2
    watch.close()


# ---- 3. a run directory always exists, one run per fit ------------------------------------------


def event_steps(logdir, tag="initwatch/global/grad_norm_global") -> list[int]:
    return scalar_steps(logdir)[tag]


@pytest.mark.filterwarnings("ignore")
def test_fast_dev_run_writes_under_default_root_dir_not_a_none_directory(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    root = tmp_path / "root"
    trainer = L.Trainer(
        fast_dev_run=2,
        callbacks=[InitWatch(log_every_n_steps=1)],
        default_root_dir=root,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    assert trainer.log_dir is None  # what made str(None) a directory name
    trainer.fit(DeadLit(), data())
    assert list(cwd.iterdir()) == []  # no ./None/initwatch_logs
    assert event_steps(root / "initwatch_logs" / "version_0") == [0, 1]


@pytest.mark.filterwarnings("ignore")
def test_two_fits_without_a_logger_write_two_runs(tmp_path):
    module, cb = DeadLit(), InitWatch(log_every_n_steps=2)
    lit_trainer(tmp_path, [cb], max_steps=4).fit(module, data())
    lit_trainer(tmp_path, [cb], max_steps=4).fit(module, data())
    runs = tmp_path / "initwatch_logs"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    steps = event_steps(runs / "version_0")  # was 0,1,3,0,1,3 in one run
    assert steps[0] == 0 and steps == sorted(set(steps))
    assert event_steps(runs / "version_1") == steps


# ---- 4. resume errors that explain themselves; the alert history survives a new cadence ---------

ALWAYS = {"persistence": 1, "grad_norm_ceiling": 1e-9}  # an exploding_gradient alert each frame


class TinyEncoder(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = zoo.build("torch_encoder", layers=2, hidden=16, heads=2)

    def training_step(self, batch, batch_idx):
        return self.net(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def seqs() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.randn(16, 5, 16), batch_size=4)


def saved_fit(tmp_path, cb, max_steps: int):
    """A ``max_steps`` fit of a :class:`TinyEncoder` under ``cb``, saved: the checkpoint."""
    first = lit_trainer(tmp_path, [cb], max_steps=max_steps)
    first.fit(TinyEncoder(), seqs())
    ckpt = tmp_path / "rezero.ckpt"
    first.save_checkpoint(ckpt)
    return ckpt


@pytest.mark.filterwarnings("ignore")
def test_lightning_resume_without_the_scheme_names_it_and_the_fix(tmp_path):
    cb = InitWatch("rezero", log_every_n_steps=1, on_alert="ignore", rules=ALWAYS)
    ckpt = saved_fit(tmp_path, cb, max_steps=2)
    before = [(a.kind, a.step) for a in cb.alerts]
    assert before

    for wrong in (None, "deepnet"):
        with pytest.raises(initwatch.InitWatchError) as info:
            lit_trainer(tmp_path, [InitWatch(wrong)], max_steps=4).fit(
                TinyEncoder(), seqs(), ckpt_path=ckpt
            )
        message = str(info.value)
        assert "scheme 'rezero'" in message
        assert "InitWatch(scheme='rezero')" in message and "initwatch.restore" in message
        assert "Missing key" not in message


@pytest.mark.filterwarnings("ignore")
def test_lightning_resume_with_a_new_cadence_keeps_the_alert_history(tmp_path):
    cb = InitWatch("rezero", log_every_n_steps=1, on_alert="ignore", rules=ALWAYS)
    ckpt = saved_fit(tmp_path, cb, max_steps=2)
    before = [(a.kind, a.step) for a in cb.alerts]
    assert before
    again = InitWatch("rezero", log_every_n_steps=3, on_alert="ignore", rules=ALWAYS)
    lit_trainer(tmp_path, [again], max_steps=4).fit(TinyEncoder(), seqs(), ckpt_path=ckpt)
    assert [(a.kind, a.step) for a in again.alerts][: len(before)] == before


@pytest.mark.filterwarnings("ignore")
def test_hf_resume_without_the_scheme_names_it_and_the_fix(tmp_path):
    def make(cb, max_steps=2):
        kw = dict(max_steps=max_steps, logging_steps=1, save_strategy="steps", save_steps=2)
        return hf_trainer(tmp_path, gpt2(), [cb], hf_dataset(8), **kw)

    make(InitWatchCallback("rezero")).train()
    ckpt = tmp_path / "out" / "checkpoint-2"
    assert ckpt.is_dir()
    with pytest.raises(initwatch.InitWatchError) as info:
        make(InitWatchCallback(None), max_steps=4).train(resume_from_checkpoint=str(ckpt))
    message = str(info.value)
    assert "scheme 'rezero'" in message and "InitWatchCallback(scheme='rezero')" in message
    assert "initwatch.restore" in message
    # the right scheme resumes
    make(InitWatchCallback("rezero"), max_steps=4).train(resume_from_checkpoint=str(ckpt))


# ---- 5. all or nothing; one watcher per model ---------------------------------------------------


def test_two_hf_callbacks_are_refused_before_anything_is_applied(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = zoo.build("gpt2", layers=2, hidden=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(str(tmp_path), report_to="none", use_cpu=True)
    callbacks = [InitWatchCallback("rezero"), InitWatchCallback("t-fixup")]
    with pytest.raises(initwatch.InitWatchError, match="two initwatch callbacks on one trainer"):
        Trainer(model=model, args=args, callbacks=callbacks)
    assert initwatch.schemes.base.applied_scheme(model) is None
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    # the corrected retry works on the same model
    good = InitWatchCallback("rezero")
    Trainer(model=model, args=args, callbacks=[good])
    assert good.report.scheme == "rezero"


@pytest.mark.filterwarnings("ignore")
def test_two_lightning_callbacks_are_refused_before_anything_is_applied(tmp_path):
    module = TinyEncoder()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    callbacks = [InitWatch("rezero"), InitWatch(None)]
    with pytest.raises(initwatch.InitWatchError, match="two initwatch callbacks on one trainer"):
        lit_trainer(tmp_path, callbacks).fit(module, seqs())
    assert initwatch.schemes.base.applied_scheme(module) is None
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    with pytest.raises(RuntimeError, match="state_key"):  # one scheme: Lightning refuses
        lit_trainer(tmp_path, [InitWatch(None), InitWatch(None)])
    good = InitWatch("t-fixup")
    lit_trainer(tmp_path, [good], max_steps=1).fit(module, seqs())
    assert good.report.scheme == "t-fixup"


@pytest.mark.filterwarnings("ignore")
def test_a_refused_lightning_resume_leaves_the_model_as_it_was(tmp_path):
    ckpt = saved_fit(tmp_path, InitWatch("rezero"), max_steps=1)
    module = TinyEncoder()
    with pytest.raises(initwatch.InitWatchError, match="scheme 'rezero'"):
        lit_trainer(tmp_path, [InitWatch("deepnet")]).fit(module, seqs(), ckpt_path=ckpt)
    assert initwatch.schemes.base.applied_scheme(module) is None  # deepnet was not applied
    retry = InitWatch("rezero")
    lit_trainer(tmp_path, [retry], max_steps=2).fit(module, seqs(), ckpt_path=ckpt)
    assert retry.scheme_outcome.name == "APPLIED"


def test_a_second_open_watch_on_one_model_warns():
    model = mlp()
    first = initwatch.Watch(model)
    with pytest.warns(RuntimeWarning, match="already watched by an open Watch"):
        second = initwatch.Watch(model)
    second.close()
    first.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        initwatch.Watch(model).close()  # the earlier ones are closed: no warning


def test_a_failing_watch_construction_leaves_no_hook(monkeypatch):
    import initwatch.watch as watch_module

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(watch_module, "_make_sink", explode)
    model = mlp()
    with pytest.raises(OSError, match="disk full"):
        initwatch.Watch(model, logdir="runs")
    assert hooks(model) == 0


# ---- 6. errors that fit the model -----------------------------------------------------------------


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


@pytest.mark.parametrize("model", [mlp, cnn], ids=["mlp", "cnn"])
def test_a_scheme_on_a_non_transformer_says_watch_with_scheme_none(model):
    with pytest.raises(initwatch.AnatomyError) as info:
        initwatch.reinit(model(), "rezero")
    message = str(info.value)
    assert "no transformer blocks" in message and "scheme=None" in message
    assert "roles" not in message  # not "describe q/k/v roles"


@pytest.mark.filterwarnings("ignore")
def test_a_scheme_on_a_non_transformer_in_the_callbacks(tmp_path):
    from transformers import Trainer, TrainingArguments

    with pytest.raises(initwatch.AnatomyError, match=r"no transformer blocks.*scheme=None"):
        lit_trainer(tmp_path, [InitWatch("deepnet")]).fit(DeadLit(), data())
    args = TrainingArguments(str(tmp_path), report_to="none", use_cpu=True)
    with pytest.raises(initwatch.AnatomyError, match=r"no transformer blocks.*scheme=None"):
        Trainer(model=DeadHF(), args=args, callbacks=[InitWatchCallback("t-fixup")])


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(8, 8) for _ in range(4))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.fc1, self.fc2 = Attention(), nn.Linear(8, 16), nn.Linear(16, 8)
        self.norm1, self.norm2 = nn.LayerNorm(8), nn.LayerNorm(8)


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])


def test_a_custom_transformer_is_told_to_describe_it_and_pass_anatomy():
    with pytest.raises(initwatch.AnatomyError) as info:
        initwatch.reinit(Custom(), "rezero")
    message = str(info.value)
    assert "initwatch.inspect(model, blocks='layers'" in message
    assert "InitWatch(scheme='rezero', anatomy=anatomy)" in message
    assert "InitWatchCallback(scheme='rezero', anatomy=anatomy)" in message


# ---- 7. trainable parameters the optimizer does not hold ----------------------------------------


def not_in_optimizer(seen) -> list[str]:
    return [str(w.message) for w in seen if "in no param group of the optimizer" in str(w.message)]


def test_rezero_gates_added_after_the_optimizer_are_reported_once():
    model = zoo.build("torch_encoder", layers=2, hidden=16, heads=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # built before the scheme: no gates
    initwatch.reinit(model, "rezero")
    watch = initwatch.Watch(model, every=1, rules=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for step in range(3):
            with watch.step(step, opt) as scope:
                scope.loss = model(torch.randn(2, 5, 16)).pow(2).mean()
                scope.loss.backward()
                opt.step()
    reports = not_in_optimizer(seen)
    assert len(reports) == 1
    assert "2 trainable parameter(s)" in reports[0]
    assert "layers.0.rezero_alpha" in reports[0] and "layers.1.rezero_alpha" in reports[0]
    assert watch.context.extra["params_not_in_optimizer"] == [
        "layers.0.rezero_alpha",
        "layers.1.rezero_alpha",
    ]
    watch.close()


class HalfOptimized(DeadLit):
    def configure_optimizers(self):
        return torch.optim.SGD(self.net[0].parameters(), lr=0.1)  # forgot net[2]


def test_lightning_reports_parameters_missing_from_the_optimizer(tmp_path):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lit_trainer(tmp_path, [InitWatch(log_every_n_steps=1, rules=False)]).fit(
            HalfOptimized(), data()
        )
    reports = not_in_optimizer(seen)
    assert len(reports) == 1 and "net.2.weight, net.2.bias" in reports[0]


def test_hf_reports_parameters_missing_from_the_optimizer(tmp_path):
    model = DeadHF()
    opt = torch.optim.SGD(model.net[0].parameters(), lr=0.1)
    cb = InitWatchCallback(logging_steps=1, rules=False)
    trainer = dead_hf_trainer(tmp_path, model, cb, steps=2, optimizers=(opt, None))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.train()
    reports = not_in_optimizer(seen)
    assert len(reports) == 1 and "net.2.weight, net.2.bias" in reports[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_internal_failure_in_an_adapter_hook_never_stops_the_fit(tmp_path, monkeypatch):
    from initwatch.integrations import lightning as iw_lightning

    def broken(*args, **kwargs):
        raise ZeroDivisionError("adapter bug")

    monkeypatch.setattr(iw_lightning, "_step_scheduler", broken)  # used in on_before_optimizer_step
    cb = InitWatch(log_every_n_steps=1, rules=False)
    trainer = lit_trainer(tmp_path, [cb], max_steps=4)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trainer.fit(DeadLit(), data())
    assert trainer.global_step == 4  # the fit ran to the end
    failures = [str(w.message) for w in seen if "failed and was skipped" in str(w.message)]
    assert len(failures) == 1
    assert "on_before_optimizer_step" in failures[0] and "ZeroDivisionError" in failures[0]
    assert "in broken" in failures[0]


@pytest.mark.filterwarnings("ignore")
def test_a_layers_pattern_that_matches_nothing_names_the_callers_api_and_a_real_pattern(
    tmp_path,
):
    presets = "Expected 'default', 'blocks' or 'linear', or module paths"
    with pytest.raises(ValueError, match="'nonexistent.*' matches no module") as lit:
        lit_trainer(tmp_path, [InitWatch(layers="nonexistent.*")]).fit(Tiny(), loader())
    assert presets in str(lit.value) and "('default'" not in str(lit.value)
    assert str(lit.value).endswith("e.g. InitWatch(layers=['net.layers.*'])"), lit.value
    with pytest.raises(ValueError, match="'nonexistent.*' matches no module") as hf:
        hf_trainer(tmp_path, gpt2(), [InitWatchCallback(layers="nonexistent.*")]).train()
    assert presets in str(hf.value) and "'root" not in str(hf.value)
    assert str(hf.value).endswith("e.g. InitWatchCallback(layers=['transformer.h.*'])"), hf.value
    with pytest.raises(ValueError, match="matches no module") as plain:
        initwatch.Watch(gpt2(), layers=["nonexistent.*"])
    assert str(plain.value).endswith("e.g. initwatch.Watch(model, layers=['transformer.h.*'])")
    for pattern in ("transformer.h.*", "net.layers.*"):  # the suggested patterns do match
        model = gpt2() if pattern.startswith("transformer") else Tiny()
        initwatch.Watch(model, layers=[pattern]).close()


@pytest.mark.parametrize(
    ("make", "call"), [(InitWatch, "InitWatch"), (InitWatchCallback, "InitWatchCallback")]
)
def test_an_unknown_scheme_in_the_callbacks_suggests_the_closest_in_the_callers_call(make, call):
    with pytest.raises(
        ValueError, match=r"unknown scheme 'rezro' \(did you mean 'rezero'\?\)"
    ) as e:
        make(scheme="rezro")
    assert str(e.value).endswith(f"e.g. {call}(scheme='rezero')") and "reinit" not in str(e.value)

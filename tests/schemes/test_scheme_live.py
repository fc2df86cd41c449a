"""A scheme is reported applied only when it is live: hooks that did not run (a stale compiled
graph) are detected at the first measured step; ddp_spawn with a scheme is refused up front."""

from __future__ import annotations

import gc
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from builders import lightning_trainer
from torch import nn

import initwatch
from initwatch.errors import InitWatchError
from initwatch.integrations import UnsupportedStrategyError
from initwatch.integrations.lightning import InitWatch, SchemeOutcome

D = 16


def encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(D, 2, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    gc.collect()  # compiled graphs and trainers hold tensors: free them before the next test


def _one_step(model: nn.Module, run: nn.Module, watch: initwatch.Watch) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    watch.begin_step(0)
    loss = run(torch.randn(2, 5, D)).pow(2).mean()
    loss.backward()
    watch.before_optimizer_step(opt)
    opt.step()
    watch.end_step(loss=loss)


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_a_stale_compiled_graph_is_detected_at_the_first_measured_step() -> None:
    first = encoder()
    torch.compile(first, backend="eager")(torch.randn(2, 5, D))  # an earlier compiled run
    model = encoder()
    initwatch.reinit(model, "deepnet", seed=0)
    watch = initwatch.Watch(model, every=1, rules=False)
    with pytest.warns(RuntimeWarning, match=r"torch\._dynamo\.reset\(\).*") as caught:
        _one_step(model, torch.compile(model, backend="eager"), watch)
    assert watch.hooks_live is False
    assert any("scheme 'deepnet' is not live" in str(w.message) for w in caught)
    watch.close()


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_hooks_attached_before_compiling_are_live() -> None:
    model = encoder()
    watch = initwatch.Watch(model, every=1, rules=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        _one_step(model, torch.compile(model, backend="eager"), watch)
    assert watch.hooks_live is True
    watch.close()


class Compiled(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = encoder()
        self.head = nn.Linear(D, 1)
        self.run = None

    def training_step(self, batch, batch_idx):
        if self.run is None:  # compiled at the first step, after the callback attached
            self.run = torch.compile(self.net, backend="eager")
        x, y = batch
        return F.mse_loss(self.head(self.run(x)).squeeze(-1).mean(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _fit(module: L.LightningModule, callback: InitWatch, tmp_path, **kw) -> None:
    data = torch.utils.data.TensorDataset(torch.randn(8, 5, D), torch.randn(8))
    trainer = lightning_trainer(tmp_path, [callback], max_steps=2, log_every_n_steps=1, **kw)
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_lightning_refuses_to_train_a_scheme_that_is_not_live(tmp_path) -> None:  # noqa: ANN001
    torch.compile(encoder(), backend="eager")(torch.randn(4, 5, D))  # a previous compiled fit
    callback = InitWatch(scheme="deepnet", logdir=str(tmp_path / "tb"))
    with pytest.raises(InitWatchError, match=r"not live.*torch\._dynamo\.reset\(\)"):
        _fit(Compiled(), callback, tmp_path)
    assert callback.scheme_outcome is SchemeOutcome.NOT_LIVE


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_lightning_scheme_compiled_after_the_callback_is_applied(tmp_path) -> None:  # noqa: ANN001
    callback = InitWatch(scheme="deepnet", logdir=str(tmp_path / "tb"))
    _fit(Compiled(), callback, tmp_path)
    assert callback.scheme_outcome is SchemeOutcome.APPLIED


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_multiprocessing_strategies_with_a_scheme_are_refused_up_front(strategy: str) -> None:
    trainer = L.Trainer(
        strategy=strategy, accelerator="cpu", devices=2, logger=False, enable_checkpointing=False
    )
    module = Compiled()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(UnsupportedStrategyError, match="strategy='ddp'"):
        InitWatch(scheme="rezero").setup(trainer, module, "fit")
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    InitWatch(scheme=None).setup(trainer, module, "fit")  # watching alone is fine


def test_hf_callback_raises_when_its_scheme_is_not_live() -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from initwatch.integrations.transformers import InitWatchCallback

    callback = InitWatchCallback(scheme="rezero")
    model = encoder()
    watch = callback._start_watch(model, context=initwatch.RunContext(), every=1)
    watch.begin_step(0)
    # a forward the hooks did not see: what a graph compiled before they were attached does
    for probe in watch._probes.probes:
        probe.target.module._forward_hooks.clear()
    model(torch.randn(2, 5, D)).pow(2).mean().backward()
    watch.add_loss(torch.tensor(1.0))
    args = TrainingArguments(output_dir="unused", report_to=[])
    with pytest.raises(InitWatchError, match=r"'rezero' is not live"):
        callback.on_step_end(args, TrainerState(), TrainerControl(), model=model)
    assert watch.hooks_live is False
    callback.close()

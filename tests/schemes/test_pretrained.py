"""Knowing a fine-tune however it was loaded: trained weights are recognised from their
statistics (and loading markers), a scheme on them is refused, and the fine-tune context
follows the same decision; a fresh init, saved and reloaded, is not mistaken for one."""

from __future__ import annotations

import copy
import math
import warnings

import lightning as L
import pytest
import torch
from builders import hf_dataset, hf_trainer, lightning_trainer, plain_loop
from torch import nn
from transformers import GPT2LMHeadModel, Trainer

import initwatch
from initwatch import PretrainedWeightsError, Watch, zoo
from initwatch.integrations.lightning import InitWatch
from initwatch.integrations.transformers import InitWatchCallback
from initwatch.schemes.pretrained import Z, _spread_z, decide_pretrained, judge


def trained_gpt2(trained_state) -> GPT2LMHeadModel:  # noqa: ANN001
    model = zoo.build("gpt2")
    model.load_state_dict(trained_state("gpt2"))
    return model


# ---- the statistics -----------------------------------------------------------------------------


def test_fresh_draws_are_never_flagged_and_the_tolerance_is_the_sampling_noise() -> None:
    # 300 pairs of independent init draws (normal and uniform, 32x32 to 64x128): each test
    # statistic is in standard errors, so none may reach Z (P ~ 1e-9 per test under a normal
    # approximation; the largest seen here is the sampling noise of 1200 tests, ~4).
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for i in range(300):
        shape = [(32, 32), (64, 64), (64, 128)][i % 3]
        if i % 2:
            a, b = (torch.randn(2, *shape, generator=g) * 0.02).unbind(0)
        else:
            a, b = ((torch.rand(2, *shape, generator=g) * 2 - 1) / math.sqrt(shape[1])).unbind(0)
        v = judge("w", a, b)
        worst = max(worst, v.score)
        assert not v.trained, v.describe()
    assert worst < Z / 1.5


def test_the_norm_spread_z_has_a_normal_tail_on_small_matrices() -> None:
    # The spread of k squared norms is skewed like a chi-square of ~k - 1 degrees of freedom:
    # as (ratio - 1) / se, i.i.d. 32 x 32 matrices went beyond 3 (and beyond 5, where a fresh
    # BERT then had a weight "look trained") several times as often as a normal z. Here the
    # count beyond 3 over 4000 i.i.d. normal 8 x 64 matrices (both directions: 8 norms of 64
    # entries, 64 of 8) must stay within 5 binomial standard deviations of a normal's tail
    # (expected 10.8; measured 14; the plain ratio gave 49).
    g = torch.Generator().manual_seed(0)
    draws, tail = 4000, 1.35e-3  # P(N(0, 1) > 3)
    beyond = sum(
        z > 3
        for _ in range(draws)
        for z in _spread_z(torch.randn(8, 64, generator=g, dtype=torch.float64))
    )
    expected = 2 * draws * tail
    assert beyond <= expected + 5 * math.sqrt(expected), beyond


def test_each_test_flags_what_training_does_to_a_matrix() -> None:
    g = torch.Generator().manual_seed(0)
    init = torch.randn(64, 64, generator=g) * 0.02
    fresh = torch.randn(64, 64, generator=g) * 0.02
    assert not judge("w", fresh, init).trained
    # scale: 1.2x the init std is 0.18 in log units; the standard error is ~0.0088 per sample
    v = judge("w", fresh * 1.2, init)
    assert v.trained and v.reasons[0].startswith("std 0.024 vs 0.02 at init")
    # units of unequal size (rows), input features of unequal importance (columns)
    rows = judge("w", fresh * torch.linspace(0.3, 2.0, 64)[:, None], None)
    cols = judge("w", fresh * torch.linspace(0.3, 2.0, 64)[None, :], None)
    assert rows.trained and "row norms" in rows.reasons[0]
    assert cols.trained and "column norms" in cols.reasons[0]
    # heavy tails at the init's scale: kurtosis
    t = torch.distributions.StudentT(3.0).sample((64, 64))
    heavy = judge("w", t / t.std() * 0.02, init)
    assert heavy.trained and any(r.startswith("kurtosis") for r in heavy.reasons)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "bart", "vit", "torch_encoder"])
def test_fresh_models_are_not_pretrained(family: str) -> None:
    d = decide_pretrained(zoo.build(family))
    assert not d.pretrained and d.source == "init" and d.verdicts
    assert all(v.init_std is not None for v in d.verdicts)  # each compared with its own init


def test_a_hand_made_init_of_a_plain_model_is_not_taken_for_training() -> None:
    # nanoGPT-style normal(0.02), a gain of 4, xavier: i.i.d. draws at another scale than
    # PyTorch's default are still an initialization (the scale is only tested against a
    # Hugging Face model's own _init_weights)
    for init in (
        lambda w: nn.init.normal_(w, std=0.02),
        lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5)).mul_(4.0),
        nn.init.xavier_normal_,
    ):
        model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(4)])
        with torch.no_grad():
            for layer in model:
                init(layer.weight)
        d = decide_pretrained(model)
        assert not d.pretrained and not d.trained, d.describe()
        assert initwatch.is_pretrained(model) is False


def test_the_reference_draw_leaves_the_model_and_the_random_state_alone() -> None:
    model = zoo.build("gpt2")
    before = copy.deepcopy(model.state_dict())
    state = torch.random.get_rng_state()
    decide_pretrained(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_the_reference_draw_seeds_no_accelerator_generator(monkeypatch) -> None:  # noqa: ANN001
    # torch.manual_seed inside the fork would also re-seed every GPU's generator (or queue that
    # for CUDA's lazy start): fork_rng restores only the devices it was given, so a model on the
    # CPU (devices=[]) or spread over GPUs would have left the caller's GPU streams changed.
    seeded: list[tuple[str, int]] = []
    for where in ("cuda", "xpu"):
        mod = getattr(torch, where)
        monkeypatch.setattr(mod, "manual_seed_all", lambda s, w=where: seeded.append((w, s)))
    monkeypatch.setattr(torch.mps, "manual_seed", lambda s: seeded.append(("mps", s)))
    d = decide_pretrained(zoo.build("gpt2"))
    assert d.verdicts and all(v.init_std is not None for v in d.verdicts)
    assert seeded == []


def test_gpt2_c_proj_is_compared_with_its_depth_scaled_init() -> None:
    # GPT-2 draws c_proj with initializer_range / sqrt(2 n_layer), from its parent module
    d = decide_pretrained(zoo.build("gpt2", layers=8))
    v = next(v for v in d.verdicts if v.name.endswith("attn.c_proj.weight"))
    assert v.init_std == pytest.approx(0.02 / math.sqrt(16), rel=0.1) and not v.trained


# ---- every way of loading trained weights --------------------------------------------------------


def _refused(model: nn.Module) -> str:
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(PretrainedWeightsError) as err:
        initwatch.reinit(model, "t-fixup")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the refused call changed {k}"
    return str(err.value)


def test_trained_weights_are_recognised_however_they_were_loaded(tmp_path, trained_state) -> None:  # noqa: ANN001
    from safetensors.torch import load_model, save_model

    source = trained_gpt2(trained_state)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    save_model(source, str(tmp_path / "w.safetensors"))
    source.save_pretrained(tmp_path / "hf")

    by_torch_load = zoo.build("gpt2")
    by_torch_load.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    by_safetensors = zoo.build("gpt2")
    load_model(by_safetensors, str(tmp_path / "w.safetensors"))
    by_hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    by_deepcopy = copy.deepcopy(by_hf)
    for name, model in [
        ("load_state_dict", by_torch_load),
        ("safetensors", by_safetensors),
        ("from_pretrained", by_hf),
        ("deepcopy", by_deepcopy),
    ]:
        d = decide_pretrained(model)
        assert d.pretrained and d.source == "weights", name
        msg = _refused(model)
        assert "weight matrices look trained" in msg and "pretrained=False" in msg, name
        assert "allow_pretrained=True" in msg and "scheme=None" in msg, name


def test_a_fresh_init_saved_and_reloaded_is_not_refused(tmp_path) -> None:  # noqa: ANN001
    from safetensors.torch import load_model, save_model

    fresh = zoo.build("gpt2")
    fresh.save_pretrained(tmp_path / "hf")
    save_model(fresh, str(tmp_path / "w.safetensors"))
    by_hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    d = decide_pretrained(by_hf)
    assert d.marked and not d.pretrained  # the loader marked it; the values are an init
    assert "look like an initialization" in d.describe()
    assert initwatch.reinit(by_hf, "t-fixup").parameters
    by_safetensors = zoo.build("gpt2")
    load_model(by_safetensors, str(tmp_path / "w.safetensors"))
    assert initwatch.reinit(by_safetensors, "rezero").scheme == "rezero"


def test_pretrained_argument_of_reinit(trained_state) -> None:  # noqa: ANN001
    with pytest.raises(PretrainedWeightsError, match="pretrained=True was passed"):
        initwatch.reinit(zoo.build("gpt2"), "t-fixup", pretrained=True)
    assert initwatch.reinit(trained_gpt2(trained_state), "t-fixup", pretrained=False).parameters
    with pytest.raises(ValueError, match="pretrained='yes'"):
        initwatch.reinit(zoo.build("gpt2"), "t-fixup", pretrained="yes")


# ---- the fine-tune context follows the same decision ---------------------------------------------


def _adamw_run(model: nn.Module, lr: float, steps: int = 5, **watch_kw) -> Watch:  # noqa: ANN003
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    watch = Watch(model, every=1, **watch_kw)
    ids = torch.randint(3, 90, (4, 12), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the alerts' own warnings
        plain_loop(watch, opt, steps, lambda step: model(input_ids=ids, labels=ids).loss)
    watch.close()
    return watch


def test_weights_loaded_with_load_state_dict_get_fine_tune_thresholds(trained_state) -> None:  # noqa: ANN001
    # AdamW at lr 2e-3 moves the trained blocks by ~0.02x their norm per step: between the
    # fine-tune threshold (0.01) and the from-scratch one (0.1).
    tuned = _adamw_run(trained_gpt2(trained_state), lr=2e-3)
    assert tuned.context.pretrained and tuned.context.extra["pretrained_source"] == "weights"
    high = [a for a in tuned.alerts if a.kind == "update_ratio_high"]
    assert high and all(0.01 < a.value < 0.1 for a in high)
    scratch = _adamw_run(trained_gpt2(trained_state), lr=2e-3, pretrained=False)
    assert not scratch.context.pretrained
    assert not any(a.kind == "update_ratio_high" for a in scratch.alerts)


def test_watch_pretrained_argument_and_resume_keep_the_decision(trained_state) -> None:  # noqa: ANN001
    assert Watch(zoo.build("gpt2"), rules=False, pretrained=True).context.pretrained
    first = Watch(zoo.build("gpt2"), rules=False)
    assert not first.context.pretrained
    # resuming a from-scratch run: its own weights are trained by now, the run is still one
    resumed = Watch(trained_gpt2(trained_state), rules=False)
    assert resumed.context.pretrained
    resumed.load_state_dict(first.state_dict())
    assert not resumed.context.pretrained
    with pytest.raises(ValueError, match="pretrained=1"):
        Watch(zoo.build("gpt2"), pretrained=1)


# ---- the frameworks --------------------------------------------------------------------------------


class Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.model = zoo.build("gpt2")

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self.model(input_ids=batch, labels=batch).loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


def _pl_trainer(tmp_path, callbacks) -> L.Trainer:  # noqa: ANN001
    return lightning_trainer(tmp_path, callbacks, max_steps=2)


def _ids() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.randint(0, 96, (8, 8)), batch_size=2)


def test_lightning_load_from_checkpoint_is_a_fine_tune(tmp_path, trained_state) -> None:  # noqa: ANN001
    source = Module()
    source.model.load_state_dict(trained_state("gpt2"))
    ckpt = tmp_path / "trained.ckpt"
    torch.save(
        {"state_dict": source.state_dict(), "pytorch-lightning_version": L.__version__}, ckpt
    )
    loaded = Module.load_from_checkpoint(ckpt)
    with pytest.raises(PretrainedWeightsError, match="look trained"):
        _pl_trainer(tmp_path, [InitWatch("t-fixup")]).fit(loaded, _ids())
    cb = InitWatch(None, log_every_n_steps=1)
    _pl_trainer(tmp_path, [cb]).fit(loaded, _ids())
    assert cb.context.pretrained and cb.context.extra["pretrained_source"] == "weights"
    # the explicit override: these weights are to be re-initialized
    forced = InitWatch("t-fixup", pretrained=False)
    _pl_trainer(tmp_path, [forced]).fit(Module.load_from_checkpoint(ckpt), _ids())
    assert forced.report is not None and not forced.context.pretrained


def test_lightning_pretrained_argument(tmp_path) -> None:  # noqa: ANN001
    cb = InitWatch(None, log_every_n_steps=1, pretrained=True)
    _pl_trainer(tmp_path, [cb]).fit(Module(), _ids())
    assert cb.context.pretrained
    with pytest.raises(PretrainedWeightsError, match="pretrained=True was passed"):
        _pl_trainer(tmp_path, [InitWatch("rezero", pretrained=True)]).fit(Module(), _ids())
    with pytest.raises(ValueError, match="pretrained='no'"):
        InitWatch(None, pretrained="no")


def _hf(tmp_path, model, callbacks) -> Trainer:  # noqa: ANN001
    return hf_trainer(
        tmp_path, model, callbacks, hf_dataset(8), max_steps=2, logging_steps=1, seed=42
    )


def test_hf_trainer_recognises_weights_loaded_with_load_state_dict(tmp_path, trained_state) -> None:  # noqa: ANN001
    with pytest.raises(PretrainedWeightsError, match="look trained"):
        _hf(tmp_path, trained_gpt2(trained_state), [InitWatchCallback("t-fixup")])
    cb = InitWatchCallback(None)
    _hf(tmp_path, trained_gpt2(trained_state), [cb]).train()
    assert cb.context.pretrained and cb.context.extra["pretrained_source"] == "weights"
    forced = InitWatchCallback("t-fixup", pretrained=False)
    _hf(tmp_path, trained_gpt2(trained_state), [forced]).train()
    assert forced.report is not None and not forced.context.pretrained


def test_hf_pretrained_argument(tmp_path) -> None:  # noqa: ANN001
    cb = InitWatchCallback(None, pretrained=True)
    _hf(tmp_path, zoo.build("gpt2"), [cb]).train()
    assert cb.context.pretrained
    with pytest.raises(PretrainedWeightsError, match="pretrained=True was passed"):
        _hf(tmp_path, zoo.build("gpt2"), [InitWatchCallback("t-fixup", pretrained=True)])
    with pytest.raises(ValueError, match="pretrained='no'"):
        InitWatchCallback(None, pretrained="no")


def test_batchnorm_evidence_affine_parameters_and_running_statistics() -> None:
    # a random init of the affine parameters (DCGAN's normal_(1, 0.02)) on a model never run
    model = nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32))
    with torch.no_grad():
        model[1].weight.normal_(1.0, 0.02)
    assert decide_pretrained(model).source == "init"
    # running statistics moved (a forward in train mode) are a weak marker: they decide only
    # where no matrix could be examined
    bn_only = nn.Sequential(nn.BatchNorm1d(4))
    bn_only(torch.randn(8, 4))
    assert (decide_pretrained(bn_only).pretrained, decide_pretrained(bn_only).source) == (
        True,
        "markers",
    )
    assert decide_pretrained(bn_only[0], pretrained=False).pretrained is False
    # affine parameters that differ across channels after batches: trained
    fresh = nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32))
    fresh(torch.randn(8, 32))
    assert not decide_pretrained(fresh).pretrained
    with torch.no_grad():
        fresh[1].bias[3] = 1e-3
    d = decide_pretrained(fresh)
    assert (d.pretrained, d.source, d.norms) == (
        True,
        "norms",
        ["1 (bias 0..0.001 over 32 channels after 1 batches)"],
    )
    assert "1 BatchNorm layers were trained" in d.describe()
    no_stats = nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32, track_running_stats=False))
    with torch.no_grad():
        no_stats[1].bias[3] = 1e-3
    assert not decide_pretrained(no_stats).pretrained  # no running statistics: no evidence

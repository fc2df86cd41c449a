"""Watching what decides a fine-tune: task heads (a pooler's tanh) are covered by the saturation
rule, and zero-started schemes (ReZero) get a grace period for the exploding and too-small
update rules while their gates open; healthy fine-tunes stay silent."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import transformers as tf
from builders import hf_trainer, lightning_trainer, plain_loop
from transformers import Trainer

import initwatch
from initwatch import Watch, zoo
from initwatch.integrations.lightning import InitWatch
from initwatch.integrations.transformers import InitWatchCallback


def bert_classifier() -> tf.BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = tf.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=96,
        num_labels=2,
    )
    return tf.BertForSequenceClassification(cfg)


def batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 90, (n, 12), generator=g)
    return [{"input_ids": r, "labels": (r[0] > 45).long()} for r in ids]


def plain_run(
    model, lr: float, steps: int, data=None, optimizer=torch.optim.AdamW, params=None
) -> Watch:  # noqa: ANN001
    """``steps`` steps of batch 8 over ``data`` (rows of tensors) in a plain loop; the optimizer
    trains ``params`` (default: all of the model's)."""
    data = data or batches(8 * steps)
    opt = optimizer(model.parameters() if params is None else params, lr=lr)
    watch = Watch(model, every=1, on_alert=lambda a: None)

    def loss(step: int) -> torch.Tensor:
        chunk = data[8 * step : 8 * step + 8]
        return model(**{k: torch.stack([d[k] for d in chunk]) for k in chunk[0]}).loss

    plain_loop(watch, opt, steps, loss)
    watch.close()
    return watch


# ---- task heads -----------------------------------------------------------------------------------


def test_the_pooler_tanh_is_watched_by_default() -> None:
    from initwatch.anatomy import inspect
    from initwatch.selection import select_layers

    model = bert_classifier()
    acts = {t.info.name: t.band for t in select_layers(model, inspect(model))}
    assert acts["bert.pooler.activation"] == (0.0, 0.99, False)


def test_a_saturated_pooler_is_alerted_and_a_healthy_fine_tune_is_silent() -> None:
    hot = plain_run(bert_classifier(), lr=1.0, steps=6)
    sat = [a for a in hot.alerts if a.kind == "saturation"]
    assert sat and sat[0].layer == "bert.pooler.activation", [a.kind for a in hot.alerts]
    assert sat[0].value > 0.95
    calm = plain_run(bert_classifier(), lr=2e-5, steps=6)
    assert calm.alerts == []


class Classifier(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.model = bert_classifier()
        self.lr = lr

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self.model(**batch).loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def _lightning(lr: float, tmp_path) -> InitWatch:  # noqa: ANN001
    cb = InitWatch(None, log_every_n_steps=1, on_alert=lambda a: None)
    loader = torch.utils.data.DataLoader(batches(48), batch_size=8)
    lightning_trainer(tmp_path, [cb], max_steps=6).fit(Classifier(lr), loader)
    return cb


def _hf(model, lr: float, tmp_path, callbacks, data=None, steps: int = 6) -> Trainer:  # noqa: ANN001
    data = data if data is not None else batches(8 * steps)
    return hf_trainer(
        tmp_path,
        model,
        callbacks,
        data,
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=lr,
        logging_steps=1,
        seed=42,  # the Trainer's default, which these runs were measured with
    )


def test_lightning_saturated_pooler(tmp_path) -> None:  # noqa: ANN001
    hot = _lightning(1.0, tmp_path)
    assert any(
        a.kind == "saturation" and a.layer.endswith("bert.pooler.activation") for a in hot.alerts
    )
    assert _lightning(2e-5, tmp_path).alerts == []


def test_hf_trainer_saturated_pooler(tmp_path) -> None:  # noqa: ANN001
    hot = InitWatchCallback(None, on_alert=lambda a: None)
    _hf(bert_classifier(), 1.0, tmp_path, [hot]).train()
    assert any(
        a.kind == "saturation" and a.layer.endswith("bert.pooler.activation") for a in hot.alerts
    )
    calm = InitWatchCallback(None, on_alert=lambda a: None)
    _hf(bert_classifier(), 2e-5, tmp_path, [calm]).train()
    assert calm.alerts == []


# ---- zero-started schemes: grace ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("family", "steps"), [("gpt2", 45), ("llama", 70)])
def test_rezero_from_scratch_raises_no_exploding_alert(family: str, steps: int) -> None:
    # without the grace: exploding_gradient at step 33 (GPT-2) and 58 (LLaMA), and
    # exploding_activation later, while the gates grow from zero
    torch.manual_seed(0)
    model = zoo.build(family, layers=6, hidden=64)
    initwatch.reinit(model, "rezero")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (8 * steps, 12), generator=g)
    data = [{"input_ids": r, "labels": (7 * r + 3) % 96} for r in ids]
    watch = plain_run(model, 1e-3, steps, data, optimizer=torch.optim.Adam)
    assert watch.context.scheme == "rezero"
    assert not [a for a in watch.alerts if a.kind.startswith("exploding")], watch.alerts


def _bart_rezero() -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.build("bart", layers=4)
    initwatch.reinit(model, "rezero")
    return model


def _seq2seq(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (n, 12), generator=g)
    return [{"input_ids": r, "decoder_input_ids": r, "labels": (7 * r + 3) % 96} for r in ids]


def test_bart_rezero_encoder_starved_by_the_closed_gate_is_not_alerted(tmp_path) -> None:  # noqa: ANN001
    # the decoder's cross-attention gate starts at 0: no gradient reaches the encoder, by
    # construction (without the grace: update_ratio_low at step 4, plain loop and Trainer)
    watch = plain_run(_bart_rezero(), lr=1e-3, steps=8, data=_seq2seq(64))
    assert not [a for a in watch.alerts if a.kind == "update_ratio_low"], watch.alerts
    cb = InitWatchCallback(None, on_alert=lambda a: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _hf(_bart_rezero(), 1e-3, tmp_path, [cb], data=_seq2seq(64), steps=8).train()
    assert cb.context.scheme == "rezero"
    assert not [a for a in cb.alerts if a.kind == "update_ratio_low"], cb.alerts


class Seq2Seq(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = zoo.build("bart", layers=4)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self.model(**batch).loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_lightning_bart_rezero_is_not_alerted_for_its_closed_gate(tmp_path) -> None:  # noqa: ANN001
    # InitWatch applies ReZero itself at setup; without the grace: update_ratio_low at step 4
    cb = InitWatch("rezero", log_every_n_steps=1, on_alert=lambda a: None)
    data = torch.utils.data.DataLoader(_seq2seq(64), batch_size=8)
    lightning_trainer(tmp_path, [cb], max_steps=8).fit(Seq2Seq(), data)
    assert cb.report is not None and cb.context.scheme == "rezero"
    assert not [a for a in cb.alerts if a.kind == "update_ratio_low"], cb.alerts


# ---- PEFT / LoRA ------------------------------------------------------------------------------


def lora_gpt2(trained_state, r: int = 8, alpha: int = 16):  # noqa: ANN001, ANN201
    from peft import LoraConfig, get_peft_model

    base = zoo.build("gpt2")
    base.load_state_dict(trained_state("gpt2"))
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=["c_attn"], fan_in_fan_out=True)
    return get_peft_model(base, cfg)


def lm_batches(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 90, (n, 12), generator=g)
    return [{"input_ids": r, "labels": (7 * r + 3) % 96} for r in ids]


def test_lora_effective_update_equals_the_adapted_weights_change(trained_state) -> None:  # noqa: ANN001
    from initwatch.adapters import LoraProbe

    model = lora_gpt2(trained_state)
    layer = model.base_model.model.transformer.h[0].attn.c_attn
    with torch.no_grad():  # a live adapter: B away from its zero init
        layer.lora_B["default"].weight.normal_(0, 0.05)
    probe = LoraProbe(model)
    assert len(probe.adapters) == 2 and probe.adapters[0].scale == 2.0
    delta_w = lambda: layer.get_delta_weight("default").detach().clone()  # noqa: E731
    before = delta_w()
    probe.snapshot()
    with torch.no_grad():
        layer.lora_A["default"].weight.add_(0.01)
        layer.lora_B["default"].weight.mul_(1.1)
    ratio = probe.measure()["base_model.model.transformer.h.0.attn.c_attn"]["update_ratio"]
    w = layer.base_layer.weight.detach()
    assert ratio == pytest.approx(float((delta_w() - before).norm() / w.norm()), rel=1e-4)


def test_lora_at_usual_rates_is_silent_and_at_a_high_rate_gets_lora_advice(trained_state) -> None:  # noqa: ANN001
    for lr in (1e-4, 3e-4):
        calm = plain_run(lora_gpt2(trained_state), lr=lr, steps=8, data=lm_batches(64))
        assert calm.alerts == [], (lr, [(a.kind, a.layer) for a in calm.alerts])
        assert "update_ratio" in calm.last_frame.values
    hot = plain_run(lora_gpt2(trained_state), lr=3e-2, steps=6, data=lm_batches(48))
    high = [a for a in hot.alerts if a.kind == "update_ratio_high"]
    assert high and high[0].layer.endswith("attn.c_attn") and high[0].value > 0.02
    assert "LoRA-adapted weight" in high[0].remedy and "lora_alpha" in high[0].remedy
    # A and B are not judged on their own (B starts at zero: its own ratio is unbounded)
    assert not [a for a in hot.alerts if "lora_" in a.layer]


def test_hf_trainer_lora(tmp_path, trained_state) -> None:  # noqa: ANN001
    calm = InitWatchCallback(None, on_alert=lambda a: None)
    _hf(lora_gpt2(trained_state), 2e-4, tmp_path, [calm], data=lm_batches(48)).train()
    assert calm.alerts == [] and calm.context.pretrained
    hot = InitWatchCallback(None, on_alert=lambda a: None)
    _hf(lora_gpt2(trained_state), 5e-2, tmp_path, [hot], data=lm_batches(48)).train()
    assert any(a.kind == "update_ratio_high" for a in hot.alerts)
    assert any("LoRA-adapted weight" in a.remedy for a in hot.alerts)


class LoraModule(L.LightningModule):
    def __init__(self, model, lr: float) -> None:  # noqa: ANN001
        super().__init__()
        self.model, self.lr = model, lr

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self.model(**batch).loss

    def configure_optimizers(self):  # noqa: ANN201
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr)


def _lightning_lora(model, lr: float, tmp_path) -> InitWatch:  # noqa: ANN001
    cb = InitWatch(None, log_every_n_steps=1, on_alert=lambda a: None)
    data = torch.utils.data.DataLoader(lm_batches(48), batch_size=8)
    lightning_trainer(tmp_path, [cb], max_steps=6).fit(LoraModule(model, lr), data)
    return cb


def test_lightning_lora(tmp_path, trained_state) -> None:  # noqa: ANN001
    assert _lightning_lora(lora_gpt2(trained_state), 2e-4, tmp_path).alerts == []
    hot = _lightning_lora(lora_gpt2(trained_state), 5e-2, tmp_path)
    assert any("LoRA-adapted weight" in a.remedy for a in hot.alerts), hot.alerts


def test_a_scheme_on_a_peft_model_is_refused_not_half_applied(tmp_path, trained_state) -> None:  # noqa: ANN001
    import copy

    from initwatch.errors import SchemeNotApplicableError

    model = lora_gpt2(trained_state)
    before = copy.deepcopy(model.state_dict())
    for scheme in ("t-fixup", "rezero"):
        with pytest.raises(SchemeNotApplicableError, match="PEFT-wrapped") as err:
            initwatch.reinit(model, scheme, allow_pretrained=True)
        assert "before get_peft_model" in str(err.value) and "scheme=None" in str(err.value)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(SchemeNotApplicableError, match="PEFT-wrapped"):
        _hf(model, 2e-4, tmp_path, [InitWatchCallback("t-fixup", pretrained=False)])
    cb = InitWatch("rezero", pretrained=False)
    trainer = lightning_trainer(tmp_path, [cb], max_steps=1)
    with pytest.raises(SchemeNotApplicableError, match="PEFT-wrapped"):
        trainer.fit(
            LoraModule(model, 2e-4), torch.utils.data.DataLoader(lm_batches(8), batch_size=8)
        )


# ---- healthy fine-tunes stay silent --------------------------------------------------------------


@pytest.mark.parametrize("frozen", ["none", "lower block", "all but the top block"])
@pytest.mark.parametrize("lr", [2e-5, 1e-4, 3e-4])
def test_healthy_fine_tunes_are_silent(lr: float, frozen: str, trained_state) -> None:  # noqa: ANN001
    model = zoo.build("gpt2")
    model.load_state_dict(trained_state("gpt2"))
    tr = model.transformer
    if frozen == "lower block":
        tr.h[0].requires_grad_(False)
        tr.wpe.requires_grad_(False)
    elif frozen == "all but the top block":
        model.requires_grad_(False)
        tr.h[1].requires_grad_(True)
        tr.ln_f.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    watch = plain_run(model, lr, 8, lm_batches(64), params=params)
    assert watch.context.pretrained
    assert watch.alerts == [], [(a.kind, a.layer, a.message) for a in watch.alerts]


def test_hf_trainer_fine_tune_with_warmup_is_silent(tmp_path, trained_state) -> None:  # noqa: ANN001
    from transformers import GPT2LMHeadModel

    model = zoo.build("gpt2")
    model.load_state_dict(trained_state("gpt2"))
    assert isinstance(model, GPT2LMHeadModel)
    cb = InitWatchCallback(None, on_alert=lambda a: None)
    trainer = _hf(model, 3e-4, tmp_path, [cb], data=lm_batches(64), steps=8)
    trainer.args.warmup_steps = 3
    trainer.train()
    assert cb.context.pretrained and cb.alerts == [], cb.alerts

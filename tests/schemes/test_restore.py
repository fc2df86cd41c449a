"""Round trips: a re-initialized model saved (state_dict, Lightning checkpoint,
save_pretrained) and restored into a fresh model computes the same outputs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from builders import lightning_trainer
from torch import nn

import initwatch
from initwatch import zoo

CASES = [
    ("bert", "deepnet", {}),
    ("gpt2", "rezero", {}),
    ("llama", "rezero", {"per": "sublayer"}),
    ("t5", "t-fixup", {}),
    ("bart", "deepnet", {}),
    ("gpt_neox", "t-fixup", {"norms": "blocks"}),
    ("torch_transformer", "deepnet", {}),
    ("torch_encoder", "rezero", {}),
]


def _trained(family: str, scheme: str, options: dict) -> nn.Module:
    model = zoo.build(family, layers=2)
    initwatch.reinit(model, scheme, **options)
    # move off the init so a restore that re-initialized would be caught
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def _out(model: nn.Module, family: str) -> torch.Tensor:
    with torch.no_grad():
        return zoo.output_tensor(model(**zoo.example_inputs(family, model)))


@pytest.mark.parametrize(("family", "scheme", "options"), CASES)
def test_state_dict_round_trip(family: str, scheme: str, options: dict, tmp_path) -> None:  # noqa: ANN001
    model = _trained(family, scheme, options)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(123)
    fresh = zoo.build(family, layers=2).eval()
    report = initwatch.restore(fresh, tmp_path / "model.pt")
    assert report.scheme == scheme
    assert initwatch.is_pretrained(fresh)  # trained weights: monitoring treats it as a fine-tune
    torch.testing.assert_close(_out(fresh, family), _out(model, family), atol=0, rtol=0)
    # the restored model is marked: applying a scheme again is refused
    with pytest.raises(initwatch.AlreadyAppliedError):
        initwatch.reinit(fresh, scheme)


@pytest.mark.parametrize(
    ("family", "scheme", "options"), [c for c in CASES if not c[0].startswith("torch")]
)
def test_save_pretrained_round_trip(family: str, scheme: str, options: dict, tmp_path) -> None:  # noqa: ANN001
    model = _trained(family, scheme, options)
    model.save_pretrained(tmp_path)
    torch.manual_seed(7)
    fresh = type(model)(model.config).eval()
    initwatch.restore(fresh, tmp_path)
    torch.testing.assert_close(_out(fresh, family), _out(model, family), atol=0, rtol=0)


class Wrapped(L.LightningModule):
    def __init__(self, scheme: str | None = None) -> None:
        super().__init__()
        self.net = zoo.build("torch_encoder", layers=2)
        if scheme:
            initwatch.reinit(self.net, scheme)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.Adam(self.parameters(), lr=1e-2)


@pytest.mark.parametrize("scheme", ["deepnet", "rezero", "t-fixup"])
def test_lightning_checkpoint_round_trip(scheme: str, tmp_path) -> None:  # noqa: ANN001
    module = Wrapped(scheme)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 4, 32)), batch_size=4
    )
    trainer = lightning_trainer(tmp_path, [], max_steps=2)
    trainer.fit(module, data)
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    fresh = Wrapped(None)
    initwatch.restore(fresh, ckpt)  # keys carry the "net." prefix of the LightningModule
    x = torch.randn(2, 4, 32)
    module.eval()
    fresh.eval()
    torch.testing.assert_close(fresh.net(x), module.net(x), atol=0, rtol=0)
    # or straight into the inner model: the prefix is stripped
    inner = zoo.build("torch_encoder", layers=2).eval()
    initwatch.restore(inner, ckpt)
    torch.testing.assert_close(inner(x), module.net(x), atol=0, rtol=0)


def test_restore_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        initwatch.restore(zoo.build("gpt2"), tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        initwatch.restore(zoo.build("gpt2"), tmp_path)
    small = zoo.build("gpt2", layers=2).state_dict()
    with pytest.raises(initwatch.InitWatchError, match="does not fit this model"):
        initwatch.restore(zoo.build("gpt2", layers=3), small)
    done = zoo.build("gpt2")
    initwatch.reinit(done, "rezero")
    with pytest.raises(initwatch.AlreadyAppliedError, match="freshly built model"):
        initwatch.restore(done, small)


@pytest.mark.parametrize("gate_shape", [(), (1,)])
def test_restore_accepts_zero_dim_and_shape_one_gates(gate_shape: tuple, tmp_path) -> None:  # noqa: ANN001
    model = _trained("gpt2", "rezero", {})
    gates = [n for n, p in model.named_parameters() if "rezero_alpha" in n]
    assert gates and all(model.get_parameter(n).shape == (1,) for n in gates)  # shardable
    # a checkpoint of initwatch 0.1 held 0-dim gates; today's hold shape (1,)
    state = {k: v.reshape(gate_shape) if k in gates else v for k, v in model.state_dict().items()}
    fresh = zoo.build("gpt2", layers=2).eval()
    assert initwatch.restore(fresh, state).scheme == "rezero"
    assert all(fresh.get_parameter(n).shape == (1,) for n in gates)
    torch.testing.assert_close(_out(fresh, "gpt2"), _out(model, "gpt2"), atol=0, rtol=0)

"""Helpers that switch a model to eval mode for a while give every submodule its own mode back: a student's
BatchNorm layers frozen by ``freeze_bn`` stay frozen through CURE's re-clustering (issue 15, bug 1)."""

from __future__ import annotations

import lightning as L
import torch
from conftest import quiet_trainer, tiny_datamodule
from torch import nn

from unlearnkit.utils.modes import eval_mode


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_eval_mode_restores_each_submodules_own_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Dropout())
    model.train()
    model[1].eval()  # frozen on purpose inside a training model
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model] == [True, False, True] and model.training
    try:
        with eval_mode(model):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert [m.training for m in model] == [True, False, True]


class _BatchNormModes(L.Callback):
    """Records, at every training step, whether any BatchNorm layer of the student is in train mode."""

    def __init__(self) -> None:
        self.train_mode_layers: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        n = sum(m.training for m in _batchnorms(pl_module.backbone))
        self.train_mode_layers.append((trainer.current_epoch, n))


def test_cure_reclustering_keeps_batchnorm_frozen(tiny_faces, original_ckpt, tmp_path):
    from unlearnkit.methods.cure import Cure

    L.seed_everything(0)
    model = Cure(original=str(original_ckpt), lr=1e-3, recluster_every=1, freeze_bn=True)
    modes = _BatchNormModes()
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0, callbacks=[modes],
                            default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=tiny_datamodule(tiny_faces, protocol="sample", forget=0.2))
    assert {epoch for epoch, _ in modes.train_mode_layers} == {0, 1}  # epoch 1 re-clustered
    assert all(n == 0 for _, n in modes.train_mode_layers), modes.train_mode_layers
    original = torch.load(original_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    stats = [k for k in model.backbone.state_dict() if k.endswith(("running_mean", "running_var"))]
    assert stats
    for key in stats:
        assert torch.equal(model.backbone.state_dict()[key], original[f"backbone.{key}"]), key

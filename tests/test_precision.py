"""Mixed precision and torch.compile as options: networks run in bf16 under ``precision='bf16-mixed'`` while
the embeddings behind every metric stay float32; ``compile=True`` compiles the backbone in place, once."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from conftest import ARCH, quiet_trainer, tiny_datamodule

from unlearnkit.callbacks.evaluation import FaceEvaluation
from unlearnkit.methods.base import Pretrain
from unlearnkit.methods.dispersion import Dispersion
from unlearnkit.metrics.collector import EmbeddingCollector


class DtypeRecorder(L.Callback):
    """Records the dtypes of the backbone's raw outputs and of the validation steps' embeddings."""

    def __init__(self) -> None:
        self.backbone_dtypes: set = set()
        self.output_dtypes: set = set()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not getattr(self, "_hooked", False):
            pl_module.backbone.register_forward_hook(lambda m, i, out: self.backbone_dtypes.add(out.dtype))
            self._hooked = True

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.output_dtypes.add(outputs["embedding"].dtype)


def test_bf16_mixed_steps_give_float32_metrics(tiny_faces, original_ckpt, tmp_path, monkeypatch):
    gathered = set()
    compute = EmbeddingCollector.compute

    def recording_compute(self):
        out = compute(self)
        gathered.add(out["embeddings"].dtype)
        return out

    monkeypatch.setattr(EmbeddingCollector, "compute", recording_compute)
    L.seed_everything(0)
    model = Dispersion(original=str(original_ckpt), lr=1e-2)
    evaluation, recorder = FaceEvaluation(ks=(1, 5)), DtypeRecorder()
    trainer = quiet_trainer(precision="bf16-mixed", max_epochs=1, limit_train_batches=2,
                            callbacks=[recorder, evaluation], default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=tiny_datamodule(tiny_faces))
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert torch.bfloat16 in recorder.backbone_dtypes, "the backbone did not run under bf16 autocast"
    assert recorder.output_dtypes == {torch.float32} and gathered == {torch.float32}
    assert evaluation.last and all(isinstance(v, float) for v in evaluation.last.values())
    # every figure finite but the forget AUC, NaN in the identity protocol (no held-out image of a forgotten person)
    assert [k for k, v in evaluation.last.items() if not np.isfinite(v) and not k.endswith("mia/forget_auc")] == []
    logged = [v for k, v in trainer.callback_metrics.items() if k in evaluation.last]
    assert logged and all(v.dtype == torch.float32 for v in logged)


def test_compile_option_compiles_backbone_in_place_once(tiny_faces, tmp_path, monkeypatch):
    """``compile=True`` routes the backbone's forward through ``torch.compile`` (stood in for here, so the test
    does not pay for compilation), leaves checkpoint keys unchanged and compiles once across fit + validate."""
    compiled = []

    def fake_compile(fn, *args, **kwargs):
        calls = []
        compiled.append(calls)

        def run(*a, **k):
            calls.append(1)
            return fn(*a, **k)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    keys = set(Pretrain(**ARCH, num_classes=12).state_dict())
    model = Pretrain(**ARCH, lr=0.05, compile=True)
    dm = tiny_datamodule(tiny_faces)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    trainer.validate(model, datamodule=dm, verbose=False)
    assert len(compiled) == 1 and len(compiled[0]) >= 3, "the backbone's forward did not go through compile"
    assert set(model.state_dict()) == keys
    plain = Pretrain(**ARCH, lr=0.05)
    quiet_trainer(max_steps=1, limit_val_batches=0, default_root_dir=str(tmp_path / "plain")).fit(plain, datamodule=dm)
    assert len(compiled) == 1

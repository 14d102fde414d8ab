"""The run directory's summary files, written atomically from one place: ``metrics.json`` (final metric values,
the cost ledger, skipped images, and an unlearning run's ``status``) and ``evaluation.json`` (the evaluation's
settings and its values as computed)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from unlearnkit.callbacks.evaluation import FaceEvaluation
from unlearnkit.status import run_status
from unlearnkit.utils.io import write_json


def _scalar(value) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def evaluation_summary(trainer: L.Trainer) -> dict | None:
    """The last evaluation of the trainer's ``FaceEvaluation`` callback (settings and values), if any ran."""
    for callback in trainer.callbacks:
        if isinstance(callback, FaceEvaluation) and callback.summary() is not None:
            return callback.summary()
    return None


class RunSummary(L.Callback):
    """Writes ``<run_dir>/metrics.json`` after fit and after validate: every logged scalar, the evaluation's
    values as the metric suite computed them (not Lightning's float32 copies), ``cost/...``, the epoch and the
    status; and, where an evaluation ran, ``evaluation.json`` with its settings and values."""

    def __init__(self, filename: str = "metrics.json") -> None:
        self.filename = filename

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        evaluation = evaluation_summary(trainer)
        metrics = {k: _scalar(v) for k, v in trainer.callback_metrics.items()}
        metrics.update({k: _scalar(v) for k, v in (evaluation or {}).get("metrics", {}).items()})
        metrics = {k: v for k, v in metrics.items() if v is not None}
        if stage == "fit" and hasattr(pl_module, "cost_summary"):
            metrics.update(pl_module.cost_summary())
        metrics["epoch"] = trainer.current_epoch
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.filename
            summary = {"stage": stage, "model": type(pl_module).__name__, "metrics": metrics}
            status = run_status(metrics)  # unlearning runs: ok, unchanged or collapsed, and why
            if status is not None:
                summary["status"] = status
            write_json(path, summary)
            if evaluation is not None:
                write_json(path.parent / "evaluation.json", evaluation)

    @staticmethod
    def _log_bad_images(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """``data/bad_images``: unreadable images skipped so far (``data.on_bad_image: skip``)."""
        datamodule = trainer.datamodule
        if getattr(datamodule, "bad_images", None) is not None:
            pl_module.log("data/bad_images", float(datamodule.bad_image_count()))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._log_bad_images(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log_bad_images(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module, "fit")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":
            self.write(trainer, pl_module, "validate")

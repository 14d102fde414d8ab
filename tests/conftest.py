"""Shared fixtures: a tiny generated face set, and a briefly pretrained original model on it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="unlearnkit-tests-"))
for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
    os.environ.setdefault(var, str(_TMP / var.lower()))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

import torch  # noqa: E402

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

SHARED_DATA = Path(os.environ.get("UNLEARNKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TINY = dict(num_identities=12, images_per_identity=8, image_size=32)
ARCH = dict(backbone="timm_resnet10t", embedding_size=32, image_size=32, scale=16.0)


def tiny_datamodule(root, **overrides):
    from unlearnkit.data.datamodule import FaceDataModule

    kwargs = dict(root=str(root), image_size=32, protocol="identity", forget=3, heldout_per_identity=2,
                  batch_size=16, eval_batch_size=64, pk_identities=3, pk_images=4, seed=0)
    kwargs.update(overrides)
    return FaceDataModule(**kwargs)


def pretrain_cli_args(root, run_dir, *extra) -> list[str]:
    """A tiny ``unlearnkit fit`` pretraining command on ``root`` (no evaluation), for in-process CLI tests."""
    return ["fit", "--model", "Pretrain", "--model.backbone", "timm_resnet10t", "--model.embedding_size", "32",
            "--model.image_size", "32", "--model.scale", "16", "--data", "FaceDataModule",
            "--data.root", str(root), "--data.image_size", "32", "--data.batch_size", "16",
            "--data.forget", "3", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.limit_val_batches", "0", "--run_dir", str(run_dir), *extra]


def quiet_trainer(**overrides):
    import lightning as L

    kwargs = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                  use_distributed_sampler=False, default_root_dir=tempfile.mkdtemp(dir=_TMP))
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    from unlearnkit.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("faces") / "synthetic"
    return generate_synthetic(root, seed=0, workers=1, progress=False, **TINY)


@pytest.fixture(scope="session")
def original_ckpt(tiny_faces, tmp_path_factory) -> Path:
    """θ0: a few epochs of pretraining on the tiny set, saved as a Lightning checkpoint."""
    import lightning as L

    from unlearnkit.methods.base import Pretrain

    L.seed_everything(0)
    out = tmp_path_factory.mktemp("original")
    model = Pretrain(**ARCH, lr=0.05)
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0, default_root_dir=str(out))
    trainer.fit(model, datamodule=tiny_datamodule(tiny_faces))
    path = out / "original.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def shared_lfw() -> Path:
    root = SHARED_DATA / "lfw_subset"
    if not root.is_dir():
        pytest.skip(f"real faces not found at {root} (set UNLEARNKIT_SHARED_DATA to ../shared/data)")
    return root

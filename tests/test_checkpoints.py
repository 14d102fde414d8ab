"""One checkpoint module and θ0 as a component (issue 14): θ0 and the oracle are read from disk once per run, a
frozen model keeps the checkpoints' keys and stays frozen, configs and checkpoints that name the old
``unlearnkit.methods.base.Pretrain`` still load, and the CLI links what one side derives from the other (the
quality model, boundary shrink's pixel normalisation) in subclass mode."""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import ARCH, quiet_trainer, tiny_datamodule
from torch import nn

from unlearnkit.backbones import create_backbone
from unlearnkit.checkpoints import clear_cache, read_weights
from unlearnkit.frozen import FrozenModel


@pytest.fixture
def disk_reads(monkeypatch) -> Counter:
    """Every ``torch.load`` of a file from here on, by resolved path (the weights cache starts empty)."""
    reads: Counter = Counter()
    load = torch.load

    def counting(f, *args, **kwargs):
        reads[Path(f).resolve()] += 1
        return load(f, *args, **kwargs)

    clear_cache()
    monkeypatch.setattr(torch, "load", counting)
    return reads


def test_original_and_oracle_are_read_once_per_run(tiny_faces, original_ckpt, tmp_path, disk_reads):
    """A quality-protocol run of a label-free variant with the oracle: θ0 is needed for the architecture, the
    quality score, the student, the teacher and the evaluation's reference, and read once (before issue 14:
    three times); the oracle once."""
    from unlearnkit.callbacks.evaluation import FaceEvaluation
    from unlearnkit.methods.gradient_ascent import GradientAscent

    oracle = tmp_path / "oracle.ckpt"  # any other checkpoint file serves for counting reads
    shutil.copy(original_ckpt, oracle)
    L.seed_everything(0)
    model = GradientAscent(original=str(original_ckpt), labels="pseudo", num_clusters=4, min_steps=0)
    dm = tiny_datamodule(tiny_faces, protocol="quality", forget=0.2, quality_model={"checkpoint": str(original_ckpt)})
    evaluation = FaceEvaluation(oracle=str(oracle), plots=False, per_identity=False)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, callbacks=[evaluation], default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    assert "original/forget/mAP" in evaluation.last and "oracle/forget/mAP" in evaluation.last
    assert dict(disk_reads) == {original_ckpt.resolve(): 1, oracle.resolve(): 1}


def test_a_rewritten_file_is_read_again(tmp_path, disk_reads):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    assert torch.equal(read_weights(path).tensors["w"], read_weights(path).tensors["w"])
    assert disk_reads[path.resolve()] == 1
    torch.save({"w": torch.ones(3)}, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # as AtomicCheckpointIO rewrites last.ckpt
    assert torch.equal(read_weights(path).tensors["w"], torch.ones(3)) and disk_reads[path.resolve()] == 2
    with pytest.raises(TypeError):
        read_weights(path).tensors["w"] = torch.zeros(1)  # the cached weights are read-only


def test_frozen_model_keeps_the_backbones_keys_and_stays_frozen():
    backbone = create_backbone("timm_resnet10t", embedding_size=16, image_size=32)
    saved = {k: v.clone() for k, v in backbone.state_dict().items()}
    holder = nn.Module()
    holder.teacher = FrozenModel(backbone, rows=torch.randn(5, 16), scale=2.0)
    holder.train()  # what Lightning does at the start of every training epoch
    assert not any(m.training for m in holder.teacher.modules())
    assert not any(p.requires_grad for p in holder.teacher.parameters())
    assert set(holder.state_dict()) == {f"teacher.{k}" for k in saved}  # as before issue 14; rows are not saved
    again = nn.Module()
    again.teacher = FrozenModel(create_backbone("timm_resnet10t", embedding_size=16, image_size=32))
    again.load_state_dict({f"teacher.{k}": v for k, v in saved.items()}, strict=True)
    assert all(torch.equal(again.teacher.backbone.state_dict()[k], v) for k, v in saved.items())
    images = torch.randn(3, 3, 32, 32)
    z = holder.teacher.embed(images)
    assert torch.allclose(z.norm(dim=1), torch.ones(3)) and not z.requires_grad
    rows = holder.teacher.rows
    assert torch.allclose(holder.teacher.logits(z), 2.0 * z @ (rows / rows.norm(dim=1, keepdim=True)).T)


def _old_style_pretrain(original_ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint and a config written when ``Pretrain`` lived in ``unlearnkit.methods.base``."""
    checkpoint = torch.load(original_ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"].update(_class_path="unlearnkit.methods.base.Pretrain",
                                          _instantiator="lightning.pytorch.cli.instantiate_module")
    old_ckpt = tmp_path / "old.ckpt"
    torch.save(checkpoint, old_ckpt)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"class_path": "unlearnkit.methods.base.Pretrain", "init_args": ARCH}}))
    return old_ckpt, config


def _cli(args: list[str], monkeypatch, run: bool = True):
    from unlearnkit.cli.lightning_cli import run_cli

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    return run_cli(args, run=run)


def test_config_and_checkpoint_naming_the_old_pretrain_path_load(tiny_faces, original_ckpt, tmp_path, monkeypatch):
    from unlearnkit.methods.pretrain import Pretrain

    old_ckpt, config = _old_style_pretrain(original_ckpt, tmp_path)
    cli = _cli(["validate", "--config", str(config), "--ckpt_path", str(old_ckpt), "--data", "FaceDataModule",
                "--data.root", str(tiny_faces), "--data.image_size", "32", "--data.forget", "3",
                "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "0",
                "--trainer.enable_progress_bar", "false", "--wandb", "false", "--run_dir", str(tmp_path / "run")],
               monkeypatch)
    assert type(cli.model) is Pretrain
    state = torch.load(old_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in cli.model.state_dict().items())


def test_cli_links_quality_model_and_pixel_normalisation_in_subclass_mode(tiny_faces, original_ckpt, tmp_path,
                                                                          monkeypatch):
    """The quality model is θ0's file (with the architecture for a file that records none), boundary shrink's
    pixel range is the data's normalisation even where the command line says otherwise, and a model without
    those options (``Pretrain``) is linked nothing."""
    data = ["--data", "FaceDataModule", "--data.root", str(tiny_faces), "--data.image_size", "32",
            "--data.pixel_mean", "0.4", "--data.pixel_std", "0.25", "--wandb", "false"]
    cli = _cli(["--model", "BoundaryShrink", "--model.original", str(original_ckpt), "--model.pixel_mean", "0.9",
                *data, "--run_dir", str(tmp_path / "bs")], monkeypatch, run=False)
    assert (cli.model.hparams.pixel_mean, cli.model.hparams.pixel_std) == (0.4, 0.25)
    spec = cli.datamodule.hparams.quality_model
    assert spec["checkpoint"] == str(original_ckpt) and set(spec) == {"checkpoint", "backbone", "embedding_size",
                                                                      "image_size"}
    cli = _cli(["--model", "Pretrain", *(f"--model.{k}={v}" for k, v in ARCH.items()), *data,
                "--run_dir", str(tmp_path / "pretrain")], monkeypatch, run=False)
    assert cli.datamodule.hparams.quality_model is None and "pixel_mean" not in cli.model.hparams

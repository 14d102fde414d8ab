"""A first run is quiet: ``unlearnkit demo`` prints one line per run and then the report (``--verbose``: Lightning's
own output), and ``unlearnkit fit`` keeps Lightning's progress bar and model summary without the pinned stack's
known noise. Both run as a user runs them, in a subprocess, on a tiny configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOISE = ["litlogger", "is deprecated", "anonymous setting", "JsonargparseDeprecationWarning"]


def environment(tmp_path: Path) -> dict:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "false", "HF_HUB_OFFLINE": "1",
           "PYTHONWARNINGS": "default"}  # every warning shown once, as a user who turned them on sees them
    env.pop("JSONARGPARSE_DEPRECATION_WARNINGS", None)
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        env[var] = str(tmp_path / var.lower())
    return env


def unlearnkit(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearnkit.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, env=environment(tmp_path), timeout=900)


def test_fit_keeps_progress_bar_and_summary_but_not_the_stacks_noise(tiny_faces, tmp_path):
    proc = unlearnkit(["fit", "--model", "Pretrain", "--model.backbone", "timm_resnet10t", "--model.embedding_size",
                       "32", "--model.image_size", "32", "--data", "FaceDataModule", "--data.root", str(tiny_faces),
                       "--data.image_size", "32", "--data.batch_size", "32", "--data.forget", "3",
                       "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--trainer.limit_val_batches",
                       "0", "--seed_everything", "0", "--run_dir", str(tmp_path / "run")], tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Trainable params" in output and "Epoch 0: 100%" in output  # Lightning's summary and progress bar
    assert "wandb: Run data is saved locally" in output  # W&B on (offline), as by default
    for noise in NOISE:
        assert noise not in output, noise


def tiny_configs(root: Path, faces: Path) -> Path:
    """The repository's configs, scaled down: 12 people × 8 images at 32 px, one epoch per run."""
    configs = root / "configs"
    shutil.copytree(ROOT / "configs", configs)

    def edit(name: str, change) -> None:
        path = configs / name
        config = yaml.safe_load(path.read_text())
        change(config)
        path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    edit("data/synthetic.yaml", lambda c: c["init_args"].update(
        root=str(faces), num_identities=12, images_per_identity=8, image_size=32, forget=3, heldout_per_identity=2,
        batch_size=20, pk_identities=3, pk_images=4, pairs=[{"name": "heldout", "format": "heldout", "num_pairs": 20}]))
    for method in ("pretrain", "retrain"):
        edit(f"method/{method}.yaml", lambda c: c["init_args"].update(embedding_size=32, image_size=32, scale=16.0))
    for trainer, epochs in (("cpu_pretrain", 1), ("cpu_unlearn", 1)):
        edit(f"trainer/{trainer}.yaml", lambda c, epochs=epochs: (
            c.update(max_epochs=epochs, check_val_every_n_epoch=epochs, log_every_n_steps=1),
            c["callbacks"][0].setdefault("init_args", {}).update(plots=False, per_identity=False)))
    return configs


RUNS = ["pretrain θ0", "untrained backbone", "identity-retrain", "identity-Dispersion"]


@pytest.mark.slow
def test_demo_prints_one_line_per_run_then_the_report(tmp_path):
    configs, out = tiny_configs(tmp_path, tmp_path / "faces"), tmp_path / "demo"
    demo = ["demo", "--configs", str(configs), "--out", str(out), "--methods", "Dispersion"]  # no sample protocol
    proc = unlearnkit(demo, tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("unlearnkit demo: 4 runs on the generated faces")
    runs = [line for line in lines if re.match(r"\[ *\d+\.\d min\] +\d/4 ", line)]
    assert [re.split(r" {2,}", line.split("/4 ", 1)[1])[0] for line in runs] == RUNS, runs
    assert all(re.search(r" done in +\d+ s: ", line) for line in runs), runs
    assert re.search(r"done in +\d+ s: retain R@1 0\.\d{3}, retain mAP 0\.\d{3}$", runs[0])
    assert re.search(r"done in +\d+ s: forget mAP \d\.\d{3}, retain mAP \d\.\d{3}, UES \d\.\d{3}", runs[3])
    assert "== θ0 ready after" in proc.stdout and "# Unlearning report" in proc.stdout
    assert lines[-1].startswith("demo finished in") and "\r" not in proc.stdout  # not a terminal: no live lines
    # Lightning's and W&B's own output went to each run's output.log, not to the console
    for noise in ("GPU available", "Epoch 0", "Trainable params", "wandb:", "Seed set to", *NOISE):
        assert noise not in proc.stdout + proc.stderr, noise
    assert all("GPU available" in (out / name / "output.log").read_text() for name in
               ("pretrain", "untrained", "identity-retrain", "identity-Dispersion"))

    # --verbose: Lightning's own output on the console (the one run still to do here: its metrics.json is gone)
    (out / "identity-Dispersion" / "metrics.json").unlink()
    verbose = unlearnkit([*demo, "--verbose"], tmp_path)
    assert verbose.returncode == 0, (verbose.stdout + verbose.stderr)[-3000:]
    assert "GPU available" in verbose.stdout + verbose.stderr
    assert "identity-Dispersion      running (--verbose: Lightning's output follows)" in verbose.stdout

"""Real faces end to end through the CLI: the lfw_subset experiments in miniature (32 px, 1–2 epochs).

Pretrain θ0 on ../shared/data/lfw_subset, then unlearn three people named in a file (dispersion) and 10 % of
the training images (CURE), evaluating retrieval and verification on the subset's pairs. Skips, with a
message, where the shared data is absent. docs/real_faces.md has the full-size runs.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

from unlearnkit.cli.main import main

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiment"
FORGET = ["Tony_Blair", "Hugo_Chavez", "Keanu_Reeves"]


@pytest.fixture(scope="module")
def lfw_root() -> Path:
    root = SHARED_DATA / "lfw_subset"
    if not (root / "pairs_same_covered.txt").is_file():
        pytest.skip(f"real faces not found at {root} (set UNLEARNKIT_SHARED_DATA to the shared/data folder)")
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models: one thread is as fast, and much faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(experiment: str, run_dir: Path, lfw_root: Path, *extra: str) -> dict[str, float]:
    """``unlearnkit fit`` of an lfw_subset experiment at 32 px; returns its final metrics."""
    pairs = json.dumps([{"name": "lfw_subset", "format": "lfw_subset", "path": str(lfw_root)}])
    args = ["fit", "--config", str(EXPERIMENTS / f"{experiment}.yaml"), "--data.root", str(lfw_root),
            "--data.pairs", pairs, "--data.image_size", "32", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--run_dir", str(run_dir), "--wandb", "false", *extra]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["unlearnkit"])
        assert main(args) == 0
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def forget_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "split.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["split"] == "forget"]


@pytest.fixture(scope="module")
def pretrained(lfw_root, tmp_path_factory) -> tuple[Path, dict[str, float]]:
    run_dir = tmp_path_factory.mktemp("real") / "pretrain"
    m = run(
        "pretrain_lfw_subset", run_dir, lfw_root, "--model.image_size", "32", "--model.embedding_size", "32",
        "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "2",
    )
    return run_dir, m


def test_pretrain_on_real_faces(pretrained):
    run_dir, m = pretrained
    for key in ("retain/mAP", "retain/R@1", "forget/mAP", "verify/lfw_subset/acc"):
        assert 0 <= m[key] <= 1, key
    assert m["cost/optimizer_steps"] == 20  # 2 epochs × ceil(626 training images / 64)
    assert len({row["identity"] for row in forget_rows(run_dir)}) == 4


def test_dispersion_forgets_people_named_in_a_file(pretrained, lfw_root, tmp_path):
    pre_dir, pre = pretrained
    names = tmp_path / "names.txt"
    names.write_text("\n".join(FORGET) + "\n")
    run_dir = tmp_path / "dispersion"
    m = run(
        "dispersion_lfw_subset", run_dir, lfw_root, "--data.forget_list", str(names),
        "--model.original", str(pre_dir / "checkpoints" / "last.ckpt"), "--model.lr", "0.05",
        "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "2",
    )
    assert {row["identity"] for row in forget_rows(run_dir)} == set(FORGET)
    # θ0 re-evaluated from its checkpoint gives the pretraining run's own verification figure
    assert m["original/verify/lfw_subset/acc"] == pytest.approx(pre["verify/lfw_subset/acc"], abs=1e-6)
    # dispersion spreads the forgotten people's held-out embeddings apart
    assert m["forget/CS"] < m["original/forget/CS"]
    assert {"forget/mAP", "forget/R@1", "retain/mAP", "retain/R@1", "UES", "verify/lfw_subset/acc"} <= set(m)


def test_cure_forgets_samples(pretrained, lfw_root, tmp_path):
    pre_dir, pre = pretrained
    run_dir = tmp_path / "cure"
    m = run(
        "cure_lfw_subset", run_dir, lfw_root, "--model.original", str(pre_dir / "checkpoints" / "last.ckpt"),
        "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1",
    )
    rows = forget_rows(run_dir)
    assert len(rows) == round(0.1 * 626) and len({row["identity"] for row in rows}) > 10
    assert m["original/verify/lfw_subset/acc"] == pytest.approx(pre["verify/lfw_subset/acc"], abs=1e-6)
    assert {"forget/mAP", "retain/mAP", "UES", "mia/membership_recall", "verify/lfw_subset/acc"} <= set(m)

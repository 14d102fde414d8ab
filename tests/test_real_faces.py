"""Real faces end to end through the CLI: the lfw_subset experiments in miniature (32 px, 1–2 epochs).

Pretrain θ0 on ../shared/data/lfw_subset, then unlearn three people named in a file (dispersion) and 10 % of
the training images (CURE), evaluating retrieval and verification on the subset's pairs. Then the Pins set
(../shared/data/pins_faces): people kept out of training, seeded pair lists written to the run, its θ0 and
dispersion experiments in miniature. Skips, with a message, where the shared data is absent.
docs/real_faces.md has the full-size runs.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SHARED_DATA

from unlearnkit.cli.main import main

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiment"
FORGET = ["Tony_Blair", "Hugo_Chavez", "Keanu_Reeves"]


def shared_folder(name: str, marker: str) -> Path:
    """``../shared/data/<name>``, or a skip with a message where it (its ``marker`` file) is absent."""
    root = SHARED_DATA / name
    if not (root / marker).is_file():
        pytest.skip(f"{name} not found at {root} (set UNLEARNKIT_SHARED_DATA to the shared/data folder)")
    return root


@pytest.fixture(scope="module")
def lfw_root() -> Path:
    return shared_folder("lfw_subset", "pairs_same_covered.txt")


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


# ---------------------------------------------------------------- Pins: 80 people, some never trained on

CONFIGS = EXPERIMENTS.parent


@pytest.fixture(scope="module")
def pins_root() -> Path:
    return shared_folder("pins_faces", "identities.txt")


def pins_datamodule(pins_root: Path, run_dir: Path, **overrides):
    """configs/data/pins.yaml's data module on ``pins_root``, set up as a run into ``run_dir`` would be."""
    from conftest import quiet_trainer

    from unlearnkit.data.datamodule import FaceDataModule

    config = yaml.safe_load((CONFIGS / "data" / "pins.yaml").read_text())
    assert config["class_path"] == "unlearnkit.data.datamodule.FaceDataModule"
    datamodule = FaceDataModule(**{**config["init_args"], "root": str(pins_root), **overrides})
    datamodule.trainer = quiet_trainer(default_root_dir=str(run_dir))
    datamodule.setup("fit")
    return datamodule


def pair_lines(run_dir: Path, name: str) -> list[list[str]]:
    """The pair list a run wrote, one ``[path1, path2, issame, fold]`` per pair."""
    text = (run_dir / f"pairs-{name}.txt").read_text()
    return [line.split("\t") for line in text.splitlines() if not line.startswith("#")]


def test_pins_holds_people_out_of_training_and_writes_seeded_pairs(pins_root, tmp_path):
    dm = pins_datamodule(pins_root, tmp_path / "a")
    split, identities = dm.split, dm.source.identities
    unseen = set(split.unseen_identities)
    assert len(unseen) == 10 and len(set(identities)) == 80
    assert not unseen & {identities[i] for i in split.indices("train")}  # never a training image
    assert not unseen & set(split.forget_identities) and len(split.forget_identities) == 8
    assert not unseen & {identities[i] for i in dm.eval_groups()[0]}  # nor a retrieval query
    # the pairs are written to the run: `unseen` among the unseen people only, `heldout` among the others
    for name, among in (("unseen", unseen), ("heldout", set(identities) - unseen)):
        lines = pair_lines(tmp_path / "a", name)
        assert len(lines) == 1000 and sum(line[2] == "1" for line in lines) == 500
        heldout_keys = {dm.source.keys[i] for i in split.indices("heldout")}
        for path1, path2, same, _ in lines:
            assert {path1, path2} <= heldout_keys
            person1, person2 = path1.split("/")[0], path2.split("/")[0]
            assert {person1, person2} <= among and (person1 == person2) == (same == "1")
    # reproducible by seed: the same seed writes the same lists, another seed other people and pairs
    pins_datamodule(pins_root, tmp_path / "b")
    other = pins_datamodule(pins_root, tmp_path / "c", seed=1)
    for name in ("unseen", "heldout"):
        written = [(tmp_path / run / f"pairs-{name}.txt").read_bytes() for run in ("a", "b")]
        assert written[0] == written[1]
        assert pair_lines(tmp_path / "c", name) != pair_lines(tmp_path / "a", name)
    assert set(other.split.unseen_identities) != unseen


def test_pins_experiments_run_and_share_their_pairs(pins_root, tmp_path):
    """θ0 and dispersion in miniature (32 px, 2 steps, 3 unseen people, small evaluation groups): both measure
    verification on unseen and on retained people, on the same pair lists; the CURE experiment parses."""
    small = ["--data.root", str(pins_root), "--data.image_size", "32", "--data.eval_per_group", "64",
             "--data.unseen_identities", "3", "--data.heldout_per_identity", "3",
             "--trainer.limit_train_batches", "2", "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch",
             "1", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
             "--wandb", "false"]

    def fit(experiment: str, run_dir: Path, *extra: str) -> dict[str, float]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["unlearnkit"])
            assert main(["fit", "--config", str(EXPERIMENTS / f"{experiment}.yaml"), *small,
                         "--run_dir", str(run_dir), *extra]) == 0
        return json.loads((run_dir / "metrics.json").read_text())["metrics"]

    pre = fit("pretrain_pins", tmp_path / "pretrain", "--model.image_size", "32", "--model.embedding_size", "32")
    disp = fit("dispersion_pins", tmp_path / "dispersion", "--model.original",
               str(tmp_path / "pretrain" / "checkpoints" / "last.ckpt"), "--model.min_steps", "0")
    for m in (pre, disp):
        for key in ("retain/R@1", "retain/mAP", "verify/unseen/acc", "verify/heldout/retained/acc"):
            assert 0 <= m[key] <= 1, key
    assert disp["original/verify/unseen/acc"] == pytest.approx(pre["verify/unseen/acc"], abs=1e-6)
    for name in ("unseen", "heldout"):
        assert pair_lines(tmp_path / "dispersion", name) == pair_lines(tmp_path / "pretrain", name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["unlearnkit"])
        with pytest.raises(SystemExit) as stop:
            main(["fit", "--config", str(EXPERIMENTS / "cure_pins.yaml"), "--print_config"])
    assert stop.value.code in (0, None)

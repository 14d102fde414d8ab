"""The real-data configs against small copies of the real on-disk formats, driven through the CLI.

Each test runs in a temporary working directory holding the files where the configs expect them
(``data/faces_webface_112x112``, ``data/vggface2``, ``data/celeba``), so the configs' own paths are used.
The GPU experiments run on the CPU at 32 px from an arcface_torch-style IResNet-18 ``backbone.pth``.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers_formats import jpeg_bytes, write_celeba, write_insightface_bin, write_recordio, write_vggface2
from PIL import Image

from unlearnkit.backbones import create_backbone
from unlearnkit.cli.main import main  # imported here, not under capsys: its loggers keep the session's stderr

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
GPU_TRAINER = CONFIGS / "trainer" / "gpu.yaml"
TINY_DATA = ["--data.image_size", "32", "--data.batch_size", "4", "--data.eval_batch_size", "64",
             "--data.pk_identities", "2", "--data.pk_images", "2", "--data.num_workers", "0",
             "--data.heldout_per_identity", "2"]
CPU_TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
               "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1",
               "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false"]
IRESNET = dict(backbone="iresnet18", embedding_size=64, image_size=32)


def build(backbone: str, **arch) -> torch.nn.Module:
    return create_backbone(backbone, **arch)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is as fast, and much faster on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``unlearnkit <args>`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as stop:  # --print_config and argument errors exit
        code = stop.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The CLI's one-line error (there must be exactly one, and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def split_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "split.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def save_backbone_pth(path: Path, seed: int = 0, **arch) -> dict[str, torch.Tensor]:
    """An IResNet's plain state dict, as arcface_torch saves ``backbone.pth`` (no prefix, no head)."""
    torch.manual_seed(seed)
    state = build(**{**IRESNET, **arch}).state_dict()
    torch.save(state, path)
    return state


# ---------------------------------------------------------------- data where the configs expect it


def write_casia(root: Path) -> None:
    """faces_webface_112x112: 6 identities × 6 images as RecordIO, plus lfw/agedb_30/cfp_fp .bin files."""
    labels = [label for label in range(6) for _ in range(6)]
    write_recordio(root, [(label, jpeg_bytes(n, size=32)) for n, label in enumerate(labels)])
    for k, name in enumerate(("lfw", "agedb_30", "cfp_fp")):
        bins = [jpeg_bytes(1000 * (k + 1) + n, size=32) for n in range(40)]
        write_insightface_bin(root / f"{name}.bin", bins, [n % 2 == 0 for n in range(20)])


def write_vggface2_set(root: Path) -> list[str]:
    people = {f"n{100 + n:06d}": (f"Person {n}", 6) for n in range(6)}
    write_vggface2(root, people)
    return list(people)


def write_celeba_set(root: Path) -> None:
    rows = [(f"{n + 1:06d}.jpg", 100 + n % 6, n % 3) for n in range(36)]
    write_celeba(root, rows)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---------------------------------------------------------------- the configs as written


@pytest.mark.parametrize(
    "experiment, expected",
    [
        ("cure_casia", dict(model="Cure", backbone="iresnet50", format="recordio", protocol="sample",
                            pairs=["lfw", "agedb_30", "cfp_fp"])),
        ("dispersion_vggface2", dict(model="Dispersion", backbone="iresnet50", format="vggface2",
                                     protocol="identity", pairs=[])),
        ("dispersion_celeba", dict(model="Dispersion", backbone="iresnet50", format="celeba",
                                   protocol="identity", pairs=[])),
        ("pretrain_lfw_subset", dict(model="Pretrain", backbone="timm_resnet10t", format="folder",
                                     protocol="identity", pairs=["lfw_subset"])),
        ("dispersion_lfw_subset", dict(model="Dispersion", format="folder", protocol="identity",
                                       pairs=["lfw_subset"])),
        ("cure_lfw_subset", dict(model="Cure", format="folder", protocol="sample", pairs=["lfw_subset"])),
    ],
)
def test_experiment_configs_parse(experiment, expected, capsys, monkeypatch):
    gpu = "lfw_subset" not in experiment
    if gpu and not GPU_TRAINER.is_file():
        pytest.skip(f"{GPU_TRAINER} (another engineer's) is not there yet")
    overlay = ["--trainer", str(GPU_TRAINER)] if gpu else []
    code, out, err = cli(["fit", "--config", str(CONFIGS / "experiment" / f"{experiment}.yaml"), *overlay,
                          "--print_config"], capsys, monkeypatch)
    assert code == 0, err
    config = yaml.safe_load(out)
    model, data = config["model"], config["data"]["init_args"]
    assert model["class_path"].endswith("." + expected["model"])
    if "backbone" in expected:
        assert model["init_args"]["backbone"] == expected["backbone"]
    assert (data["format"], data["protocol"]) == (expected["format"], expected["protocol"])
    assert [p["name"] for p in data["pairs"] or []] == expected["pairs"]
    assert data["image_size"] == (64 if "lfw_subset" in experiment else 112)
    callbacks = [c["class_path"].rsplit(".", 1)[-1] for c in config["trainer"]["callbacks"]]
    assert callbacks == ["FaceEvaluation"] and config["trainer"]["max_epochs"] >= 10
    if gpu:  # the gpu.yaml overlay keeps the experiment's epochs and evaluation
        assert model["init_args"]["image_size"] == 112 and model["init_args"]["embedding_size"] == 512
        assert config["trainer"]["accelerator"] == "gpu"


def test_pair_set_snippets_append(capsys, monkeypatch):
    args = ["fit", "--model", "Pretrain", "--data", str(CONFIGS / "data" / "vggface2.yaml")]
    for snippet in ("lfw", "agedb", "cfp_fp"):
        args += ["--data", str(CONFIGS / "data" / f"{snippet}.yaml")]
    code, out, err = cli([*args, "--print_config"], capsys, monkeypatch)
    assert code == 0, err
    pairs = yaml.safe_load(out)["data"]["init_args"]["pairs"]
    assert [(p["name"], p["format"], Path(p["path"]).name) for p in pairs] == [
        ("lfw", "bin", "lfw.bin"), ("agedb_30", "bin", "agedb_30.bin"), ("cfp_fp", "bin", "cfp_fp.bin")]


def test_insightface_preprocessing_and_one_resize_warning():
    from unlearnkit.data.transforms import FaceTransform

    gray = Image.new("RGB", (112, 112), (0, 128, 255))
    x = FaceTransform(112)(gray)
    assert x.shape == (3, 112, 112)
    assert torch.allclose(x[:, 0, 0], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)
    big = Image.new("RGB", (250, 250))
    transform = FaceTransform(112)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert transform(big).shape == (3, 112, 112) and transform(big).shape == (3, 112, 112)
        FaceTransform(112, crop=0.5)(big)  # an explicit crop is intended: no warning
    assert len(caught) == 1 and "250×250" in str(caught[0].message)


# ---------------------------------------------------------------- the GPU experiments, small, on the CPU


def test_cure_casia_from_insightface_backbone(workdir, capsys, monkeypatch):
    """CURE's CASIA config on RecordIO + three .bin sets, from an arcface_torch backbone.pth."""
    write_casia(workdir / "data" / "faces_webface_112x112")
    pth = workdir / "backbone.pth"
    state = save_backbone_pth(pth)
    assert {"conv1.weight", "prelu.weight", "layer4.1.bn3.running_var", "fc.weight", "features.weight"} <= set(state)
    run = workdir / "run"
    code, _, err = cli(["fit", "--config", str(CONFIGS / "experiment" / "cure_casia.yaml"), *CPU_TRAINER,
                        *TINY_DATA, "--data.forget", "0.25", "--model.original", str(pth),
                        "--model.backbone", "iresnet18", "--model.image_size", "32",
                        "--model.embedding_size", "64", "--run_dir", str(run), "--wandb", "false"],
                       capsys, monkeypatch)
    assert code == 0, err
    m = metrics(run)
    for name in ("lfw", "agedb_30", "cfp_fp"):
        assert 0 <= m[f"verify/{name}/acc"] <= 1 and f"original/verify/{name}/acc" in m
    assert {"forget/mAP", "retain/mAP", "original/forget/mAP", "UES"} <= set(m)
    rows = split_rows(run)
    assert sum(r["split"] == "forget" for r in rows) == 6 and rows[0]["path"] == "train.rec#1"

    # the head was initialised from θ0's identity centroids of the training images (CURE never trains it)
    from unlearnkit.data.datamodule import FaceDataModule

    dm = FaceDataModule(root=str(workdir / "data" / "faces_webface_112x112"), format="recordio",
                        protocol="sample", image_size=32, split_manifest=str(run / "split.csv"))
    dm.setup()
    theta0 = build(**IRESNET)
    theta0.load_state_dict(state)
    theta0.eval()
    indices = dm.part_indices("train")
    with torch.no_grad():
        z = F.normalize(theta0(torch.stack([dm.transform(dm.source.load(int(i))) for i in indices])), dim=1)
    centroids = torch.zeros(dm.num_classes, z.shape[1]).index_add_(0, torch.as_tensor(dm.labels[indices]), z)
    head = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["head.weight"]
    assert torch.allclose(F.normalize(head, dim=1), F.normalize(centroids, dim=1), atol=1e-4)


def test_dispersion_vggface2_forgets_listed_class_ids(workdir, capsys, monkeypatch):
    ids = write_vggface2_set(workdir / "data" / "vggface2")
    pth = workdir / "backbone.pth"
    save_backbone_pth(pth)
    names = workdir / "forget.txt"
    names.write_text(f"{ids[4]}\n{ids[1]}\n")
    run = workdir / "run"
    code, _, err = cli(["fit", "--config", str(CONFIGS / "experiment" / "dispersion_vggface2.yaml"),
                        *CPU_TRAINER, *TINY_DATA, "--data.forget_list", str(names), "--model.original", str(pth),
                        "--model.backbone", "iresnet18", "--model.image_size", "32",
                        "--model.embedding_size", "64", "--run_dir", str(run), "--wandb", "false"],
                       capsys, monkeypatch)
    assert code == 0, err
    forgotten = {r["identity"] for r in split_rows(run) if r["split"] == "forget"}
    assert forgotten == {ids[1], ids[4]}
    m = metrics(run)
    assert {"forget/mAP", "forget/R@1", "forget/CS", "retain/mAP", "original/forget/CS"} <= set(m)

    names.write_text(f"{ids[0]}\nPerson 2\n")  # a person's name from identity_meta.csv is not a class id
    code, _, err = cli(["fit", "--config", str(CONFIGS / "experiment" / "dispersion_vggface2.yaml"),
                        *CPU_TRAINER, *TINY_DATA, "--data.forget_list", str(names), "--model.original", str(pth),
                        "--model.backbone", "iresnet18", "--model.image_size", "32",
                        "--model.embedding_size", "64", "--run_dir", str(workdir / "run2"), "--wandb", "false"],
                       capsys, monkeypatch)
    assert code == 2 and "'Person 2'" in error_line(err)


def test_dispersion_celeba_runs(workdir, capsys, monkeypatch):
    write_celeba_set(workdir / "data" / "celeba")
    pth = workdir / "backbone.pth"
    save_backbone_pth(pth)
    run = workdir / "run"
    code, _, err = cli(["fit", "--config", str(CONFIGS / "experiment" / "dispersion_celeba.yaml"),
                        *CPU_TRAINER, *TINY_DATA, "--data.forget", "2", "--model", "HardDispersion",
                        "--model.original", str(pth), "--model.backbone", "iresnet18", "--model.image_size", "32",
                        "--model.embedding_size", "64", "--run_dir", str(run), "--wandb", "false"],
                       capsys, monkeypatch)
    assert code == 0, err
    rows = split_rows(run)
    assert rows[0]["path"].startswith("img_align_celeba/") and len(rows) == 36
    assert len({r["identity"] for r in rows if r["split"] == "forget"}) == 2
    assert np.isfinite(metrics(run)["forget/CS"])


# ---------------------------------------------------------------- weights that do not fit


@pytest.mark.parametrize(
    "saved, expected",
    [
        (dict(backbone="iresnet34"), r"unexpected layer1\.2\."),      # more blocks than iresnet18 has
        (dict(image_size=48), r"shape mismatch fc\.weight"),         # trained at another input size
    ],
)
def test_backbone_pth_mismatch_is_one_line(saved, expected, tiny_faces, tmp_path, capsys, monkeypatch):
    pth = tmp_path / "backbone.pth"
    save_backbone_pth(pth, **saved)
    code, _, err = cli(["fit", "--data", "FaceDataModule", "--data.root", str(tiny_faces), *TINY_DATA,
                        "--model", "Dispersion", "--model.original", str(pth), "--model.backbone", "iresnet18",
                        "--model.image_size", "32", "--model.embedding_size", "64", *CPU_TRAINER,
                        "--run_dir", str(tmp_path / "run"), "--wandb", "false"], capsys, monkeypatch)
    line = error_line(err)
    assert code == 2 and "weights do not fit IResNet" in line
    assert re.search(expected, line), line


# ---------------------------------------------------------------- missing data: one line naming the files


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("folder", ["<identity>/<image>.jpg"]),
        ("recordio", ["train.rec", "train.idx"]),
        ("vggface2", ["train_list.txt", "train/"]),
        ("celeba", ["img_align_celeba", "identity_CelebA.txt"]),
    ],
)
def test_missing_dataset_root(fmt, expected, tmp_path, capsys, monkeypatch):
    root = tmp_path / "absent"
    code, _, err = cli(["fit", "--data", "FaceDataModule", "--data.root", str(root), "--data.format", fmt,
                        "--model", "Pretrain", "--model.embedding_size", "16", *CPU_TRAINER,
                        "--run_dir", str(tmp_path / "run"), "--wandb", "false"], capsys, monkeypatch)
    line = error_line(err)
    assert code == 2 and str(root) in line
    for text in expected:
        assert text in line, line


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("bin", ["lfw.bin", "insightface .bin"]),
        ("lfw", ["pairs.txt", "<Name>/<Name>_<iiii>.jpg"]),
        ("list", ["path1 path2 issame"]),
        ("lfw_subset", ["pairs_same_covered.txt", "<Name>/<Name>_<iiii>.jpg"]),
    ],
)
def test_missing_pair_set(fmt, expected, tiny_faces, tmp_path, capsys, monkeypatch):
    path = tmp_path / "verification" / ("lfw.bin" if fmt == "bin" else "pairs.txt")
    spec = json.dumps([{"name": "lfw", "format": fmt, "path": str(path)}])
    code, _, err = cli(["fit", "--data", "FaceDataModule", "--data.root", str(tiny_faces), "--data.pairs", spec,
                        "--model", "Pretrain", "--model.embedding_size", "16", *CPU_TRAINER,
                        "--run_dir", str(tmp_path / "run"), "--wandb", "false"], capsys, monkeypatch)
    line = error_line(err)
    assert code == 2 and str(path.parent) in line
    for text in expected:
        assert text in line, line

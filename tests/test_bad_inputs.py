"""A user's mistake through the real CLI: one ``error:`` line naming the thing and the fix, exit code 2, no
traceback. Crafted files (a pickle that would run code when loaded) are refused by every loader, and
nothing runs."""

from __future__ import annotations

import builtins
import json
import pickle
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import ARCH
from helpers_formats import jpeg_bytes, write_insightface_array_bin, write_recordio
from PIL import Image

from unlearnkit.cli.main import main
from unlearnkit.errors import CheckpointError, DataError

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog"])


class Payload:
    """Unpickling this runs ``open(marker, "w")``: the marker file appears if a loader ever executes it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


class NumpyPayload(Payload):
    """The same through a numpy function: numpy.testing's ``runstring`` exec()s its argument."""

    def __reduce__(self):
        from numpy.testing._private.utils import runstring

        return runstring, (f"open({str(self.marker)!r}, 'w').close()", {})


@pytest.fixture(scope="session")
def files(tiny_faces, original_ckpt, tmp_path_factory) -> SimpleNamespace:
    """Every damaged or mismatched input, made once."""
    from unlearnkit.backbones import create_backbone

    root = tmp_path_factory.mktemp("bad_inputs")
    f = SimpleNamespace(faces=tiny_faces, original=original_ckpt, root=root)
    names = sorted(p.name for p in tiny_faces.iterdir() if p.is_dir())

    f.damaged = root / "damaged"  # three unreadable images of id00000: two truncated, one not an image
    shutil.copytree(tiny_faces, f.damaged)
    images = sorted((f.damaged / "id00000").iterdir())
    for path in images[:2]:
        path.write_bytes(path.read_bytes()[:120])
    images[2].write_bytes(b"this is not a JPEG" * 20)

    f.lonely = root / "lonely"  # id00003 keeps a single image
    shutil.copytree(tiny_faces, f.lonely)
    for path in sorted((f.lonely / "id00003").iterdir())[1:]:
        path.unlink()

    f.empty = root / "empty"
    f.empty.mkdir()
    f.pgm, f.gif = root / "pgm", root / "gif"  # the same faces as grey PGMs (AT&T's layout) and as GIFs
    for path in sorted(tiny_faces.glob("*/*.jpg")):
        for folder, suffix, mode in ((f.pgm, ".pgm", "L"), (f.gif, ".gif", "P")):
            (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
            Image.open(path).convert(mode).save(folder / path.parent.name / f"{path.stem}{suffix}")

    f.lists = {}
    for name, lines in {"unknown": ["id00001", "nobody"], "empty": [], "everyone": names,
                        "lonely": ["id00003"]}.items():
        f.lists[name] = root / f"forget_{name}.txt"
        f.lists[name].write_text("".join(f"{line}\n" for line in lines))

    f.few_pairs = root / "few_pairs.txt"  # 4 pairs, fewer than the 10 folds of the verification protocol
    f.few_pairs.write_text("".join(f"id0000{k}/000.jpg\tid0000{k + j}/001.jpg\t{int(j == 0)}\n"
                                   for k in range(2) for j in range(2)))
    f.pairs = root / "pairs.txt"
    f.pairs.write_text("id00000/000.jpg\tid00000/001.jpg\t1\nid00000/000.jpg\tid00001/nope.jpg\t0\n")
    f.array_bin = root / "cfp_fp.bin"  # build_eval_pack.py's flavour: images as uint8 arrays
    write_insightface_array_bin(f.array_bin, [jpeg_bytes(k, 32) for k in range(4)], [True, False])
    f.truncated_bin = root / "lfw.bin"
    data = pickle.dumps(([jpeg_bytes(0, 32), jpeg_bytes(1, 32)], [True]), protocol=pickle.HIGHEST_PROTOCOL)
    f.truncated_bin.write_bytes(data[: len(data) // 2])

    rec_images = [(label, jpeg_bytes(n, size=32)) for n, label in enumerate([0, 0, 0, 1, 1, 1, 2, 2, 2])]
    f.rec_truncated = root / "rec_truncated"
    write_recordio(f.rec_truncated, rec_images, header=False)
    rec = f.rec_truncated / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-100])
    f.rec_cut_last = root / "rec_cut_last"  # insightface's layout, the last (identity) record cut
    write_recordio(f.rec_cut_last, rec_images)
    rec = f.rec_cut_last / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-4])
    f.rec_mismatch = root / "rec_mismatch"
    write_recordio(f.rec_mismatch, rec_images)
    idx = f.rec_mismatch / "train.idx"
    lines = idx.read_text().splitlines()
    key, offset = lines[3].split("\t")
    lines[3] = f"{key}\t{int(offset) + 8}"
    idx.write_text("\n".join(lines) + "\n")

    f.manifest = root / "split.csv"
    f.manifest.write_text("path,identity,split,quality\nother/1.jpg,other,retain,\n")

    half = original_ckpt.read_bytes()
    f.truncated_ckpt = root / "truncated.ckpt"
    f.truncated_ckpt.write_bytes(half[: len(half) // 2])
    f.wide = root / "wide_backbone.pth"  # the same backbone with 64-d embeddings
    torch.save(create_backbone("timm_resnet10t", embedding_size=64, image_size=32).state_dict(), f.wide)
    f.iresnet = root / "iresnet_backbone.pth"  # another architecture with the same embedding size
    torch.save(create_backbone("iresnet18", embedding_size=32, image_size=32).state_dict(), f.iresnet)
    f.partial = root / "partial_backbone.pth"  # θ0's architecture with one weight missing
    partial = create_backbone("timm_resnet10t", embedding_size=32, image_size=32).state_dict()
    del partial[next(k for k in reversed(partial) if k.endswith(".weight"))]
    torch.save(partial, f.partial)
    # arcface_torch weights as converted / exported files often are: saved from DDP ("module."), in fp16, without
    # BatchNorm's num_batches_tracked counters; running statistics randomised so that loading them shows
    arcface = create_backbone("iresnet18", embedding_size=32, image_size=32).state_dict()
    f.arcface_state = {f"module.{k}": (torch.rand_like(v) + 0.5 if "running" in k else v).half()
                       for k, v in arcface.items() if not k.endswith("num_batches_tracked")}
    f.arcface = root / "arcface_backbone.pth"
    torch.save(f.arcface_state, f.arcface)

    f.finished = root / "finished_run"
    f.finished.mkdir()
    (f.finished / "metrics.json").write_text("{}")
    f.unfinished = root / "unfinished_run"
    (f.unfinished / "checkpoints").mkdir(parents=True)
    (f.unfinished / "checkpoints" / "last.ckpt").write_bytes(original_ckpt.read_bytes())
    return f


EVALUATION = "unlearnkit.callbacks.evaluation.FaceEvaluation"
QUIET = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--wandb", "false"]


def pretrain(f, *extra, root=None) -> list[str]:
    """A tiny pretraining run: one step, no evaluation."""
    return ["fit", "--model", "Pretrain", *(f"--model.{k}={v}" for k, v in ARCH.items()),
            "--data", "FaceDataModule", "--data.root", str(root or f.faces), "--data.image_size", "32",
            "--data.forget", "3", "--data.batch_size", "16", "--data.eval_batch_size", "64",
            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", *QUIET, *extra]


def unlearn(f, *extra, method="Dispersion", original=None) -> list[str]:
    """A tiny unlearning run from θ0 (architecture from its checkpoint): one step, no evaluation."""
    return ["fit", "--model", method, "--model.original", str(original or f.original),
            "--data", "FaceDataModule", "--data.root", str(f.faces), "--data.image_size", "32",
            "--data.forget", "3", "--data.batch_size", "16", "--data.eval_batch_size", "64",
            "--data.pk_identities", "3", "--data.pk_images", "4",
            "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", *QUIET, *extra]


def run(args: list[str], run_dir: Path, capsys) -> tuple[int, str]:
    if "--run_dir" not in args:
        args = [*args, "--run_dir", str(run_dir)]
    code = main(args=args)
    return code, capsys.readouterr().err


def assert_one_clear_line(code: int, err: str, pattern: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("error: "), err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    assert re.search(pattern, lines[-1]), lines[-1]


CASES = {
    # data sets
    "missing root": (lambda f: pretrain(f, root=f.root / "nowhere"), r"data root .*nowhere does not exist"),
    "root without images": (lambda f: pretrain(f, root=f.empty), r"no images found under .*empty"),
    "root of image types not read": (lambda f: pretrain(f, root=f.gif),
                                     r"no images found under .*gif: .* among \.jpg .*\.pgm .*; found '\.gif' \(96\)"),
    "unknown data format": (lambda f: pretrain(f, "--data.format", "lmdb"), r"unknown data format 'lmdb'"),
    "truncated .rec": (lambda f: pretrain(f, "--data.format", "recordio", root=f.rec_truncated),
                       r"train\.rec is truncated.*re-copy"),
    ".rec whose last record is cut": (lambda f: pretrain(f, "--data.format", "recordio", root=f.rec_cut_last),
                                      r"train\.rec is truncated: record 12 at offset \d+ needs 32 bytes .*re-copy"),
    ".idx disagrees with .rec": (lambda f: pretrain(f, "--data.format", "recordio", root=f.rec_mismatch),
                                 r"train\.idx disagrees with .*train\.rec.*rebuild"),
    "corrupt image (stop)": (lambda f: pretrain(f, "--trainer.max_steps", "-1", "--trainer.max_epochs", "1",
                                                root=f.damaged), r"corrupt image .*damaged/id00000/00[0-2]\.jpg"),
    "corrupt image in a DataLoader worker": (
        lambda f: pretrain(f, "--trainer.max_steps", "-1", "--trainer.max_epochs", "1", "--data.num_workers", "1",
                           root=f.damaged), r"^error: corrupt image .*damaged/id00000/00[0-2]\.jpg"),
    "bad on_bad_image value": (lambda f: pretrain(f, "--data.on_bad_image", "ignore"),
                               r"on_bad_image must be 'stop' or 'skip'"),
    # forget sets and splits
    "forget list with unknown identities": (lambda f: pretrain(f, "--data.forget_list", str(f.lists["unknown"])),
                                            r"not in the data set \(e\.g\. 'nobody'\)"),
    "empty forget list": (lambda f: pretrain(f, "--data.forget_list", str(f.lists["empty"])),
                          r"forget list .* is empty"),
    "forget set = every identity": (lambda f: pretrain(f, "--data.forget_list", str(f.lists["everyone"])),
                                    r"holds every identity"),
    "forget set = whole training set": (lambda f: pretrain(f, "--data.protocol", "sample", "--data.forget", "0.999"),
                                        r"is the whole training set"),
    "identity with one image to forget": (
        lambda f: pretrain(f, "--data.forget_list", str(f.lists["lonely"]), root=f.lonely),
        r"'id00003', which has 1 image.*heldout_per_identity=2"),
    "negative heldout_per_identity": (lambda f: pretrain(f, "--data.heldout_per_identity", "-1"),
                                      r"heldout_per_identity must be ≥ 0"),
    "split manifest of another data set": (lambda f: pretrain(f, "--data.split_manifest", str(f.manifest)),
                                           r"written for another data set"),
    # verification sets
    "pairs naming missing images": (
        lambda f: pretrain(f, "--data.pairs", json.dumps([{"name": "p", "format": "list", "path": str(f.pairs),
                                                            "image_root": str(f.faces)}])),
        r"line 2 names .*id00001/nope\.jpg, which does not exist"),
    "pair set smaller than the folds": (
        lambda f: pretrain(f, "--data.pairs", json.dumps([{"name": "few", "format": "list", "path": str(f.few_pairs),
                                                            "image_root": str(f.faces)}]),
                           "--trainer.callbacks", json.dumps([{"class_path": EVALUATION}])),
        r"verification set 'few' has 4 pairs, fewer than the 10 folds .*: give a set of at least 10 pairs"),
    "truncated .bin": (
        lambda f: pretrain(f, "--data.pairs", json.dumps([{"name": "lfw", "format": "bin",
                                                            "path": str(f.truncated_bin)}])),
        r"lfw\.bin: not a readable pickle.*truncated"),
    # config values
    "unknown method": (lambda f: ["fit", "--model", "Nope", *QUIET], r"--model takes one of .*Dispersion"),
    "negative lr": (lambda f: pretrain(f, "--model.lr", "-0.1"), r"lr must be positive, got -0\.1"),
    "zero batch size": (lambda f: pretrain(f, "--data.batch_size", "0"), r"batch sizes must be positive"),
    "unknown backbone": (lambda f: pretrain(f, "--model.backbone", "nonet"), r"unknown backbone 'nonet'"),
    "unknown option": (lambda f: pretrain(f, "--data.nope", "3"), r"Option 'nope' is not accepted"),
    "wrong value type": (lambda f: pretrain(f, "--trainer.max_epochs", "many"),
                         r"trainer\.max_epochs.*int.*Given value: many"),
    "K larger than the forget set": (lambda f: unlearn(f, "--model.num_clusters", "500", method="Cure"),
                                     r"CURE needs K ≤ \|D_f\|: 500 clusters for \d+ forget images"),
    # checkpoints
    "missing original": (lambda f: unlearn(f, original=f.root / "nope.ckpt"), r"checkpoint .*nope\.ckpt does not exist"),
    "truncated original": (lambda f: unlearn(f, original=f.truncated_ckpt),
                           r"cannot read checkpoint .*truncated\.ckpt safely"),
    "original of another embedding size": (
        lambda f: unlearn(f, *(f"--model.{k}={v}" for k, v in ARCH.items()), original=f.wide),
        r"wide_backbone\.pth: weights do not fit .*shape mismatch .*\(64, \d+\) in file vs \(32, \d+\)"),
    "original of another architecture": (
        lambda f: unlearn(f, *(f"--model.{k}={v}" for k, v in ARCH.items()), original=f.iresnet),
        r"iresnet_backbone\.pth: weights do not fit TimmEmbedding.*missing"),
    "original missing a weight": (  # the advice names options the CLI has (strict=False is not one)
        lambda f: unlearn(f, *(f"--model.{k}={v}" for k, v in ARCH.items()), original=f.partial),
        r"partial_backbone\.pth: weights do not fit TimmEmbedding: missing \S+\. Build the backbone with the name, "
        r"embedding_size and image_size these weights were trained with$"),
    "data at another image size than θ0": (lambda f: unlearn(f, "--data.image_size", "48"),
                                           r"model takes 32 px images but data\.image_size is 48"),
    "missing --ckpt_path": (lambda f: pretrain(f, "--ckpt_path", str(f.root / "gone.ckpt")),
                            r"checkpoint .*gone\.ckpt does not exist"),
    "truncated --ckpt_path": (lambda f: pretrain(f, "--ckpt_path", str(f.truncated_ckpt)),
                              r"cannot read checkpoint .*truncated\.ckpt safely"),
    # run directories
    "finished run directory": (lambda f: pretrain(f, "--run_dir", str(f.finished)), r"already holds a finished run"),
    "unfinished run directory": (lambda f: pretrain(f, "--run_dir", str(f.unfinished)),
                                 r"holds checkpoints of an unfinished run: resume it with --ckpt_path .*last\.ckpt"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_mistake_is_one_clear_error_line(case, files, tmp_path, capsys):
    build, pattern = CASES[case]
    code, err = run(build(files), tmp_path / "run", capsys)
    assert_one_clear_line(code, err, pattern)
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt")), "stopped only after training"


def test_folder_of_grey_pgm_faces_trains(files, tmp_path, capsys):
    """A face set as ``<identity>/<n>.pgm`` (grey, as the AT&T faces are distributed) is read and trained on."""
    code, err = run(pretrain(files, root=files.pgm), tmp_path / "run", capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert "\nid00000/000.pgm,id00000," in (tmp_path / "run" / "split.csv").read_text()


def test_insightface_bin_of_uint8_arrays_through_the_cli(files, tmp_path, capsys):
    """A .bin written by build_eval_pack.py (images as uint8 arrays) loads as a verification set."""
    pairs = json.dumps([{"name": "cfp_fp", "format": "bin", "path": str(files.array_bin)}])
    code, err = run(pretrain(files, "--data.pairs", pairs), tmp_path / "run", capsys)
    assert code == 0, err
    written = (tmp_path / "run" / "pairs-cfp_fp.txt").read_text().splitlines()
    assert written[1:] == ["cfp_fp.bin#0\tcfp_fp.bin#1\t1\t0", "cfp_fp.bin#2\tcfp_fp.bin#3\t0\t0"]


def test_arcface_weights_without_num_batches_tracked_load(files, tmp_path, capsys):
    """fp16 arcface_torch weights saved from DDP and lacking num_batches_tracked: an unlearning run starts from
    them, and every tensor of the file is loaded (the counters filled)."""
    from unlearnkit.backbones import create_backbone, load_backbone_weights

    arch = ["--model.backbone", "iresnet18", "--model.embedding_size", "32", "--model.image_size", "32"]
    code, err = run(unlearn(files, *arch, original=files.arcface), tmp_path / "run", capsys)
    assert code == 0, err
    model = load_backbone_weights(create_backbone("iresnet18", embedding_size=32, image_size=32), files.arcface)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k.removeprefix("module.")], v.float()) for k, v in files.arcface_state.items())
    assert all(int(v) == 0 for k, v in loaded.items() if k.endswith("num_batches_tracked"))


def test_corrupt_images_skipped_and_counted(files, tmp_path, capsys):
    """``on_bad_image: skip``: the run finishes; the three unreadable images are counted once each."""
    code, err = run(pretrain(files, "--trainer.max_steps", "-1", "--trainer.max_epochs", "1",
                             "--trainer.limit_val_batches", "1.0", "--data.on_bad_image", "skip",
                             root=files.damaged), tmp_path / "run", capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["data/bad_images"] == 3


def test_run_directory_held_by_a_live_process(files, tmp_path, capsys):
    """The lock names its owner; once the owner is dead, the next run takes the lock over and releases it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        lock = {"pid": owner.pid, "host": socket.gethostname(), "slurm_job": None}
        (run_dir / "run.lock").write_text(json.dumps(lock))
        code, err = run(pretrain(files, "--run_dir", str(run_dir)), run_dir, capsys)
        assert_one_clear_line(code, err, rf"run directory .*run is in use by process {owner.pid}")
        assert json.loads((run_dir / "run.lock").read_text())["pid"] == owner.pid
    finally:
        owner.kill()
        owner.wait()
    # the owner is gone: the lock is stale and taken over; this run then stops on its own mistake
    code, err = run(pretrain(files, "--run_dir", str(run_dir), root=files.root / "nowhere"), run_dir, capsys)
    assert_one_clear_line(code, err, r"data root .*nowhere does not exist")
    assert not (run_dir / "run.lock").exists()  # released at exit


# ------------------------------------------------------------------ crafted files run no code
@pytest.fixture
def crafted(tmp_path) -> SimpleNamespace:
    """Files whose pickle calls ``open(marker, "w")`` when loaded, each checked to be live."""
    c = SimpleNamespace(marker=tmp_path / "marker")
    c.ckpt = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {"backbone.w": torch.zeros(1)}, "hyper_parameters": Payload(c.marker)}, c.ckpt)
    c.pth = tmp_path / "backbone.pth"
    torch.save({"conv1.weight": torch.zeros(1), "fc": Payload(c.marker)}, c.pth)
    c.bin = tmp_path / "lfw.bin"
    c.bin.write_bytes(pickle.dumps(([Payload(c.marker), b"x"], [True])))
    c.numpy_bin = tmp_path / "cfp_fp.bin"  # uint8 arrays, as build_eval_pack.py writes, and a numpy call
    jpeg = np.frombuffer(jpeg_bytes(0, 32), np.uint8)
    c.numpy_bin.write_bytes(pickle.dumps(([jpeg, NumpyPayload(c.marker)], [True]), protocol=pickle.HIGHEST_PROTOCOL))
    for path in (c.ckpt, c.pth):  # the payloads are real: an unrestricted load runs them
        torch.load(path, weights_only=False)
        assert c.marker.exists()
        c.marker.unlink()
    for path in (c.bin, c.numpy_bin):
        pickle.loads(path.read_bytes())
        assert c.marker.exists()
        c.marker.unlink()
    return c


def test_crafted_files_through_the_cli_run_nothing(crafted, files, tmp_path, capsys):
    refused = r"cannot read checkpoint .* safely: it asks for (builtins|io)\.open, which could run code"
    for n, (args, pattern) in enumerate([
        (unlearn(files, original=crafted.ckpt), refused),
        (unlearn(files, original=crafted.pth), refused),
        (pretrain(files, "--ckpt_path", str(crafted.ckpt)), refused),
        (pretrain(files, "--data.pairs", json.dumps([{"name": "lfw", "format": "bin", "path": str(crafted.bin)}])),
         r"lfw\.bin: refuses to load this pickle: it asks for (builtins|io)\.open, which could run code"),
        (pretrain(files, "--data.pairs", json.dumps([{"name": "cfp", "format": "bin", "path": str(crafted.numpy_bin)}])),
         r"cfp_fp\.bin: refuses to load this pickle: it asks for numpy\.testing\._private\.utils\.runstring, "
         r"which could run code"),
    ]):
        code, err = run(args, tmp_path / f"run{n}", capsys)
        assert_one_clear_line(code, err, pattern)
        assert not crafted.marker.exists()


def test_crafted_files_through_each_loader_run_nothing(crafted):
    from unlearnkit.backbones import create_backbone, load_backbone_weights
    from unlearnkit.checkpoints import AtomicCheckpointIO, read_checkpoint
    from unlearnkit.data.verification import load_bin

    backbone = create_backbone("timm_resnet10t", embedding_size=32, image_size=32)
    attempts = [
        (lambda: read_checkpoint(crafted.ckpt), CheckpointError),
        (lambda: load_backbone_weights(backbone, crafted.pth), CheckpointError),
        (lambda: AtomicCheckpointIO().load_checkpoint(crafted.ckpt, weights_only=False), CheckpointError),
        (lambda: load_bin(crafted.bin), DataError),
    ]
    for attempt, error in attempts:
        with pytest.raises(error, match=r"asks for (builtins|io)\.open, which could run code"):
            attempt()
        assert not crafted.marker.exists()

"""Nothing lost: a run SIGKILLed mid-epoch resumes from its last checkpoint to the very metrics of an
uninterrupted run; checkpoints are written atomically; one run per run directory; same seed, same metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ARCH, pretrain_cli_args

from unlearnkit.checkpoints import AtomicCheckpointIO
from unlearnkit.cli.main import main
from unlearnkit.errors import CheckpointError
from unlearnkit.utils.run_lock import LOCK_NAME, RunDirectoryBusy, RunLock

TESTS = Path(__file__).resolve().parent
STEPS_PER_EPOCH = 5  # 72 training images (12 identities × 6) in batches of 16
KILL_AT_STEP = 6  # epoch 1, after its first batch: mid-epoch, just after a checkpoint (every 2 steps)


def _config(tiny_faces, path: Path, *extra_callbacks: dict) -> Path:
    """Pretraining for 2 epochs with evaluation each epoch and a checkpoint every 2 steps."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": 2, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False,
            "callbacks": [{"class_path": "unlearnkit.callbacks.evaluation.FaceEvaluation",
                           "init_args": {"ks": [1], "plots": False}}, *extra_callbacks],
        },
        "model": {"class_path": "unlearnkit.methods.base.Pretrain", "init_args": {**ARCH, "lr": 0.05}},
        "data": {"class_path": "unlearnkit.data.datamodule.FaceDataModule",
                 "init_args": {"root": str(tiny_faces), "image_size": 32, "forget": 3, "batch_size": 16,
                               "eval_batch_size": 64}},
        "checkpoint": {"every_n_train_steps": 2},
        "wandb": False,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _unlearnkit(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}  # the same threads in every run: the same float sums
    return subprocess.run([sys.executable, "-m", "unlearnkit.cli.main", "fit", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def _metrics(run_dir: Path) -> dict[str, float]:
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return {k: v for k, v in metrics.items() if "seconds" not in k}  # wall-clock time differs, of course


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = {k: (a[k], b[k]) for k in a if abs(a[k] - b[k]) > 1e-6}
    assert not different, different


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_metrics(tiny_faces, tmp_path):
    config = _config(tiny_faces, tmp_path / "run.yaml")
    killing = _config(tiny_faces, tmp_path / "kill.yaml",
                      {"class_path": "resume_script.KillAtStep", "init_args": {"step": KILL_AT_STEP}})

    whole = _unlearnkit("--config", config, "--run_dir", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "killed"
    killed = _unlearnkit("--config", killing, "--run_dir", run_dir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)  # whole and loadable
    assert checkpoint["global_step"] == KILL_AT_STEP
    assert checkpoint["epoch"] == KILL_AT_STEP // STEPS_PER_EPOCH  # mid-epoch
    assert not list(run_dir.rglob("*.tmp"))
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] != os.getpid()  # left behind by the dead run

    fresh = _unlearnkit("--config", config, "--run_dir", run_dir)  # starting over would mix two runs
    assert fresh.returncode == 2 and "holds checkpoints of an unfinished run" in fresh.stderr
    resumed = _unlearnkit("--config", config, "--run_dir", run_dir, "--ckpt_path", last)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    _assert_same(_metrics(tmp_path / "whole"), _metrics(run_dir))
    assert _metrics(run_dir)["cost/optimizer_steps"] == 2 * STEPS_PER_EPOCH
    assert (run_dir / "metrics.part1.csv").is_file() and (run_dir / "metrics.csv").is_file()  # both parts kept
    assert not (run_dir / LOCK_NAME).exists()


def test_same_seed_same_metrics_in_process(tiny_faces, original_ckpt, tmp_path, monkeypatch, capsys):
    """An unlearning run (P×K batches, θ0 teacher, evaluation) twice: equal metrics; checkpoints go through
    AtomicCheckpointIO."""
    monkeypatch.setattr(sys, "argv", ["prog"])
    saves = []
    save = AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint",
                        lambda self, checkpoint, path, storage_options=None: saves.append(path)
                        or save(self, checkpoint, path, storage_options))
    args = ["fit", "--seed_everything", "0", "--model", "Dispersion", "--model.original", str(original_ckpt),
            "--model.retain_weight", "1.0", "--data", "FaceDataModule", "--data.root", str(tiny_faces),
            "--data.image_size", "32", "--data.forget", "3", "--data.batch_size", "16",
            "--data.pk_identities", "3", "--data.pk_images", "4", "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.callbacks",
            json.dumps([{"class_path": "unlearnkit.callbacks.evaluation.FaceEvaluation",
                         "init_args": {"ks": [1], "plots": False}}]),
            "--wandb", "false"]
    for name in ("a", "b"):
        assert main(args=[*args, "--run_dir", str(tmp_path / name)]) == 0, capsys.readouterr().err
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert "forget/mAP" in a and "retain/mAP" in a
    _assert_same(a, b)
    assert saves and all(Path(p).parent.name == "checkpoints" for p in saves)


# ------------------------------------------------------------------ atomic checkpoints
class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full")  # a save that dies half-way


def test_demo_and_study_runs_resume_a_stopped_run(tiny_faces, tmp_path):
    """``demo.cli`` (the demo's and the study's runner) picks a stopped run up from its last checkpoint, where
    the plain CLI refuses a directory holding one; a finished run is not run again."""
    from unlearnkit.demo import cli

    run_dir = tmp_path / "run"
    args = pretrain_cli_args(tiny_faces, run_dir, "--wandb", "false")
    assert main([*args, "--trainer.max_epochs", "1"]) == 0
    (run_dir / "metrics.json").unlink()  # as if stopped after its last checkpoint
    assert main([*args, "--trainer.max_epochs", "2"]) == 2  # refused: it holds an unfinished run
    cli([*args, "--trainer.max_epochs", "2"])
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 1 and state["global_step"] == 2 * STEPS_PER_EPOCH  # epoch 0 kept, epoch 1 added
    finished = (run_dir / "metrics.json").stat().st_mtime_ns
    cli([*args, "--trainer.max_epochs", "2"])
    assert (run_dir / "metrics.json").stat().st_mtime_ns == finished


def test_a_run_stopped_after_its_final_checkpoint_still_gets_its_evaluation(tiny_faces, tmp_path):
    """Stopped between the final checkpoint and the summary (a SIGTERM in the study did this), the resumed run has
    no epoch left to train: its evaluation still runs and metrics.json matches the run's own, not a summary
    without a single evaluation value that a resumed study would take for a finished run."""
    from unlearnkit.demo import cli

    config = _config(tiny_faces, tmp_path / "run.yaml")
    settings = yaml.safe_load(config.read_text())
    del settings["checkpoint"]  # the default: last.ckpt at the end of each epoch, after its evaluation
    config.write_text(yaml.safe_dump(settings))
    run_dir = tmp_path / "run"
    args = ["fit", "--config", str(config), "--run_dir", str(run_dir), "--trainer.max_epochs", "1"]
    assert main(args) == 0
    finished = _metrics(run_dir)
    assert "retain/mAP" in finished
    (run_dir / "metrics.json").unlink()  # as if stopped after the final checkpoint, before the summary
    (run_dir / "evaluation.json").unlink()
    resumed = cli(args)
    assert json.loads((run_dir / "metrics.json").read_text())["stage"] == "fit"
    assert (run_dir / "evaluation.json").is_file()
    evaluated = {k: v for k, v in finished.items() if "/" in k and not k.startswith(("train/", "cost/"))}
    _assert_same(evaluated, {k: resumed[k] for k in evaluated})


def test_checkpoint_save_is_atomic_and_load_weights_only(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "later": _Unpicklable()}, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left behind
    back = io.load_checkpoint(path, weights_only=False)  # weights_only regardless of the caller
    assert back["global_step"] == 1 and torch.equal(back["state_dict"]["w"], torch.ones(3))
    with pytest.raises(CheckpointError, match="does not exist"):
        io.load_checkpoint(tmp_path / "none.ckpt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pth")
    with pytest.raises(CheckpointError, match="not a Lightning checkpoint"):
        io.load_checkpoint(tmp_path / "plain.pth")


# ------------------------------------------------------------------ the run-directory lock
def _other_process_acquires(run_dir: Path) -> subprocess.CompletedProcess:
    code = ("import sys; from unlearnkit.utils.run_lock import RunLock, RunDirectoryBusy\n"
            "try:\n    RunLock(sys.argv[1]).acquire()\nexcept RunDirectoryBusy as err:\n"
            "    print(err); sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=60)


def test_lock_is_exclusive_and_released(tmp_path):
    lock = RunLock(tmp_path).acquire()
    owner = json.loads((tmp_path / LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    other = _other_process_acquires(tmp_path)
    assert other.returncode == 3 and f"in use by process {os.getpid()}" in other.stdout
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    assert _other_process_acquires(tmp_path).returncode == 0  # free again (that process held it until exit)


def test_stale_locks_are_taken_over_live_or_foreign_ones_not(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    path = tmp_path / LOCK_NAME
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()

    def write(owner):
        path.write_text(json.dumps(owner))

    write({"pid": dead.pid, "host": here, "slurm_job": None})
    RunLock(tmp_path).acquire().release()  # a dead pid on this host: taken over

    write({"pid": 1, "host": here, "slurm_job": None})  # alive (init)
    with pytest.raises(RunDirectoryBusy, match="in use by process 1 on"):
        RunLock(tmp_path).acquire()

    write({"pid": dead.pid, "host": "another-node", "slurm_job": "42"})  # cannot check another machine
    with pytest.raises(RunDirectoryBusy, match="another-node"):
        RunLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # ... unless it is an earlier incarnation of this requeued job
    RunLock(tmp_path).acquire().release()

    path.write_text("")  # being written by a starting run: respected while fresh, stale once old
    with pytest.raises(RunDirectoryBusy, match="being written or is damaged"):
        RunLock(tmp_path).acquire()
    old = time.time() - 60
    os.utime(path, (old, old))
    RunLock(tmp_path).acquire().release()
    assert not path.exists()

"""The sbatch templates on a real SLURM: `make test-cluster` starts a one-node cluster on this machine
(scripts/slurm/local_cluster.sh) and runs these with ``-m cluster``; anywhere else they are skipped (plain
`make test` never submits jobs, even where ``sinfo`` reaches a cluster).

Every job runs a tiny dispersion unlearning run (CPU, gloo) with the CPU DDP overlay configs/trainer/cpu_ddp.yaml
standing in for GPUs, with ``--gpus-per-node=0 --cpus-per-task=1`` overriding the templates' GPU header:
- single_node.sbatch, 2 tasks: both ranks train, and the run's evaluation equals a single-process evaluation
  of the model it ends with (1e-6);
- the same job sent SIGUSR1 mid-run (``scancel --signal=USR1``, what ``#SBATCH --signal`` does before the
  time limit): it saves at a step boundary, requeues itself, resumes from that checkpoint and ends with the
  metrics of the uninterrupted job, in the same W&B run;
- multi_node.sbatch on the one node there is (``--nodes=1``; its two-node command line is checked with a
  stand-in srun in tests/test_slurm.py), and an array job, one task per seed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "scripts" / "slurm"
CPU_DDP = "configs/trainer/cpu_ddp.yaml"
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE"}
EPOCHS = 6

pytestmark = pytest.mark.cluster


def slurm_reachable() -> bool:
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


@pytest.fixture(scope="module", autouse=True)
def cluster(request):
    if "cluster" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("submits SLURM jobs: run with -m cluster (make test-cluster)")
    if not slurm_reachable():
        pytest.skip("no SLURM reachable (sinfo): start one with scripts/slurm/local_cluster.sh start")


@pytest.fixture(scope="module")
def experiment(tiny_faces, original_ckpt, tmp_path_factory) -> Path:
    """Dispersion on 3 forgotten people (18 images: 3 P×K batches, an odd count, so 2 ranks pad the epoch);
    evaluation with verification pairs at every epoch."""
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": EPOCHS, "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1,
                    "callbacks": [{"class_path": "unlearnkit.callbacks.evaluation.FaceEvaluation",
                                   "init_args": {"ks": [1, 5], "plots": False}}]},
        "data": {"class_path": "unlearnkit.data.datamodule.FaceDataModule",
                 "init_args": {"root": str(tiny_faces), "image_size": 32, "protocol": "identity", "forget": 3,
                               "heldout_per_identity": 2, "batch_size": 8, "eval_batch_size": 16,
                               "pk_identities": 2, "pk_images": 3,
                               "pairs": [{"name": "heldout", "format": "heldout", "num_pairs": 40}]}},
        "model": {"class_path": "unlearnkit.methods.dispersion.Dispersion",
                  "init_args": {"original": str(original_ckpt), "lr": 0.01, "min_steps": 0}},
    }
    path = tmp_path_factory.mktemp("cluster") / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def submit(template: str, config: Path, run_dir: Path, *args: str, sbatch: tuple[str, ...] = ()) -> str:
    """``sbatch`` a template from the repository root with the CPU overlay; the job id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    env.update(UNLEARNKIT_TRAINER=CPU_DDP, RUN_DIR=str(run_dir), OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}:{env['PATH']}", UNLEARNKIT_VENV=str(Path(sys.executable).parents[1]))
    out_dir = run_dir.parent if "%a" in run_dir.name else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = ["sbatch", "--parsable", f"--output={out_dir}/slurm-%j.out", "--ntasks-per-node=2", "--gpus-per-node=0",
           "--cpus-per-task=1", *sbatch, str(SLURM / template), str(config), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc.stdout.strip().split(";")[0]


def job_info(job: str) -> list[dict[str, str]]:
    """``scontrol show job`` of a job (one entry per array task)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.strip()]


def wait(job: str, timeout: float = 240) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        infos = job_info(job)
        if infos and all(info["JobState"] in FINAL_STATES for info in infos):
            return infos
        time.sleep(0.5)
    subprocess.run(["scancel", job], check=False)
    raise AssertionError(f"job {job} did not end within {timeout:.0f} s: {job_info(job)}")


def log_of(run_dir: Path, job: str) -> str:
    return (run_dir / f"slurm-{job}.out").read_text()


def evaluation(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "evaluation.json").read_text())["metrics"]


def assert_close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    wrong = {k: (a[k], b[k]) for k in a if abs(a[k] - b[k]) > 1e-6}
    assert not wrong, wrong


@pytest.fixture(scope="module")
def whole_job(experiment, tmp_path_factory) -> tuple[Path, str]:
    """single_node.sbatch with 2 tasks, run to the end."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    job = submit("single_node.sbatch", experiment, run_dir)
    (info,) = wait(job)
    assert info["JobState"] == "COMPLETED", log_of(run_dir, job)[-4000:]
    return run_dir, job


def test_single_node_job_trains_on_two_ranks_and_evaluates_exactly(whole_job, experiment, tmp_path, monkeypatch):
    from unlearnkit.cli.main import main

    run_dir, job = whole_job
    log = log_of(run_dir, job)
    assert f"job {job}: 1 node(s) × 2 GPU(s)" in log
    assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log, "both SLURM tasks joined the DDP run"
    summary = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # 18 forget images = 3 P×K batches: padded to 4, 2 steps per rank and epoch
    assert summary["cost/optimizer_steps"] == 2 * EPOCHS and summary["epoch"] == EPOCHS
    # the same model evaluated by one process: every metric equal
    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    assert main(["validate", "--config", str(experiment), "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"),
                 "--run_dir", str(tmp_path / "single"), "--wandb", "false"]) == 0
    single = evaluation(tmp_path / "single")
    assert any(k.startswith("forget/") for k in single) and any(k.startswith("verify/") for k in single)
    assert_close(evaluation(run_dir), single)


def test_sigusr1_requeues_and_resumes_to_the_uninterrupted_metrics(whole_job, experiment, tmp_path):
    run_dir = tmp_path / "run"
    job = submit("single_node.sbatch", experiment, run_dir)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists():  # one epoch done: the run is training
        assert time.monotonic() < deadline and job_info(job)[0]["JobState"] in ("PENDING", "RUNNING"), \
            log_of(run_dir, job)[-4000:]
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    (info,) = wait(job)
    log = log_of(run_dir, job)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log[-4000:]

    hpc = run_dir / "hpc_ckpt_1.ckpt"
    requeued = re.search(rf"requeued SLURM job {job} at step (\d+): it resumes from {re.escape(str(hpc))}", log)
    assert requeued, log[-4000:]
    assert f"resume from {hpc}" in log, "the requeued job did not resume from the checkpoint it saved"
    import torch

    step = int(requeued.group(1))
    assert 0 < step < 2 * EPOCHS and torch.load(hpc, map_location="cpu", weights_only=True)["global_step"] == step
    whole_dir, _ = whole_job
    assert_close(evaluation(run_dir), evaluation(whole_dir))
    summary, whole = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (run_dir, whole_dir))
    assert summary["cost/optimizer_steps"] == whole["cost/optimizer_steps"]
    # both starts logged into one W&B run: the job's id
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-slurm-{job}") for r in runs), runs


def test_multi_node_template_on_one_node(experiment, tmp_path):
    run_dir = tmp_path / "run"
    job = submit("multi_node.sbatch", experiment, run_dir, "--trainer.max_epochs", "1", sbatch=("--nodes=1",))
    (info,) = wait(job)
    log = log_of(run_dir, job)
    assert info["JobState"] == "COMPLETED", log[-4000:]
    assert f"job {job}: 1 node(s) × 2 GPU(s)" in log and "MEMBER: 2/2" in log
    trainer = yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]
    assert (trainer["num_nodes"], str(trainer["devices"]), trainer["accelerator"]) == (1, "2", "cpu")


def test_array_job_one_task_per_seed(experiment, tmp_path):
    run_dirs = tmp_path / "seed-%a"
    job = submit("single_node.sbatch", experiment, run_dirs, "--seed_everything", "%a", "--trainer.max_epochs", "1",
                 sbatch=("--array=0-1", "--ntasks-per-node=1"))
    infos = wait(job)
    assert len(infos) == 2
    for seed in (0, 1):
        run_dir = tmp_path / f"seed-{seed}"
        info = next(i for i in infos if i["ArrayTaskId"] == str(seed))
        assert info["JobState"] == "COMPLETED", log_of(tmp_path, info["JobId"])[-4000:]
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed_everything"] == seed
        assert json.loads((run_dir / "metrics.json").read_text())["metrics"]["epoch"] == 1
        (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
        assert wandb_run.name.endswith(f"-slurm-{job}_{seed}")

"""SLURM: the sbatch templates' command line, the run id and checkpoint they resume from, and Lightning's
SLURM environment (auto-requeue on SIGUSR1) picked up by the CLI's trainer. No SLURM needed: ``srun`` and
``scontrol`` are stand-ins that record their arguments."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import pretrain_cli_args

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "scripts" / "slurm"
TEMPLATES = [SLURM / "single_node.sbatch", SLURM / "multi_node.sbatch"]  # one DDP run each
JOB_ID = "4242"


def slurm_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_JOB_ID=JOB_ID, SLURM_SUBMIT_DIR=str(ROOT), UNLEARNKIT_VENV=str(tmp_path / "no-venv"))
    env.pop("UNLEARNKIT_WANDB_ID", None)
    env.update(extra)
    return env


def source_env(env: dict[str, str]) -> dict[str, str]:
    """What scripts/slurm/env.sh sets, run from the repository root."""
    names = ["UNLEARNKIT_WANDB_ID", "RUN_DIR", "UNLEARNKIT_CKPT", "UNLEARNKIT_DEVICES", "UNLEARNKIT_NODES"]
    script = "set -euo pipefail; source scripts/slurm/env.sh; " + "; ".join(f'echo "{n}=${{{n}}}"' for n in names)
    out = subprocess.run(["bash", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def sbatch_options(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=?(\S*)", path.read_text(), flags=re.M))


def test_env_sh_run_id_run_dir_and_resume_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    env = slurm_env(tmp_path, RUN_DIR=str(run_dir), SLURM_NTASKS_PER_NODE="8", SLURM_JOB_NUM_NODES="2")
    first = source_env(env)
    assert first["UNLEARNKIT_WANDB_ID"] == f"slurm-{JOB_ID}" and first["RUN_DIR"] == str(run_dir)
    assert first["UNLEARNKIT_CKPT"] == "" and (first["UNLEARNKIT_DEVICES"], first["UNLEARNKIT_NODES"]) == ("8", "2")
    # the default run directory is stable across requeues (same job id); an array task has its own
    assert source_env(slurm_env(tmp_path))["RUN_DIR"] == f"runs/slurm-{JOB_ID}"
    array = source_env(slurm_env(tmp_path, SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3"))
    assert array["UNLEARNKIT_WANDB_ID"] == "slurm-77_3" and array["RUN_DIR"] == "runs/slurm-77_3"
    # a RUN_DIR given to an array job names each task's directory with %a; without it the tasks would share one
    array_dirs = slurm_env(tmp_path, SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="3", RUN_DIR=str(tmp_path / "seed-%a"))
    assert source_env(array_dirs)["RUN_DIR"] == str(tmp_path / "seed-3")
    with pytest.raises(subprocess.CalledProcessError) as shared:
        source_env({**array_dirs, "RUN_DIR": str(tmp_path / "seeds")})
    assert "put %a" in shared.value.stderr
    assert source_env({**env, "UNLEARNKIT_WANDB_ID": "mine"})["UNLEARNKIT_WANDB_ID"] == "mine"
    # resume from the newest of checkpoints/last.ckpt and Lightning's hpc_ckpt_N.ckpt (saved on SIGUSR1)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert source_env(env)["UNLEARNKIT_CKPT"] == str(last)
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    hpc.write_bytes(b"")
    os.utime(last, (time.time() - 60, time.time() - 60))
    assert source_env(env)["UNLEARNKIT_CKPT"] == str(hpc)
    os.utime(hpc, (time.time() - 120, time.time() - 120))
    assert source_env(env)["UNLEARNKIT_CKPT"] == str(last)


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.stem for t in TEMPLATES])
def test_sbatch_template_launches_resumable_ddp_run(template, tmp_path):
    assert {t.name for t in SLURM.glob("*.sbatch")} == {t.name for t in TEMPLATES} | {"audit_array.sbatch"}
    subprocess.run(["bash", "-n", str(template)], check=True)
    opts = sbatch_options(template)
    assert opts["signal"] == "SIGUSR1@90" and "requeue" in opts
    assert opts["ntasks-per-node"] == opts["gpus-per-node"], "one task per GPU"
    nodes = int(opts["nodes"])
    assert (nodes == 1) == (template.stem == "single_node")

    bin_dir, log = tmp_path / "bin", tmp_path / "srun.log"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$UNLEARNKIT_WANDB_ID" "$@" > "$SRUN_LOG"\n')
    (bin_dir / "srun").chmod(0o755)
    run_dir = tmp_path / "run"
    env = slurm_env(tmp_path, RUN_DIR=str(run_dir), SRUN_LOG=str(log), PATH=f"{bin_dir}:{os.environ['PATH']}",
                    SLURM_NTASKS_PER_NODE=opts["ntasks-per-node"], SLURM_JOB_NUM_NODES=str(nodes))
    config = "configs/experiment/unlearn_synthetic.yaml"
    expected = ["unlearnkit", "fit", "--config", config, "--trainer", "configs/trainer/ddp.yaml",
                "--trainer.devices", opts["ntasks-per-node"], "--trainer.num_nodes", str(nodes),
                "--run_dir", str(run_dir)]

    def launched() -> list[str]:
        subprocess.run(["bash", str(template), config, "--trainer.max_epochs", "3"], env=env, cwd=tmp_path,
                       check=True, capture_output=True)
        wandb_id, *argv = log.read_text().splitlines()
        assert wandb_id == f"slurm-{JOB_ID}"
        return argv

    assert launched() == [*expected, "--trainer.max_epochs", "3"]
    last = run_dir / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    assert launched() == [*expected, "--ckpt_path", str(last), "--trainer.max_epochs", "3"]
    # an array task: %a in the arguments and in RUN_DIR becomes the task's index
    env.update(SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="2", RUN_DIR=str(tmp_path / "seed-%a"))
    subprocess.run(["bash", str(template), config, "--seed_everything", "%a", "--data.root", "d%a"], env=env,
                   cwd=tmp_path, check=True, capture_output=True)
    wandb_id, *argv = log.read_text().splitlines()
    assert wandb_id == "slurm-77_2"
    assert argv[argv.index("--run_dir") + 1] == str(tmp_path / "seed-2")
    assert argv[-4:] == ["--seed_everything", "2", "--data.root", "d2"]


SLURM_TASK = dict(SLURM_NTASKS="1", SLURM_NTASKS_PER_NODE="1", SLURM_JOB_NAME="unlearnkit", SLURM_PROCID="0",
                  SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NODELIST="node001", SLURM_JOB_NUM_NODES="1")


@pytest.fixture
def in_slurm_job(tmp_path, monkeypatch):
    """This process as task 0 of SLURM job 4242, with the W&B id scripts/slurm/env.sh derives."""
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    for key, value in {**SLURM_TASK, "SLURM_JOB_ID": JOB_ID}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("UNLEARNKIT_WANDB_ID", raising=False)
    monkeypatch.setenv("UNLEARNKIT_WANDB_ID", source_env(slurm_env(tmp_path))["UNLEARNKIT_WANDB_ID"])
    monkeypatch.setattr(sys, "argv", ["unlearnkit"])


def test_trainer_uses_slurm_environment_and_job_wandb_id(in_slurm_job, tiny_faces, tmp_path, monkeypatch):
    import lightning.pytorch as pl
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.loggers import WandbLogger

    from unlearnkit.cli.main import main

    # task 1 of 2 on this node, as srun starts it for the ddp config (the trainer is built, not run)
    for key, value in dict(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", SLURM_PROCID="1", SLURM_LOCALID="1").items():
        monkeypatch.setenv(key, value)
    built = []
    monkeypatch.setattr(pl.Trainer, "fit", lambda self, *args, **kwargs: built.append(self))
    assert main(pretrain_cli_args(tiny_faces, tmp_path / "run", "--wandb", "true", "--trainer", "configs/trainer/ddp.yaml",
                         "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                         "--trainer.precision", "32-true")) == 0
    trainer = built[0]
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.creates_processes_externally
    assert env.auto_requeue and env.requeue_signal == signal.SIGUSR1 and env.job_id() == int(JOB_ID)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank) == (2, 1, 1)
    wandb = next(lg for lg in built[0].loggers if isinstance(lg, WandbLogger))
    assert wandb.version == f"slurm-{JOB_ID}" and wandb._wandb_init["resume"] == "allow"


def dispersion_cli_args(tiny_faces, original_ckpt, run_dir, *extra) -> list[str]:
    """Dispersion from θ0 with frozen BatchNorm, 3 P×K batches an epoch (18 forget images, P×K = 2 × 3)."""
    return ["fit", "--model", "Dispersion", "--model.original", str(original_ckpt), "--model.min_steps", "0",
            "--data", "FaceDataModule", "--data.root", str(tiny_faces), "--data.image_size", "32",
            "--data.forget", "3", "--data.pk_identities", "2", "--data.pk_images", "3",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.limit_val_batches", "0",
            "--run_dir", str(run_dir), "--wandb", "false", *extra]


def test_sigusr1_saves_at_a_step_boundary_requeues_and_resumes_exactly(in_slurm_job, tiny_faces, original_ckpt,
                                                                        tmp_path, monkeypatch):
    """SIGUSR1 mid-step: the handler only records it; at the end of that step SlurmRequeue saves
    hpc_ckpt_1.ckpt, calls `scontrol requeue <job>` and stops the run (exit status 0); the requeued job resumes
    from the checkpoint env.sh picks, mid-epoch, with BatchNorm still frozen, and ends with the parameters of an
    uninterrupted run."""
    import torch

    from unlearnkit.callbacks.requeue import JobRequeued
    from unlearnkit.cli.main import main
    from unlearnkit.methods.dispersion import Dispersion

    bin_dir, log = tmp_path / "bin", tmp_path / "scontrol.log"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> "{log}"\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    seen = {}
    train_start = Dispersion.on_train_start

    def on_train_start(self):
        train_start(self)
        seen.setdefault("start_steps", []).append(self.trainer.global_step)
        seen["handler"] = signal.getsignal(signal.SIGUSR1)

    def on_before_optimizer_step(self, optimizer):  # mid-step, where Lightning's own handler would save
        if self.trainer.global_step == 1 and seen.get("signal", False):
            seen["signal"] = False
            os.kill(os.getpid(), signal.SIGUSR1)

    monkeypatch.setattr(Dispersion, "on_train_start", on_train_start)
    monkeypatch.setattr(Dispersion, "on_before_optimizer_step", on_before_optimizer_step)
    whole = tmp_path / "whole"
    assert main(dispersion_cli_args(tiny_faces, original_ckpt, whole, "--trainer.max_steps", "5")) == 0

    seen["signal"] = True
    run_dir = tmp_path / "run"
    with pytest.raises(JobRequeued) as stopped:
        main(dispersion_cli_args(tiny_faces, original_ckpt, run_dir, "--trainer.max_steps", "5"))
    assert stopped.value.code == 0 and "requeued SLURM job 4242 at step 2" in stopped.value.message
    assert seen["handler"] not in (signal.SIG_DFL, signal.SIG_IGN, None), "no SIGUSR1 handler during fit"
    assert log.read_text().split() == ["requeue", JOB_ID]
    assert not (run_dir / "metrics.json").exists(), "a requeued run is not finished"

    ckpt = source_env(slurm_env(tmp_path, RUN_DIR=str(run_dir)))["UNLEARNKIT_CKPT"]
    assert ckpt == str(run_dir / "hpc_ckpt_1.ckpt")
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 2  # the step in flight ended
    assert main(dispersion_cli_args(tiny_faces, original_ckpt, run_dir, "--trainer.max_steps", "5",
                                    "--ckpt_path", ckpt)) == 0
    assert seen["start_steps"] == [0, 0, 2]
    final = [torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True) for d in (whole, run_dir)]
    assert final[0]["global_step"] == final[1]["global_step"] == 5
    differ = [k for k, v in final[0]["state_dict"].items() if not torch.equal(v, final[1]["state_dict"][k])]
    assert not differ, f"the resumed run differs from the uninterrupted one: {differ[:5]}"


def test_audit_array_task_trains_its_seed(tmp_path):
    """scripts/slurm/audit_array.sbatch: each array task runs `unlearnkit audit ... --seed <task index>`."""
    template = SLURM / "audit_array.sbatch"
    subprocess.run(["bash", "-n", str(template)], check=True)
    assert "requeue" in sbatch_options(template)
    bin_dir, log = tmp_path / "bin", tmp_path / "srun.log"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n')
    (bin_dir / "srun").chmod(0o755)
    env = slurm_env(tmp_path, SLURM_ARRAY_JOB_ID="9", SLURM_ARRAY_TASK_ID="3", SRUN_LOG=str(log),
                    PATH=f"{bin_dir}:{os.environ['PATH']}")
    args = ["--config", "c.yaml", "--oracle-config", "r.yaml", "--methods", "Cure", "--models", "16", "--",
            "--data.protocol", "sample"]
    subprocess.run(["bash", str(template), *args], env=env, cwd=tmp_path, check=True, capture_output=True)
    assert log.read_text().splitlines() == ["unlearnkit", "audit", *args[:8], "--seed", "3", *args[8:]]
    no_array = {k: v for k, v in env.items() if k != "SLURM_ARRAY_TASK_ID"}
    proc = subprocess.run(["bash", str(template), *args], env=no_array, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "submit as an array" in proc.stderr

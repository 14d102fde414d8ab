"""SLURM's warning signal (``#SBATCH --signal=SIGUSR1@90``): save at a step boundary, requeue, stop.

Lightning's own auto-requeue saves the checkpoint inside its signal handler, i.e. wherever the signal lands:
mid-step (the resumed run then skips the batch that was in flight, so it no longer ends where an
uninterrupted run ends) and, under DDP, with a collective that can meet another rank's gradient all-reduce
(Lightning issue #21406). ``SlurmRequeue`` takes that over in a SLURM job: the handler only records the
signal; after each optimiser step the ranks agree on it (an all-reduce of one flag) and all of them save
``<run_dir>/hpc_ckpt_N.ckpt`` at that same step, where Lightning resumes exactly. Rank 0 then runs
``scontrol requeue <job>`` and the run stops (``JobRequeued``, exit status 0); the requeued job resumes from
that checkpoint (``scripts/slurm/env.sh``) in the same W&B run.
"""

from __future__ import annotations

import os
import signal
import subprocess

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info

from unlearnkit.errors import UnlearnkitError


class JobRequeued(SystemExit):
    """The run saved its state and SLURM requeued the job: this process ends (status 0) and the job restarts."""

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message


def slurm_job_id() -> str:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` inside an array, else the job id."""
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


class SlurmRequeue(L.Callback):
    """Active in fits under SLURM with Lightning's auto-requeue on (the default); does nothing elsewhere."""

    def __init__(self) -> None:
        self.active = False
        self.signalled = False
        self._signum: int | None = None
        self._previous = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        env = trainer._accelerator_connector.cluster_environment  # what Lightning's signal handling reads
        if stage != "fit" or not isinstance(env, SLURMEnvironment) or not env.auto_requeue:
            return
        env.auto_requeue = False  # Lightning registers its handler after this hook: it now leaves the signal to us
        self.active, self.signalled, self._signum = True, False, env.requeue_signal
        self._previous = signal.signal(self._signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True  # nothing else in a signal handler: the work waits for the step boundary

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.active:
            signal.signal(self._signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self.active = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if not self.active or trainer.fit_loop.epoch_loop._should_accumulate():
            return  # not in SLURM, or mid-accumulation (the accumulated gradients are not in a checkpoint)
        flag = torch.tensor([float(self.signalled)], device=trainer.strategy.root_device)
        if trainer.strategy.reduce(flag, reduce_op="sum").item() == 0:  # every rank, every step: they agree
            return
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)  # every rank takes part; rank 0 writes
        # from here the job ends either way; SLURM answers the requeue with SIGTERM, whose Lightning handler
        # would start a collective of its own
        sigterm = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        job = slurm_job_id()
        status = 0
        if trainer.is_global_zero:
            status = subprocess.run(["scontrol", "requeue", job], check=False).returncode
        status = trainer.strategy.broadcast(status, src=0)
        step = trainer.global_step
        if status != 0:
            signal.signal(signal.SIGTERM, sigterm)
            raise UnlearnkitError(f"SLURM job {job} could not be requeued (scontrol requeue exited {status}); the run "
                                  f"stopped at step {step}: resume it with --ckpt_path {path}")
        message = f"requeued SLURM job {job} at step {step}: it resumes from {path}"
        rank_zero_info(message)
        raise JobRequeued(message)

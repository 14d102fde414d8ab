"""A callback for tests/test_resume.py: the run SIGKILLs itself when training reaches ``step``.

It runs at the start of a training batch, after the checkpoint of the previous step was saved, so the kill
lands mid-epoch with a checkpoint on disk, as when a cluster job is killed. Use it from a config:
``trainer.callbacks: [{class_path: resume_script.KillAtStep, init_args: {step: 6}}]`` with ``tests/`` on
PYTHONPATH.
"""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

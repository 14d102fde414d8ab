"""``unlearnkit``: LightningCLI in subclass mode over ``FaceModule`` and ``FaceDataModule``.

``unlearnkit fit|validate --config …`` run one model; ``report``, ``demo`` and ``generate`` are not about one
model and are dispatched before LightningCLI. Every run gets its own directory (``--run_dir``, default
``runs/<Model>-<time>``) holding ``config.yaml``, ``split.csv``, ``metrics.json``, checkpoints and logs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger

from unlearnkit.callbacks.run_files import RunSummary
from unlearnkit.data.datamodule import FaceDataModule, SyntheticFaces  # noqa: F401  (short names for --data)
from unlearnkit.errors import UnlearnkitError
from unlearnkit.methods import load_all
from unlearnkit.methods.base import FaceModule

METHOD_CLASSES = load_all()  # every registered method is a valid --model short name
globals().update({cls.__name__: cls for cls in METHOD_CLASSES.values()})


class RunConfig(SaveConfigCallback):
    """Saves the resolved config as ``<run_dir>/config.yaml``."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)


class UnlearnCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="run directory (default runs/<Model>-<time>); must not hold another run")
        parser.add_argument("--wandb", type=bool, default=True, help="log to Weights & Biases (offline by default)")
        parser.add_argument("--wandb_project", type=str, default="unlearnkit")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        run_dir = config.get("run_dir")
        if not run_dir:
            model = str(config.model.class_path).rsplit(".", 1)[-1]
            run_dir = f"runs/{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(run_dir)
        resuming = bool(config.get("ckpt_path")) and self.subcommand == "fit"
        if (run_dir / "metrics.json").exists() and not resuming:
            raise UnlearnkitError(f"run directory {run_dir} already holds a finished run: choose another --run_dir")
        if resuming:  # a resumed (e.g. requeued SLURM) run rewrites its own config.yaml
            self.save_config_kwargs["overwrite"] = True
        run_dir.mkdir(parents=True, exist_ok=True)
        config.run_dir = str(run_dir)
        config.trainer.default_root_dir = str(run_dir)

    def instantiate_trainer(self, **kwargs):
        config = self.config[self.subcommand]
        if config.trainer.get("logger") in (None, True):
            run_dir = config.run_dir
            loggers = [CSVLogger(run_dir, name="", version="")]
            if config.wandb:
                from lightning.pytorch.loggers import WandbLogger

                os.environ.setdefault("WANDB_MODE", "offline")
                # a fixed id (e.g. from SLURM_JOB_ID) resumes the same run when a requeued job restarts
                run_id = os.environ.get("UNLEARNKIT_WANDB_ID")
                loggers.append(WandbLogger(save_dir=run_dir, project=config.wandb_project, name=Path(run_dir).name,
                                           id=run_id, resume="allow" if run_id else None))
            kwargs["logger"] = loggers
        return super().instantiate_trainer(**kwargs)


def run_cli(args: list[str] | None = None, run: bool = True) -> UnlearnCLI:
    return UnlearnCLI(
        FaceModule,
        FaceDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=RunConfig,
        trainer_defaults={
            "use_distributed_sampler": False,  # our samplers shard by rank (P×K batches, exact evaluation)
            "num_sanity_val_steps": 0,
            "callbacks": [RunSummary(), ModelCheckpoint(save_last=True)],
        },
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            return EXTRA_COMMANDS[argv[0]](argv[1:]) or 0
        cli = run_cli(None if args is None else argv)
        if cli.subcommand:
            run_dir = cli.config[cli.subcommand].run_dir
            print(f"run directory: {run_dir} (config.yaml, metrics.json, split.csv, checkpoints/)")
        return 0
    except UnlearnkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _generate(args: list[str]) -> int:
    from unlearnkit.data.synthetic import main as generate_main

    return generate_main(args)


def _demo(args: list[str]) -> int:
    from unlearnkit.demo import main as demo_main

    return demo_main(args)


EXTRA_COMMANDS = {"generate": _generate}
EXTRA_COMMANDS["demo"] = _demo


if __name__ == "__main__":
    sys.exit(main())

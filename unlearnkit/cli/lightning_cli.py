"""``unlearnkit fit|validate|test``: LightningCLI in subclass mode over ``FaceModule`` and ``FaceDataModule``.

``run(args)`` runs one such command on one model (the console script ``cli/main.py`` dispatches the commands
that are not about one model, ``report``, ``demo``, ``generate``, ``audit``, before it; the demo and the study
call ``run`` in-process). Every run gets its own directory (``--run_dir``, default ``runs/<Model>-<time>``)
holding ``config.yaml``, ``split.csv``, ``metrics.json``, checkpoints and logs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

from jsonargparse._common import debug_mode_active
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from unlearnkit.callbacks.evaluation import FaceEvaluation
from unlearnkit.callbacks.requeue import SlurmRequeue
from unlearnkit.callbacks.run_files import RunSummary
from unlearnkit.checkpoints import AtomicCheckpointIO, read_lightning_checkpoint
from unlearnkit.data.datamodule import FaceDataModule, SyntheticFaces  # noqa: F401  (short names for --data)
from unlearnkit.data.quality import quality_model_spec
from unlearnkit.errors import ConfigError, UnlearnkitError
from unlearnkit.methods import load_all, method_defaults
from unlearnkit.methods.base import FaceModule, UnlearningMethod
from unlearnkit.utils.run_lock import RunLock

# every method of the registry (unlearnkit/methods/), by its class name: a valid --model short name
METHOD_CLASSES = dict(load_all())
globals().update(METHOD_CLASSES)


class RunConfig(SaveConfigCallback):
    """Saves the resolved config as ``<run_dir>/config.yaml``."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=False)


def _condense(message: str) -> str:
    """jsonargparse's multi-line "does not validate" report as one line: the key and the reasons."""
    noise = ("Does not validate against any", "Subtypes", "Errors", "Given value type",
             "Expected a <class 'NoneType'>", "Given value: NestedArg(")
    lines = [line.strip().removeprefix("- ").rstrip(":") for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(noise)]
    text = f"{lines[0]}: {'; '.join(lines[1:])}" if len(lines) > 1 else "".join(lines)
    if text.startswith('Parser key "model"') and "import path" in text:
        text += f" (--model takes one of {', '.join(sorted(METHOD_CLASSES))})"
    return text


class UnlearnParser(LightningArgumentParser):
    """A bad command line is a ``ConfigError`` (one ``error:`` line, exit code 2), not a usage wall."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error or debug_mode_active():
            return super().error(message, ex)
        raise ConfigError(f"{_condense(message)} (see --help)")


def _user_error(err: BaseException) -> UnlearnkitError | None:
    """The user error (e.g. a ConfigError from a model's __init__) that jsonargparse wrapped in its own."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UnlearnkitError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


class UnlearnCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        self.run_lock: RunLock | None = None
        failed = True
        try:
            super().__init__(*args, **kwargs)  # parses, builds and (run=True) runs the subcommand
            failed = False
        finally:
            self._finish_wandb(failed)
            if self.run_lock is not None:
                self.run_lock.release()

    def _finish_wandb(self, failed: bool) -> None:
        """End the W&B run this CLI started (marked failed if the command raised): a later run in the same
        process (the demo, the study, a notebook) then gets its own W&B run instead of logging into this one."""
        from lightning.pytorch.loggers import WandbLogger

        trainer = getattr(self, "trainer", None)
        for logger in trainer.loggers if trainer is not None else []:
            if isinstance(logger, WandbLogger) and logger._experiment is not None:  # started on this rank
                logger.experiment.finish(exit_code=1 if failed else 0)

    def after_fit(self) -> None:
        """A run stopped between its final checkpoint and its summary resumes with no epoch left to train, so the
        evaluation it ends with never runs and ``metrics.json`` would lack every evaluation value (a finished run
        to ``demo.cli`` and the study): evaluate the restored model now, then write the summary a run that was
        never stopped writes."""
        trainer = self.trainer
        evaluation = next((c for c in trainer.callbacks if isinstance(c, FaceEvaluation)), None)
        every = trainer.check_val_every_n_epoch
        due = every is not None and trainer.current_epoch > 0 and trainer.current_epoch % every == 0
        if (evaluation is None or evaluation.summary() is not None or not self.config[self.subcommand].get("ckpt_path")
                or trainer.limit_val_batches == 0 or not due):
            return
        trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        for callback in trainer.callbacks:
            if isinstance(callback, RunSummary):
                callback.write(trainer, self.model, "fit")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as err:  # jsonargparse reports an __init__'s ConfigError inside a multi-line ValueError
            cause = _user_error(err)
            if cause is None:
                raise
            raise cause from None

    def _parse_ckpt_path(self) -> None:
        """--ckpt_path's hyperparameters into the config, as Lightning does, but read by ``unlearnkit.checkpoints``:
        weights-only, and a missing, unsafe or non-Lightning file is a one-line error."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
            return super()._parse_ckpt_path()  # Lightning's own (nothing, or its special paths)
        hparams = dict(read_lightning_checkpoint(ckpt_path).get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:  # e.g. unlearnkit.methods.base.Pretrain, from before methods/pretrain.py
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None,
                            help="run directory (default runs/<Model>-<time>); must not hold another run")
        parser.add_argument("--wandb", type=bool, default=True, help="log to Weights & Biases (offline by default)")
        parser.add_argument("--wandb_project", type=str, default="unlearnkit")
        # checkpoints: last.ckpt after every epoch by default; --checkpoint.every_n_train_steps N for long epochs
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        link_model_and_data(parser)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config  # run=False: no subcommand
        run_dir = config.get("run_dir")
        if not run_dir:
            model = str(config.model.class_path).rsplit(".", 1)[-1]
            run_dir = f"runs/{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = Path(run_dir)
        resuming = bool(config.get("ckpt_path")) and self.subcommand == "fit"
        run_dir.mkdir(parents=True, exist_ok=True)
        if rank_zero_only.rank == 0:  # one run per directory, for the run's life (other DDP ranks join it)
            self.run_lock = RunLock(run_dir).acquire()
        if (run_dir / "metrics.json").exists() and not resuming:
            raise UnlearnkitError(f"run directory {run_dir} already holds a finished run: choose another --run_dir")
        checkpoints = [*run_dir.glob("checkpoints/*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
        if checkpoints and not resuming:
            newest = max(checkpoints, key=lambda path: path.stat().st_mtime)
            raise UnlearnkitError(f"run directory {run_dir} holds checkpoints of an unfinished run: resume it with "
                                  f"--ckpt_path {newest}, or choose another --run_dir")
        if (run_dir / "config.yaml").exists() and not resuming and rank_zero_only.rank == 0:
            print(f"note: {run_dir} holds a run that stopped before its first checkpoint: starting it afresh",
                  file=sys.stderr)
        if resuming or (run_dir / "config.yaml").exists():  # a resumed (e.g. requeued) run rewrites config.yaml
            self.save_config_kwargs["overwrite"] = True
        config.run_dir = str(run_dir)
        config.trainer.default_root_dir = str(run_dir)

    def instantiate_trainer(self, **kwargs):
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.trainer.get("logger") in (None, True):
            run_dir = config.run_dir
            if rank_zero_only.rank == 0:  # CSVLogger deletes an existing metrics.csv (e.g. before a resume)
                _set_aside(Path(run_dir) / "metrics.csv")
            loggers = [CSVLogger(run_dir, name="", version="")]
            if config.wandb:
                from lightning.pytorch.loggers import WandbLogger

                os.environ.setdefault("WANDB_MODE", "offline")
                # a fixed id (e.g. from SLURM_JOB_ID) resumes the same run when a requeued job restarts
                run_id = os.environ.get("UNLEARNKIT_WANDB_ID")
                wandb_logger = WandbLogger(save_dir=run_dir, project=config.wandb_project, name=Path(run_dir).name,
                                           id=run_id, resume="allow" if run_id else None)
                # Lightning 2.6 passes anonymous=None, which W&B 0.31 warns about though the setting does nothing
                if wandb_logger._wandb_init.get("anonymous", "") is None:
                    del wandb_logger._wandb_init["anonymous"]
                loggers.append(wandb_logger)
            kwargs["logger"] = loggers
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a plugin the config chose
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()  # temp file + rename; weights-only reads
        return trainer


def link_model_and_data(parser) -> None:
    """Values one side derives from the other, set once when the command line (or a checkpoint's hyperparameters)
    is parsed: the quality protocol scores images with θ0 (``model.original``, and the architecture to build where
    its file records none), and boundary shrink's pixel range is the data's normalisation. ``config.yaml`` keeps
    the sources, so the links are made again when it is read. A link whose target the chosen class does not take
    (``Pretrain`` has no ``original``, most methods no ``pixel_mean``) sets nothing; a value given for a linked
    target is replaced by the link's. The image size is not linked but checked (``FaceModule.check_image_size``):
    an unlearning method takes θ0's, and data of another size is an error, not silently resized."""
    parser.link_arguments(("model.init_args.original", "model.init_args.backbone", "model.init_args.embedding_size",
                           "model.init_args.image_size"), "data.init_args.quality_model", compute_fn=quality_model_spec)
    for key in ("pixel_mean", "pixel_std"):
        parser.link_arguments(f"data.init_args.{key}", f"model.init_args.{key}")


def _set_aside(path: Path) -> None:
    """Rename ``metrics.csv`` to the first free ``metrics.part<N>.csv`` (the log of an interrupted run)."""
    if path.is_file():
        n = 1
        while path.with_suffix(f".part{n}{path.suffix}").exists():
            n += 1
        os.replace(path, path.with_suffix(f".part{n}{path.suffix}"))


# our run directory always holds files (lock, config, earlier parts) before the CSV logger starts; see _set_aside
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")

# Known noise of the pinned stack that no user can act on (Lightning's progress bar and model summary stay): torch
# 2.14 deprecates the pytree call Lightning 2.6 makes at every fit; jsonargparse deprecates arguments LightningCLI
# itself passes; Lightning advertises its litlogger service at every fit (a log record, dropped by the filter below)
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())


# the training recipe: a method swap gives the new method its own (its learning rate, optimiser, schedule)
TRAINING_RECIPE = ("optimizer", "lr", "momentum", "weight_decay", "scheduler", "warmup_epochs", "min_steps")
# options a method swap keeps from the config (what was unlearned from, and how): every option of the base classes'
# signatures (FaceModule, UnlearningMethod) but the recipe; each method's own options take the new method's defaults
SHARED_OPTIONS = frozenset(method_defaults(UnlearningMethod)) - set(TRAINING_RECIPE)


def with_method_defaults(argv: list[str]) -> list[str]:
    """``--model Name`` swaps the unlearning method but keeps only the shared options of the config before it.

    jsonargparse carries every init arg the new class also has (so dispersion's lr would reach boundary
    shrink, 1000× its own); this inserts the new method's defaults right after the swap, so options given
    after ``--model Name`` still win. ``Pretrain`` → ``Retrain`` keeps the whole recipe: the oracle must be
    trained as θ0 was.
    """
    by_name = {key: cls for name, cls in METHOD_CLASSES.items() if issubclass(cls, UnlearningMethod)
               for key in (name, f"{cls.__module__}.{name}")}
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        name = argv[i + 1] if token == "--model" and i + 1 < len(argv) else token.removeprefix("--model=")
        step = 2 if token == "--model" else 1
        out += argv[i:i + step]
        if (token == "--model" or token.startswith("--model=")) and name in by_name:
            for key, value in method_defaults(by_name[name]).items():
                if key not in SHARED_OPTIONS:
                    out += [f"--model.{key}", value if isinstance(value, str) else json.dumps(value)]
        i += step
    return out


def run_cli(args: list[str] | None = None, run: bool = True) -> UnlearnCLI:
    if args is None:  # from the console: rewrite sys.argv itself (a DDP launcher re-runs it in each process)
        sys.argv[1:] = with_method_defaults(sys.argv[1:])
    else:
        args = with_method_defaults(args)
    with warnings.catch_warnings():
        # in-process runs (demo, study, tests) give args while the host has its own argv: not a mistake
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return UnlearnCLI(
            FaceModule,
            FaceDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfig,
            parser_class=UnlearnParser,
            trainer_defaults={
                "use_distributed_sampler": False,  # our samplers shard by rank (P×K batches, exact evaluation)
                "num_sanity_val_steps": 0,
                "callbacks": [RunSummary(), SlurmRequeue()],  # SlurmRequeue: SIGUSR1 in a SLURM job
            },
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )


def run(args: list[str] | None = None) -> int:
    """One Lightning command from ``args`` (``None``: the console's ``sys.argv``): 0 when it ran, 2 with one
    ``error:`` line for a user error (a bad option, data set or checkpoint)."""
    try:
        cli = run_cli(args)
        if cli.subcommand:
            run_dir = cli.config[cli.subcommand].run_dir
            print(f"run directory: {run_dir} (config.yaml, metrics.json, split.csv, checkpoints/)")
            warn_status(Path(run_dir))
        return 0
    except UnlearnkitError as err:
        print_error(err)
        return 2


def print_error(err: UnlearnkitError) -> None:
    """A user error as one ``error:`` line on stderr; from a DataLoader worker the message ends a re-raised
    traceback: its last line is kept."""
    lines = [line for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    print(f"error: {lines[-1].split(f'{type(err).__name__}: ', 1)[-1]}", file=sys.stderr)


def warn_status(run_dir: Path) -> None:
    """The last line of an unlearning run that left θ0 unchanged or collapsed the embedding: a warning saying so
    and what to change (``unlearnkit.status``)."""
    from unlearnkit.status import status_line

    summary = run_dir / "metrics.json"
    status = json.loads(summary.read_text()).get("status") if rank_zero_only.rank == 0 and summary.is_file() else None
    if status and status_line(str(run_dir), status):
        print(status_line(str(run_dir), status), file=sys.stderr)

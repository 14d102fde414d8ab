"""The evaluation callback: a Lightning shell around the metric suite (``unlearnkit.metrics.suite``).

Each validation epoch it collects the batches' embeddings (from ``validation_step``) into
``EmbeddingCollector``s, gathers them over ranks with each sample counted once, calls the suite and logs its
values. θ0 and the retrain oracle are embedded through the same (rank-sharded) loaders once per run and
scored once: they are the references of UES, membership inference, drift, the noise baseline and the oracle
gap. At the end it writes the run's evaluation artefacts (per-identity table, plots, embeddings, W&B media);
``metrics.json`` and ``evaluation.json`` are written from its values by ``RunSummary``, their one writer.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit import plots
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.frozen import FrozenModel, load_frozen
from unlearnkit.metrics import suite
from unlearnkit.metrics.collector import EmbeddingCollector, EvalEmbeddings
from unlearnkit.metrics.measures import REFERENCES, per_identity_rows
from unlearnkit.protocols import forgets_people, pair_people
from unlearnkit.utils.io import atomic_open


def quiet_sync_advice() -> None:
    """Every rank computes the suite's values from the same gathered set, so Lightning's advice to sync them
    under DDP (one warning per key) does not apply; the filter matches the suite's keys only."""
    prefixes = "|".join(re.escape(p) for p in suite.key_prefixes())
    warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\('({prefixes})[/']")


quiet_sync_advice()


def write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["identity"])
        writer.writeheader()
        writer.writerows(rows)


def load_reference(path: str, like: nn.Module | None = None) -> FrozenModel:
    """θ0 or the oracle, frozen, from a checkpoint (read once per run: ``unlearnkit.checkpoints``): its recorded
    architecture, else the module ``like``'s."""
    own = getattr(like, "hparams", {}) if like is not None else {}
    return load_frozen(path, own.get("backbone"), own.get("embedding_size"), own.get("image_size"))


@torch.no_grad()
def embed_sets(backbone: nn.Module, datamodule, device, flip_pairs: bool = True) -> EvalEmbeddings:
    """Embed the evaluation sets as ``validation_step`` does, through the datamodule's rank-sharded loaders."""
    loaders = datamodule.val_dataloader()
    collectors = [EmbeddingCollector().to(device) for _ in loaders]
    for i, (loader, collector) in enumerate(zip(loaders, collectors)):
        for batch in loader:
            images = batch["image"].to(device)
            z = backbone(images).float()
            if i > 0 and flip_pairs:
                z = z + backbone(images.flip(-1)).float()
            collector.update(F.normalize(z, dim=1), batch["index"].to(device), batch.get("label"),
                             batch.get("group"))
    pairs = {p.name: c.compute()["embeddings"] for p, c in zip(datamodule.pair_sets, collectors[1:])}
    return EvalEmbeddings(collectors[0].compute(), pairs)


class FaceEvaluation(L.Callback):
    """Forgetting, retention, verification, UES, membership inference and the gap to the retrain oracle.

    Logged each validation epoch: every key of the metric suite (docs/metrics.md): ``forget/`` and
    ``retain/`` mAP, R@k, CS; ``verify/<set>/…``; ``UES`` (with ``UES/F``, ``UES/R``); ``mia/…``; ``drift``;
    θ0's values as ``original/…``, the oracle's as ``oracle/…`` with ``oracle_gap/…``, the noise baseline's as
    ``noise/…``. ``last`` holds the last evaluation's values and ``summary()`` them with the settings (what
    ``RunSummary`` writes to ``metrics.json`` and ``evaluation.json``). At the end, in the run directory:
    ``forgetting_by_identity.csv`` (identity protocol), ``projection.png`` and ``cs_histograms.png``; the same
    go to W&B when a ``WandbLogger`` is attached.

    Args:
        ks: the k of R@k.
        far: the false-accept rate of TAR@FAR.
        folds: folds of the verification protocol.
        ues_metric: performance metric P of UES: ``mAP``, ``CS`` or ``R@k`` for a k in ``ks``.
        ues_reference: ``original`` (F and R against θ0, as SPEC §3) or ``oracle`` (against the retrain oracle).
        oracle: a retrain checkpoint; adds ``oracle/…`` and ``oracle_gap/…``.
        mia: run the membership-inference attack.
        plots: write the projection and CS-histogram plots.
        per_identity: write ``forgetting_by_identity.csv`` (identity protocol).
        save_embeddings: also save every model's gathered embeddings as ``embeddings.pt``.
        noise_baseline: also evaluate θ0's embeddings plus isotropic noise of the model's drift (``noise/…``).
        seed: the attack's subsampling and train/test split, and the noise baseline's noise.
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5), far: float = 1e-3, folds: int = 10, ues_metric: str = "mAP",
                 ues_reference: str = "original", oracle: str | None = None, mia: bool = True, plots: bool = True,
                 per_identity: bool = True, save_embeddings: bool = False, noise_baseline: bool = True,
                 seed: int = 0) -> None:
        ks = tuple(int(k) for k in ks)
        metrics = ("mAP", "CS", *(f"R@{k}" for k in ks))
        if ues_metric not in metrics:
            raise ConfigError(f"ues_metric {ues_metric!r} is not computed: choose one of {', '.join(metrics)}")
        if ues_reference not in REFERENCES:
            raise ConfigError(f"ues_reference must be 'original' or 'oracle', got {ues_reference!r}")
        if ues_reference == "oracle" and not oracle:
            raise ConfigError("ues_reference: oracle needs the retrain checkpoint: set oracle: <path>")
        if folds < 2:
            raise ConfigError(f"folds must be ≥ 2 (thresholds are chosen on the other folds), got {folds}")
        self.settings = suite.Settings(ks=ks, far=far, folds=folds, ues_metric=ues_metric,
                                       ues_reference=ues_reference, mia=mia, noise_baseline=noise_baseline, seed=seed)
        self.oracle, self.plots, self.per_identity, self.save_embeddings = oracle, plots, per_identity, save_embeddings
        self.collectors: list[EmbeddingCollector] = []
        self.last: dict[str, float] = {}
        self.last_ev: EvalEmbeddings | None = None
        self.last_settings: dict = {}
        self.references: dict[str, suite.Scored] = {}
        self._references_for = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Pair sets are checked as soon as the data module has loaded them: one too small for the folds would
        otherwise fail at the first evaluation, after a whole epoch of training."""
        folds = self.settings.folds
        for pair_set in getattr(trainer.datamodule, "pair_sets", None) or []:
            if len(pair_set) < folds:
                raise DataError(f"verification set {pair_set.name!r} has {len(pair_set)} pairs, fewer than the "
                                f"{folds} folds of the verification protocol: give a set of at least "
                                f"{folds} pairs, or set a smaller folds in the FaceEvaluation callback's init_args")
        quiet_sync_advice()  # metrics registered after import have their keys too

    # ------------------------------------------------------------------ collecting the evaluated model
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = 1 + len(trainer.datamodule.pair_sets)
        self.collectors = [EmbeddingCollector().to(pl_module.device) for _ in range(n)]

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        self.collectors[dataloader_idx].update(outputs["embedding"], batch["index"], batch.get("label"),
                                               batch.get("group"))

    def gathered(self, trainer) -> EvalEmbeddings:
        retrieval = self.collectors[0].compute()
        pairs = {p.name: c.compute()["embeddings"] for p, c in zip(trainer.datamodule.pair_sets, self.collectors[1:])}
        return EvalEmbeddings(retrieval, pairs)

    # ------------------------------------------------------------------ calling the suite
    def context(self, trainer) -> suite.Context:
        """The suite's inputs besides the embeddings: protocol, settings, pair sets and who they show."""
        dm = trainer.datamodule
        return suite.Context(dm.hparams.protocol, self.settings, list(dm.pair_sets),
                             {p.name: pair_people(dm, p) for p in dm.pair_sets})

    def reference_paths(self, pl_module) -> dict[str, str]:
        """Checkpoints of θ0 (the module's ``original``, absent in pretraining) and of the oracle."""
        hparams = getattr(pl_module, "hparams", {}) if pl_module is not None else {}
        paths = {"original": hparams.get("original"), "oracle": self.oracle}
        return {k: str(v) for k, v in paths.items() if v}

    def scored_references(self, trainer, pl_module, ctx: suite.Context) -> suite.Context:
        """``ctx`` with θ0 and the oracle: embedded and scored on first use (θ0 first: the oracle is scored
        against it), then cached for the run."""
        if self._references_for is not trainer.datamodule:  # another data module: other evaluation sets
            self.references, self._references_for = {}, trainer.datamodule
        paths = self.reference_paths(pl_module)
        for name in REFERENCES:
            if name in paths and name not in self.references:
                backbone = load_reference(paths[name], pl_module).to(pl_module.device)
                flip = bool(pl_module.hparams.get("flip_pairs", True))
                ev = embed_sets(backbone, trainer.datamodule, pl_module.device, flip)
                score = suite.score_original if name == "original" else suite.score_oracle
                self.references[name] = score(ev, replace(ctx, original=self.references.get("original")))
        refs = {name: self.references[name] for name in paths}
        return replace(ctx, original=refs.get("original"), oracle=refs.get("oracle"))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.collectors:
            return
        ev = self.gathered(trainer)
        for collector in self.collectors:
            collector.reset()
        self.last_ev = ev
        self.last = suite.evaluate(ev, self.scored_references(trainer, pl_module, self.context(trainer)))
        s = self.settings
        self.last_settings = {"protocol": trainer.datamodule.hparams.protocol, "ks": list(s.ks), "far": s.far,
                              "folds": s.folds, "ues_metric": s.ues_metric, "ues_reference": s.ues_reference,
                              "original": self.reference_paths(pl_module).get("original"), "oracle": self.oracle,
                              "mia": s.mia, "noise_baseline": s.noise_baseline, "model": type(pl_module).__name__}
        pl_module.log_dict(self.last, sync_dist=False, add_dataloader_idx=False)

    def summary(self) -> dict | None:
        """The last evaluation's settings and values (``evaluation.json``), or ``None`` before any."""
        return {"settings": self.last_settings, "metrics": self.last} if self.last_ev is not None else None

    # ------------------------------------------------------------------ final artefacts
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_artefacts(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.write_artefacts(trainer, pl_module)

    def models(self) -> dict[str, EvalEmbeddings]:
        """The last evaluation's embeddings by role: ``before`` (θ0), ``after`` (this model), ``oracle``."""
        evs = {}
        if "original" in self.references:
            evs["before"] = self.references["original"].embeddings
        evs["after"] = self.last_ev
        if "oracle" in self.references:
            evs["oracle"] = self.references["oracle"].embeddings
        return evs

    def write_artefacts(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Run-directory files and W&B media from the last evaluation (global rank 0 only)."""
        if self.last_ev is None or not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        dm = trainer.datamodule
        protocol = dm.hparams.protocol
        evs = self.models()
        tables = {"metrics": [{"metric": k, "value": v} for k, v in sorted(self.last.items())]}
        if self.per_identity and forgets_people(protocol):
            names = getattr(getattr(dm, "source", None), "identity_names", None)
            rows = per_identity_rows(evs, protocol, names)
            write_csv(run_dir / "forgetting_by_identity.csv", rows)
            tables["forgetting_by_identity"] = rows
        images = {}
        if self.plots:
            images["projection"] = plots.save_projection(evs, run_dir / "projection.png")
            images["cs_histograms"] = plots.save_cs_histograms(evs, protocol, run_dir / "cs_histograms.png")
        if self.save_embeddings:
            with atomic_open(run_dir / "embeddings.pt", "wb") as handle:
                torch.save({k: {"retrieval": {f: t.cpu() for f, t in ev.retrieval.items()},
                                "pairs": {p: t.cpu() for p, t in ev.pairs.items()}} for k, ev in evs.items()},
                           handle)
        log_to_wandb(trainer, tables, images)


def log_to_wandb(trainer: L.Trainer, tables: dict[str, list[dict]], images: dict[str, Path]) -> None:
    """Tables and images to every attached ``WandbLogger``; a W&B failure is a warning, never a failed run."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        try:
            for key, rows in tables.items():
                if rows:
                    columns = list(rows[0])
                    logger.log_table(key=f"eval/{key}", columns=columns, data=[[r[c] for c in columns] for r in rows])
            for key, path in images.items():
                logger.log_image(key=f"eval/{key}", images=[str(path)])
        except Exception as err:  # W&B must never fail a finished run
            warnings.warn(f"could not log the evaluation tables/images to W&B: {err}", stacklevel=2)

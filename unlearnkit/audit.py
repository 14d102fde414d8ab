"""``unlearnkit audit``: unlearned models against many retrained ones, example by example (SPEC §3).

Trains N retrain oracles (seeds 0..N−1; cached by their config and command line, reused by every method and
every later audit) and N unlearning runs of each method from the same θ0, each evaluated once at its end with
its embeddings saved; then turns every model's embeddings into the per-example statistic of
``unlearnkit.metrics.audit`` and writes, under ``--out``:

- ``audit.json``: per method, the challenge's forget score F and final score, U-LiRA on the forget examples and
  on retain control examples, the per-example ε, and the N and resolvable ε they rest on;
- ``stats/<name>.npy``: the ``[models × examples]`` statistic matrices (forget and retain control), so anyone can
  recompute the scores;
- ``audit.md`` and ``epsilons.png`` / ``roc.png``.

Runs that finished are skipped and stopped ones resume from their last checkpoint, so a killed audit continues
where it stopped. ``--seed S`` trains only seed S's models (one SLURM array task per seed:
``scripts/slurm/audit_array.sbatch``); a final call without it collects.

    unlearnkit audit --config configs/experiment/unlearn_synthetic.yaml \\
        --oracle-config configs/experiment/retrain_synthetic.yaml --methods Cure Dispersion --models 16 \\
        -- --data.protocol sample --data.forget 0.1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from unlearnkit.demo import cli, trainer_overlay
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import audit as A
from unlearnkit.protocols import GROUP_ID
from unlearnkit.utils.io import write_json

AUDIT_EVALUATION = {"save_embeddings": True, "plots": False, "per_identity": False, "noise_baseline": False}
RETAIN_CONTROLS = 200  # retain training images scored as the control set (unlearning can expose them too)


def evaluated_once(template: Path, out: Path, epochs: int | None = None) -> Path:
    """``template`` (a trainer config) with the evaluation run once, after the last epoch, saving the
    embeddings the audit reads."""
    epochs = epochs or yaml.safe_load(template.read_text()).get("max_epochs", 1)
    return trainer_overlay(template, out, AUDIT_EVALUATION, max_epochs=epochs, check_val_every_n_epoch=epochs)


def _experiment(path: str) -> dict:
    config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict) or "trainer" not in config:
        raise ConfigError(f"{path} is not an experiment config (with trainer, data and model): see configs/experiment/")
    return config


def _linked(config_path: str, key: str) -> dict:
    """The YAML a part of an experiment config points to (or holds inline)."""
    value = _experiment(config_path)[key]
    return yaml.safe_load((Path(config_path).parent / value).read_text()) if isinstance(value, str) else value


def _option(extra: list[str], name: str, default=None):
    return extra[extra.index(name) + 1] if name in extra and extra.index(name) + 1 < len(extra) else default


def _without_model_options(extra: list[str]) -> list[str]:
    """The options of ``extra`` that are not the unlearning model's (``--model.x value`` pairs dropped): what the
    oracles are given."""
    kept, skip = [], False
    for i, arg in enumerate(extra):
        if skip:
            skip = False
            continue
        if arg.startswith("--model."):
            skip = "=" not in arg and i + 1 < len(extra) and not extra[i + 1].startswith("--")
            continue
        kept.append(arg)
    return kept


class Audit:
    """The plan of one audit and where its runs live."""

    def __init__(self, args: argparse.Namespace) -> None:
        from unlearnkit.methods import load_all

        self.args, self.out = args, Path(args.out)
        if args.models < 3:
            raise ConfigError(f"--models {args.models}: the audit needs at least 3 models per side (U-LiRA leaves one out)")
        classes = {cls.__name__: cls for cls in load_all().values()}
        unknown = [m for m in args.methods if m not in classes]
        if unknown:
            raise ConfigError(f"unknown method {unknown[0]!r} for --methods: choose among {', '.join(sorted(classes))}")
        self.classes = {m: classes[m] for m in args.methods}
        self.protocol = _option(args.extra, "--data.protocol") or _linked(args.config, "data")["init_args"].get(
            "protocol", "identity")
        self.original = _option(args.extra, "--model.original") or _linked(args.config, "model")["init_args"].get(
            "original")
        if not self.original or not Path(self.original).is_file():
            raise ConfigError(f"θ0 checkpoint {self.original!r} not found: pass --model.original <last.ckpt> after --")
        epochs = int(_option(args.extra, "--trainer.max_epochs", 0)) or None
        trainers = self.out / "trainers"
        self.unlearn_trainer = evaluated_once(Path(args.config).parent / _experiment(args.config)["trainer"],
                                                  trainers / "unlearn.yaml", epochs)
        self.oracle_trainer = evaluated_once(
            Path(args.oracle_config).parent / _experiment(args.oracle_config)["trainer"], trainers / "oracle.yaml",
            int(args.oracle_epochs) if args.oracle_epochs else epochs)
        shared = _without_model_options(args.extra)
        digest = hashlib.sha1(json.dumps([Path(args.oracle_config).read_text(), self.oracle_trainer.read_text(),
                                          shared]).encode()).hexdigest()[:12]
        self.oracle_root = Path(args.cache) / f"oracle-{digest}"
        self.shared = shared

    def oracle_run(self, seed: int) -> Path:
        return self.oracle_root / f"seed-{seed}"

    def method_run(self, method: str, seed: int) -> Path:
        return self.out / "runs" / method / f"seed-{seed}"

    def commands(self, seed: int) -> list[tuple[str, Path, list[str]]]:
        """(what, run directory, CLI arguments) of every run of one seed: its oracle, then each method."""
        common = ["--seed_everything", str(seed), "--wandb", "false", "--trainer.enable_progress_bar", "false",
                  "--trainer.enable_model_summary", "false"]
        runs = [("oracle", self.oracle_run(seed),
                 ["fit", "--config", self.args.oracle_config, "--trainer", str(self.oracle_trainer), *self.shared,
                  *common, "--run_dir", str(self.oracle_run(seed))])]
        for method, cls in self.classes.items():
            label_free = cls.needs_labels and self.protocol != "identity"
            runs.append((method, self.method_run(method, seed), [
                "fit", "--config", self.args.config, "--trainer", str(self.unlearn_trainer), "--model", method,
                "--model.original", str(self.original), *(["--model.labels", "pseudo"] if label_free else []),
                *self.args.extra, *common, "--run_dir", str(self.method_run(method, seed))]))
        return runs

    def train(self, seeds) -> None:
        plan = [run for seed in seeds for run in self.commands(seed)]
        started = time.perf_counter()
        for k, (what, run_dir, argv) in enumerate(plan, 1):
            done = (run_dir / "metrics.json").is_file()
            t0 = time.perf_counter()
            if not done:
                cli(argv)
            state = "cached" if done else f"{time.perf_counter() - t0:.0f} s"
            print(f"[{k}/{len(plan)}] {what} {run_dir.name}: {state} "
                  f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


def _embeddings(run_dir: Path) -> dict:
    path = run_dir / "embeddings.pt"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no embeddings.pt: it did not finish; run the audit again to resume it")
    return torch.load(path, map_location="cpu", weights_only=True)["after"]["retrieval"]


def _statistics(runs: list[Path], seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """The statistic matrices [models × forget examples] and [models × retain controls] of a list of runs."""
    forget, retain, ids = [], [], None
    for run in runs:
        r = _embeddings(run)
        if ids is None:
            ids = r["ids"]
            groups = r["groups"]
            f_idx = torch.nonzero(groups == GROUP_ID["forget_train"]).squeeze(1)
            r_all = torch.nonzero(groups == GROUP_ID["retain_train"]).squeeze(1)
            pick = torch.randperm(len(r_all), generator=torch.Generator().manual_seed(seed))[:RETAIN_CONTROLS]
            r_idx = r_all[pick.sort().values]
        elif not torch.equal(r["ids"], ids):
            raise ConfigError(f"{run} was evaluated on other images than the audit's first run: same data and split "
                              "options are needed for every run")
        both = A.example_statistic(r["embeddings"], r["labels"], torch.cat([f_idx, r_idx])).numpy()
        forget.append(both[:len(f_idx)])
        retain.append(both[len(f_idx):])
    return np.stack(forget), np.stack(retain), {"forget_ids": ids[f_idx].tolist(), "retain_ids": ids[r_idx].tolist()}


def _utility(runs: list[Path], protocol: str) -> tuple[float, float]:
    """Mean retain (RA) and held-out (TA) utility of runs: ``retain/mAP``, and ``retain_heldout/mAP`` (sample,
    quality) or ``retain/mAP`` on retained people's held-out images (identity, where retain queries are held out)."""
    values = [json.loads((r / "metrics.json").read_text())["metrics"] for r in runs]
    ra = float(np.mean([v["retain/mAP"] for v in values]))
    key = "retain/mAP" if protocol == "identity" else "retain_heldout/mAP"
    return ra, float(np.mean([v.get(key, np.nan) for v in values]))


def collect(plan: Audit) -> dict:
    args, out = plan.args, plan.out
    seeds = range(args.models)
    stats_dir = out / "stats"
    stats_dir.mkdir(parents=True, exist_ok=True)
    oracle_runs = [plan.oracle_run(s) for s in seeds]
    r_forget, r_retain, ids = _statistics(oracle_runs)
    np.save(stats_dir / "retrained_forget.npy", r_forget)
    np.save(stats_dir / "retrained_retain.npy", r_retain)
    ra_r, ta_r = _utility(oracle_runs, plan.protocol)
    result = {"protocol": plan.protocol, "models": args.models, "resolvable_epsilon": A.resolvable_epsilon(args.models),
              "forget_examples": r_forget.shape[1], "retain_controls": r_retain.shape[1],
              "retrained": {"RA": ra_r, "TA": ta_r}, "oracle_runs": [str(r) for r in oracle_runs], "methods": {}}
    curves = {}
    for method in plan.classes:
        runs = [plan.method_run(method, s) for s in seeds]
        u_forget, u_retain, _ = _statistics(runs)
        np.save(stats_dir / f"{method}_forget.npy", u_forget)
        np.save(stats_dir / f"{method}_retain.npy", u_retain)
        eps = A.forget_epsilons(u_forget, r_forget)
        score = A.score_of_epsilons(eps, args.models)
        ra_u, ta_u = _utility(runs, plan.protocol)
        forget_lira, curves[method] = A.ulira(u_forget, r_forget, curve=True)
        result["methods"][method] = {
            "forget_score": score, "final_score": A.final_score(score, ra_u, ra_r, ta_u, ta_r),
            "RA": ra_u, "TA": ta_u, "ulira_forget": forget_lira, "ulira_retain": A.ulira(u_retain, r_retain),
            "epsilons": eps.tolist()}
    write_json(out / "audit.json", {**result, **ids})
    _plots(out, result, curves)
    (out / "audit.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [f"# Privacy audit ({result['protocol']} protocol)", "",
             f"{result['models']} unlearning runs per method against {result['models']} retrained oracles; "
             f"{result['forget_examples']} forget examples, {result['retain_controls']} retain controls. With "
             f"{result['models']} models per side the score resolves ε up to {result['resolvable_epsilon']:.0f}; "
             "higher ε all look alike.", "",
             "| method | forget score F | final score | RA | TA | U-LiRA AUC (forget) | TPR@1% | U-LiRA AUC (retain) |",
             "|---|---|---|---|---|---|---|---|"]
    for method, m in result["methods"].items():
        lines.append(f"| {method} | {m['forget_score']:.3f} | {m['final_score']:.3f} | {m['RA']:.3f} | {m['TA']:.3f} | "
                     f"{m['ulira_forget']['auc']:.3f} | {m['ulira_forget']['tpr@fpr=0.01']:.3f} | "
                     f"{m['ulira_retain']['auc']:.3f} |")
    lines += ["", f"Retrained oracles: RA {result['retrained']['RA']:.3f}, TA {result['retrained']['TA']:.3f}.", ""]
    return "\n".join(lines)


def _plots(out: Path, result: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.arange(0, result["resolvable_epsilon"] + 1.0, 0.5)
    for method, m in result["methods"].items():
        ax.hist(np.minimum(m["epsilons"], bins[-1]), bins=bins, histtype="step", label=method)
    ax.set_xlabel("per-example ε (the last bin holds everything beyond)")
    ax.set_ylabel("forget examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "epsilons.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 5))
    for method, (fpr, tpr) in curves.items():
        ax.loglog(np.maximum(fpr, 1e-4), np.maximum(tpr, 1e-4), label=method)
    ax.plot([1e-4, 1], [1e-4, 1], "k:", lw=1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title("U-LiRA: unlearned vs retrained, forget examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unlearnkit audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the unlearning experiment config (data, θ0, method)")
    parser.add_argument("--oracle-config", required=True, help="the retrain experiment config")
    parser.add_argument("--methods", nargs="+", required=True, help="method class names, e.g. Cure Dispersion")
    parser.add_argument("--models", type=int, default=16, help="N: oracles and unlearning runs per method")
    parser.add_argument("--out", default="runs/audit")
    parser.add_argument("--cache", default="runs/audit-oracles", help="where oracles are kept for reuse")
    parser.add_argument("--oracle-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="train only this seed's runs (a SLURM array task)")
    parser.add_argument("extra", nargs="*", help="after --: options given to every run (data, epochs, θ0)")
    args = parser.parse_args(argv)
    plan = Audit(args)
    seeds = [args.seed] if args.seed is not None else range(args.models)
    plan.train(seeds)
    if args.seed is None:
        result = collect(plan)
        print((plan.out / "audit.md").read_text())
        print(f"audit of {len(result['methods'])} method(s) written to {plan.out}")
    return 0

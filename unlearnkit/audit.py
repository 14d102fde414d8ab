"""``unlearnkit audit``: unlearned models against many retrained ones, example by example (SPEC §3).

Trains N retrain oracles (seeds 0..N−1; cached by their config and command line, reused by every method and
every later audit) and N unlearning runs of each method from the same θ0, each evaluated once at its end with
its embeddings saved; then turns every model's embeddings into the per-example statistic of
``unlearnkit.metrics.audit`` and writes, under ``--out``:

- ``audit.json``: per method, the challenge's forget score F and final score, U-LiRA on the forget examples and
  on retain control examples, the per-example ε, and the N and resolvable ε they rest on; beside them θ0 (its
  statistic against the retrained models), a noise control per method (θ0's embeddings plus isotropic noise of
  the method's drift, one draw per seed), the population attack's figures of the same runs with where the two
  disagree, and with ``--relearn`` the relearn time and Anamnesis Index (``unlearnkit.relearn``);
- ``stats/<name>.npy``: the ``[models × examples]`` statistic matrices (forget and retain control), so anyone can
  recompute the scores;
- ``audit.md`` and ``epsilons.png`` / ``roc.png``.

Runs that finished are skipped and stopped ones resume from their last checkpoint, so a killed audit continues
where it stopped. ``--seed S`` trains only seed S's models (one SLURM array task per seed:
``scripts/slurm/audit_array.sbatch``); a final call without it collects. ``--methods all`` audits what the demo
and the study compare (every unlearning method in the identity protocol, the label-free comparison in the
others); ``--protocols identity sample`` runs one audit per protocol, each under ``--out/<protocol>``.

    unlearnkit audit --config configs/experiment/unlearn_synthetic.yaml \\
        --oracle-config configs/experiment/retrain_synthetic.yaml --methods Cure Dispersion --models 16 \\
        -- --data.protocol sample --data.forget 0.1
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

from unlearnkit.demo import cli, experiment_config, experiment_part, option_value, trainer_overlay
from unlearnkit.errors import ConfigError
from unlearnkit.frozen import load_frozen
from unlearnkit.metrics import audit as A
from unlearnkit.metrics.collector import EvalEmbeddings
from unlearnkit.metrics.measures import drift, matched_noise
from unlearnkit.protocols import GROUP_ID, PROTOCOLS
from unlearnkit.relearn import RelearnRecipe, datamodule_of, forget_map, relearn
from unlearnkit.utils.io import write_json

AUDIT_EVALUATION = {"save_embeddings": True, "plots": False, "per_identity": False, "noise_baseline": False}
RETAIN_CONTROLS = 200  # retain training images scored as the control set (unlearning can expose them too)
POPULATION = ("forget_auc", "attack_fpr")  # the population attack's figures (metrics.json mia/…) shown beside
AUDIT_TELLS = 0.6  # U-LiRA AUC from which the audit tells runs from retrained models (chance: 0.5 ± 0.05)
ATTACK_TELLS = 0.05  # |attack forget AUC − the oracles'| above which the population attack tells a model apart


def evaluated_once(template: Path, out: Path, epochs: int | None = None) -> Path:
    """``template`` (a trainer config) with the evaluation run once, after the last epoch, saving the
    embeddings the audit reads."""
    epochs = epochs or yaml.safe_load(template.read_text()).get("max_epochs", 1)
    return trainer_overlay(template, out, AUDIT_EVALUATION, max_epochs=epochs, check_val_every_n_epoch=epochs)


def oracle_options(extra: list[str]) -> list[str]:
    """The options of ``extra`` the oracles are given: all but the unlearning model's (``--model.x value``) and the
    unlearning epochs (``--trainer.max_epochs``, which the oracles take from ``--oracle-epochs`` or their config)."""
    kept, skip = [], False
    for i, arg in enumerate(extra):
        if skip:
            skip = False
            continue
        if arg.startswith("--model.") or arg.split("=", 1)[0] == "--trainer.max_epochs":
            skip = "=" not in arg and i + 1 < len(extra) and not extra[i + 1].startswith("--")
            continue
        kept.append(arg)
    return kept


def audit_methods(names: list[str], protocol: str) -> dict[str, bool]:
    """The methods to audit in ``protocol``, each with whether it runs as its label-free (``labels: pseudo``)
    variant. ``all``: what the demo and the study compare: every unlearning method in the identity protocol, the
    label-free comparison (``label_free_comparison``: label-free methods, then the label-free baselines) in the
    sample and quality protocols. A named method that needs labels runs label-free outside the identity protocol."""
    from unlearnkit.methods import label_free_comparison, unlearning_methods

    registry, comparison = unlearning_methods(), label_free_comparison()
    if "all" in names:
        chosen = registry if protocol == "identity" else comparison
        return {m: protocol != "identity" and comparison.get(m, False) for m in chosen
                if protocol in registry[m].protocols}
    unknown = [m for m in names if m not in registry]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r} for --methods: choose among {', '.join(registry)}, or all")
    unsupported = [m for m in names if protocol not in registry[m].protocols]
    if unsupported:
        raise ConfigError(f"method {unsupported[0]} does not support the {protocol!r} protocol: leave it out of "
                          "--methods")
    return {m: protocol != "identity" and (registry[m].needs_labels or comparison.get(m, False)) for m in names}


class Audit:
    """The plan of one audit and where its runs live."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.out = args, Path(args.out)
        if args.models < 3:
            raise ConfigError(f"--models {args.models}: the audit needs at least 3 models per side (U-LiRA leaves one out)")
        self.protocol = option_value(args.extra, "--data.protocol") or experiment_part(args.config, "data")["init_args"].get(
            "protocol", "identity")
        self.label_free = audit_methods(args.methods, self.protocol)
        self.original = option_value(args.extra, "--model.original") or experiment_part(args.config, "model")["init_args"].get(
            "original")
        if not self.original or not Path(self.original).is_file():
            raise ConfigError(f"θ0 checkpoint {self.original!r} not found: pass --model.original <last.ckpt> after --")
        epochs = int(option_value(args.extra, "--trainer.max_epochs", 0)) or None
        trainers = self.out / "trainers"
        self.unlearn_trainer = evaluated_once(Path(args.config).parent / experiment_config(args.config)["trainer"],
                                                  trainers / "unlearn.yaml", epochs)
        self.oracle_trainer = evaluated_once(
            Path(args.oracle_config).parent / experiment_config(args.oracle_config)["trainer"], trainers / "oracle.yaml",
            int(args.oracle_epochs) if args.oracle_epochs else None)  # the retrain recipe's own epochs by default
        shared = oracle_options(args.extra)
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
        for method, label_free in self.label_free.items():
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
            t0, cpu0 = time.perf_counter(), time.process_time()
            if not done:
                cli(argv)
            # CPU seconds beside wall seconds: on a shared machine they say what an idle one would take
            state = "cached" if done else f"{time.perf_counter() - t0:.0f} s, {time.process_time() - cpu0:.0f} CPU s"
            print(f"[{k}/{len(plan)}] {what} {run_dir.name}: {state} "
                  f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


def _embeddings(run_dir: Path) -> dict:
    """A finished run's saved evaluation embeddings by role: ``after`` (its model) and, for an unlearning run,
    ``before`` (θ0)."""
    path = run_dir / "embeddings.pt"
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no embeddings.pt: it did not finish; run the audit again to resume it")
    return torch.load(path, map_location="cpu", weights_only=True)


def _examples(retrieval: dict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the forget examples (every forget training image) and of the retain controls (a seeded draw
    of ``RETAIN_CONTROLS`` retain training images) in the evaluation set."""
    groups = retrieval["groups"]
    f_idx = torch.nonzero(groups == GROUP_ID["forget_train"]).squeeze(1)
    r_all = torch.nonzero(groups == GROUP_ID["retain_train"]).squeeze(1)
    pick = torch.randperm(len(r_all), generator=torch.Generator().manual_seed(seed))[:RETAIN_CONTROLS]
    return f_idx, r_all[pick.sort().values]


def _statistics(runs: list[Path], controls: bool = False) -> dict:
    """The statistic matrices of runs: ``forget`` [models × forget examples] and ``retain`` [models × retain
    controls]. With ``controls`` (unlearning runs, which saved θ0's embeddings beside their own): θ0's own row
    (``theta0_forget`` / ``theta0_retain``) and the noise control's matrices (``noise_forget`` / ``noise_retain``:
    run s's θ0 embeddings plus isotropic noise of run s's drift from θ0, noise seed s), with the drifts."""
    out: dict[str, list] = {}
    ids = f_idx = r_idx = None

    def add(name: str, retrieval: dict, run: Path) -> None:
        if not torch.equal(retrieval["ids"], ids):
            raise ConfigError(f"{run} was evaluated on other images than the audit's first run: same data and split "
                              "options are needed for every run")
        both = A.example_statistic(retrieval["embeddings"], retrieval["labels"], torch.cat([f_idx, r_idx])).numpy()
        out.setdefault(f"{name}forget", []).append(both[:len(f_idx)])
        out.setdefault(f"{name}retain", []).append(both[len(f_idx):])

    for seed, run in enumerate(runs):
        saved = _embeddings(run)
        after = saved["after"]["retrieval"]
        if ids is None:
            ids = after["ids"]
            f_idx, r_idx = _examples(after)
        add("", after, run)
        if controls:
            before = EvalEmbeddings(saved["before"]["retrieval"])
            moved = drift(EvalEmbeddings(after), before)
            out.setdefault("drift", []).append(moved)
            add("noise_", matched_noise(before, moved, seed).retrieval, run)
            if seed == 0:
                add("theta0_", before.retrieval, run)
    result = {k: np.stack(v) if k != "drift" else v for k, v in out.items()}
    result["ids"] = {"forget_ids": ids[f_idx].tolist(), "retain_ids": ids[r_idx].tolist()}
    return result


def _metrics(runs: list[Path]) -> list[dict]:
    return [json.loads((r / "metrics.json").read_text())["metrics"] for r in runs]


def _utility(values: list[dict], protocol: str, prefix: str = "") -> tuple[float, float]:
    """Mean retain (RA) and held-out (TA) utility of runs' metrics: ``retain/mAP``, and ``retain_heldout/mAP``
    (sample, quality) or ``retain/mAP`` on retained people's held-out images (identity, where retain queries are
    held out); ``prefix`` ``original/`` reads θ0's."""
    ra = float(np.mean([v.get(f"{prefix}retain/mAP", np.nan) for v in values]))
    key = "retain/mAP" if protocol == "identity" else "retain_heldout/mAP"
    return ra, float(np.mean([v.get(f"{prefix}{key}", np.nan) for v in values]))


def _population(values: list[dict], prefix: str = "") -> dict[str, float]:
    """The population membership attack's figures of the same runs (their ``metrics.json``), averaged: the AUC of
    forget vs held-out images and the attack's false-positive rate; empty where the runs ran no attack."""
    figures = {}
    for name in POPULATION:
        found = [v[f"{prefix}mia/{name}"] for v in values if f"{prefix}mia/{name}" in v]
        if found and len(found) == len(values):
            figures[name] = float(np.mean(found))
    return figures


def _scores(forget: np.ndarray, retain: np.ndarray, r_forget: np.ndarray, r_retain: np.ndarray):
    """Every audit score of one set of N models against the retrained ones, and the forget ROC curve."""
    eps = A.forget_epsilons(forget, r_forget)
    forget_lira, curve = A.ulira(forget, r_forget, curve=True)
    return {"forget_score": A.score_of_epsilons(eps, forget.shape[0]), "ulira_forget": forget_lira,
            "ulira_retain": A.ulira(retain, r_retain), "one_model": A.one_model_test(forget, r_forget),
            "epsilons": eps.tolist()}, curve


def agreement(method: dict, oracle_attack: dict[str, float]) -> str:
    """Where the audit and the population attack of the same runs disagree: the audit tells the runs from
    retrained models when its forget U-LiRA AUC is at least ``AUDIT_TELLS``; the attack tells a run from the
    oracle when its forget-vs-held-out AUC differs from the oracles' by more than ``ATTACK_TELLS``."""
    attack = method.get("population", {})
    if not all(math.isfinite(figures.get("forget_auc", math.nan)) for figures in (attack, oracle_attack)):
        return ("no population-attack forget AUC (the runs were evaluated without the attack, mia: false, or "
                "forget whole people, who have no held-out image of their own to be compared with)")
    audit_auc = method["ulira_forget"]["auc"]
    audit_tells = audit_auc >= AUDIT_TELLS
    attack_tells = abs(attack["forget_auc"] - oracle_attack["forget_auc"]) > ATTACK_TELLS
    figures = (f"attack forget AUC {attack['forget_auc']:.3f} vs the oracles' {oracle_attack['forget_auc']:.3f}; "
               f"U-LiRA AUC {audit_auc:.3f}")
    if audit_tells and not attack_tells:
        return (f"**disagree**: the population attack sees it as the oracle, the audit tells its runs from retrained "
                f"models ({figures}): the single-model attack gives a false sense of privacy here")
    if attack_tells and not audit_tells:
        return (f"**disagree**: the population attack tells it from the oracle, the audit cannot ({figures}): with "
                f"N models the audit does not resolve this difference, or it lies outside the statistic")
    return f"agree: {'both tell it from' if audit_tells else 'neither tells it from'} retraining ({figures})"


def collect(plan: Audit) -> dict:
    args, out = plan.args, plan.out
    seeds = range(args.models)
    stats_dir = out / "stats"
    stats_dir.mkdir(parents=True, exist_ok=True)
    oracle_runs = [plan.oracle_run(s) for s in seeds]
    retrained = _statistics(oracle_runs)
    r_forget, r_retain = retrained["forget"], retrained["retain"]
    np.save(stats_dir / "retrained_forget.npy", r_forget)
    np.save(stats_dir / "retrained_retain.npy", r_retain)
    oracle_values = _metrics(oracle_runs)
    ra_r, ta_r = _utility(oracle_values, plan.protocol)
    result = {"protocol": plan.protocol, "models": args.models, "resolvable_epsilon": A.resolvable_epsilon(args.models),
              "forget_examples": r_forget.shape[1], "retain_controls": r_retain.shape[1],
              "retrained": {"RA": ra_r, "TA": ta_r, "population": _population(oracle_values)},
              "oracle_runs": [str(r) for r in oracle_runs], "methods": {}, "noise": {}}
    curves = {}
    for method in plan.label_free:
        runs = [plan.method_run(method, s) for s in seeds]
        stats = _statistics(runs, controls=True)
        for name in ("forget", "retain"):
            np.save(stats_dir / f"{method}_{name}.npy", stats[name])
            np.save(stats_dir / f"noise_{method}_{name}.npy", stats[f"noise_{name}"])
        values = _metrics(runs)
        ra_u, ta_u = _utility(values, plan.protocol)
        scores, curves[method] = _scores(stats["forget"], stats["retain"], r_forget, r_retain)
        result["methods"][method] = {
            **scores, "final_score": A.final_score(scores["forget_score"], ra_u, ra_r, ta_u, ta_r), "RA": ra_u,
            "TA": ta_u, "label_free": plan.label_free[method], "population": _population(values),
            "drift": float(np.mean(stats["drift"]))}
        result["methods"][method]["agreement"] = agreement(result["methods"][method],
                                                           result["retrained"]["population"])
        result["noise"][method], _ = _scores(stats["noise_forget"], stats["noise_retain"], r_forget, r_retain)
        if "theta0" not in result:
            result["theta0"] = theta0_row(stats, r_forget, r_retain, values, plan.protocol)
    if args.relearn:
        result["relearn"] = relearn_times(plan)
    write_json(out / "audit.json", {**result, **retrained["ids"]})
    _plots(out, result, curves)
    (out / "audit.md").write_text(markdown(result))
    return result


def theta0_row(stats: dict, r_forget: np.ndarray, r_retain: np.ndarray, values: list[dict], protocol: str) -> dict:
    """θ0 against the retrained models. θ0 is one model: repeated N times as the "unlearned" side it is a point
    mass, which the challenge's rule scores ε = 50 on every example (F = 0) whatever θ0 remembers, so its
    telling figure is the one-model test (``one_model_test``): how unlikely θ0's statistic is under the
    retrained models, example by example."""
    n = r_forget.shape[0]
    forget, retain = stats["theta0_forget"], stats["theta0_retain"]
    ra, ta = _utility(values, protocol, "original/")
    return {"forget_score": A.forget_score(np.repeat(forget, n, axis=0), r_forget), "RA": ra, "TA": ta,
            "one_model": A.one_model_test(forget, r_forget), "one_model_retain": A.one_model_test(retain, r_retain),
            "population": _population(values[:1], "original/")}


def relearn_times(plan: Audit) -> dict:
    """Relearn time (``unlearnkit.relearn``) of θ0, of the first ``--relearn`` oracles and of each method's runs
    of the same seeds, and each method's Anamnesis Index: its mean relearn time over the oracles'. Each run keeps
    its result in ``relearn.json`` (per recipe and target), so a repeated audit relearns nothing again."""

    recipe = RelearnRecipe(fraction=plan.args.relearn_fraction, max_steps=plan.args.relearn_steps)
    seeds = range(min(plan.args.relearn, plan.args.models))
    datamodule = datamodule_of(plan.oracle_run(0))
    theta0_map = forget_map(load_frozen(plan.original).backbone, datamodule)
    target = recipe.fraction * theta0_map

    def timed(run_dir: Path) -> dict:
        cache = run_dir / "relearn.json"
        known = json.loads(cache.read_text()) if cache.is_file() else []
        for entry in known:
            if entry["recipe"] == asdict(recipe) and entry["target"] == target:
                return entry
        entry = relearn(run_dir / "checkpoints" / "last.ckpt", datamodule, target, recipe)
        write_json(cache, [*known, entry])
        return entry

    def summary(entries: list[dict]) -> dict:
        return {"steps": float(np.mean([e["steps"] for e in entries])), "per_seed": [e["steps"] for e in entries],
                "reached": all(e["reached"] for e in entries)}

    oracle = summary([timed(plan.oracle_run(s)) for s in seeds])
    methods = {}
    for method in plan.label_free:
        mine = summary([timed(plan.method_run(method, s)) for s in seeds])
        # a ratio to the oracles' step cap would be a ratio to a lower bound: no index unless they relearned
        mine["anamnesis_index"] = mine["steps"] / oracle["steps"] if oracle["steps"] > 0 and oracle["reached"] else None
        methods[method] = mine
    theta0 = relearn(plan.original, datamodule, target, recipe)
    return {"recipe": asdict(recipe), "theta0_forget_mAP": theta0_map, "target": target, "seeds": len(seeds),
            "theta0": summary([theta0]), "retrained": oracle, "methods": methods}


def markdown(result: dict) -> str:
    n = result["models"]
    lines = [f"# Privacy audit ({result['protocol']} protocol)", "",
             f"{n} unlearning runs per method against {n} retrained oracles; {result['forget_examples']} forget "
             f"examples, {result['retain_controls']} retain controls. With {n} models per side the score resolves ε "
             f"up to {result['resolvable_epsilon']:.0f}; higher ε all look alike.", "",
             *A.table_markdown(result),
             "", "- U-LiRA: telling the N runs from the N retrained models, each model left out of its own side's "
              "fit (0.5: indistinguishable). One-model AUC: each model alone against the retrained models' "
              "Gaussian per example (θ0 is one model; 0.5: it looks like one more retrained model).",
              "- θ0 row: θ0 repeated N times is a point mass, which the challenge's rule scores ε = 50 on every "
              "example, so its F is 0 by construction; its one-model AUC says how far θ0 sits from retraining "
              f"(median z-score {result['theta0']['one_model']['median_z']:+.2f} retrained standard deviations "
              "on the forget examples)." if "theta0" in result else "- no θ0 row (no unlearning run).",
              "- ↳ noise rows: θ0's embeddings plus isotropic noise of the method's drift, one draw per seed: a "
              "figure this noise reaches says nothing about the method.",
              "- attack columns: the population membership attack of the same runs (their metrics.json, mean over "
              "the runs): AUC of forget vs held-out images and the attack's false-positive rate.", "",
              "## Where the audit and the population attack disagree", ""]
    lines += [f"- {method}: {m['agreement']}" for method, m in result["methods"].items()]
    if "relearn" in result:
        lines += ["", *relearn_markdown(result["relearn"])]
    return "\n".join(lines) + "\n"


def relearn_markdown(figures: dict) -> list[str]:
    r = figures["recipe"]
    lines = ["## Relearn time", "",
             f"Fine-tuning on D_f until forget mAP reaches {r['fraction']:g} × θ0's ({figures['theta0_forget_mAP']:.3f}"
             f" → target {figures['target']:.3f}): SGD lr {r['lr']:g}, momentum {r['momentum']:g}, batch "
             f"{r['batch_size']}, CosFace (s {r['scale']:g}, m {r['margin']:g}) against the model's own forget-"
             f"identity centroids, BatchNorm frozen, checked every {r['eval_every']} steps, cap {r['max_steps']} "
             f"steps; mean over {figures['seeds']} seed(s). Anamnesis Index = the method's steps / the oracles' "
             "(≈ 1: as hard to relearn as for a model that never saw D_f; ≪ 1: hidden, not removed; 0 steps: its "
             "forget mAP never fell below the target, nothing to relearn; –: the oracles did not relearn within "
             "the cap, so there is no ratio to take: raise --relearn-steps or lower --relearn-fraction).", "",
             "| model | relearn steps | per seed | reached | Anamnesis Index |", "|---|---:|---|---|---:|"]
    entries = [("θ0", figures["theta0"]), ("retrained oracles", figures["retrained"]), *figures["methods"].items()]
    for name, e in entries:
        capped = "" if e["reached"] else f" (cap {r['max_steps']}: a lower bound)"
        lines.append(f"| {name} | {e['steps']:.1f} | {', '.join(map(str, e['per_seed']))} | "
                     f"{'yes' if e['reached'] else 'no' + capped} | {A.fmt(e.get('anamnesis_index'), 2)} |")
    return [*lines, ""]


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
    parser.add_argument("--methods", nargs="+", required=True,
                        help="method class names, e.g. Cure Dispersion, or all (every method the protocol compares)")
    parser.add_argument("--models", type=int, default=16, help="N: oracles and unlearning runs per method")
    parser.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=None,
                        help="one audit per protocol, each under --out/<protocol> (instead of --data.protocol)")
    parser.add_argument("--out", default="runs/audit")
    parser.add_argument("--cache", default="runs/audit-oracles", help="where oracles are kept for reuse")
    parser.add_argument("--oracle-epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="train only this seed's runs (a SLURM array task)")
    parser.add_argument("--relearn", type=int, nargs="?", const=3, default=0, metavar="K",
                        help="also measure relearn time on the first K seeds' models (K = 3 if not given)")
    parser.add_argument("--relearn-fraction", type=float, default=1.0,
                        help="relearning ends when forget mAP reaches this fraction of θ0's (default 1)")
    parser.add_argument("--relearn-steps", type=int, default=RelearnRecipe.max_steps,
                        help=f"relearning's step cap (default {RelearnRecipe.max_steps}); a capped model is marked")
    parser.add_argument("extra", nargs="*", help="after --: options given to every run (data, epochs, θ0)")
    args = parser.parse_args(argv)
    if args.protocols and "--data.protocol" in args.extra:
        raise ConfigError("the protocol is given twice: use --protocols or --data.protocol after --, not both")
    if args.relearn < 0:
        raise ConfigError(f"--relearn {args.relearn}: give the number of seeds to relearn (≥ 1), or leave it out")
    if args.relearn:
        RelearnRecipe(fraction=args.relearn_fraction, max_steps=args.relearn_steps)  # bad values fail now
    for protocol in args.protocols or [None]:
        one = copy.copy(args)
        if protocol:
            one.out, one.extra = str(Path(args.out) / protocol), [*args.extra, "--data.protocol", protocol]
        plan = Audit(one)
        seeds = [args.seed] if args.seed is not None else range(args.models)
        plan.train(seeds)
        if args.seed is None:
            result = collect(plan)
            print((plan.out / "audit.md").read_text())
            print(f"audit of {len(result['methods'])} method(s) written to {plan.out}")
    return 0

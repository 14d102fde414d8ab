"""The study: do both papers' claims hold? Every method, θ0, the retrain oracle and the noise baseline, over seeds.

For each data set and seed: pretrain θ0 (some people kept out of training entirely, ``data.unseen_identities``,
so verification on unseen people is measurable); for each protocol retrain the oracle on exactly D_r (a
one-step run writes the split's manifest); give every method the same tuning budget (``--budget`` Optuna trials,
``unlearnkit.tuning.tune``, over the search space it declares, ``tuning``; default 16 on the synthetic set, 8 on
the real ones), judged by its protocol's objective, on a *validation* forget draw (``data.forget_seed 1``, with an
oracle retrained on that draw's D_r for the sample and quality objectives), never the evaluation split; tuning
runs on the first seed (``--tune_seeds`` to tune on more) and its choice is used for every seed; run the chosen
setting on the evaluation split with the oracle configured; run each method along its learning rate
(``--front_points`` rates over the searched range, and the chosen one: its trade-off front, whose forget mAP at a
retain mAP drop of 2 points is the method's headline; ``--front_protocols identity`` keeps the fronts to the one
protocol whose claim reads them, where compute is short).

The quality protocol runs with the built-in quality score and, where the data set records each image's quality
(the synthetic set), with ``data.quality known`` (protocol ``quality_known``), each with its own oracle. With
``--audit DIR`` (an ``unlearnkit audit`` of the synthetic set's sample protocol) its forget scores join the
membership claim.

Each claim is judged on per-seed values with a paired 95 % t-interval (``unlearnkit.stats``): holds, fails or
inconclusive. Writes ``docs/results.md`` (claims, tables with mean ± std, θ0, oracle and noise rows, chosen
settings, wall time per data set) and ``docs/results/<dataset>-fronts.png``; prints one line per claim:
``claim <name> holds|fails|inconclusive [<dataset>] <figures>``.

Every run goes through the same CLI and configs a user runs; a stopped study resumes (finished runs are kept).
Data sets can run side by side, one process each (``--datasets``); ``--prepare`` trains only θ0 and the oracles of
``--seeds`` (a second process, or an array job, while the first seed tunes).
``--quick``: one seed, the synthetic set, 8 pretraining and 2 unlearning epochs, every method at its defaults
(budget 1: no tuning runs), no fronts, no ``quality_known`` (``--protocols`` to add it); a smoke test of the whole
pipeline, not a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from unlearnkit.demo import _last_error, cli, output_to, trainer_overlay
from unlearnkit.methods import label_free_comparison, method_defaults, unlearning_methods
from unlearnkit.stats import FAILS, HOLDS, INCONCLUSIVE, all_of, any_of, best_within, paired_interval, verdict

ROOT = Path(__file__).resolve().parents[1]
RETAIN_DROP = 0.02  # the identity claims' bound on the retain mAP drop from θ0
ORACLE_TRAINED, ORACLE_TRIES = 0.5, 3  # an oracle under half θ0's retain mAP did not train: a new initialisation


@dataclass(frozen=True)
class Dataset:
    """A data set of the study: its data config, the pretraining experiment whose recipe makes θ0 and, as
    ``--model Retrain``, the oracle, its tuning budget, data options for every run and whether its images carry a
    known quality (``quality: known``); ``unseen_pairs``: the verification key on pairs of people never trained on
    that the quality claim reads (default: the first ``verify/<set>/unseen/acc``)."""

    data: str
    pretrain: str
    budget: int
    options: tuple[str, ...] = ()
    known_quality: bool = False
    unseen_pairs: str | None = None


# the synthetic set's held-out pairs, and pairs among the 10 people it never trains on (verify/unseen/…)
SYNTHETIC_PAIRS = [{"name": "heldout", "format": "heldout", "num_pairs": 600},
                   {"name": "unseen", "format": "heldout", "people": "unseen", "num_pairs": 600}]
DATASETS = {
    "synthetic": Dataset("configs/data/synthetic.yaml", "configs/experiment/pretrain_synthetic.yaml", 16,
                         ("--data.unseen_identities", "10", "--data.pairs", json.dumps(SYNTHETIC_PAIRS)),
                         known_quality=True, unseen_pairs="verify/unseen/acc"),
    "lfw_subset": Dataset("configs/data/lfw_subset.yaml", "configs/experiment/pretrain_lfw_subset.yaml", 8,
                          ("--data.unseen_identities", "6")),
    # pins.yaml keeps its own unseen people
    "pins": Dataset("configs/data/pins.yaml", "configs/experiment/pretrain_pins.yaml", 8,
                    unseen_pairs="verify/unseen/acc"),
}
PROTOCOLS = {"identity": [], "sample": ["--data.protocol", "sample", "--data.forget", "0.1"],
             "quality": ["--data.protocol", "quality", "--data.forget", "0.1"],
             "quality_known": ["--data.protocol", "quality", "--data.forget", "0.1", "--data.quality", "known"]}
# SalUn's "Avg. Gap": the two-sided gaps to the oracle the sample and quality protocols' verdicts rest on
GAP_KEYS = ("oracle_gap/forget/mAP", "oracle_gap/retain_heldout/mAP", "oracle_gap/memorisation/mAP",
            "oracle_gap/mia/forget_auc")
AVG_GAP = "avg_oracle_gap"


def study_methods(only=None) -> dict[str, dict[str, bool]]:
    """Per protocol, the methods the study runs (read from the registry's declarations), each with whether it
    runs as its ``labels: pseudo`` variant: identity, every method declaring ``identity_study``; sample, the
    label-free comparison (label-free methods, then the label-free baselines); quality (both scores), its
    label-free methods. ``only``: keep these class names."""
    comparison = label_free_comparison()
    quality = {name: False for name, pseudo in comparison.items() if not pseudo}
    plan = {"identity": {name: False for name, cls in unlearning_methods().items() if cls.identity_study},
            "sample": comparison, "quality": quality, "quality_known": dict(quality)}
    return {p: {m: pseudo for m, pseudo in methods.items() if only is None or m in only} for p, methods in plan.items()}


def protocols_of(dataset: str, only=None) -> list[str]:
    """The study protocols run on ``dataset`` (``quality_known`` where its images carry a known quality) that have a
    method among ``only``."""
    methods = study_methods(only)
    return [p for p in PROTOCOLS if (p != "quality_known" or DATASETS[dataset].known_quality) and methods[p]]


def base_protocol(protocol: str) -> str:
    """The evaluation protocol a study protocol runs (``quality_known`` is the quality protocol)."""
    return "quality" if protocol == "quality_known" else protocol


def search_space(method: str, epochs: int | None = None):
    """The method's declared search space (``tuning``), with its epochs fixed to ``epochs`` where given, and its
    defaults."""
    cls = unlearning_methods()[method]
    defaults = method_defaults(cls)
    cls.tuning.check(method, defaults)
    space = cls.tuning if epochs is None else dataclasses.replace(cls.tuning, epochs=(epochs,))
    return space, defaults


def study_plan(epochs: int | None = None) -> dict[str, dict[str, dict]]:
    """Per protocol, each method the study runs: whether on pseudo-labels, the setting it starts from (its first
    tuning trial, and its setting at budget 1: ``SearchSpace.default_setting``) and its front's knob and values."""
    plan = {}
    for protocol, methods in study_methods().items():
        plan[protocol] = {}
        for method, pseudo in methods.items():
            space, defaults = search_space(method, epochs)
            first = space.default_setting(defaults)
            knob, front = front_settings(method, first, 4)
            plan[protocol][method] = {"pseudo": pseudo, "first": first, "front": (knob, [s[knob] for s in front])}
    return plan


def front_settings(method: str, chosen: dict, points: int) -> tuple[str, list[dict]]:
    """The settings of a method's trade-off front: its learning rate at ``points`` values evenly spaced on a log
    scale over the whole range tuning searches (the chosen lr added), the chosen setting's other options kept.

    The step size is the strength every method has, and over that range it spans the trade-off from θ0 unchanged
    to a collapsed embedding. The declared knobs (``SearchSpace.strength``) are tuned but make poor fronts: two
    temperatures or two weight decays span too little, and at a chosen lr that leaves θ0 unchanged (what tuning
    picked for every identity method on the synthetic set, where each setting that moves the forgotten people also
    moves the others) a knob's front is one point. Returns ``"lr"`` and the settings, the chosen one among them."""
    cls = unlearning_methods()[method]
    low, high = cls.tuning.lr.bounds(float(method_defaults(cls)["lr"]))
    values = [float(f"{low * (high / low) ** (i / max(points - 1, 1)):.4g}") for i in range(points)] \
        if low < high else [low]
    values = sorted(set(values) | {float(chosen["lr"])})
    return "lr", [{**chosen, "lr": value} for value in values]


def oracle_run(base: Path, name: str, k: int = 0) -> Path:
    """The run directory of ``name``'s oracle trained from initialisation ``k`` (0: the first; k > 0: a retry of one
    that did not train, which the results page lists: ``RETRIED_ORACLES``)."""
    return base / (f"{name}-oracle" if k == 0 else f"{name}-oracle-init{k}")


RETRIED_ORACLES = "seed*/*-oracle-init*"  # under a data set's directory: every oracle_run with k > 0


class RunFailed(Exception):
    """A run of the study stopped with an error (the study stops; a second call resumes)."""


def setting_key(setting: dict) -> str:
    """A short stable name of a setting: tuning trials are cached by it, so a resumed tuning reuses them."""
    return hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:10]


class Study:
    def __init__(self, args) -> None:
        self.args, self.out = args, Path(args.out)
        self.common = ["--wandb", "false", "--trainer.enable_progress_bar", "false"]
        self.common += [token for item in args.set for token in ("--" + item.split("=", 1)[0], item.split("=", 1)[1])]
        self.dataset, self.started, self.count = "", time.perf_counter(), 0

    def cli(self, run_dir: Path, args: list[str], keep: bool = False) -> dict:
        """One run (``demo.cli``: skipped when finished, resumed when stopped), its output in ``<run>/output.log``
        (on the console with ``--verbose``); the wall time of runs actually made adds up per data set in
        ``run_seconds``; one progress line per run. A failed run stops the study with its error line. A finished
        run's checkpoints are deleted unless ``keep`` (θ0 and the oracles, which later runs load): the study reads
        only its metrics, and at 60 MB a checkpoint its few hundred runs per data set would fill the disk."""
        started, done = time.perf_counter(), (run_dir / "metrics.json").exists()
        args = [*args, "--run_dir", str(run_dir), *self.common]
        if self.args.verbose or done:
            metrics = cli(args)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            log = run_dir / "output.log"
            try:
                with output_to(log):
                    metrics = cli(args)
            except (Exception, SystemExit) as err:
                raise RunFailed(f"run {run_dir} failed: {_last_error(log, err)} (its output: {log})") from None
        if not keep:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        self.count += 1
        seconds = time.perf_counter() - started
        if not done:
            self.add_run_seconds(seconds)
        print(f"[run {self.count}, {(time.perf_counter() - self.started) / 60:.1f} min] "
              f"{run_dir.relative_to(self.out)}: {'cached' if done else f'{seconds:.0f} s'}", flush=True)
        return metrics

    def add_run_seconds(self, seconds: float) -> None:
        """Kept in ``<out>/<dataset>/run_seconds.json``: a study resumed or re-collected later still reports its
        cost. Processes of one data set (``--prepare``, ``--protocols``, ``--methods``) add to the same file, so
        each addition holds a lock and replaces the file whole: none is lost and none reads a half-written file."""
        from unlearnkit.utils.io import write_text

        path = self.out / self.dataset / "run_seconds.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            spent = json.loads(path.read_text()) if path.is_file() else 0.0
            write_text(path, json.dumps(spent + seconds))

    def run_minutes(self) -> dict[str, float]:
        return {path.parent.name: json.loads(path.read_text()) / 60
                for path in sorted(self.out.glob("*/run_seconds.json"))}

    def trainer_config(self, oracle: Path | None, epochs: int, path: Path, **overrides) -> Path:
        return trainer_overlay(ROOT / "configs/trainer/cpu_unlearn.yaml", path,
                               {"oracle": str(oracle)} if oracle is not None else None, max_epochs=epochs, **overrides)

    def front(self, protocol: str, method: str) -> bool:
        """Whether ``method`` runs its front in ``protocol`` (``--fronts``, ``--front_protocols``, ``--front_methods``)."""
        a = self.args
        return a.fronts and protocol in a.front_protocols and (a.front_methods is None or method in a.front_methods)

    def protocols(self, dataset: str) -> list[str]:
        return [p for p in protocols_of(dataset, self.args.methods) if p in self.args.protocols]

    def budget(self, dataset: str) -> int:
        return self.args.budget or DATASETS[dataset].budget

    def search_space(self, method: str):
        return search_space(method, self.args.epochs)

    def tune_trainer(self, base: Path, protocol: str, oracle: Path | None) -> Path:
        """The tuning trials' trainer: evaluated once at the end (``tuning.trial_arguments``), without what the
        objectives never read (plots, per-identity table, noise baseline), against the validation oracle."""
        evaluation = {"plots": False, "per_identity": False, "noise_baseline": False,
                      **({"oracle": str(oracle)} if oracle is not None else {})}
        return trainer_overlay(ROOT / "configs/trainer/cpu_unlearn.yaml", base / f"trainer-tune-{protocol}.yaml",
                               evaluation)

    def choose(self, base: Path, protocol: str, method: str, common, trainer: Path, seed: int) -> dict:
        """The method's setting for ``protocol``: its own (``SearchSpace.default_setting``) at budget 1, else the
        best of ``budget`` Optuna trials (``unlearnkit.tuning.tune``, the protocol's objective) on the validation
        forget draw; the tuning's SQLite study and its trial runs live under ``tune/<protocol>/<method>``."""
        from unlearnkit.tuning import trial_arguments, tune

        space, defaults = self.search_space(method)
        budget = self.budget(self.dataset)
        if budget == 1:  # nothing to choose between: no tuning runs
            return space.default_setting(defaults)
        where = base / "tune" / protocol / method

        def run_trial(setting: dict) -> dict:
            return self.cli(where / "trials" / setting_key(setting),
                            [*common(method, trainer), "--data.forget_seed", "1", *trial_arguments(setting)])

        return tune(method, run_trial, base_protocol(protocol), budget=budget, storage=where / "optuna.db", seed=seed,
                    space=space, defaults=defaults, progress=lambda line: print(f"  {method}: {line}", flush=True)).best

    def oracle(self, base: Path, name: str, pretrain: list[str], split_run_args, extra: list[str],
               theta0: dict, seed: int) -> Path:
        """The retrain oracle on exactly one split's D_r: a one-step run (``split_run_args(trainer)``, not evaluated)
        writes the split's manifest, then the pretraining recipe retrains on its retain set. Returns its run
        directory.

        A recipe trained from scratch can fail (Pins' CosFace recipe before it clipped the gradient: on seed 0's
        sample and quality splits its loss fell, then jumped back to the plateau of its first epochs and stayed):
        an oracle whose retained people are retrieved at under ``ORACLE_TRAINED`` of θ0's retain mAP is no oracle,
        and every gap to it would reward a collapsed model. Such an oracle is trained again from a new initialisation
        (``--seed_everything`` seed + 1000·k, same data, ``<name>-oracle-init<k>``), at most ``ORACLE_TRIES`` times;
        the study stops if none trains."""
        split_run = base / "split" / name
        self.cli(split_run, split_run_args(self.trainer_config(None, 1, base / f"trainer-split-{name}.yaml",
                                                               limit_train_batches=1, limit_val_batches=0)))
        retrain = [*pretrain, "--model", "Retrain", *extra, "--data.split_manifest", str(split_run / "split.csv")]
        floor = ORACLE_TRAINED * theta0.get("retain/mAP", math.nan)
        for k in range(ORACLE_TRIES):
            oracle_dir = oracle_run(base, name, k)
            retain = self.cli(oracle_dir, [*retrain, *(["--seed_everything", str(seed + 1000 * k)] if k else [])],
                              keep=True).get("retain/mAP", math.nan)
            if not retain < floor:  # NaN (a metric not logged) is not a failure to train
                return oracle_dir
            print(f"  {oracle_dir.relative_to(self.out)}: retain mAP {retain:.3f}, under {ORACLE_TRAINED:g} of θ0's "
                  f"{theta0['retain/mAP']:.3f}: it did not train"
                  + ("; training it again from a new initialisation" if k + 1 < ORACLE_TRIES else ""), flush=True)
        raise RunFailed(f"{oracle_dir}: the oracle did not train in {ORACLE_TRIES} initialisations (retain mAP "
                        f"{retain:.3f}, θ0 {theta0['retain/mAP']:.3f}): check the pretraining recipe on this split")

    def run_seed(self, dataset: str, seed: int, chosen: dict | None = None, prepare: bool = False) -> dict:
        """Every run of one seed; tunes first unless ``chosen`` settings (per protocol) are given. ``prepare``: only
        the long runs, θ0 and the oracles (the validation draw's too where this seed tunes), none of the methods'."""
        from unlearnkit.tuning import trial_arguments

        a, base, spec = self.args, self.out / dataset / f"seed{seed}", DATASETS[dataset]
        self.dataset = dataset
        data = ["--data", str(ROOT / spec.data), *spec.options, "--data.seed", str(seed), "--seed_everything", str(seed)]
        pretrain = ["fit", "--config", str(ROOT / spec.pretrain), *data]
        if a.pretrain_epochs:
            pretrain += ["--trainer.max_epochs", str(a.pretrain_epochs)]
        theta0 = self.cli(base / "original", pretrain, keep=True)
        original = base / "original" / "checkpoints" / "last.ckpt"
        results = {"seed": seed, "original": base / "original", "runs": {}, "chosen": {}, "fronts": {}}
        unlearn = str(ROOT / "configs/experiment/unlearn_synthetic.yaml")
        for protocol in self.protocols(dataset):
            methods, extra = study_methods(a.methods)[protocol], PROTOCOLS[protocol]

            def common(method: str, trainer: Path, extra=extra, methods=methods) -> list[str]:
                labels = ["--model.labels", "pseudo"] if methods.get(method) else []
                return ["fit", "--config", unlearn, "--trainer", str(trainer), *data, *extra, "--model", method,
                        "--model.original", str(original), *labels]

            first = next(iter(methods))
            settings_here = (chosen or {}).get(protocol)
            if settings_here is None:
                validation_oracle = None
                if base_protocol(protocol) != "identity" and self.budget(dataset) > 1:  # the objective's oracle
                    validation_oracle = self.oracle(
                        base, f"{protocol}-validation", pretrain,
                        lambda trainer, first=first: [*common(first, trainer), "--data.forget_seed", "1"],
                        [*extra, "--data.forget_seed", "1"], theta0, seed)
                    validation_oracle = validation_oracle / "checkpoints" / "last.ckpt"
            if settings_here is None and not prepare:
                tune_trainer = self.tune_trainer(base, protocol, validation_oracle)
                settings_here = {method: self.choose(base, protocol, method, common, tune_trainer, seed)
                                 for method in methods}
            results["chosen"][protocol] = settings_here
            oracle_dir = self.oracle(base, protocol, pretrain, lambda trainer, first=first: common(first, trainer),
                                     extra, theta0, seed)
            if prepare:
                continue
            manifest = ["--data.split_manifest", str(base / "split" / protocol / "split.csv")]
            trainer = self.trainer_config(oracle_dir / "checkpoints" / "last.ckpt", a.epochs or 5,
                                          base / f"trainer-{protocol}.yaml")
            for method in methods:
                run = base / f"{protocol}-{method}-{setting_key(settings_here[method])}"  # a new choice, a new run
                self.cli(run, [*common(method, trainer), *manifest, *trial_arguments(settings_here[method])])
                results["runs"][(protocol, method)] = run
                if self.front(protocol, method):
                    knob, front = front_settings(method, settings_here[method], a.front_points)
                    runs = []
                    for setting in front:
                        same = setting == settings_here[method]
                        runs.append(run if same else base / "front" / f"{protocol}-{method}-{setting_key(setting)}")
                        if not same:
                            self.cli(runs[-1], [*common(method, trainer), *manifest, *trial_arguments(setting)])
                    results["fronts"][(protocol, method)] = (knob, [s[knob] for s in front], runs)
            results["runs"][(protocol, "Retrain")] = oracle_dir
        return results

    def planned_runs(self, dataset: str) -> tuple[int, int]:
        """(runs at most, of which tuning trials) this data set needs, finished ones included: per seed θ0, per protocol
        the split run, the oracle and each method's run and front; on tuned seeds the trials and, for the protocols
        tuned against the oracle, the validation draw's split run and oracle."""
        a, budget = self.args, self.budget(dataset)
        methods = study_methods(a.methods)
        per_seed, per_tuned, trials = 1, 0, 0
        for protocol in self.protocols(dataset):
            n, fronts = len(methods[protocol]), sum(self.front(protocol, m) for m in methods[protocol])
            per_seed += 2 + n + fronts * a.front_points  # the chosen lr is rarely on the front
            if budget > 1:
                trials += n * budget
                per_tuned += 2 if base_protocol(protocol) != "identity" else 0
        tuned = min(a.tune_seeds, len(a.seeds))
        return per_seed * len(a.seeds) + (per_tuned + trials) * tuned, trials * tuned


# ------------------------------------------------------------------------------------------------ collecting
def avg_oracle_gap(metrics: dict) -> float:
    """The mean two-sided gap to the oracle over ``GAP_KEYS`` (NaN unless all are there)."""
    values = [metrics.get(k, math.nan) for k in GAP_KEYS]
    return statistics.fmean(values) if not any(math.isnan(v) for v in values) else math.nan


def original_values(metrics: dict) -> dict:
    """θ0's values as an unlearning run records them (``original/…``), with θ0's own gaps to the oracle."""
    values = {k[len("original/"):]: v for k, v in metrics.items() if k.startswith("original/")}
    for key in GAP_KEYS:
        metric = key[len("oracle_gap/"):]
        if metric in values and f"oracle/{metric}" in metrics:
            values[key] = abs(values[metric] - metrics[f"oracle/{metric}"])
    return values


def oracle_values(metrics: dict) -> dict:
    """The oracle's values as an unlearning run records them (``oracle/…``); its gaps to itself are 0."""
    values = {k[len("oracle/"):]: v for k, v in metrics.items() if k.startswith("oracle/")}
    return {**values, **{key: 0.0 for key in GAP_KEYS if key[len("oracle_gap/"):] in values}}


def with_derived(metrics: dict) -> dict:
    return {**metrics, AVG_GAP: avg_oracle_gap(metrics)}


@dataclass
class Collected:
    """Per (dataset, protocol, row): one metrics dict per seed; rows are the methods, ``Original`` (θ0),
    ``Retrain`` (the oracle) and ``noise@<method>`` (the noise baseline at that method's drift). ``fronts``:
    per (dataset, protocol, method), the knob, its values and one list of metrics dicts per seed."""

    values: dict = field(default_factory=dict)
    fronts: dict = field(default_factory=dict)


def collect(all_results: dict[str, list[dict]]) -> Collected:
    from unlearnkit.report import cost_vs_retrain, load_run

    out = Collected()
    for dataset, seeds in all_results.items():
        for r in seeds:
            for (protocol, method), path in r["runs"].items():
                run = load_run(path)
                oracle = load_run(r["runs"][(protocol, "Retrain")])
                ratio = cost_vs_retrain(run, oracle).get("cost_vs_retrain/wall_seconds", math.nan)
                rows = {method: {**run.metrics, "cost ×retrain": ratio}}
                if method != "Retrain":  # θ0 and the oracle as the methods' evaluation saw them, and the noise
                    rows["Original"] = original_values(run.metrics)
                    rows["Retrain"] = oracle_values(run.metrics)
                    rows[f"noise@{method}"] = {k[len("noise/"):]: v for k, v in run.metrics.items()
                                               if k.startswith("noise/")}
                for label, metrics in rows.items():  # the first run's view of a value wins, the others fill in
                    seeds_here = out.values.setdefault((dataset, protocol, label), {})
                    merged = {**metrics, **seeds_here.get(r["seed"], {})}
                    merged.pop(AVG_GAP, None)
                    seeds_here[r["seed"]] = with_derived(merged)
            for (protocol, method), (knob, values, paths) in r["fronts"].items():
                entry = out.fronts.setdefault((dataset, protocol, method), {"knob": knob, "values": values,
                                                                            "seeds": {}})
                entry["seeds"][r["seed"]] = [with_derived(load_run(p).metrics) for p in paths]
    return out


def per_seed(collected: Collected, dataset: str, protocol: str, label: str, key: str, seeds: list[int]) -> list[float]:
    rows = collected.values.get((dataset, protocol, label), {})
    return [float(rows.get(s, {}).get(key, math.nan)) for s in seeds]


def retain_drop(metrics: dict) -> float:
    return metrics.get("original/retain/mAP", math.nan) - metrics.get("retain/mAP", math.nan)


def front_headline(points: list[dict], key: str = "forget/mAP", bound: float = RETAIN_DROP) -> float:
    """``key`` at a retain mAP drop of ``bound`` read off a front (its runs, θ0 added at drop 0: doing nothing is
    always a setting), by linear interpolation (``unlearnkit.stats.best_within``)."""
    if not points:
        return math.nan
    theta0 = points[0].get(f"original/{key}", math.nan)
    return best_within([0.0, *map(retain_drop, points)], [theta0, *(p.get(key, math.nan) for p in points)], bound)


def headlines(collected: Collected, dataset: str, protocol: str, method: str, key: str, seeds: list[int]) -> list[float]:
    """Per seed, ``key`` at 2 points of retain drop: off the method's front where the study ran fronts, else off
    its one evaluation run (with θ0)."""
    front = collected.fronts.get((dataset, protocol, method))
    if front is not None:
        return [front_headline(front["seeds"].get(s, []), key) for s in seeds]
    rows = collected.values.get((dataset, protocol, method), {})
    return [front_headline([rows[s]], key) if s in rows else math.nan for s in seeds]


# ------------------------------------------------------------------------------------------------ claims
def mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def seeds_text(values: list[float]) -> str:
    return "/".join("nan" if math.isnan(v) else f"{v:.3f}" for v in values)


def claims(collected: Collected, dataset: str, seeds: list[int], audit: dict | None = None) -> list[str]:
    """One line per claim of issue 19, each judged on per-seed values with paired 95 % intervals."""
    lines = []
    value = lambda p, m, k: per_seed(collected, dataset, p, m, k, seeds)  # noqa: E731

    # dispersion_lowest_forget: at a retain drop ≤ 2 points, dispersion or hard dispersion below RL, GA, BS on
    # forget mAP, R@1 and CS (each read off the fronts); its rank among every identity method by forget mAP
    disp, base = ["Dispersion", "HardDispersion"], ["RandomLabel", "GradientAscent", "BoundaryShrink"]
    ran = lambda p: [m for m in study_methods()[p] if (dataset, p, m) in collected.values]  # noqa: E731
    identity = ran("identity")
    metrics = ("forget/mAP", "forget/R@1", "forget/CS")
    head = {(m, k): headlines(collected, dataset, "identity", m, k, seeds)
            for m in {*identity, *disp, *base} for k in metrics}
    per_variant, worst = [], {}
    for d in disp:
        comparisons = []
        for b in base:
            for k in metrics:
                interval = paired_interval(head[b, k], head[d, k])
                comparisons.append(verdict(interval))
                if verdict(interval) != HOLDS and (d, k) not in worst:
                    worst[d, k] = f"{b} − {d} {k}: {interval}"
        per_variant.append(all_of(comparisons))
    ranking = sorted(identity, key=lambda m: (math.isnan(mean(head[m, "forget/mAP"])), mean(head[m, "forget/mAP"])))
    rank = min((ranking.index(d) + 1 for d in disp if d in ranking), default=math.nan)
    figures = " ".join(f"{m}:fmAP={seeds_text(head[m, 'forget/mAP'])},fR@1={seeds_text(head[m, 'forget/R@1'])},"
                       f"fCS={seeds_text(head[m, 'forget/CS'])}" for m in disp + base)
    why = ("; ".join(worst.values())) or "every comparison holds"
    lines.append(f"claim dispersion_lowest_forget {any_of(per_variant)} [{dataset}] at retain mAP drop ≤ "
                 f"{RETAIN_DROP:.2f}, per seed: {figures}; best dispersion ranks {rank} of {len(ranking)} by forget "
                 f"mAP ({', '.join(ranking)}); {why}")

    # r1_outlives_map: dispersion keeps more of forget R@1 than of forget mAP
    kept = {k: [x / y if y else math.nan for x, y in zip(value("identity", "Dispersion", k),
                                                         value("identity", "Original", k))]
            for k in ("forget/R@1", "forget/mAP")}
    interval = paired_interval(kept["forget/R@1"], kept["forget/mAP"])
    lines.append(f"claim r1_outlives_map {verdict(interval)} [{dataset}] Dispersion keeps R@1 "
                 f"{seeds_text(kept['forget/R@1'])} and mAP {seeds_text(kept['forget/mAP'])} of θ0's; R@1 − mAP "
                 f"{interval}")

    # cure_best_label_free: CURE has the smallest average two-sided gap to the oracle among label-free methods: the
    # published baselines run on pseudo-labels (other label-free methods, e.g. our CURE variant, shown beside)
    label_free = ran("sample")  # the label-free methods the study ran
    if "Cure" not in label_free:
        lines += [f"claim {name} {INCONCLUSIVE} [{dataset}] CURE did not run in the sample protocol"
                  for name in ("cure_best_label_free", "cure_lowest_membership")]
        return [*lines, quality_forgetting_helps(collected, dataset, seeds)]
    others = [m for m in label_free if study_methods()["sample"][m]]
    gap = {m: value("sample", m, AVG_GAP) for m in dict.fromkeys([*label_free, "Cure", "Original"])}
    comparisons = {m: paired_interval(gap[m], gap["Cure"]) for m in others}
    ues = {m: value("sample", m, "UES") for m in label_free}
    lines.append(f"claim cure_best_label_free {all_of([verdict(iv) for iv in comparisons.values()])} [{dataset}] "
                 f"avg oracle gap per seed: " + " ".join(f"{m}={seeds_text(v)}" for m, v in gap.items())
                 + "; other − Cure: " + "; ".join(f"{m} {iv}" for m, iv in comparisons.items())
                 + "; UES vs θ0 (CURE's metric): " + " ".join(f"{m}={mean(v):.3f}" for m, v in ues.items()))

    # cure_lowest_membership: CURE has the lowest forget-vs-held-out attack AUC (and the best forget score)
    auc = {m: value("sample", m, "mia/forget_auc") for m in dict.fromkeys([*label_free, "Cure", "Retrain"])}
    comparisons = {m: paired_interval(auc[m], auc["Cure"]) for m in others}
    verdicts = [verdict(iv) for iv in comparisons.values()]
    audited = ""
    if audit:  # the forget score (higher: closer to the retrained models) of CURE against the same baselines
        compared = {m: v for m, v in audit.items() if m == "Cure" or m in others}
        verdicts.append(INCONCLUSIVE if "Cure" not in compared or len(compared) < 2
                        else HOLDS if max(compared, key=compared.get) == "Cure" else FAILS)
        audited = "; audit forget score (one θ0, no interval): " + " ".join(f"{m}={v:.3f}" for m, v in audit.items())
    lines.append(f"claim cure_lowest_membership {all_of(verdicts)} [{dataset}] forget AUC per seed: "
                 + " ".join(f"{m}={seeds_text(v)}" for m, v in auc.items())
                 + "; other − Cure: " + "; ".join(f"{m} {iv}" for m, iv in comparisons.items()) + audited)

    lines.append(quality_forgetting_helps(collected, dataset, seeds))
    return lines


def quality_forgetting_helps(collected: Collected, dataset: str, seeds: list[int]) -> str:
    """The claim line of ``quality_forgetting_helps``: verification on unseen people after CURE forgets the
    lowest-quality images is at least θ0's, per quality protocol run, each judged on paired seeds."""
    value = lambda p, m, k: per_seed(collected, dataset, p, m, k, seeds)  # noqa: E731
    parts, verdicts = [], []
    for protocol in (p for p in ("quality", "quality_known") if p in protocols_of(dataset)):
        rows = collected.values.get((dataset, protocol, "Cure"), {})
        if not rows:
            continue
        keys = sorted({k for row in rows.values() for k in row if k.startswith("verify/") and k.endswith("/unseen/acc")})
        preferred = DATASETS[dataset].unseen_pairs if dataset in DATASETS else None
        if preferred and any(preferred in row for row in rows.values()):
            keys = [preferred]
        if not keys:
            parts.append(f"{protocol}: no verification pairs of unseen people (set data.unseen_identities)")
            verdicts.append(INCONCLUSIVE)
            continue
        after, before = value(protocol, "Cure", keys[0]), value(protocol, "Original", keys[0])
        oracle = value(protocol, "Retrain", keys[0])
        interval = paired_interval(after, before)
        verdicts.append(verdict(interval))
        parts.append(f"{protocol} {keys[0]}: θ0 {seeds_text(before)}, Cure {seeds_text(after)}, oracle "
                     f"{seeds_text(oracle)}; Cure − θ0 {interval}")
    return (f"claim quality_forgetting_helps {all_of(verdicts)} [{dataset}] "
            + ("; ".join(parts) or "CURE did not run in a quality protocol"))


# ------------------------------------------------------------------------------------------------ writing
COLUMNS = {
    "identity": ["forget/mAP", "forget/R@1", "forget/CS", "retain/mAP", "retain/R@1", "retain/CS", "mia/forget_auc",
                 "UES", "drift", "cost ×retrain"],
    "sample": [AVG_GAP, *GAP_KEYS, "forget/mAP", "retain_heldout/mAP", "memorisation/mAP", "mia/forget_auc", "UES",
               "drift", "cost ×retrain"],
}


def cell(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def table(collected: Collected, dataset: str, protocol: str, seeds: list[int]) -> list[str]:
    """The protocol's table: θ0, the oracle, each method followed by its noise baseline (mean ± std over seeds)."""
    labels = [label for (d, p, label) in collected.values if d == dataset and p == protocol]
    methods = [m for m in study_methods()[protocol] if m in labels]
    order = ["Original", "Retrain", *[x for m in methods for x in (m, f"noise@{m}")]]
    rows = {label: collected.values[(dataset, protocol, label)] for label in order if label in labels}
    verify = sorted({k for row in rows.values() for values in row.values() for k in values
                     if k.startswith("verify/") and k.endswith(("/retained/acc", "/unseen/acc"))})
    columns = [k for k in COLUMNS["identity" if protocol == "identity" else "sample"] + verify
               if any(k in values for row in rows.values() for values in row.values())]

    def column(key: str) -> list:
        return [values.get(key) for row in rows.values() for values in row.values()]

    # a pair set of unseen people also reports itself split by people (verify/unseen/unseen/acc): one column
    columns = [k for i, k in enumerate(columns) if all(column(k) != column(j) for j in columns[:i])]
    names = {"Original": "**θ0**", "Retrain": "**oracle**"}
    out = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, row in rows.items():
        name = names.get(label) or (f"↳ noise at {label[6:]}'s drift" if label.startswith("noise@") else label)
        out.append(f"| {name} | " + " | ".join(cell([row.get(s, {}).get(k, math.nan) for s in seeds])
                                               for k in columns) + " |")
    return out


def headline_table(collected: Collected, dataset: str, protocol: str, seeds: list[int]) -> list[str]:
    methods = [m for (d, p, m) in collected.fronts if d == dataset and p == protocol]
    if not methods:
        return []
    out = [f"Forget mAP at a retain mAP drop of {RETAIN_DROP:.2f}, read off each front (θ0 at drop 0 included), "
           "per seed:", "", "| method | front along | per seed | mean ± std |", "|---|---|---|---|"]
    for m in methods:
        front, values = collected.fronts[(dataset, protocol, m)], headlines(collected, dataset, protocol, m,
                                                                            "forget/mAP", seeds)
        knob = f"{front['knob']}: {', '.join(f'{v:.3g}' for v in front['values'])}"
        out.append(f"| {m} | {knob} | {seeds_text(values)} | {cell(values)} |")
    return [*out, ""]


def save_fronts(collected: Collected, dataset: str, seeds: list[int], path: Path) -> Path | None:
    from unlearnkit.plots import save_fronts as plot

    curves, references = [], []
    for (d, protocol, method), front in collected.fronts.items():
        if d != dataset:
            continue
        runs = [front["seeds"][s] for s in seeds if s in front["seeds"]]
        curves.append({"panel": protocol, "label": method,
                       "forget": [[p.get("forget/mAP", math.nan) for p in r] for r in runs],
                       "retain": [[p.get("retain/mAP", math.nan) for p in r] for r in runs]})
    if not curves:
        return None
    panels = {c["panel"] for c in curves}  # a protocol without fronts gets no panel of θ0 and oracle alone
    for (d, protocol, label), rows in collected.values.items():
        if d == dataset and protocol in panels and label in ("Original", "Retrain"):
            references.append({"panel": protocol, "label": "θ0" if label == "Original" else "oracle",
                               "kind": "original" if label == "Original" else "oracle",
                               "forget": [r.get("forget/mAP", math.nan) for r in rows.values()],
                               "retain": [r.get("retain/mAP", math.nan) for r in rows.values()]})
    return plot(curves, references, path)


def describe_space(method: str, epochs: int | None = None) -> str:
    space, defaults = search_space(method, epochs)
    low, high = space.lr.bounds(float(defaults["lr"]))
    knobs = [f"{k.name} [{k.low:g}, {k.high:g}]{' (log)' if k.log else ''}" if hasattr(k, "low") else
             f"{k.name} {{{', '.join(f'{v:g}' for v in k.values)}}}" for k in space.knobs]
    return f"lr [{low:.2g}, {high:.2g}], epochs {{{', '.join(map(str, space.epochs))}}}, " + ", ".join(knobs)


def write_results(path: Path, collected: Collected, all_results: dict, claim_lines: list[str],
                  minutes: dict[str, float], args) -> None:
    from unlearnkit.utils.io import write_text

    minutes = {d: m for d, m in minutes.items() if d in all_results}
    spent = ", ".join(f"{d} {m:.1f} min" for d, m in minutes.items())
    budgets = ", ".join(f"{d} {args.budget or DATASETS[d].budget}" for d in all_results)
    out = ["# Results", "", f"Produced by `python benchmarks/study.py {' '.join(args.argv)}`: its runs took "
           f"{sum(minutes.values()):.1f} minutes of wall time on this machine ({spent}; the sum of every run's wall "
           "time, runs made in parallel processes and runs that failed and were resumed included); seeds "
           f"{args.seeds}. Every "
           f"method got the same tuning budget ({budgets} Optuna trials; 1: its own defaults, no tuning) over the "
           "search space it declares, judged by its protocol's objective (`unlearnkit.tuning`: identity, the lowest "
           "forget mAP at a retain mAP drop ≤ 0.02 and unseen-people verification drop ≤ 0.01; sample and quality, "
           "the mean two-sided gap to the oracle) on a validation forget draw (`data.forget_seed=1`, with its own "
           f"oracle) of the first {args.tune_seeds} seed(s); the choice is used for every seed.", "",
           "Each claim is judged on per-seed values: the paired difference per seed, its mean and 95 % t-interval "
           "(`unlearnkit.stats`); it holds or fails only where the interval and every seed agree, else it is "
           "inconclusive.", ""]
    retried = sorted(run for dataset in all_results for run in Path(args.out, dataset).glob(RETRIED_ORACLES)
                     if (run / "metrics.json").is_file())
    if retried:
        from unlearnkit.report import load_run

        out += ["Oracles trained again from a new initialisation, the one before having not trained (retain mAP "
                f"under {ORACLE_TRAINED:g} of θ0's; `Study.oracle`), with their own retain mAP: "
                + ", ".join(f"`{run.relative_to(args.out)}` {load_run(run).metrics.get('retain/mAP', math.nan):.3f}"
                            for run in retried) + ".", ""]
    out += ["## Claims", "", *[f"- `{line}`" for line in claim_lines], ""]
    for dataset, seeds in all_results.items():
        numbers = [r["seed"] for r in seeds]
        plot = save_fronts(collected, dataset, numbers, path.parent / "results" / f"{dataset}-fronts.png")
        if plot is not None:
            out += [f"![{dataset}: trade-off fronts, forget mAP vs retain mAP, one panel per protocol]"
                    f"(results/{plot.name})", ""]
        for protocol in protocols_of(dataset):
            if not any(d == dataset and p == protocol for d, p, _ in collected.values):
                continue
            out += [f"## {dataset}, {protocol} protocol (mean ± std over seeds {numbers})", "",
                    *table(collected, dataset, protocol, numbers), "",
                    *headline_table(collected, dataset, protocol, numbers)]
    out += ["## Search spaces", "", "Learning rates log-uniform; the other options categorical unless a range; each "
            "front walks the lr range:", ""]
    ran = dict.fromkeys(m for r in all_results.values() for s in r for chosen in s["chosen"].values() for m in chosen)
    out += [f"- {method}: {describe_space(method, args.epochs)}" for method in ran]
    out += ["", "## Chosen settings", ""]
    for dataset, seeds in all_results.items():
        used: dict[tuple, list[int]] = {}
        for r in seeds:
            for protocol, chosen in r["chosen"].items():
                for method, setting in chosen.items():
                    used.setdefault((protocol, method, json.dumps(setting)), []).append(r["seed"])
        for (protocol, method, setting), used_by in used.items():
            shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in json.loads(setting).items())
            out.append(f"- {dataset} {protocol} {method}: `{shown}` (seeds {', '.join(map(str, used_by))})")
    notes = path.with_name(f"{path.stem}_notes.md")
    if notes.is_file():  # the analysis, written by hand beside the figures it discusses
        out += ["", notes.read_text().strip()]
    write_text(path, "\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--budget", type=int, default=None,
                        help="tuning trials per method (default per data set: synthetic 16, lfw_subset and pins 8; "
                             "quick 1: no tuning)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="unlearning epochs, fixed (default: tuned among the search space's epochs; quick 2)")
    parser.add_argument("--pretrain_epochs", type=int, default=None)
    parser.add_argument("--tune_seeds", type=int, default=1,
                        help="seeds that tune (each on its own validation draw); the rest reuse the first's choice")
    parser.add_argument("--fronts", action=argparse.BooleanOptionalAction, default=None,
                        help="run each method along its learning rate (default: on, off in --quick)")
    parser.add_argument("--front_points", type=int, default=4,
                        help="learning rates on each front, log-spaced over the searched range, besides the chosen one (4)")
    parser.add_argument("--front_protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS),
                        help="protocols that run fronts (default: all; only the identity protocol's claim reads them)")
    parser.add_argument("--front_methods", default=None,
                        help="comma-separated class names that run fronts (default: all; dispersion_lowest_forget reads "
                             "Dispersion, HardDispersion, RandomLabel, GradientAscent and BoundaryShrink's; the others' "
                             "headlines come from their one run)")
    parser.add_argument("--prepare", action="store_true",
                        help="train only θ0 and the oracles of --seeds, then stop: a second process (or array job) "
                             "does these long runs while the first seed tunes")
    parser.add_argument("--protocols", nargs="+", default=None, choices=list(PROTOCOLS),
                        help="protocols to run (default: all; quick: identity sample quality)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated class names to run (default: every method the study declares)")
    parser.add_argument("--audit", default=None, metavar="DIR",
                        help="an `unlearnkit audit` directory of the synthetic set's sample protocol: its forget "
                             "scores join the cure_lowest_membership claim")
    parser.add_argument("--verbose", action="store_true", help="each run's output on the console, not in its output.log")
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--results", default="docs/results.md")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a CLI override for every run, e.g. data.num_identities=12 (tests use a tiny set)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.seeds, args.datasets = args.seeds[:1], ["synthetic"]
    args.budget = args.budget or (1 if args.quick else None)
    args.epochs = args.epochs or (2 if args.quick else None)
    args.pretrain_epochs = args.pretrain_epochs or (8 if args.quick else None)
    args.fronts = (not args.quick) if args.fronts is None else args.fronts
    args.protocols = args.protocols or (["identity", "sample", "quality"] if args.quick else list(PROTOCOLS))
    missing = [str(ROOT / p) for d in args.datasets for p in (DATASETS[d].data, DATASETS[d].pretrain)
               if not (ROOT / p).is_file()]
    if missing:
        print(f"error: {missing[0]} does not exist: leave its data set out of --datasets", file=sys.stderr)
        return 2
    known = {m for methods in study_methods().values() for m in methods}
    for option in ("methods", "front_methods"):
        if getattr(args, option) is None:
            continue
        setattr(args, option, [m for m in getattr(args, option).split(",") if m])
        unknown = [m for m in getattr(args, option) if m not in known]
        if unknown:
            print(f"error: --{option} names {unknown[0]!r}, which the study does not run: choose among "
                  f"{', '.join(sorted(known))}", file=sys.stderr)
            return 2
    audit = None
    if args.audit is not None:
        path = Path(args.audit) / "audit.json"
        if not path.is_file():
            print(f"error: --audit {args.audit} has no audit.json: give the --out directory of a finished "
                  "`unlearnkit audit`", file=sys.stderr)
            return 2
        audit = {m: v["forget_score"] for m, v in json.loads(path.read_text())["methods"].items()}
    started = time.perf_counter()
    study = Study(args)
    fronts = f"{args.front_points} settings in {' '.join(args.front_protocols)}" if args.fronts else "off"
    for dataset in [] if args.prepare else args.datasets:
        runs, tuning = study.planned_runs(dataset)
        print(f"plan {dataset}: at most {runs} runs for seeds {args.seeds} ({tuning} tuning trials, budget "
              f"{study.budget(dataset)} per method; fronts {fronts})", flush=True)
    if args.prepare:
        try:
            for dataset in args.datasets:
                for i, seed in enumerate(args.seeds):  # the tuning seeds also get their validation draw's oracles
                    chosen = None if i < args.tune_seeds else dict.fromkeys(study.protocols(dataset), {})
                    study.run_seed(dataset, seed, chosen, prepare=True)
        except RunFailed as err:
            print(f"error: {err}; call the study again to resume", file=sys.stderr)
            return 2
        print(f"prepared θ0 and the oracles of {args.datasets} for seeds {args.seeds}")
        return 0
    all_results = {}
    for dataset in args.datasets:
        try:
            runs = [study.run_seed(dataset, seed) for seed in args.seeds[:args.tune_seeds]]
            runs += [study.run_seed(dataset, seed, runs[0]["chosen"]) for seed in args.seeds[args.tune_seeds:]]
        except RunFailed as err:
            print(f"error: {err}; call the study again to resume", file=sys.stderr)
            return 2
        all_results[dataset] = runs
        print(f"{dataset} done: {study.run_minutes().get(dataset, 0.0):.1f} min of runs", flush=True)
    from unlearnkit.report import write_report

    for dataset, seeds in all_results.items():
        for r in seeds:
            for protocol in study.protocols(dataset):  # one report per protocol, with its own oracle
                mine = [p for (q, _), p in r["runs"].items() if q == protocol]
                write_report([r["original"], *mine], study.out / dataset / f"seed{r['seed']}" / "report" / protocol)
    collected = collect(all_results)
    claim_lines = [line for d, seeds in all_results.items()
                   for line in claims(collected, d, [r["seed"] for r in seeds], audit if d == "synthetic" else None)]
    write_results(Path(args.results), collected, all_results, claim_lines, study.run_minutes(), args)
    for line in claim_lines:
        print(line)
    for dataset, minutes in ((d, m) for d, m in study.run_minutes().items() if d in all_results):
        print(f"wall time of {dataset}'s runs: {minutes:.1f} min")
    print(f"study finished in {(time.perf_counter() - started) / 60:.1f} min; results in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

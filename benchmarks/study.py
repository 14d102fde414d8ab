"""The study: do both papers' claims hold? Every method, the original and the retrain oracle, over seeds.

For each data set and seed: pretrain θ0; for each protocol retrain the oracle on D_r; give every method
the same tuning budget (``--budget`` settings from its declared search space, ``tuning``: its learning rate, its
strength knob, its other loss weights), chosen by UES on a
*validation* forget set (another forget draw over the same held-out images, ``data.forget_seed``), never on
the evaluation split; tuning runs on the first seed (``--tune_seeds`` to tune on more) and its choice is used
for every seed; run the chosen setting on the evaluation split with the oracle configured; collect
with ``unlearnkit report``; write ``docs/results.md`` (mean ± std over seeds, chosen settings, cost
relative to retraining) and print one line per claim: ``claim <name> holds|fails <figures>``.

Every run goes through the same CLI and configs a user runs. ``--quick``: one seed, the synthetic set,
8 pretraining and 2 unlearning epochs, every method at its defaults (budget 1: no tuning runs); a smoke test
of the whole pipeline, not a result.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from unlearnkit.demo import cli, model_options, trainer_overlay
from unlearnkit.methods import label_free_comparison, method_defaults, unlearning_methods

ROOT = Path(__file__).resolve().parents[1]
# data config and the pretraining experiment whose recipe makes θ0 and, as ``--model Retrain``, the oracle
DATASETS = {"synthetic": ("configs/data/synthetic.yaml", "configs/experiment/pretrain_synthetic.yaml"),
            "lfw_subset": ("configs/data/lfw_subset.yaml", "configs/experiment/pretrain_lfw_subset.yaml")}
PROTOCOLS = {"identity": [], "sample": ["--data.protocol", "sample", "--data.forget", "0.1"],
             "quality": ["--data.protocol", "quality", "--data.forget", "0.1"]}


def study_methods() -> dict[str, dict[str, bool]]:
    """Per protocol, the methods the study runs (read from the registry's declarations), each with whether it
    runs as its ``labels: pseudo`` variant: identity, every method declaring ``identity_study``; sample, the
    label-free comparison (label-free methods, then the label-free baselines); quality, its label-free methods."""
    comparison = label_free_comparison()
    return {"identity": {name: False for name, cls in unlearning_methods().items() if cls.identity_study},
            "sample": comparison,
            "quality": {name: False for name, pseudo in comparison.items() if not pseudo}}


def settings(method: str, budget: int) -> list[dict]:
    """``budget`` settings from the method's declared search space (``tuning``) in a fixed order: its defaults,
    the learning rate at the top and bottom of its range (by default a decade either side of its own), each other
    value of its strength knob and loss weights, then learning rates in between (``SearchSpace.settings``)."""
    cls = unlearning_methods()[method]
    defaults = method_defaults(cls)
    cls.tuning.check(method, defaults)
    return cls.tuning.settings(defaults, budget)


def study_plan(budget: int) -> dict[str, dict[str, list[dict]]]:
    """Per protocol, each method the study runs and the settings it is tuned on (the first one alone at budget 1)."""
    return {protocol: {method: settings(method, budget) for method in methods}
            for protocol, methods in study_methods().items()}


class Study:
    def __init__(self, args) -> None:
        self.args, self.out = args, Path(args.out)
        self.common = ["--wandb", "false", "--trainer.enable_progress_bar", "false"]
        self.common += [token for item in args.set for token in ("--" + item.split("=", 1)[0], item.split("=", 1)[1])]

    def cli(self, run_dir: Path, args: list[str]) -> dict:
        """One run (``demo.cli``: skipped when finished, resumed when stopped); the wall time of runs actually
        made adds up in ``run_seconds``."""
        started, done = time.perf_counter(), (run_dir / "metrics.json").exists()
        metrics = cli([*args, "--run_dir", str(run_dir), *self.common])
        if not done:
            self.add_run_seconds(time.perf_counter() - started)
        return metrics

    def add_run_seconds(self, seconds: float) -> None:
        """Kept in ``<out>/run_seconds.json``: a study resumed or re-collected later still reports its cost."""
        path = self.out / "run_seconds.json"
        total = json.loads(path.read_text())["seconds"] if path.is_file() else 0.0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seconds": total + seconds}))

    def run_minutes(self) -> float:
        path = self.out / "run_seconds.json"
        return json.loads(path.read_text())["seconds"] / 60 if path.is_file() else 0.0

    def trainer_config(self, oracle: Path | None, epochs: int, path: Path, **overrides) -> Path:
        return trainer_overlay(ROOT / "configs/trainer/cpu_unlearn.yaml", path,
                               {"oracle": str(oracle)} if oracle is not None else None, max_epochs=epochs, **overrides)

    def tune(self, base: Path, protocol: str, plan: dict[str, list[dict]], common) -> dict:
        """Each method's best of its settings in ``plan`` (``study_plan``) by UES on the validation forget draw."""
        a = self.args
        if a.budget == 1:  # nothing to choose between: no tuning runs
            return {method: candidates[0] for method, candidates in plan.items()}
        # evaluated once, at the end: only the final UES is compared
        trainer = self.trainer_config(None, a.epochs, base / f"trainer-tune-{protocol}.yaml",
                                      check_val_every_n_epoch=a.epochs)
        chosen = {}
        for method, candidates in plan.items():
            scored = []
            for k, setting in enumerate(candidates):
                metrics = self.cli(base / "tune" / f"{protocol}-{method}-{k}",
                                   [*common(method, trainer), "--data.forget_seed", "1", *model_options(setting)])
                scored.append((metrics.get("UES", float("-inf")), k, setting))
            chosen[method] = max(scored, key=lambda t: (t[0], -t[1]))[2]
        return chosen

    def run_seed(self, dataset: str, seed: int, chosen: dict | None = None) -> dict:
        """Every run of one seed; tunes first unless ``chosen`` settings (per protocol) are given."""
        a, base = self.args, self.out / dataset / f"seed{seed}"
        data_config, experiment = DATASETS[dataset]
        data = ["--data", str(ROOT / data_config), "--data.seed", str(seed), "--seed_everything", str(seed)]
        pretrain = ["fit", "--config", str(ROOT / experiment), *data]
        if a.pretrain_epochs:
            pretrain += ["--trainer.max_epochs", str(a.pretrain_epochs)]
        self.cli(base / "original", pretrain)
        original = base / "original" / "checkpoints" / "last.ckpt"
        results = {"original": base / "original", "runs": {}, "chosen": {}}
        unlearn = str(ROOT / "configs/experiment/unlearn_synthetic.yaml")
        plan = study_plan(a.budget)
        for protocol, methods in study_methods().items():
            extra = PROTOCOLS[protocol]

            def common(method: str, trainer: Path, extra=extra, methods=methods) -> list[str]:
                labels = ["--model.labels", "pseudo"] if methods.get(method) else []
                return ["fit", "--config", unlearn, "--trainer", str(trainer), *data, *extra, "--model", method,
                        "--model.original", str(original), *labels]

            settings_here = (chosen or {}).get(protocol) or self.tune(base, protocol, plan[protocol], common)
            results["chosen"][protocol] = settings_here
            oracle_dir = base / f"{protocol}-oracle"
            # a one-step run writes the evaluation split's manifest, so the oracle retrains on exactly that D_r
            split_runs = base / "split" / protocol
            one_step = self.trainer_config(None, 1, base / f"trainer-split-{protocol}.yaml", limit_train_batches=1)
            self.cli(split_runs, common("Cure", one_step))
            manifest = ["--data.split_manifest", str(split_runs / "split.csv")]
            self.cli(oracle_dir, [*pretrain, "--model", "Retrain", *extra, *manifest])
            trainer = self.trainer_config(oracle_dir / "checkpoints" / "last.ckpt", a.epochs,
                                          base / f"trainer-{protocol}.yaml")
            for method in methods:
                run = base / f"{protocol}-{method}"
                self.cli(run, [*common(method, trainer), *manifest, *model_options(settings_here[method])])
                results["runs"][(protocol, method)] = run
            results["runs"][(protocol, "Retrain")] = oracle_dir
        return results


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(all_results: dict[str, list[dict]]) -> tuple[dict, list[str]]:
    """Per data set, protocol and method: mean ± std of each metric over seeds (the original θ0's values
    from the ``original/`` keys every unlearning run records; cost relative to the same seed's oracle)."""
    from unlearnkit.report import cost_vs_retrain, load_run

    keys = ["forget/mAP", "forget/R@1", "forget/CS", "retain/mAP", "retain/R@1", "retain/CS", "UES",
            "mia/membership_recall", "mia/attack_acc", "cost/wall_seconds", "cost ×retrain"]
    table = {}
    for dataset, seeds in all_results.items():
        for (protocol, method) in seeds[0]["runs"]:
            rows = []
            for r in seeds:
                run, oracle = load_run(r["runs"][(protocol, method)]), load_run(r["runs"][(protocol, "Retrain")])
                ratio = cost_vs_retrain(run, oracle).get("cost_vs_retrain/wall_seconds", math.nan)
                rows.append({**run.metrics, "cost ×retrain": ratio})
            verify = sorted({k for row in rows for k in row if k.startswith("verify/") and k.endswith("/acc")})
            table[(dataset, protocol, method)] = {
                k: mean_std([row.get(k, float("nan")) for row in rows]) for k in keys + verify}
            if method != "Retrain" and (dataset, protocol, "Original") not in table:
                table[(dataset, protocol, "Original")] = {
                    k: mean_std([row.get(f"original/{k}", float("nan")) for row in rows]) for k in keys + verify}
    return table, keys


def claims(table: dict, dataset: str) -> list[str]:
    t = lambda p, m, k: table.get((dataset, p, m), {}).get(k, (float("nan"), 0))[0]  # noqa: E731
    lines = []
    disp = ["Dispersion", "HardDispersion"]
    base = ["RandomLabel", "GradientAscent", "BoundaryShrink"]
    ok = all(t("identity", d, k) < t("identity", b, k) for d in disp for b in base for k in ("forget/mAP", "forget/CS"))
    retain_ok = all(abs(t("identity", d, "retain/mAP") - t("identity", "Original", "retain/mAP")) <= 0.03 for d in disp)
    fig = " ".join(f"{m}:fmAP={t('identity', m, 'forget/mAP'):.3f},fCS={t('identity', m, 'forget/CS'):.3f},"
                   f"rmAP={t('identity', m, 'retain/mAP'):.3f}" for m in disp + base + ["Original"])
    lines.append(f"claim dispersion_lowest_forget {'holds' if ok and retain_ok else 'fails'} [{dataset}] {fig}")
    r1 = t("identity", "Dispersion", "forget/R@1") / max(1e-9, t("identity", "Original", "forget/R@1"))
    mp = t("identity", "Dispersion", "forget/mAP") / max(1e-9, t("identity", "Original", "forget/mAP"))
    lines.append(f"claim r1_outlives_map {'holds' if r1 > mp else 'fails'} [{dataset}] "
                 f"R@1 kept {r1:.2f} of original, mAP kept {mp:.2f}")
    label_free = list(study_methods()["sample"])
    others = [m for m in label_free if m != "Cure"]
    ues = {m: t("sample", m, "UES") for m in label_free}
    lines.append(f"claim cure_best_label_free_ues {'holds' if all(ues['Cure'] > ues[m] for m in others) else 'fails'} "
                 f"[{dataset}] " + " ".join(f"{m}={v:.3f}" for m, v in ues.items()))
    mia = {m: t("sample", m, "mia/membership_recall") for m in label_free}
    oracle = t("sample", "Retrain", "mia/membership_recall")
    closest = min(label_free, key=lambda m: abs(mia[m] - oracle))
    holds = all(mia["Cure"] <= mia[m] for m in others) and closest == "Cure"
    lines.append(f"claim cure_lowest_membership {'holds' if holds else 'fails'} [{dataset}] "
                 + " ".join(f"{m}={v:.3f}" for m, v in mia.items()) + f" oracle={oracle:.3f}")
    row = table.get((dataset, "quality", "Cure"), {})
    original = table.get((dataset, "quality", "Original"), {})
    verify = [k for k in row if k.startswith("verify/")]
    if verify:
        k = verify[0]
        after, before = row[k][0], original[k][0]
        lines.append(f"claim quality_forgetting_helps {'holds' if after >= before else 'fails'} [{dataset}] "
                     f"{k} before {before:.4f} after {after:.4f}")
    else:
        lines.append(f"claim quality_forgetting_helps fails [{dataset}] no verification pairs configured")
    return lines


def cell(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def write_results(path: Path, table: dict, keys: list[str], all_results: dict, claim_lines: list[str],
                  minutes: float, args) -> None:
    from unlearnkit.plots import save_tradeoff
    from unlearnkit.utils.io import write_text

    out = ["# Results", "", f"Produced by `python benchmarks/study.py {' '.join(sys.argv[1:])}`: its runs took "
           f"{minutes:.1f} minutes of wall time on this machine (2 CPU cores); seeds {args.seeds}, budget "
           f"{args.budget} settings per "
           f"method, chosen by UES on a validation forget set (`data.forget_seed=1`) of the first "
           f"{args.tune_seeds} seed(s) and used for every seed.", "", "## Claims", "",
           *[f"- `{line}`" for line in claim_lines], ""]
    for dataset in all_results:
        kind = {"Original": "original", "Retrain": "oracle"}
        plot = save_tradeoff([{"panel": p, "label": m, "kind": kind.get(m, "method"), "forget": v["forget/mAP"][0],
                               "retain": v["retain/mAP"][0], "forget_std": v["forget/mAP"][1],
                               "retain_std": v["retain/mAP"][1]}
                              for (d, p, m), v in table.items() if d == dataset],
                             path.parent / "results" / f"{dataset}.png")
        out += [f"![{dataset}: forget mAP vs retain mAP, one panel per protocol](results/{plot.name})", ""]
        for protocol in ("identity", "sample", "quality"):
            rows = [(m, v) for (d, p, m), v in table.items() if d == dataset and p == protocol]
            if not rows:
                continue
            extra = sorted({k for _, v in rows for k in v if k.startswith("verify/")})
            cols = keys + extra
            out += [f"## {dataset}, {protocol} protocol (mean ± std over seeds)", "",
                    "| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for method, values in sorted(rows):
                cells = [cell(*values.get(k, (math.nan, math.nan))) for k in cols]
                out.append(f"| {method} | " + " | ".join(cells) + " |")
            out.append("")
    out += ["## Chosen settings", ""]
    for dataset, seeds in all_results.items():
        used: dict[tuple, list[int]] = {}
        for seed, r in zip(args.seeds, seeds):
            for protocol, chosen in r["chosen"].items():
                for method, setting in chosen.items():
                    used.setdefault((protocol, method, json.dumps(setting)), []).append(seed)
        for (protocol, method, setting), used_by in used.items():
            out.append(f"- {dataset} {protocol} {method}: `{setting}` (seeds {', '.join(map(str, used_by))})")
    notes = path.with_name(f"{path.stem}_notes.md")
    if notes.is_file():  # the analysis, written by hand beside the figures it discusses
        out += ["", notes.read_text().strip()]
    write_text(path, "\n".join(out) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--budget", type=int, default=None, help="settings per method (default 4; quick 1)")
    parser.add_argument("--epochs", type=int, default=None, help="unlearning epochs (default 5; quick 2)")
    parser.add_argument("--pretrain_epochs", type=int, default=None)
    parser.add_argument("--tune_seeds", type=int, default=1,
                        help="seeds that tune (each on its own validation draw); the rest reuse the first's choice")
    parser.add_argument("--out", default="runs/study")
    parser.add_argument("--results", default="docs/results.md")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a CLI override for every run, e.g. data.num_identities=12 (tests use a tiny set)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.datasets = args.seeds[:1], ["synthetic"]
    args.budget = args.budget or (1 if args.quick else 4)
    args.epochs = args.epochs or (2 if args.quick else 5)
    args.pretrain_epochs = args.pretrain_epochs or (8 if args.quick else None)
    started = time.perf_counter()
    study = Study(args)
    all_results = {}
    for dataset in args.datasets:
        runs = [study.run_seed(dataset, seed) for seed in args.seeds[:args.tune_seeds]]
        runs += [study.run_seed(dataset, seed, runs[0]["chosen"]) for seed in args.seeds[args.tune_seeds:]]
        all_results[dataset] = runs
    for dataset, seeds in all_results.items():
        from unlearnkit.report import write_report

        for seed, r in zip(args.seeds, seeds):
            write_report([r["original"], *r["runs"].values()], study.out / dataset / f"seed{seed}" / "report")
    table, keys = summarise(all_results)
    claim_lines = [line for d in all_results for line in claims(table, d)]
    minutes = (time.perf_counter() - started) / 60
    write_results(Path(args.results), table, keys, all_results, claim_lines, study.run_minutes(), args)
    for line in claim_lines:
        print(line)
    print(f"study finished in {minutes:.1f} min; results in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

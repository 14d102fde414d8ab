"""The study's --quick mode runs end to end on a tiny set and prints one line per claim; the study's and the
demo's plans come from the methods' declarations and reproduce the tables they kept before issue 14."""

from __future__ import annotations

import json
import multiprocessing
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import study  # noqa: E402

from unlearnkit.errors import ConfigError  # noqa: E402
from unlearnkit.methods import method_defaults, unlearning_methods  # noqa: E402

# benchmarks/study.py and unlearnkit/demo.py before issue 14, by hand; now each method declares its part
OLD_IDENTITY_METHODS = ["Finetune", "GradientAscent", "RandomLabel", "BoundaryShrink", "BoundaryExpand", "Scrub",
                        "BadTeacher", "Dispersion", "HardDispersion"]
OLD_LABEL_FREE = ["Cure", "GradientAscent", "RandomLabel", "Scrub", "BadTeacher"]
OLD_DEMO_OPTIONS = {"BoundaryShrink": ["--model.lr", "1e-4"], "BoundaryExpand": ["--model.lr", "1e-4"]}


def test_study_plan_is_the_declared_one():
    methods, plan = study.study_methods(), study.study_plan(epochs=2)
    assert set(OLD_IDENTITY_METHODS) <= set(methods["identity"]) and not any(methods["identity"].values())
    # the old rule: every label-free run but the label-free methods' own on pseudo-labels
    assert set(OLD_LABEL_FREE) <= set(methods["sample"])
    assert methods["quality"] == methods["quality_known"] == {m: False for m, p in methods["sample"].items() if not p}
    assert "Cure" in methods["quality"]
    for protocol, runs in plan.items():
        assert list(runs) == list(methods[protocol])
        for method, entry in runs.items():
            cls = unlearning_methods()[method]
            assert entry["first"] == cls.tuning.default_setting(method_defaults(cls)) | {"epochs": 2}
            knob, values = entry["front"]
            low, high = cls.tuning.lr.bounds(float(method_defaults(cls)["lr"]))
            assert knob == "lr" and len(values) >= 4 and min(values) == low and max(values) == pytest.approx(high)
    # dispersion's front: its lr over the searched three decades, one point a decade; --methods keeps a subset,
    # protocols without one drop out
    assert plan["identity"]["Dispersion"]["front"][1] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])
    assert study.protocols_of("synthetic", ["Dispersion"]) == ["identity"]
    assert study.protocols_of("lfw_subset") == ["identity", "sample", "quality"]  # no known quality there


def test_front_settings_walk_the_searched_lr_range_and_keep_the_chosen_setting():
    chosen = {"lr": 0.003, "epochs": 8, "lambda_cos": 1.7}  # a tuned lr off the front's own joins it
    knob, front = study.front_settings("Cure", chosen, 3)
    low, high = unlearning_methods()["Cure"].tuning.lr.bounds(method_defaults(unlearning_methods()["Cure"])["lr"])
    assert knob == "lr" and [s["lr"] for s in front] == pytest.approx(sorted([low, (low * high) ** 0.5, 0.003, high]), rel=1e-3)
    assert all(s["lambda_cos"] == 1.7 and s["epochs"] == 8 for s in front) and chosen in front
    assert study.setting_key({"a": 1, "b": 2}) == study.setting_key({"b": 2, "a": 1})


def test_demo_plan_is_the_declared_one_and_keeps_the_old_runs():
    from unlearnkit.demo import demo_plan

    plan = demo_plan()
    assert [name for name, _ in plan["identity"]] == list(unlearning_methods())
    for name, args in (run for run in plan["identity"] if run[0] in OLD_IDENTITY_METHODS):
        expected = OLD_DEMO_OPTIONS.get(name, [])
        assert args[::2] == expected[::2] and [float(v) for v in args[1::2]] == [float(v) for v in expected[1::2]]
    assert set(OLD_LABEL_FREE) <= {name for name, _ in plan["sample"]}
    assert all(args == ([] if name == "Cure" else ["--model.labels", "pseudo"])
               for name, args in plan["sample"] if name in OLD_LABEL_FREE)
    assert demo_plan("Dispersion") == {"identity": [("Dispersion", [])]}
    with pytest.raises(ConfigError, match="unknown method 'dispersion' in --methods"):
        demo_plan("dispersion")  # one public name: the class name


def run(seed: int, forget: float, retain: float, **extra) -> dict:
    """The metrics of one unlearning run as the study reads them (θ0: forget mAP 0.9, retain mAP 0.9)."""
    return {"forget/mAP": forget, "forget/R@1": forget, "forget/CS": forget, "retain/mAP": retain,
            "original/forget/mAP": 0.9, "original/forget/R@1": 0.9, "original/forget/CS": 0.9,
            "original/retain/mAP": 0.9, **extra}


def collected(disp_forget: list[float], gaps: dict[str, list[float]]) -> study.Collected:
    """Per seed: both dispersions' forget values as given, the baselines' at 0.6 (all within the retain bound);
    the sample protocol's gaps to the oracle per method (each of GAP_KEYS at that value)."""
    out = study.Collected()
    seeds = range(len(disp_forget))
    for method in ("Dispersion", "HardDispersion", "RandomLabel", "GradientAscent", "BoundaryShrink"):
        values = disp_forget if "Dispersion" in method else [0.6] * len(disp_forget)
        out.values[("synthetic", "identity", method)] = {s: run(s, values[s], 0.89) for s in seeds}
    out.values[("synthetic", "identity", "Original")] = {s: {"forget/mAP": 0.9, "forget/R@1": 0.9} for s in seeds}
    for method, values in gaps.items():
        out.values[("synthetic", "sample", method)] = {
            s: study.with_derived({**{k: values[s] for k in study.GAP_KEYS}, "UES": 0.5}) for s in seeds}
    return out


def verdicts(lines: list[str]) -> dict[str, str]:
    return {line.split()[1]: line.split()[2] for line in lines}


def test_claims_are_judged_on_paired_seeds():
    gaps = {"Cure": [0.05, 0.06, 0.04], "GradientAscent": [0.30, 0.25, 0.35], "RandomLabel": [0.2, 0.3, 0.25]}
    judged = verdicts(study.claims(collected([0.2, 0.25, 0.22], gaps), "synthetic", [0, 1, 2]))
    assert judged["dispersion_lowest_forget"] == "holds" and judged["cure_best_label_free"] == "holds"
    # one seed where dispersion forgets less than a baseline: no longer a result either way
    judged = verdicts(study.claims(collected([0.2, 0.65, 0.22], {**gaps, "RandomLabel": [0.2, 0.03, 0.25]}),
                                   "synthetic", [0, 1, 2]))
    assert judged["dispersion_lowest_forget"] == "inconclusive" and judged["cure_best_label_free"] == "inconclusive"
    judged = verdicts(study.claims(collected([0.7, 0.75, 0.72], {**gaps, "Cure": [0.5, 0.6, 0.55]}),
                                   "synthetic", [0, 1, 2]))
    assert judged["dispersion_lowest_forget"] == "fails" and judged["cure_best_label_free"] == "fails"
    # the audit's forget score: CURE against the same baselines (our CURE variant is not among them)
    data = collected([0.2, 0.25, 0.22], gaps)
    audit = {"Cure": 0.5, "RandomLabel": 0.3, "GradientAscent": 0.6, "CureBounded": 0.9}
    assert verdicts(study.claims(data, "synthetic", [0, 1, 2], audit))["cure_lowest_membership"] == "fails"
    audit["GradientAscent"] = 0.4  # best among the baselines; the attack AUCs were not measured: no verdict
    assert verdicts(study.claims(data, "synthetic", [0, 1, 2], audit))["cure_lowest_membership"] == "inconclusive"
    # one seed decides nothing; no unseen-people pairs: the quality claim says so
    one = collected([0.2], {m: v[:1] for m, v in gaps.items()})
    assert study.claims(one, "synthetic", [0])[-1].endswith("CURE did not run in a quality protocol")
    one.values[("synthetic", "quality", "Cure")] = {0: {"forget/mAP": 0.5}}
    lines = study.claims(one, "synthetic", [0])
    assert set(verdicts(lines).values()) == {"inconclusive"}
    assert "no verification pairs of unseen people" in lines[-1]
    # a study of the identity protocol alone: the sample claims say CURE did not run there, every claim is listed
    identity = study.Collected(values={k: v for k, v in collected([0.2, 0.25, 0.22], gaps).values.items()
                                       if k[1] == "identity"})
    lines = study.claims(identity, "synthetic", [0, 1, 2])
    assert [line.split()[1] for line in lines] == CLAIMS and verdicts(lines)["dispersion_lowest_forget"] == "holds"
    assert all(line.endswith("CURE did not run in the sample protocol") for line in lines[2:4])


def test_front_headline_reads_forget_map_at_two_points_of_retain_drop():
    # θ0 (drop 0, forget 0.9), then drops 0.01 and 0.05: at 0.02 the segment between them gives 0.7 − 0.15
    points = [run(0, 0.7, 0.89), run(0, 0.1, 0.85)]
    assert study.front_headline(points) == pytest.approx(0.55)
    assert study.front_headline([run(0, 0.1, 0.5)]) == pytest.approx(0.9 - 0.8 * 0.02 / 0.4)  # from θ0
    assert study.front_headline([run(0, 0.5, 0.9)], "forget/CS") == pytest.approx(0.5)  # no retain drop at all


def test_table_shows_a_column_that_repeats_another_once():
    # a pair set of unseen people is also reported split by people: the same numbers under two keys
    seed = {"forget/mAP": 0.5, "retain/mAP": 0.9, "verify/unseen/acc": 0.93, "verify/unseen/unseen/acc": 0.93,
            "verify/heldout/unseen/acc": 0.95}
    collected = study.Collected(values={("synthetic", "identity", "Original"): {0: seed},
                                        ("synthetic", "identity", "Dispersion"): {0: {**seed, "forget/mAP": 0.4}}})
    header = study.table(collected, "synthetic", "identity", [0])[0]
    assert "verify/unseen/acc" in header and "verify/heldout/unseen/acc" in header
    assert "verify/unseen/unseen/acc" not in header and "forget/mAP" in header and "retain/mAP" in header


CLAIMS = ["dispersion_lowest_forget", "r1_outlives_map", "cure_best_label_free", "cure_lowest_membership",
          "quality_forgetting_helps"]


class StandInCli:
    """Stands in for ``demo.cli``: writes a finished run's files with metrics drawn from its arguments (seeded), and
    records the runs it made; a finished run is read back, as the real one does."""

    def __init__(self) -> None:
        self.made: list[list[str]] = []

    def __call__(self, args: list[str]) -> dict:
        run_dir = Path(args[args.index("--run_dir") + 1])
        if (run_dir / "metrics.json").is_file():
            return json.loads((run_dir / "metrics.json").read_text())["metrics"]
        self.made.append(args)
        rng = random.Random(" ".join(args))
        value = lambda: rng.uniform(0.1, 0.9)  # noqa: E731
        base = {"forget/mAP": value(), "forget/R@1": value(), "forget/CS": value(), "retain/mAP": rng.uniform(0.85, 0.9),
                "retain_heldout/mAP": value(), "memorisation/mAP": value(), "mia/forget_auc": value(), "UES": value(),
                "verify/heldout/unseen/acc": value(), "cost/wall_seconds": 10.0}
        metrics = {**base, **{f"original/{k}": 0.9 for k in base}, **{f"oracle/{k}": 0.8 for k in base},
                   **{f"oracle_gap/{k}": value() for k in base}, **{f"noise/{k}": v for k, v in base.items()}}
        protocol = args[args.index("--data.protocol") + 1] if "--data.protocol" in args else "identity"
        model = args[args.index("--model") + 1] if "--model" in args else "Pretrain"
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
        (run_dir / "metrics.json").write_text(json.dumps({"model": model, "metrics": metrics}))
        (run_dir / "evaluation.json").write_text(json.dumps({"settings": {"protocol": protocol}}))
        return metrics


def test_study_tunes_on_the_validation_draw_runs_fronts_and_resumes(tmp_path, monkeypatch, capsys):
    """The study's plan, with a stand-in for the runs: two Optuna trials per method on the validation forget draw
    (the sample and quality protocols against their validation oracle), the chosen setting on the evaluation
    split with its oracle, fronts along the strength knob, the results page; a second call makes no run."""
    fake = StandInCli()
    monkeypatch.setattr(study, "cli", fake)
    argv = ["--budget", "2", "--seeds", "0", "1", "--datasets", "synthetic", "--methods", "Dispersion,RandomLabel,Cure",
            "--epochs", "1", "--out", str(tmp_path / "study"), "--results", str(tmp_path / "results.md"), "--verbose"]
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    base = tmp_path / "study" / "synthetic" / "seed0"
    trials = [a for a in fake.made if "/tune/" in a[a.index("--run_dir") + 1]]
    methods = study.study_methods(["Dispersion", "RandomLabel", "Cure"])
    assert len(trials) == 2 * sum(map(len, methods.values()))  # budget 2 for each method of each protocol
    assert all(a[a.index("--data.forget_seed") + 1] == "1" for a in trials)  # never the evaluation split
    assert "sample-validation-oracle" in (base / "trainer-tune-sample.yaml").read_text()
    assert "oracle" not in (base / "trainer-tune-identity.yaml").read_text()  # identity objective: no oracle
    validation_oracle = next(a for a in fake.made if a[a.index("--run_dir") + 1].endswith("sample-validation-oracle"))
    assert "Retrain" in validation_oracle and "1" == validation_oracle[validation_oracle.index("--data.forget_seed") + 1]
    assert validation_oracle[validation_oracle.index("--data.split_manifest") + 1].endswith(
        "split/sample-validation/split.csv")
    tuning = json.loads((base / "tune" / "sample" / "Cure" / "tuning.json").read_text())
    key = study.setting_key(tuning["best"])
    assert tuning["objective"] == "oracle_gap" and len(tuning["trials"]) == 2
    evaluation = next(a for a in fake.made if a[a.index("--run_dir") + 1] == str(base / f"sample-Cure-{key}"))
    assert "--data.forget_seed" not in evaluation and "split/sample/split.csv" in " ".join(evaluation)
    assert evaluation[evaluation.index("--model.lambda_cos") + 1] == str(tuning["best"]["lambda_cos"])
    # seed 1 reuses seed 0's choice: no tuning runs there; every run of a front on the evaluation split
    assert not (tmp_path / "study" / "synthetic" / "seed1" / "tune").exists()
    fronts = [a for a in fake.made if "/front/identity-Dispersion-" in a[a.index("--run_dir") + 1]]
    rates = {float(a[a.index("--model.lr") + 1]) for a in fronts}
    assert len(fronts) >= 2 * 3 and len(rates) >= 3  # 3 more per seed at least: the other learning rates
    assert (tmp_path / "results" / "synthetic-fronts.png").stat().st_size > 0
    text = (tmp_path / "results.md").read_text()
    assert "quality_known protocol" in text and "↳ noise at Cure's drift" in text and "**oracle**" in text
    assert "read off each front" in text and "(seeds 0, 1)" in text
    planned = int(out.split("plan synthetic: at most ", 1)[1].split()[0])
    assert len(fake.made) <= planned <= len(fake.made) + 2 * 6  # less where the chosen lr is on its front
    assert "wall time of synthetic's runs" in out
    lines = [line for line in out.splitlines() if line.startswith("claim ")]
    assert [line.split()[1] for line in lines] == CLAIMS
    assert all(line.split()[2] in ("holds", "fails", "inconclusive") for line in lines)
    made = len(fake.made)
    assert study.main(argv) == 0 and len(fake.made) == made  # resumed: every run (and trial) was finished
    kept = sorted(str(p.parent.parent.relative_to(tmp_path / "study")) for p in (tmp_path / "study").rglob("last.ckpt"))
    assert kept and all(p.endswith(("/original", "-oracle")) for p in kept)  # later runs load these; the rest go


def test_study_prepare_trains_only_theta0_and_the_oracles_then_the_study_reuses_them(tmp_path, monkeypatch, capsys):
    """``--prepare`` (a second process while the first seed tunes): θ0, the split runs and the oracles of each seed,
    the validation draw's oracles only on the tuning seed, no method run; the study then makes none of these again."""
    fake = StandInCli()
    monkeypatch.setattr(study, "cli", fake)
    argv = ["--budget", "2", "--seeds", "0", "1", "--datasets", "synthetic", "--methods", "Dispersion,Cure",
            "--epochs", "1", "--out", str(tmp_path / "study"), "--results", str(tmp_path / "results.md"), "--verbose"]
    assert study.main([*argv, "--prepare"]) == 0
    made = [a[a.index("--run_dir") + 1] for a in fake.made]
    assert "prepared θ0 and the oracles" in capsys.readouterr().out
    protocols = study.protocols_of("synthetic", ["Dispersion", "Cure"])
    oracles = [p for p in made if p.endswith("-oracle")]
    validation = [p for p in oracles if "-validation-" in p]
    assert len(oracles) == 2 * len(protocols) + len(validation) and validation
    assert all("/seed0/" in p for p in validation)  # seed 1 reuses seed 0's choice: it never tunes
    assert sum(p.endswith("/original") for p in made) == 2
    assert not [p for p in made if "/tune/" in p or "/front/" in p or "Dispersion" in p.rsplit("/", 1)[-1]]
    prepared = set(made)
    assert study.main(argv) == 0
    again = [a[a.index("--run_dir") + 1] for a in fake.made[len(made):]]
    assert again and not prepared & set(again)


def test_study_runs_fronts_only_in_the_protocols_and_for_the_methods_asked(tmp_path, monkeypatch, capsys):
    """``--front_protocols identity --front_methods Dispersion,Cure``: every method's chosen run everywhere, fronts
    for dispersion in the identity protocol alone, and the plan counts exactly the runs made."""
    fake = StandInCli()
    monkeypatch.setattr(study, "cli", fake)
    argv = ["--budget", "1", "--seeds", "0", "--datasets", "synthetic", "--methods", "Dispersion,RandomLabel,Cure",
            "--epochs", "1", "--front_points", "2", "--front_protocols", "identity", "--front_methods", "Dispersion,Cure",
            "--out", str(tmp_path / "study"), "--results", str(tmp_path / "results.md"), "--verbose"]
    assert study.main(argv) == 0
    runs = [a[a.index("--run_dir") + 1] for a in fake.made]
    fronts = [r.rsplit("/", 1)[-1] for r in runs if "/front/" in r]
    assert fronts and all(name.startswith("identity-Dispersion-") for name in fronts)
    assert any("/sample-Cure-" in r for r in runs) and any("/identity-RandomLabel-" in r for r in runs)
    planned = int(capsys.readouterr().out.split("plan synthetic: at most ", 1)[1].split()[0])
    assert len(fake.made) <= planned <= len(fake.made) + 1  # one less where the chosen lr is on the front


class OracleStuckCli(StandInCli):
    """A stand-in whose oracles named ``stuck…`` never leave their loss plateau (retain mAP 0.02) at the
    initialisation seeds given."""

    def __init__(self, stuck: str, seeds: set[str]) -> None:
        super().__init__()
        self.stuck, self.seeds = stuck, seeds

    def __call__(self, args: list[str]) -> dict:
        metrics = super().__call__(args)
        run_dir = Path(args[args.index("--run_dir") + 1])
        seed = [args[i + 1] for i, a in enumerate(args) if a == "--seed_everything"][-1]
        if run_dir.name.startswith(self.stuck) and "-oracle" in run_dir.name and seed in self.seeds:
            metrics = {**metrics, "retain/mAP": 0.02}
            (run_dir / "metrics.json").write_text(json.dumps({"model": "Retrain", "metrics": metrics}))
        return metrics


def test_study_trains_an_oracle_that_did_not_take_off_again_from_a_new_initialisation(tmp_path, monkeypatch, capsys):
    """An oracle far below θ0 (retain mAP 0.02 against 0.85–0.9) is no oracle: the study trains it again on the same
    data from a new seed and uses that one, in tuning and evaluation alike; the results page names it. If no
    initialisation trains, the study stops with an error naming the run."""
    fake = OracleStuckCli("sample-", {"0"})
    monkeypatch.setattr(study, "cli", fake)
    argv = ["--budget", "2", "--seeds", "0", "--datasets", "synthetic", "--methods", "Cure", "--epochs", "1",
            "--no-fronts", "--protocols", "sample", "--out", str(tmp_path / "study"),
            "--results", str(tmp_path / "results.md")]
    assert study.main(argv) == 0
    base = tmp_path / "study" / "synthetic" / "seed0"
    again = {a[a.index("--run_dir") + 1].rsplit("/", 1)[-1]: a for a in fake.made if "-oracle-init" in " ".join(a)}
    assert set(again) == {"sample-validation-oracle-init1", "sample-oracle-init1"}
    assert all([a[i + 1] for i, x in enumerate(a) if x == "--seed_everything"][-1] == "1000" for a in again.values())
    assert "sample-validation-oracle-init1" in (base / "trainer-tune-sample.yaml").read_text()
    assert "sample-oracle-init1" in (base / "trainer-sample.yaml").read_text()
    assert "did not train" in capsys.readouterr().out
    assert "`synthetic/seed0/sample-oracle-init1` 0." in (tmp_path / "results.md").read_text()

    monkeypatch.setattr(study, "cli", OracleStuckCli("sample-", {"0", "1000", "2000"}))
    argv = [*argv[:-4], "--out", str(tmp_path / "stuck"), "--results", str(tmp_path / "stuck.md")]
    assert study.main(argv) == 2
    assert "sample-validation-oracle-init2: the oracle did not train in 3 initialisations" in capsys.readouterr().err


def test_study_refuses_unknown_methods_and_a_missing_audit(tmp_path, capsys):
    assert study.main(["--methods", "Dispersion,Nope", "--out", str(tmp_path)]) == 2
    assert "--methods names 'Nope', which the study does not run" in capsys.readouterr().err
    assert study.main(["--front_methods", "Dispresion", "--out", str(tmp_path)]) == 2
    assert "--front_methods names 'Dispresion'" in capsys.readouterr().err
    assert study.main(["--audit", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "has no audit.json" in capsys.readouterr().err


@pytest.mark.slow
def test_study_quick_runs_end_to_end(tmp_path):
    """--quick on a tiny set, for a subset of the methods: every protocol (the quality protocol with the built-in
    and the known quality, each with its oracle), the claims and the results page."""
    tiny = ["data.root=" + str(tmp_path / "faces"), "data.num_identities=10", "data.images_per_identity=8",
            "data.image_size=32", "model.image_size=32", "model.embedding_size=32", "data.forget=3",
            "data.heldout_per_identity=2", "data.pk_identities=3", "data.unseen_identities=2",
            "data.eval_batch_size=128", "trainer.limit_train_batches=2"]
    results = tmp_path / "results.md"
    cmd = [sys.executable, str(ROOT / "benchmarks/study.py"), "--quick", "--epochs", "1", "--pretrain_epochs", "1",
           "--methods", "Dispersion,Cure", "--protocols", "identity", "sample", "quality", "quality_known",
           "--out", str(tmp_path / "study"), "--results", str(results)]
    cmd += [x for item in tiny for x in ("--set", item)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("claim ")]
    assert [line.split()[1] for line in lines] == CLAIMS
    assert all(line.split()[2] == "inconclusive" for line in lines)  # one seed decides nothing
    text = results.read_text()
    for protocol in ("identity", "sample", "quality", "quality_known"):
        assert f"synthetic, {protocol} protocol" in text
    assert "**θ0**" in text and "↳ noise at Dispersion's drift" in text and "Chosen settings" in text
    assert (tmp_path / "study" / "synthetic" / "seed0" / "quality_known-oracle" / "metrics.json").is_file()
    # the people kept out of training give the quality claim its verification on unseen people
    assert "quality verify/unseen/acc: θ0" in lines[-1] and "quality_known verify/unseen/acc" in lines[-1]


def _add_seconds(out: str, times: int) -> None:
    recorder = SimpleNamespace(out=Path(out), dataset="synthetic")
    for _ in range(times):
        study.Study.add_run_seconds(recorder, 1.0)


def test_run_seconds_from_processes_side_by_side_all_count(tmp_path):
    """``--prepare`` and the study (or two ``--protocols`` processes) add their runs' wall time to one file at once:
    every addition counts, and none of them reads a half-written file."""
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_seconds, args=(str(tmp_path), 150)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(worker.exitcode == 0 for worker in workers)
    assert json.loads((tmp_path / "synthetic" / "run_seconds.json").read_text()) == 600.0


def test_fronts_figure_has_a_panel_only_for_protocols_with_fronts(tmp_path, monkeypatch):
    """θ0 and the oracle alone make no panel: a study with fronts in one protocol plots one."""
    import unlearnkit.plots

    drawn = {}
    monkeypatch.setattr(unlearnkit.plots, "save_fronts",
                        lambda curves, references, path: drawn.update(curves=curves, references=references) or path)
    point = {"forget/mAP": 0.5, "retain/mAP": 0.9}
    collected = study.Collected(
        values={("synthetic", protocol, label): {0: point} for protocol in ("identity", "sample")
                for label in ("Original", "Retrain")},
        fronts={("synthetic", "identity", "Dispersion"): {"seeds": {0: [point, point]}}})
    study.save_fronts(collected, "synthetic", [0], tmp_path / "fronts.png")
    assert {c["panel"] for c in drawn["curves"]} == {"identity"}
    assert {r["panel"] for r in drawn["references"]} == {"identity"}
    assert sorted(r["label"] for r in drawn["references"]) == ["oracle", "θ0"]

"""Fair tuning (issue 19): the objectives on hand-made metrics, ``tune`` on a known function (finds its optimum,
seeded, resumes without re-running completed trials), ``SearchSpace.suggest`` within its bounds, and
``unlearnkit tune`` end to end on the tiny set."""

from __future__ import annotations

import json
import math
import sys

import optuna
import pytest
import yaml

from unlearnkit.errors import ConfigError
from unlearnkit.methods import method_defaults, unlearning_methods
from unlearnkit.methods.search_space import Knob, LogUniform, Range, SearchSpace
from unlearnkit.tuning import (
    GAP_METRICS,
    INFEASIBLE,
    identity_objective,
    oracle_gap_objective,
    requeue_unfinished,
    resolve_objective,
    trial_arguments,
    tune,
    ues_objective,
)

THETA0 = {"original/retain/mAP": 0.90, "original/verify/heldout/unseen/acc": 0.95}


def identity_run(forget, retain, unseen=None):
    m = {**THETA0, "forget/mAP": forget, "retain/mAP": retain}
    if unseen is not None:
        m["verify/heldout/unseen/acc"] = unseen
    return m


def test_identity_objective_ranks_feasible_by_forget_then_infeasible_by_violation():
    feasible_low = identity_run(0.30, 0.89, 0.95)
    feasible_high = identity_run(0.60, 0.88, 0.945)  # both drops exactly at their bounds: still feasible
    slightly_off = identity_run(0.05, 0.87, 0.95)  # retain 0.01 too low
    far_off = identity_run(0.01, 0.80, 0.90)  # retain 0.08 and verification 0.04 too low
    values = [identity_objective(m) for m in (feasible_low, feasible_high, slightly_off, far_off)]
    assert values[0] == pytest.approx(0.30) and values[1] == pytest.approx(0.60)
    assert values[2] == pytest.approx(INFEASIBLE + 0.01) and values[3] == pytest.approx(INFEASIBLE + 0.12)
    assert values == sorted(values)
    # a verification key that θ0 lacks, or no unseen people at all, adds no bound
    assert identity_objective(identity_run(0.2, 0.9)) == pytest.approx(0.2)
    # a diverged run (NaN) ranks after everything
    assert identity_objective(identity_run(math.nan, 0.9)) == math.inf
    assert identity_objective(identity_run(0.1, math.nan)) == math.inf


def test_oracle_gap_is_two_sided_and_averaged_over_four_metrics():
    oracle = {"oracle/forget/mAP": 0.90, "oracle/retain_heldout/mAP": 0.80, "oracle/memorisation/mAP": 0.0,
              "oracle/mia/forget_auc": 0.50}
    run = {**oracle, "forget/mAP": 0.70, "retain_heldout/mAP": 0.84, "memorisation/mAP": 0.06,
           "mia/forget_auc": 0.42}  # forgets more than the oracle: a gap too
    assert oracle_gap_objective(run) == pytest.approx((0.20 + 0.04 + 0.06 + 0.08) / 4)
    assert oracle_gap_objective({**run, **{k: oracle[f"oracle/{k}"] for k in GAP_METRICS}}) == 0.0
    # runs that record only the gaps
    gaps = {f"oracle_gap/{k}": 0.1 for k in GAP_METRICS} | {k: 0.5 for k in GAP_METRICS}
    assert oracle_gap_objective(gaps) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="'oracle/forget/mAP'.*--oracle"):
        oracle_gap_objective({k: 0.5 for k in GAP_METRICS})
    assert ues_objective({"UES": 0.4}) == -0.4


def test_objective_names_resolve_per_protocol_with_one_line_errors():
    assert resolve_objective("auto", "identity").name == "identity"
    assert resolve_objective("auto", "sample").name == "oracle_gap"
    assert resolve_objective("ues", "quality").name == "ues"
    with pytest.raises(ConfigError, match="objective 'oracle_gap' needs metrics of the sample and quality"):
        resolve_objective("oracle_gap", "identity")
    with pytest.raises(ConfigError, match="unknown objective 'best'"):
        resolve_objective("best", "identity")


def test_suggest_respects_bounds_and_declared_spaces_span_three_decades():
    space = SearchSpace(lr=LogUniform(1e-5, 1e-1), strength=Knob("retain_weight", (0.0, 10.0)),
                        weights=(Range("beta", 0.5, 2.0),), epochs=(5, 3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(50):
        s = space.suggest(study.ask(), {"lr": 1e-3})
        assert 1e-5 <= s["lr"] <= 1e-1 and s["retain_weight"] in (0.0, 10.0) and 0.5 <= s["beta"] <= 2.0
        assert s["epochs"] in (5, 3)
    # the default range: two decades below the default, one above
    assert SearchSpace().lr.bounds(0.01) == pytest.approx((1e-4, 0.1))
    assert LogUniform(decades=1).bounds(0.01) == pytest.approx((1e-3, 0.1))
    for name, cls in unlearning_methods().items():
        defaults = method_defaults(cls)
        low, high = cls.tuning.lr.bounds(defaults["lr"])
        assert math.log10(high / low) >= 3 - 1e-9 and low <= defaults["lr"] <= high, name
        default = cls.tuning.default_setting(defaults)
        assert default["lr"] == defaults["lr"] and default["epochs"] in cls.tuning.epochs, name
    with pytest.raises(ConfigError, match="epochs"):
        SearchSpace(epochs=(0,))
    assert trial_arguments({"lr": 0.01, "epochs": 3}) == ["--model.lr", "0.01", "--trainer.max_epochs", "3",
                                                          "--trainer.check_val_every_n_epoch", "3"]


OPTIMUM = -2.5  # log10 of the fake run's best learning rate
SPACE = SearchSpace(lr=LogUniform(1e-5, 1e-1), strength=Knob("retain_weight", (0.0, 1.0)), epochs=(3,))
DEFAULTS = {"lr": 1e-2, "retain_weight": 0.0}


def quadratic_run(setting):
    """A known quadratic in log10(lr), best at OPTIMUM with retain_weight 1 (UES at most 1)."""
    return {"UES": 1 - (math.log10(setting["lr"]) - OPTIMUM) ** 2 - 0.5 * (setting["retain_weight"] == 0.0)}


def run_tune(tmp_path, run_trial, budget=16, seed=0):
    return tune("Toy", run_trial, "identity", budget=budget, storage=tmp_path / "optuna.db", seed=seed,
                objective="ues", space=SPACE, defaults=DEFAULTS, progress=None)


def test_tune_finds_the_optimum_is_seeded_and_writes_tuning_json(tmp_path):
    result = run_tune(tmp_path / "a", quadratic_run)
    assert len(result.trials) == 16 and result.trials[0].setting == {"lr": 1e-2, "epochs": 3, "retain_weight": 0.0}
    assert abs(math.log10(result.best["lr"]) - OPTIMUM) < 0.25 and result.best["retain_weight"] == 1.0
    assert result.best_value == min(t.value for t in result.trials)
    saved = json.loads((tmp_path / "a" / "tuning.json").read_text())
    assert saved["space"] == {"lr": [1e-5, 1e-1], "epochs": [3], "retain_weight": [0.0, 1.0]}
    assert saved["best"] == result.best and len(saved["trials"]) == 16 and saved["trials"][3]["metrics"]["UES"] < 1
    again = run_tune(tmp_path / "b", quadratic_run)
    assert [t.setting for t in again.trials] == [t.setting for t in result.trials]
    other = run_tune(tmp_path / "c", quadratic_run, budget=4, seed=1)
    assert [t.setting for t in other.trials][1:] != [t.setting for t in result.trials][1:4]


class Stop(Exception):
    pass


def test_tune_resumes_without_rerunning_completed_trials(tmp_path):
    calls = []

    def stops_at_fifth(setting):
        calls.append(setting)
        if len(calls) == 5:
            raise Stop  # the fifth trial stops mid-way (a crash, an interrupt)
        return quadratic_run(setting)

    with pytest.raises(Stop):
        run_tune(tmp_path, stops_at_fifth, budget=8)
    crashed = calls[-1]
    # a killed process leaves its trial RUNNING in the database: it is re-run too
    study = optuna.load_study(study_name="Toy-identity-ues", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    killed = study.ask()
    killed_setting = SPACE.suggest(killed, DEFAULTS)
    # a resumed tuning killed right after queueing them again: they are queued once, not twice
    assert requeue_unfinished(study) == 2
    calls.clear()
    result = run_tune(tmp_path, lambda s: calls.append(s) or quadratic_run(s), budget=8)
    assert len(result.trials) == 8 and len(calls) == 4  # 4 completed before, 4 now
    assert calls[:2] in ([crashed, killed_setting], [killed_setting, crashed]) and calls.count(crashed) == 1
    calls.clear()
    assert len(run_tune(tmp_path, lambda s: calls.append(s) or quadratic_run(s), budget=8).trials) == 8
    assert calls == []  # a finished tuning runs nothing
    wider = SearchSpace(lr=LogUniform(1e-6, 1e-1), strength=SPACE.strength, epochs=SPACE.epochs)
    with pytest.raises(ConfigError, match="searched another space"):
        tune("Toy", quadratic_run, "identity", budget=9, storage=tmp_path / "optuna.db", objective="ues",
             space=wider, defaults=DEFAULTS, progress=None)


def write_configs(tmp_path, faces, mia=False):
    data = {"class_path": "unlearnkit.data.datamodule.FaceDataModule",
            "init_args": {"root": str(faces), "image_size": 32, "protocol": "identity", "forget": 3,
                          "heldout_per_identity": 2, "batch_size": 16, "pk_identities": 3, "pk_images": 4}}
    trainer = {"accelerator": "cpu", "devices": 1, "max_epochs": 5,
               "callbacks": [{"class_path": "unlearnkit.callbacks.evaluation.FaceEvaluation",
                              "init_args": {"mia": mia}}]}
    method = {"class_path": "unlearnkit.methods.dispersion.Dispersion", "init_args": {}}
    for name, value in (("data", data), ("trainer", trainer), ("method", method)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(value))
    config = tmp_path / "unlearn.yaml"
    config.write_text(yaml.safe_dump({"trainer": "trainer.yaml", "data": "data.yaml", "model": "method.yaml"}))
    return config


def test_unlearnkit_tune_end_to_end_and_resumed(tiny_faces, original_ckpt, tmp_path, monkeypatch, capsys):
    from unlearnkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    config = write_configs(tmp_path, tiny_faces)
    out = tmp_path / "tune"
    argv = ["tune", "--config", str(config), "--method", "GradientAscent", "--trials", "2", "--epochs", "1",
            "--out", str(out), "--", "--model.original", str(original_ckpt), "--model.min_steps", "2"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    trials = [line for line in lines if line.startswith("trial ")]
    assert len(trials) == 2 and all("identity" in line and "forget/mAP" in line for line in trials)
    saved = json.loads((out / "tuning.json").read_text())
    assert saved["objective"] == "identity" and len(saved["trials"]) == 2
    assert saved["trials"][0]["setting"]["lr"] == method_defaults(unlearning_methods()["GradientAscent"])["lr"]
    command = lines[lines.index("run it on the evaluation split:") + 1]
    assert command.strip().startswith("unlearnkit fit --config") and "--model GradientAscent" in command
    assert f"--model.lr {saved['best']['lr']}" in command and "forget_seed" not in command
    # each trial ran on the validation forget draw, evaluated once
    run_config = yaml.safe_load(next((out / "trials").glob("*/config.yaml")).read_text())
    assert run_config["data"]["init_args"]["forget_seed"] == 1 and run_config["trainer"]["max_epochs"] == 1
    assert run_config["trainer"]["check_val_every_n_epoch"] == 1
    # resumed with a larger budget: only the new trial runs
    assert main([*argv[:6], "3", *argv[7:]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("resuming") and "2 of 3" in line for line in lines)
    assert len([line for line in lines if line.startswith("trial ")]) == 1
    # the same directory with another θ0 or draw is refused (its trial runs would be taken for this tuning's)
    assert main([*argv[:-2], "--data.forget", "4"]) == 2
    assert "holds a tuning started with other options" in capsys.readouterr().err


def test_unlearnkit_tune_refuses_bad_input_with_one_line(tiny_faces, original_ckpt, tmp_path, monkeypatch, capsys):
    from unlearnkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    config = write_configs(tmp_path, tiny_faces)
    base = ["tune", "--config", str(config), "--out", str(tmp_path / "t")]
    theta0 = ["--", "--model.original", str(original_ckpt)]
    cases = [(["--method", "NoSuchMethod", *theta0], "unknown method 'NoSuchMethod'"),
             (["--method", "Cure", "--trials", "0", *theta0], "--trials 0"),
             (["--method", "Cure", "--objective", "oracle_gap", *theta0], "objective 'oracle_gap' needs metrics"),
             (["--method", "Cure", *theta0, "--data.protocol", "sample"], "give --oracle"),
             (["--method", "Cure", *theta0, "--data.forget_seed", "3"], "use --forget-seed"),
             (["--method", "Cure", "--epochs", "0", *theta0], "epochs"),
             (["--method", "Cure", *theta0, "--model.no_such_option", "1"], "not accepted (see --help) (its output"),
             (["--method", "Cure", "--", "--model.original", str(tmp_path / "none.ckpt")], "not found")]
    cases.append((["--method", "Cure", "--config", str(tmp_path / "none.yaml"), *theta0], "no such file"))
    for args, message in cases:
        assert main([*base, *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0], (args, err)


def test_unlearnkit_tune_sample_protocol_reads_the_oracle_gap(tiny_faces, original_ckpt, tmp_path, monkeypatch,
                                                              capsys):
    """The sample protocol's objective (auto: oracle_gap) finds its metrics in real runs' metrics.json; θ0 stands in
    for the oracle, so θ0's own setting would score 0."""
    from unlearnkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    config = write_configs(tmp_path, tiny_faces, mia=True)
    out = tmp_path / "tune"
    assert main(["tune", "--config", str(config), "--method", "Cure", "--trials", "1", "--epochs", "1",
                 "--oracle", str(original_ckpt), "--out", str(out), "--", "--model.original", str(original_ckpt),
                 "--model.min_steps", "2", "--data.protocol", "sample", "--data.forget", "0.2"]) == 0
    saved = json.loads((out / "tuning.json").read_text())
    metrics = saved["trials"][0]["metrics"]
    assert saved["objective"] == "oracle_gap" and saved["best_value"] == pytest.approx(oracle_gap_objective(metrics))
    assert all(f"oracle/{k}" in metrics for k in GAP_METRICS) and 0 < saved["best_value"] < 1
    assert "oracle_gap" in capsys.readouterr().out

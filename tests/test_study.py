"""The study's --quick mode runs end to end on a tiny set and prints one line per claim; the study's and the
demo's plans come from the methods' declarations and reproduce the tables they kept before issue 14."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import study  # noqa: E402

from unlearnkit.errors import ConfigError  # noqa: E402
from unlearnkit.methods import method_defaults, unlearning_methods  # noqa: E402
from unlearnkit.methods.search_space import Knob, LogUniform, SearchSpace  # noqa: E402

# benchmarks/study.py and unlearnkit/demo.py before issue 14, by hand; now each method declares its part
OLD_IDENTITY_METHODS = ["Finetune", "GradientAscent", "RandomLabel", "BoundaryShrink", "BoundaryExpand", "Scrub",
                        "BadTeacher", "Dispersion", "HardDispersion"]
OLD_LABEL_FREE = ["Cure", "GradientAscent", "RandomLabel", "Scrub", "BadTeacher"]
OLD_MAIN_WEIGHT = {"GradientAscent": ("retain_weight", [0.0, 1.0]), "RandomLabel": ("retain_weight", [0.0, 1.0]),
                   "Dispersion": ("retain_weight", [0.0, 1.0]), "HardDispersion": ("retain_weight", [0.0, 1.0]),
                   "Scrub": ("forget_weight", [1.0, 2.0]), "BadTeacher": ("temperature", [1.0, 4.0]),
                   "Cure": ("lambda_cos", [1.0, 2.0]), "BoundaryShrink": ("epsilon", [0.1, 0.2]),
                   "Finetune": ("weight_decay", [0.0005, 0.0]), "BoundaryExpand": ("weight_decay", [0.0, 0.0005])}
OLD_DEMO_OPTIONS = {"BoundaryShrink": ["--model.lr", "1e-4"], "BoundaryExpand": ["--model.lr", "1e-4"]}


def test_study_plan_is_the_declared_one_and_keeps_the_old_tables():
    methods, plan = study.study_methods(), study.study_plan(4)
    assert sorted(methods["identity"]) == sorted(OLD_IDENTITY_METHODS) and not any(methods["identity"].values())
    # the old rule: every label-free run but CURE's on pseudo-labels
    assert methods["sample"] == {name: name != "Cure" for name in methods["sample"]}
    assert sorted(methods["sample"]) == sorted(OLD_LABEL_FREE) and methods["quality"] == {"Cure": False}
    for protocol, settings in plan.items():
        assert list(settings) == list(methods[protocol])
        for method, grid in settings.items():
            lr, (name, values) = method_defaults(unlearning_methods()[method])["lr"], OLD_MAIN_WEIGHT[method]
            assert grid == [{"lr": lr, name: values[0]}, {"lr": lr * 10, name: values[0]},
                            {"lr": lr / 10, name: values[0]}, {"lr": lr, name: values[1]}], (protocol, method)
    assert all(len(grid) == 1 for grid in study.study_plan(1)["identity"].values())


def test_demo_plan_is_the_declared_one_and_keeps_the_old_runs():
    from unlearnkit.demo import demo_plan

    plan = demo_plan()
    assert [name for name, _ in plan["identity"]] == list(unlearning_methods())
    for name, args in plan["identity"]:
        expected = OLD_DEMO_OPTIONS.get(name, [])
        assert args[::2] == expected[::2] and [float(v) for v in args[1::2]] == [float(v) for v in expected[1::2]]
    assert sorted(name for name, _ in plan["sample"]) == sorted(OLD_LABEL_FREE)
    assert all(args == ([] if name == "Cure" else ["--model.labels", "pseudo"]) for name, args in plan["sample"])
    assert demo_plan("Dispersion") == {"identity": [("Dispersion", [])]}
    with pytest.raises(ConfigError, match="unknown method 'dispersion' in --methods"):
        demo_plan("dispersion")  # one public name: the class name


def test_search_space_goes_on_with_learning_rates_in_between_and_checks_its_knobs():
    space = SearchSpace(lr=LogUniform(decades=2), strength=None, weights=(Knob("alpha", (1.0, 2.0)),))
    grid = space.settings({"lr": 0.01, "alpha": 1.0}, 6)
    assert [g["lr"] for g in grid] == pytest.approx([0.01, 1.0, 1e-4, 0.01, 1e-3, 0.1])
    assert [g["alpha"] for g in grid] == [1.0, 1.0, 1.0, 2.0, 1.0, 1.0]
    assert len(SearchSpace(lr=LogUniform(1e-3, 1e-3), strength=None).settings({"lr": 1e-3}, 4)) == 1
    # a range starting at the default: the default, the top, then the midpoint
    lrs = [g["lr"] for g in SearchSpace(lr=LogUniform(1e-3, 1e-1), strength=None).settings({"lr": 1e-3}, 3)]
    assert lrs == pytest.approx([1e-3, 1e-1, 1e-2])
    assert all(math.isfinite(g["lr"]) for g in SearchSpace().settings({"lr": 1.0}, 20))
    with pytest.raises(ConfigError, match="Toy.tuning names 'alpha', which Toy does not take"):
        space.check("Toy", {"lr": 0.01, "beta": 1.0})
CLAIMS = ["dispersion_lowest_forget", "r1_outlives_map", "cure_best_label_free_ues", "cure_lowest_membership",
          "quality_forgetting_helps"]


@pytest.mark.slow
def test_study_quick_writes_claims_and_results(tmp_path):
    tiny = ["data.root=" + str(tmp_path / "faces"), "data.num_identities=10", "data.images_per_identity=8",
            "data.image_size=32", "model.image_size=32", "model.embedding_size=32", "data.forget=3", "data.heldout_per_identity=2", "data.pk_identities=3",
            "data.eval_batch_size=128", "trainer.limit_train_batches=2"]
    results = tmp_path / "results.md"
    cmd = [sys.executable, str(ROOT / "benchmarks/study.py"), "--quick", "--budget", "2", "--epochs", "1",
           "--pretrain_epochs", "1", "--out", str(tmp_path / "study"), "--results", str(results)]
    cmd += [x for item in tiny for x in ("--set", item)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("claim ")]
    assert [line.split()[1] for line in lines] == CLAIMS
    assert all(line.split()[2] in ("holds", "fails") for line in lines)
    text = results.read_text()
    assert "## Claims" in text and "identity protocol" in text and "Chosen settings" in text
    assert (tmp_path / "results" / "synthetic.png").stat().st_size > 0

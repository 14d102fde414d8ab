"""A run that did nothing or destroyed the model is flagged: ``status`` in metrics.json, a warning line at the end
of the run, a marker in the report; and a small forget set still gets the method's ``min_steps`` optimiser steps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from unlearnkit.cli.main import main
from unlearnkit.status import run_status

pytestmark = pytest.mark.filterwarnings("ignore")
EVALUATION = json.dumps([{"class_path": "unlearnkit.callbacks.evaluation.FaceEvaluation",
                          "init_args": {"plots": False, "per_identity": False, "mia": False}}])


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog"])


def unlearn(faces, original, run_dir, *extra, method="GradientAscent") -> list[str]:
    """A tiny unlearning run of one epoch from θ0 on 3 forgotten identities (18 training images)."""
    return ["fit", "--model", method, "--model.original", str(original), "--data", "FaceDataModule",
            "--data.root", str(faces), "--data.image_size", "32", "--data.forget", "3", "--data.batch_size", "16",
            "--data.eval_batch_size", "64", "--data.pk_identities", "3", "--data.pk_images", "4",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_epochs", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--wandb", "false", "--run_dir", str(run_dir), *extra]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("method", ["GradientAscent", "Dispersion"])  # shuffled batches, P×K batches
def test_small_forget_set_gets_min_steps(method, tiny_faces, original_ckpt, tmp_path, capsys):
    """18 forget images are 2 batches: one epoch takes the default min_steps (15) steps, 2 with min_steps 0."""
    for min_steps, steps in (("15", 15), ("0", 2)):
        run_dir = tmp_path / f"run{min_steps}"
        args = unlearn(tiny_faces, original_ckpt, run_dir, "--trainer.limit_val_batches", "0",
                       *(["--model.min_steps", min_steps] if min_steps != "15" else []), method=method)
        assert main(args) == 0, capsys.readouterr().err
        assert summary(run_dir)["metrics"]["cost/optimizer_steps"] == steps


def test_run_that_left_theta0_unchanged_is_flagged(tiny_faces, original_ckpt, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(unlearn(tiny_faces, original_ckpt, run_dir, "--model.lr", "1e-12",
                        "--trainer.callbacks", EVALUATION)) == 0
    status = summary(run_dir)["status"]
    assert status["verdict"] == "unchanged" and status["rule"].startswith("forget mAP ")
    last = [line for line in capsys.readouterr().err.splitlines() if line.strip()][-1]
    assert last.startswith(f"warning: {run_dir} left θ0 unchanged (forget mAP ") and "raise model.lr" in last


METRICS = {"forget/CS": 0.77, "original/forget/mAP": 0.96, "original/forget/CS": 0.77, "original/retain/mAP": 0.93}


def test_status_rules():
    collapsed = run_status({**METRICS, "forget/mAP": 0.05, "retain/mAP": 0.31, "retain/CS": 0.999})
    assert collapsed["verdict"] == "collapsed" and "retain CS 0.999 ≥ 0.99" in collapsed["rule"]
    assert "lower model.lr" in collapsed["advice"]
    # a sharper model (retain CS 0.999 with retain mAP kept) and a method that trades retain for forgetting are ok
    assert run_status({**METRICS, "forget/mAP": 0.3, "retain/mAP": 0.95, "retain/CS": 0.999})["verdict"] == "ok"
    assert run_status({**METRICS, "forget/mAP": 0.25, "retain/mAP": 0.34, "retain/CS": 0.6})["verdict"] == "ok"
    unchanged = run_status({**METRICS, "forget/mAP": 0.955, "forget/CS": 0.775, "retain/mAP": 0.93, "retain/CS": 0.8})
    assert unchanged["verdict"] == "unchanged"
    assert run_status({**METRICS, "forget/mAP": 0.955, "forget/CS": 0.70})["verdict"] == "ok"  # CS moved
    assert run_status({"forget/mAP": 0.5, "retain/mAP": 0.9}) is None  # pretraining: no θ0 to compare with


def test_report_marks_flagged_runs(tmp_path, capsys):
    """Through ``unlearnkit report``: a collapsed run (an older metrics.json without status) and an unchanged one
    are marked in the table and listed with what to change; an ok run is not."""
    runs = {"collapsed": {**METRICS, "forget/mAP": 0.05, "retain/mAP": 0.31, "retain/CS": 0.999},
            "unchanged": {**METRICS, "forget/mAP": 0.96, "retain/mAP": 0.93, "retain/CS": 0.8},
            "fine": {**METRICS, "forget/mAP": 0.3, "retain/mAP": 0.8, "retain/CS": 0.8}}
    for name, metrics in runs.items():
        (tmp_path / name).mkdir()
        summary_ = {"stage": "fit", "model": "GradientAscent", "metrics": metrics}
        if name != "collapsed":
            summary_["status"] = run_status(metrics)
        (tmp_path / name / "metrics.json").write_text(json.dumps(summary_))
    assert main(["report", *(str(tmp_path / name) for name in runs), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| collapsed ⚠ collapsed | GradientAscent |" in report
    assert "| unchanged ⚠ unchanged | GradientAscent |" in report and "| fine | GradientAscent |" in report
    assert "- collapsed (GradientAscent): **collapsed**, retain CS 0.999 ≥ 0.99 and retain mAP 0.310 < 0.5" in report
    assert "- unchanged (GradientAscent): **unchanged**, forget mAP 0.960" in report and "Raise model.lr" in report
    assert "fine (" not in report
    out = capsys.readouterr().out
    assert "2 run(s) flagged" in out

"""The comparison report: produced from two tiny real runs (a retrain oracle and an unlearning run), through the
API and the ``unlearnkit report`` command; costs are relative to the Retrain run of the same protocol."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
from conftest import ARCH, quiet_trainer, tiny_datamodule

from unlearnkit.callbacks.evaluation import FaceEvaluation
from unlearnkit.callbacks.run_files import RunSummary
from unlearnkit.report import write_report


def _read_csv(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def two_runs(tiny_faces, original_ckpt, tmp_path_factory) -> tuple[Path, Path]:
    """A retrain run and a gradient-ascent run evaluated against it (one short epoch each)."""
    from unlearnkit.methods.base import Retrain
    from unlearnkit.methods.gradient_ascent import GradientAscent

    root = tmp_path_factory.mktemp("runs")
    retrain_dir, ga_dir = root / "retrain", root / "gradient_ascent"
    L.seed_everything(1)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, default_root_dir=str(retrain_dir),
                            callbacks=[FaceEvaluation(plots=False, per_identity=False), RunSummary()])
    trainer.fit(Retrain(**ARCH, lr=0.05), datamodule=tiny_datamodule(tiny_faces))
    trainer.save_checkpoint(retrain_dir / "last.ckpt")
    L.seed_everything(0)
    evaluation = FaceEvaluation(plots=False, per_identity=False, oracle=str(retrain_dir / "last.ckpt"))
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, default_root_dir=str(ga_dir),
                            callbacks=[evaluation, RunSummary()])
    trainer.fit(GradientAscent(original=str(original_ckpt), lr=0.02), datamodule=tiny_datamodule(tiny_faces))
    return retrain_dir, ga_dir


def test_report_from_two_tiny_runs(two_runs, tmp_path):
    retrain_dir, ga_dir = two_runs
    path = write_report([ga_dir, retrain_dir], tmp_path / "report")
    assert path == tmp_path / "report" / "report.md"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.csv", "report.md", "tradeoff.png"]
    assert (path.parent / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"

    rows = {r["run"]: r for r in _read_csv(path.parent / "report.csv")}
    noise_row = "↳ noise at gradient_ascent's drift"
    assert set(rows) == {"original θ0", "gradient_ascent", noise_row, "retrain"}
    assert rows["retrain"]["model"] == "Retrain" and rows["retrain"]["kind"] == "oracle"
    ga = json.loads((ga_dir / "metrics.json").read_text())["metrics"]
    retrain = json.loads((retrain_dir / "metrics.json").read_text())["metrics"]
    for key in ("forget/mAP", "retain/R@1", "UES", "mia/membership_recall", "oracle_gap/forget/mAP"):
        assert float(rows["gradient_ascent"][key]) == pytest.approx(ga[key])
    assert float(rows["original θ0"]["forget/mAP"]) == pytest.approx(ga["original/forget/mAP"])
    assert rows[noise_row]["kind"] == "noise"
    for key in ("forget/mAP", "UES", "drift"):
        assert float(rows[noise_row][key]) == pytest.approx(ga[f"noise/{key}"])
    assert float(rows["retrain"]["cost_vs_retrain/wall_seconds"]) == pytest.approx(1.0)
    assert float(rows["gradient_ascent"]["cost_vs_retrain/wall_seconds"]) == pytest.approx(
        ga["cost/wall_seconds"] / retrain["cost/wall_seconds"])
    images = (ga["cost/forward_images"] + ga["cost/teacher_forward_images"]) / (
        retrain["cost/forward_images"] + retrain["cost/teacher_forward_images"])
    assert float(rows["gradient_ascent"]["cost_vs_retrain/images"]) == pytest.approx(images)

    text = path.read_text()
    assert "## Protocol: identity" in text and "UES: P = mAP, F measured against the original" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| run | model | ★ forget mAP ↓ | ★ forget R@1 ↓ | ★ forget CS ↓ | ★ retain mAP ↑ |")
    assert any(line.startswith(f"| {noise_row} | – |") for line in table)
    # (the one-step run may be marked ⚠ unchanged after its name)
    assert any(line.startswith("| gradient_ascent") and "| GradientAscent |" in line for line in table)
    assert any(line.startswith("| **retrain** | Retrain |") for line in table)


def test_report_command(two_runs, tmp_path, capsys):
    from unlearnkit.cli.main import main

    out = tmp_path / "cli"
    assert main(["report", *map(str, two_runs), "--out", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def _fake_run(root: Path, name: str, model: str, protocol: str, metrics: dict) -> Path:
    run = root / name
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"model": model, "metrics": metrics}))
    (run / "evaluation.json").write_text(json.dumps({"settings": {"protocol": protocol}, "metrics": metrics}))
    return run


def test_costs_are_relative_to_the_retrain_run_of_the_same_protocol(tmp_path):
    runs = [
        _fake_run(tmp_path, "id-retrain", "Retrain", "identity", {"cost/wall_seconds": 100.0}),
        _fake_run(tmp_path, "s-retrain", "Retrain", "sample", {"cost/wall_seconds": 50.0}),
        _fake_run(tmp_path, "id-ft", "Finetune", "identity", {"cost/wall_seconds": 10.0, "forget/mAP": 0.1,
                                                               "retain/mAP": 0.9}),
        _fake_run(tmp_path, "s-cure", "Cure", "sample", {"cost/wall_seconds": 10.0, "forget/mAP": 0.2,
                                                          "retain/mAP": 0.8, "oracle/forget/mAP": 0.3,
                                                          "oracle/retain/mAP": 0.7}),
    ]
    rows = {r["run"]: r for r in _read_csv(write_report(runs, tmp_path / "out").parent / "report.csv")}
    assert float(rows["id-ft"]["cost_vs_retrain/wall_seconds"]) == pytest.approx(0.1)
    assert float(rows["s-cure"]["cost_vs_retrain/wall_seconds"]) == pytest.approx(0.2)
    assert "oracle θ*" not in rows  # a Retrain run of the protocol is the oracle row itself

    alone = [_fake_run(tmp_path, "cure-alone", "Cure", "sample", {"forget/mAP": 0.2, "oracle/forget/mAP": 0.3})]
    rows = _read_csv(write_report(alone, tmp_path / "out2").parent / "report.csv")
    assert [r["run"] for r in rows] == ["oracle θ*", "cure-alone"]
    assert not any(k.startswith("cost_vs_retrain") for k in rows[1])  # no retrain run: no ratio

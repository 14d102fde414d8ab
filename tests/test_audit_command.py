"""``unlearnkit audit`` end to end in its quick form: 3 oracles and 3 runs of two methods on the tiny set,
resumable, with the scores recomputable from the saved matrices."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml
from conftest import ARCH

from unlearnkit.metrics import audit as A


def write_configs(tmp_path, faces):
    data = {"class_path": "unlearnkit.data.datamodule.FaceDataModule",
            "init_args": {"root": str(faces), "image_size": 32, "protocol": "sample", "forget": 0.2,
                          "heldout_per_identity": 2, "batch_size": 16, "pk_identities": 3, "pk_images": 4}}
    trainer = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "enable_model_summary": False,
               "callbacks": [{"class_path": "unlearnkit.callbacks.evaluation.FaceEvaluation",
                              "init_args": {"mia": False}}]}
    oracle = {"class_path": "unlearnkit.methods.base.Retrain", "init_args": {**ARCH, "lr": 0.05}}
    method = {"class_path": "unlearnkit.methods.cure.Cure", "init_args": {"lr": 1e-3}}
    for name, value in (("data", data), ("trainer", trainer), ("oracle", oracle), ("method", method)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(value))
    (tmp_path / "unlearn.yaml").write_text(yaml.safe_dump({"trainer": "trainer.yaml", "data": "data.yaml",
                                                           "model": "method.yaml"}))
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump({"trainer": "trainer.yaml", "data": "data.yaml",
                                                           "model": "oracle.yaml"}))


def test_audit_quick_end_to_end_and_resumable(tiny_faces, original_ckpt, tmp_path, monkeypatch, capsys):
    from unlearnkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    write_configs(tmp_path, tiny_faces)
    out, cache = tmp_path / "audit", tmp_path / "oracles"
    argv = ["audit", "--config", str(tmp_path / "unlearn.yaml"), "--oracle-config", str(tmp_path / "retrain.yaml"),
            "--methods", "Cure", "GradientAscent", "--models", "3", "--out", str(out), "--cache", str(cache),
            "--", "--model.original", str(original_ckpt)]
    assert main(argv) == 0
    result = json.loads((out / "audit.json").read_text())
    assert set(result["methods"]) == {"Cure", "GradientAscent"} and result["models"] == 3
    for name, m in result["methods"].items():
        # anyone can recompute the score from the saved matrices
        u, r = np.load(out / "stats" / f"{name}_forget.npy"), np.load(out / "stats" / "retrained_forget.npy")
        assert u.shape == r.shape == (3, result["forget_examples"])
        assert m["forget_score"] == pytest.approx(A.forget_score(u, r), abs=1e-12)
        assert 0 <= m["ulira_forget"]["auc"] <= 1 and len(m["epsilons"]) == u.shape[1]
    for name in ("audit.md", "epsilons.png", "roc.png"):
        assert (out / name).is_file()
    capsys.readouterr()
    # a second call trains nothing: every run is found finished (oracles from the cache)
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 9 and all("cached" in line for line in lines)


def test_audit_refuses_bad_input_with_one_line(tmp_path, capsys, monkeypatch):
    from unlearnkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    write_configs(tmp_path, tmp_path / "faces")
    base = ["audit", "--config", str(tmp_path / "unlearn.yaml"), "--oracle-config", str(tmp_path / "retrain.yaml"),
            "--out", str(tmp_path / "a")]
    assert main([*base, "--methods", "NoSuchMethod", "--", "--model.original", "x.ckpt"]) == 2
    assert "unknown method 'NoSuchMethod'" in capsys.readouterr().err
    assert main([*base, "--methods", "Cure", "--", "--model.original", str(tmp_path / "missing.ckpt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([*base, "--methods", "Cure", "--models", "2"]) == 2
    assert "at least 3" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["pretrain", "retrain", "unlearn"])
def test_builtin_audit_set_configs_parse(name, monkeypatch, capsys):
    from pathlib import Path

    from unlearnkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    config = Path(__file__).resolve().parents[1] / "configs" / "audit" / f"{name}.yaml"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), "--print_config"])
    assert stop.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["num_identities"] == 40 and printed["data"]["init_args"]["image_size"] == 32

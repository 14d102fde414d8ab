"""``unlearnkit audit`` end to end in its quick form: 4 oracles and 4 runs of two methods on the tiny set,
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
            "--methods", "Cure", "GradientAscent", "--models", "4", "--out", str(out), "--cache", str(cache),
            "--", "--model.original", str(original_ckpt)]
    assert main(argv) == 0
    result = json.loads((out / "audit.json").read_text())
    assert set(result["methods"]) == {"Cure", "GradientAscent"} and result["models"] == 4
    for name, m in result["methods"].items():
        # anyone can recompute the score from the saved matrices
        u, r = np.load(out / "stats" / f"{name}_forget.npy"), np.load(out / "stats" / "retrained_forget.npy")
        assert u.shape == r.shape == (4, result["forget_examples"])
        assert m["forget_score"] == pytest.approx(A.forget_score(u, r), abs=1e-12)
        assert 0 <= m["ulira_forget"]["auc"] <= 1 and len(m["epsilons"]) == u.shape[1]
        # its noise control: θ0's embeddings plus noise of its drift, scored the same way, matrices saved
        noise = result["noise"][name]
        n = np.load(out / "stats" / f"noise_{name}_forget.npy")
        assert n.shape == u.shape and noise["forget_score"] == pytest.approx(A.forget_score(n, r), abs=1e-12)
        assert m["drift"] > 0 and 0 <= m["one_model"]["auc"] <= 1
        assert m["agreement"].startswith("no population-attack forget AUC")  # these runs ran no attack (mia: false)
    # θ0: a point mass (F = 0 by the challenge's rule) told apart by the one-model test
    theta0 = result["theta0"]
    assert theta0["forget_score"] == 0.0 and 0 <= theta0["one_model"]["auc"] <= 1 and theta0["RA"] > 0
    text = (out / "audit.md").read_text()
    assert "**θ0** (original)" in text and text.count("↳ noise at its drift") == 2
    assert "## Where the audit and the population attack disagree" in text and "## Relearn time" not in text
    for name in ("audit.md", "epsilons.png", "roc.png"):
        assert (out / name).is_file()
    capsys.readouterr()
    # a second call trains nothing: every run is found finished (oracles from the cache); with --relearn it adds
    # the relearn time of seed 0's models: θ0 needs no step, each relearned model is in the table
    split = argv.index("--")
    assert main([*argv[:split], "--relearn", "1", "--relearn-steps", "10", *argv[split:]]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 4 * 3 and all("cached" in line for line in lines)  # 4 seeds: an oracle and 2 methods
    relearned = json.loads((out / "audit.json").read_text())["relearn"]
    assert relearned["theta0"]["steps"] == 0 and relearned["seeds"] == 1
    assert set(relearned["methods"]) == {"Cure", "GradientAscent"}
    assert relearned["recipe"]["fraction"] == 1.0 and relearned["recipe"]["max_steps"] == 10
    # the index is a ratio of relearn times: none where the oracles hit the step cap (a lower bound, not a time)
    assert all((m["anamnesis_index"] is not None) == relearned["retrained"]["reached"]
               for m in relearned["methods"].values())
    assert "## Relearn time" in (out / "audit.md").read_text()
    # each relearned run keeps its result, so a later audit relearns nothing again (oracles in the shared cache)
    assert (out / "runs" / "Cure" / "seed-0" / "relearn.json").is_file()
    assert len(list(cache.glob("oracle-*/seed-0/relearn.json"))) == 1
    # unlearnkit report shows the audit beside the runs: found above a run it trained, or given with --audit
    from unlearnkit.metrics.audit import fmt

    result = json.loads((out / "audit.json").read_text())
    assert main(["report", str(out / "runs" / "Cure" / "seed-0"), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "## Privacy audit (sample protocol)" in report and "resolvable ε 0–2" in report
    cure = next(line for line in report.splitlines() if line.startswith("| Cure |"))
    assert fmt(result["methods"]["Cure"]["forget_score"]) in cure and fmt(result["methods"]["Cure"]["ulira_retain"]["auc"]) in cure
    oracle_run = next(cache.glob("oracle-*/seed-0"))
    assert main(["report", str(oracle_run), "--out", str(tmp_path / "rep2")]) == 0
    assert "Privacy audit" not in (tmp_path / "rep2" / "report.md").read_text()  # no audit above an oracle
    assert main(["report", str(oracle_run), "--audit", str(out), "--out", str(tmp_path / "rep3")]) == 0
    assert "| **θ0** (original) |" in (tmp_path / "rep3" / "report.md").read_text()
    assert main(["report", str(oracle_run), "--audit", str(tmp_path), "--out", str(tmp_path / "rep4")]) == 2
    assert "audit.json not found" in capsys.readouterr().err


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


def test_audit_methods_all_on_both_protocols_plans_every_run(tmp_path, original_ckpt, monkeypatch):
    """``--methods all --protocols identity sample``: one audit per protocol under --out/<protocol>, with every
    method the protocol compares (label-free variants in the sample protocol) and an oracle per protocol."""
    import unlearnkit.audit as audit
    from unlearnkit.methods import label_free_comparison, unlearning_methods

    write_configs(tmp_path, tmp_path / "faces")
    ran = []
    monkeypatch.setattr(audit, "cli", lambda argv: ran.append(argv))
    out = tmp_path / "audit"
    assert audit.main(["--config", str(tmp_path / "unlearn.yaml"), "--oracle-config", str(tmp_path / "retrain.yaml"),
                       "--methods", "all", "--protocols", "identity", "sample", "--models", "3", "--seed", "1",
                       "--out", str(out), "--cache", str(tmp_path / "oracles"), "--",
                       "--model.original", str(original_ckpt)]) == 0
    by_protocol = {}
    for argv in ran:
        protocol = argv[len(argv) - 1 - argv[::-1].index("--data.protocol") + 1]
        run_dir = argv[argv.index("--run_dir") + 1]
        assert argv[argv.index("--seed_everything") + 1] == "1" and run_dir.endswith("seed-1")
        model = argv[argv.index("--model") + 1] if "--model" in argv else "oracle"
        by_protocol.setdefault(protocol, {})[model] = ("--model.labels" in argv, run_dir)
    assert list(by_protocol["identity"]) == ["oracle", *unlearning_methods()]
    assert not any(pseudo for pseudo, _ in by_protocol["identity"].values())
    assert {m: p for m, (p, _) in by_protocol["sample"].items() if m != "oracle"} == label_free_comparison()
    assert all(str(out / protocol / "runs") in d for protocol, runs in by_protocol.items()
               for m, (_, d) in runs.items() if m != "oracle")
    assert by_protocol["identity"]["oracle"][1] != by_protocol["sample"]["oracle"][1]  # D_r differs: own oracles
    with pytest.raises(Exception, match="protocol is given twice"):
        audit.main(["--config", "c", "--oracle-config", "r", "--methods", "all", "--protocols", "sample", "--",
                    "--data.protocol", "sample"])


def test_audit_unlearning_epochs_leave_the_oracles_recipe_alone(tmp_path, original_ckpt, monkeypatch):
    """``-- --trainer.max_epochs 2`` sets the unlearning runs' epochs; the oracles keep their retrain recipe's
    (the trainer config's 1 here; ``--oracle-epochs`` sets them), so the cached oracles are still retrains."""
    import unlearnkit.audit as audit

    write_configs(tmp_path, tmp_path / "faces")
    ran = []
    monkeypatch.setattr(audit, "cli", lambda argv: ran.append(argv))
    args = ["--config", str(tmp_path / "unlearn.yaml"), "--oracle-config", str(tmp_path / "retrain.yaml"),
            "--methods", "Cure", "--models", "3", "--seed", "0", "--out", str(tmp_path / "audit"), "--cache",
            str(tmp_path / "oracles")]
    assert audit.main([*args, "--", "--model.original", str(original_ckpt), "--trainer.max_epochs", "2"]) == 0
    oracle, method = ran

    def epochs(argv):
        trainer = yaml.safe_load(open(argv[argv.index("--trainer") + 1]))["max_epochs"]
        return int(argv[len(argv) - 1 - argv[::-1].index("--trainer.max_epochs") + 1]) \
            if "--trainer.max_epochs" in argv else trainer

    assert epochs(method) == 2 and epochs(oracle) == 1
    ran.clear()
    assert audit.main([*args, "--oracle-epochs", "3", "--", "--model.original", str(original_ckpt)]) == 0
    assert epochs(ran[0]) == 3

"""A method is one file (issue 14's acceptance): a new file in ``unlearnkit/methods/`` holding a subclass and its
loss, and nothing else, makes the method appear in ``unlearnkit fit --model <Name>`` (its config and a tiny fit),
the demo's plan, the study's plan (tuned on the space it declares), the step-overhead benchmark's methods and the
registry the parametrised tests iterate. The file goes into a copy of the package, used by subprocesses only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

NEW_METHOD = '''"""Push apart: move each forget embedding away from θ0's own (a method written by the one-file test)."""

from __future__ import annotations

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.search_space import Knob, LogUniform, SearchSpace


class PushApart(UnlearningMethod):
    """push · mean cos(f_θ(x_f), f_θ0(x_f)) on forget batches, plus the optional retain term."""

    needs_teacher = True
    tuning = SearchSpace(lr=LogUniform(1e-4, 1e-2), strength=Knob("push", (1.0, 3.0)),
                         weights=(Knob("retain_weight", (0.0, 0.5)),))
    label_free_baseline = True
    demo_overrides = {"push": 2.0}

    def __init__(self, push: float = 1.0, lr: float = 1e-3, **kwargs) -> None:
        super().__init__(lr=lr, **kwargs)

    def unlearning_loss(self, batch):
        images = batch["forget"]["image"]
        cos = (self.embed(images) * self.teacher_embed(images)).sum(1)
        return self.hparams.push * cos.mean() + self.retain_term(batch)
'''

# what the copy's tools say about the new method; printed as one JSON line
PROBE = '''
import contextlib, io, json, sys
import yaml
import unlearnkit
from unlearnkit.cli.main import main
from unlearnkit.demo import demo_plan
from unlearnkit.methods import load_all
import step_overhead, study

experiment, faces, original, run_dir = sys.argv[1:5]
sys.argv = ["unlearnkit"]
printed = io.StringIO()
with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
    main(["fit", "--config", experiment, "--model", "PushApart", "--print_config"])
fit = main(["fit", "--model", "PushApart", "--model.original", original, "--data", "FaceDataModule",
            "--data.root", faces, "--data.image_size", "32", "--data.batch_size", "16", "--data.forget", "3",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "2",
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--wandb", "false", "--run_dir", run_dir])
registry = load_all()
print(json.dumps({"package": unlearnkit.__file__, "registry": list(registry),
                  "alias": registry["push_apart"].__name__, "model": yaml.safe_load(printed.getvalue())["model"],
                  "fit": fit, "demo": demo_plan(), "study_methods": study.study_methods(),
                  "study_plan": study.study_plan(epochs=5), "step_plan": step_overhead.step_plan(64)}))
'''


def test_a_new_method_file_reaches_every_tool(tiny_faces, original_ckpt, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "unlearnkit", copy / "unlearnkit", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "unlearnkit" / "methods" / "push_apart.py").write_text(NEW_METHOD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(ROOT / "benchmarks")]),
           "WANDB_MODE": "disabled"}
    run_dir = tmp_path / "run"
    probe = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "configs/experiment/unlearn_synthetic.yaml"),
                            str(tiny_faces), str(original_ckpt), str(run_dir)],
                           cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["package"].startswith(str(copy))  # the copy, not the repository's package

    # the registry, by class name, the old-style snake_case key an alias
    assert "PushApart" in seen["registry"] and seen["alias"] == "PushApart"
    # unlearnkit fit --model PushApart: its own class and defaults (not dispersion's lr from the YAML); a tiny fit
    assert seen["model"]["class_path"] == "unlearnkit.methods.push_apart.PushApart"
    assert (seen["model"]["init_args"]["push"], seen["model"]["init_args"]["lr"]) == (1.0, 1e-3)
    assert seen["fit"] == 0 and "push_apart.PushApart" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # the demo: every protocol it declares itself for, with its demo overrides
    assert ["PushApart", ["--model.push", "2.0"]] in seen["demo"]["identity"]
    assert ["PushApart", ["--model.labels", "pseudo", "--model.push", "2.0"]] in seen["demo"]["sample"]
    # the study: identity and (as a label-free baseline, on pseudo-labels) sample, tuned on its declared space
    assert seen["study_methods"]["identity"]["PushApart"] is False
    assert seen["study_methods"]["sample"]["PushApart"] is True and "PushApart" not in seen["study_methods"]["quality"]
    assert seen["study_plan"]["identity"]["PushApart"] == {  # tuned from its defaults, its front along its lr range
        "pseudo": False, "first": {"lr": 1e-3, "epochs": 5, "push": 1.0, "retain_weight": 0.0},
        "front": ["lr", [1e-4, 4.642e-4, 1e-3, 2.154e-3, 1e-2]]}
    # the step-overhead benchmark: timed with the whole batch on its one part, on the identity protocol
    assert seen["step_plan"]["PushApart"] == [64, "identity"]

    # the parametrised tests pick it up (collected against the copy: the working directory comes first on the path)
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                str(ROOT / "tests" / "test_methods.py")], cwd=copy, env=env, capture_output=True,
                               text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    for test in ("test_method_runs_moves_student_keeps_teacher", "test_label_free_variant_runs_on_sample_protocol",
                 "test_label_free_variant_never_reads_identity_labels", "test_model_swap_takes_the_methods_own_defaults"):
        assert f"{test}[PushApart]" in collected.stdout, test

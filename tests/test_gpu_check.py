"""``benchmarks/gpu_check.py --smoke``: every section of the GPU check runs on this machine at tiny sizes, so
the command cannot rot before a GPU machine is available."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert list(sections) == ["tests", "knn", "retrieval", "throughput", "step_ratio", "mini_study"]
    assert all(s["status"] == "ok" for s in sections.values()), sections
    knn = sections["knn"]["figures"]
    # on one device the two searches are the same computation: nothing may differ
    assert knn["differing_neighbours"] == 0 and knn["mAP_abs_diff_cpu"] == 0.0
    assert sections["throughput"]["figures"]["loader_fed_train_images_per_s"] > 0
    assert {"baseline_step_seconds", "Dispersion", "Cure"} <= set(sections["step_ratio"]["figures"])
    study = sections["mini_study"]["figures"]
    assert "forget/mAP" in study["identity/Dispersion"] and "UES" in study["sample/Cure"]
    # one printed line per figure
    for name, section in sections.items():
        for key in section["figures"]:
            assert f"{name} {key} " in proc.stdout


def test_gpu_check_refuses_without_a_gpu_unless_smoke(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path / "x.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--smoke" in proc.stderr and not (tmp_path / "x.json").exists()

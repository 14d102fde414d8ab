"""The study's --quick mode runs end to end on a tiny set and prints one line per claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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

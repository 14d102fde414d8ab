"""``benchmarks/scale.py --quick``: the CPU scale benchmark runs and prints every figure docs/scaling.md uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_scale_quick_prints_every_figure():
    proc = subprocess.run([sys.executable, "benchmarks/scale.py", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = {tuple(line.split()[:2]) for line in proc.stdout.splitlines() if not line.startswith("#")}
    for expected in [("retrieval", "time_exponent"), ("retrieval", "memory_exponent"),
                     ("retrieval", "similarity_share_n4000"), ("kmeans", "peak_mb"),
                     ("recordio", "index_resident_mb"), ("recordio", "ratio_to_decode"),
                     ("evaluation", "metrics_seconds_total")]:
        assert expected in figures, (expected, proc.stdout)

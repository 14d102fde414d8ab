"""Multi-process DDP on the CPU (gloo): exact metrics, identical ranks, K-means once on rank 0, and every
method's training loaders giving every rank the same number of batches (else DDP desynchronises).

Each DDP run is a subprocess of ``tests/ddp_script.py`` (``strategy="ddp"`` inside pytest would re-run the
whole session on rank 1); the single-process reference runs in-process through the same function.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import ddp_script
import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("ddp_script.py")
DDP_CONFIG = ROOT / "configs" / "trainer" / "ddp.yaml"
GPU_CONFIG = ROOT / "configs" / "trainer" / "gpu.yaml"
CPU_DDP_CONFIG = ROOT / "configs" / "trainer" / "cpu_ddp.yaml"
# variables of a launcher around pytest (SLURM, torchrun) would make Lightning join that job instead
LAUNCHER_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID")


def run_script(task: str, out: Path, data: Path, original: Path, *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in LAUNCHER_VARS}
    cmd = [sys.executable, str(SCRIPT), task, "--data", str(data), "--original", str(original),
           "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"


def write_pairs(data: Path, path: Path) -> Path:
    """A pair list over the tiny set with an odd number of distinct images (47) and 24 pairs."""
    lines = [f"id{k:05d}/000.jpg\tid{k:05d}/001.jpg\t1" for k in range(12)]
    lines += [f"id{k:05d}/002.jpg\tid{k + 1:05d}/003.jpg\t0" for k in range(11)]
    lines.append("id00000/000.jpg\tid00011/005.jpg\t0")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.ddp
def test_metrics_under_ddp_equal_single_process(tiny_faces, original_ckpt, tmp_path):
    pairs = write_pairs(tiny_faces, tmp_path / "pairs.txt")
    run_script("eval", tmp_path / "ddp", tiny_faces, original_ckpt, "--pairs", str(pairs), "--devices", "2",
               "--strategy", "ddp")
    single = ddp_script.evaluate(str(tiny_faces), str(original_ckpt), str(pairs), devices=1,
                                 root=str(tmp_path / "single"))
    # both sets are odd-sized, so the two ranks' shards differ in length (each ends on a partial batch)
    assert single["n_retrieval"] % 2 == 1 and single["n_pair_images"] % 2 == 1
    assert any(k.startswith("forget/") for k in single) and any(k.startswith("verify/pairs/") for k in single)
    for rank in (0, 1):
        result = json.loads((tmp_path / "ddp" / f"eval_rank{rank}.json").read_text())
        assert result["world_size"] == 2
        ddp = result["metrics"]
        assert ddp.keys() == single.keys()
        wrong = {k: (ddp[k], single[k]) for k in single if abs(ddp[k] - single[k]) > 1e-6}
        assert not wrong, f"rank {rank}: metrics differ from the single-process run: {wrong}"


@pytest.mark.ddp
def test_training_ranks_stay_identical_and_kmeans_runs_once(tiny_faces, original_ckpt, tmp_path):
    """CURE, dispersion and a pseudo-label method, a few steps each under 2-process DDP with ddp.yaml's
    strategy (one test, one subprocess: under pytest-xdist a shared fixture would run once per worker)."""
    strategy = yaml.safe_load(DDP_CONFIG.read_text())["strategy"]
    run_script("train", tmp_path, tiny_faces, original_ckpt, "--devices", "2", "--strategy", strategy)
    rank0, rank1 = (torch.load(tmp_path / f"train_rank{r}.pt", map_location="cpu", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2

    for method in ("cure", "dispersion", "pseudo"):
        a, b = rank0[method], rank1[method]
        assert a["steps"] == b["steps"] >= 2, method
        assert a["moved"] > 0, f"{method}: no optimiser step changed the backbone"
        differ = [k for k in a["digests"] if a["digests"][k] != b["digests"].get(k)]
        assert a["digests"].keys() == b["digests"].keys() and not differ, f"{method}: parameters differ: {differ}"

    # K-means: CURE's forget and retain clusterings, the forget one again from the student at epoch 1, and the
    # pseudo-labels: all on rank 0, none on rank 1, and every rank holds the same centroids and labels
    assert (rank0["kmeans_calls"], rank1["kmeans_calls"]) == (4, 0)
    for method, keys in (("cure", ("forget_centroids", "forget_cluster", "retain_centroids", "retain_cluster")),
                         ("pseudo", ("table", "centroids"))):
        for key in keys:
            assert torch.equal(rank0[method][key], rank1[method][key]), f"{method} {key} differs between ranks"
    assert (rank0["cure"]["forget_cluster"] >= 0).any() and (rank0["pseudo"]["table"] >= 0).any()


VARIANTS = ddp_script.variants()


def rank_loaders(model, dm, rank: int, world: int) -> dict[str, tuple[int, int, list[int]]]:
    """Each training loader as rank ``rank`` of ``world`` builds it (the data module's own rank logic, without
    processes): its batch count, its batch size and the sample indices its sampler yields."""
    dm.trainer = SimpleNamespace(lightning_module=model, global_rank=rank, world_size=world)
    try:
        loaders = dm.train_dataloader()
    finally:
        dm.trainer = None
    return {part: (len(loader), loader.batch_size, [i for i, _ in loader.sampler]) for part, loader in loaders.items()}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_rank_gets_the_same_number_of_batches(name, tiny_faces, original_ckpt):
    """Every registered method (label-free variants included): at 2, 3 and 8 ranks each training loader has
    the same length on every rank, P×K loaders yield whole P×K batches, and the epoch is padded (not cut):
    every image of the part that fixes its length is in it."""
    model, dm = ddp_script.build_variant(VARIANTS[name], str(tiny_faces), str(original_ckpt))
    dm.setup("fit")
    if getattr(model, "pseudo_labels", False):  # stand-in clusters: only the sampler lengths are checked here
        table = np.random.default_rng(0).integers(0, 6, len(dm.source))
        model.register_buffer("pseudo_table", torch.as_tensor(table))
    first = model.train_parts[0]
    single = rank_loaders(model, dm, 0, 1)
    for world in (2, 3, 8):
        ranks = [rank_loaders(model, dm, rank, world) for rank in range(world)]
        for part in single:
            per_rank = [r[part][0] for r in ranks]
            assert per_rank == [per_rank[0]] * world, f"{part} at {world} ranks: batches per rank {per_rank}"
            if part in model.pk_parts:
                assert all(len(r[part][2]) == r[part][0] * r[part][1] for r in ranks), f"{part}: a partial P×K batch"
        assert ranks[0][first][0] == math.ceil(single[first][0] / world)
        if first not in model.pk_parts:
            seen = set().union(*(r[first][2] for r in ranks))
            assert seen == set(dm.part_indices(first).tolist()), f"{first}: images left out of the epoch"


@pytest.mark.ddp
@pytest.mark.parametrize("world", [2, 3])
def test_every_method_keeps_ranks_in_step(world, tiny_faces, original_ckpt, tmp_path):
    """The crash of issue 18: one whole epoch of every registered method (label-free variants included) under
    2- and 3-process DDP, on data whose batch count neither divides; every rank runs the same steps and ends
    with bit-identical parameters."""
    strategy = yaml.safe_load(DDP_CONFIG.read_text())["strategy"]
    run_script("sync", tmp_path, tiny_faces, original_ckpt, "--devices", str(world), "--strategy", strategy,
               "--variants", ",".join(VARIANTS))
    ranks = [torch.load(tmp_path / f"sync_rank{r}.pt", map_location="cpu", weights_only=True) for r in range(world)]
    assert [r["world_size"] for r in ranks] == [world] * world
    for name in VARIANTS:
        first = ranks[0][name]
        assert first["epoch_batches"] % world != 0, f"{name}: the data must not divide into {world} ranks"
        assert [r[name]["steps"] for r in ranks] == [math.ceil(first["epoch_batches"] / world)] * world, name
        assert first["moved"] > 0, f"{name}: no optimiser step changed the backbone"
        differ = [k for r in ranks[1:] for k in first["digests"] if r[name]["digests"].get(k) != first["digests"][k]]
        assert not differ, f"{name}: parameters differ between ranks: {differ[:5]}"


@pytest.mark.parametrize("config", [DDP_CONFIG, GPU_CONFIG, CPU_DDP_CONFIG], ids=["ddp", "gpu", "cpu_ddp"])
def test_trainer_configs_overlay_an_experiment(config, tmp_path, monkeypatch):
    """``--trainer gpu.yaml|ddp.yaml|cpu_ddp.yaml`` after an experiment config changes the devices and keeps the
    rest (epochs, the evaluation callback); the trainer is built here on the CPU (cpu_ddp.yaml as it is), not run."""
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    from unlearnkit.callbacks.evaluation import FaceEvaluation
    from unlearnkit.cli.main import main

    built = []
    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    monkeypatch.setattr(pl.Trainer, "fit", lambda self, *args, **kwargs: built.append(self))
    devices = yaml.safe_load(config.read_text())["devices"]
    experiment = ROOT / "configs" / "experiment" / "pretrain_synthetic.yaml"
    experiment_trainer = yaml.safe_load((experiment.parent / yaml.safe_load(experiment.read_text())["trainer"])
                                        .read_text())
    on_cpu = [] if config == CPU_DDP_CONFIG else ["--trainer.accelerator", "cpu", "--trainer.devices",
                                                  str(min(devices, 2)), "--trainer.precision", "32-true"]
    assert main(["fit", "--config", str(experiment), "--trainer", str(config), *on_cpu,
                 "--run_dir", str(tmp_path / "run"), "--wandb", "false"]) == 0
    trainer = built[0]
    assert not trainer._accelerator_connector.use_distributed_sampler
    assert any(isinstance(c, FaceEvaluation) for c in trainer.callbacks)
    assert trainer.max_epochs == experiment_trainer["max_epochs"]
    if config in (DDP_CONFIG, CPU_DDP_CONFIG):
        assert isinstance(trainer.strategy, DDPStrategy) and trainer.world_size == 2
        assert trainer.strategy._ddp_kwargs.get("find_unused_parameters") is True
    else:
        assert trainer.world_size == 1

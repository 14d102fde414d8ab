"""GPU readiness in one command: every GPU path of the project run once, one printed line per figure.

    make gpu-check                                   # on a GPU machine: the real sizes, <= 8 min on one H100
    python benchmarks/gpu_check.py --smoke           # anywhere: tiny sizes, the same code paths, seconds

Sections (each timed; a failure is recorded and the next section runs; ``gpu_check.json`` is rewritten
after every section, so a run stopped at its time limit keeps what it measured):

1. ``tests``: the GPU-marked tests (``pytest -m gpu tests/test_gpu.py``).
2. ``knn``: nearest neighbours of N = 100 k unit vectors (d = 512) on the GPU (FAISS's GPU index where FAISS
   sees the GPU, else our torch search) against FAISS's exact CPU index: identical neighbours except float
   ties, and identical mAP / R@1 of the same query set on both devices; both times.
3. ``retrieval``: the exact leave-one-out retrieval metric on the GPU at N = 50 k, 100 k, 200 k (d = 512):
   seconds, peak GPU memory above the embeddings, and the ratio to the bare chunked similarity product.
4. ``throughput``: training images/s of ``iresnet50`` at 112 px, batch 256 (CosFace head, SGD): fp32, bf16,
   bf16 + channels-last, bf16 + channels-last + ``torch.compile``, from in-memory tensors; then through our
   real loader from a generated ``.rec`` (the loader alone, and feeding the bf16 channels-last step).
5. ``step_ratio``: ``benchmarks/step_overhead.py`` on ``iresnet50`` / 112 px / bf16 (every method).
6. ``mini_study``: synthetic faces at 112 px (500 people), ``iresnet18``: θ0, the oracle and dispersion, hard
   dispersion, CURE, GA and RL on the identity and sample protocols, with their metrics.

A section that would not fit in what is left of ``--budget`` seconds is skipped and says so. Nothing here
extrapolates: every figure printed was measured in this run, on the device named in the first line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYTHONUNBUFFERED", "1")

REPO = Path(__file__).resolve().parents[1]
# runs from a plain checkout too (a GPU machine's own Python, no install): the package, benchmarks, helpers
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

# section sizes: (real run, smoke run)
SIZES = {
    "knn_n": (100_000, 3_000), "knn_queries_compared": (10_000, 500), "knn_k": (10, 10),
    "retrieval_n": ((50_000, 100_000, 200_000), (2_000, 4_000)),
    "arch": ("iresnet50", "timm_resnet10t"), "size": (112, 32), "batch": (256, 8), "classes": (10_572, 50),
    "timed_steps": (15, 2), "rec_images": (6_144, 64),
    "step_args": (["--backbone", "iresnet50", "--size", "112", "--batch", "128", "--steps", "8"],
                  ["--backbone", "timm_resnet10t", "--size", "32", "--batch", "16", "--steps", "2"]),
    "study_people": (500, 12), "study_images": (10, 8), "study_size": (112, 32),
    "study_arch": ("iresnet18", "timm_resnet10t"), "study_pretrain_epochs": (12, 1),
    "study_unlearn_epochs": (5, 1), "study_batch": (256, 12),
}
# what each section needs at least (seconds, real run) to be worth starting
MIN_SECONDS = {"tests": 60, "knn": 20, "retrieval": 20, "throughput": 60, "step_ratio": 60, "mini_study": 120}
STUDY_METHODS = {"identity": ["Dispersion", "HardDispersion", "Cure", "GradientAscent", "RandomLabel"],
                 "sample": ["Cure", "Dispersion", "HardDispersion", "GradientAscent", "RandomLabel"]}
SMOKE_STUDY_METHODS = {"identity": ["Dispersion"], "sample": ["Cure"]}
SMOKE_STEP_METHODS = ("Dispersion", "Cure")


class Check:
    """Runs the sections, prints ``<section> <figure> <value>`` lines and keeps ``gpu_check.json`` current."""

    def __init__(self, out: Path, smoke: bool, budget: float) -> None:
        self.out, self.smoke, self.deadline = out, smoke, time.perf_counter() + budget
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.result = {"device": device_name(), "torch": torch.__version__, "smoke": smoke,
                       "cuda": torch.version.cuda, "sections": {}}
        self.section = ""

    def size(self, key: str):
        return SIZES[key][1 if self.smoke else 0]

    def figure(self, name: str, value, note: str = "") -> None:
        self.result["sections"][self.section]["figures"][name] = value
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{self.section} {name} {shown}{'  # ' + note if note else ''}", flush=True)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self, name: str, fn) -> None:
        self.section = name
        entry = self.result["sections"][name] = {"status": "running", "figures": {}}
        need = 0 if self.smoke else MIN_SECONDS[name]
        if self.left() < need:
            entry.update(status="skipped", reason=f"{self.left():.0f} s left of the budget, needs {need}")
            print(f"{name} skipped: {entry['reason']}", flush=True)
        else:
            start = time.perf_counter()
            try:
                fn(self)
                entry["status"] = "ok"
            except Exception as err:  # a failing section is a finding: record it, go on with the next
                entry.update(status="failed", error=f"{type(err).__name__}: {err}")
                traceback.print_exc()
                print(f"{name} FAILED: {entry['error']}", flush=True)
            entry["seconds"] = round(time.perf_counter() - start, 1)
            print(f"{name} section_seconds {entry['seconds']}", flush=True)
        self.write()

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.result, indent=2, default=str))
        tmp.replace(self.out)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def timed(self, fn):
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - start


def device_name() -> str:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} visible)"
    return f"CPU only ({os.cpu_count()} cores)"


# ------------------------------------------------------------------------------------------------ sections
def gpu_tests(c: Check) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/test_gpu.py"]
    timeout = max(30.0, min(300.0, c.left() - 30))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    for key in ("passed", "failed", "skipped"):
        c.figure(key, counts.get(key, 0))
    c.figure("summary", summary)
    if proc.returncode not in (0, 5):  # 5: nothing collected
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
        raise RuntimeError(f"GPU tests exited {proc.returncode}: {summary}")


def knn_vs_cpu(c: Check) -> None:
    from retrieval import make_data

    from unlearnkit.metrics import search
    from unlearnkit.metrics.functional import retrieval

    n, k, compared = c.size("knn_n"), c.size("knn_k"), c.size("knn_queries_compared")
    x, labels = make_data(n, 512, per_identity=20, noise=2.0, seed=0)
    c.figure("faiss_sees_gpu", bool(search.use_gpu()))
    c.figure("gpu_backend", "faiss" if search.use_gpu() else "torch" if c.device.type == "cuda" else "cpu")
    xd = x.to(c.device)
    search.knn(xd[:64], xd, k)  # warm-up: kernels, FAISS resources
    (gpu_scores, gpu_idx), t_gpu = c.timed(lambda: search.knn(xd, xd, k))
    with_patch = search.use_gpu
    search.use_gpu = lambda: False  # FAISS's exact CPU index, whatever this machine has
    try:
        (cpu_scores, cpu_idx), t_cpu = c.timed(lambda: search.knn(x, x, k))
    finally:
        search.use_gpu = with_patch
    gpu_scores, gpu_idx = gpu_scores.cpu(), gpu_idx.cpu()
    differ = gpu_idx != cpu_idx
    rows = differ.nonzero()[:, 0]
    gap = ((x[rows].double() * x[gpu_idx[differ]].double()).sum(1)
           - (x[rows].double() * x[cpu_idx[differ]].double()).sum(1)).abs()
    c.figure("n", n)
    c.figure("gpu_seconds", t_gpu)
    c.figure("cpu_seconds", t_cpu, f"FAISS IndexFlatIP, {torch.get_num_threads()} threads")
    c.figure("max_score_diff", float((gpu_scores - cpu_scores).abs().max()))
    c.figure("differing_neighbours", int(differ.sum()), f"of {differ.numel()}")
    c.figure("max_tie_gap_of_differing", float(gap.max()) if gap.numel() else 0.0,
             "true-score gap where the two searches chose different neighbours")
    query = torch.zeros(n, dtype=torch.bool)
    query[:compared] = True
    on_gpu = retrieval(xd, labels, query_mask=query.to(c.device))
    on_cpu = retrieval(x, labels, query_mask=query)
    for key in ("mAP", "R@1"):
        c.figure(f"{key}_gpu", on_gpu[key])
        c.figure(f"{key}_abs_diff_cpu", abs(on_gpu[key] - on_cpu[key]), f"{compared} queries, gallery {n}")
    if gap.numel() and float(gap.max()) > 1e-5:
        raise AssertionError(f"neighbours differ beyond float ties (gap {float(gap.max()):.2e})")


def retrieval_at_scale(c: Check) -> None:
    from retrieval import bare_matmul, make_data

    from unlearnkit.metrics.functional import MAX_CHUNK_SCORES, retrieval

    warm, _ = make_data(1000, 512, per_identity=20, noise=2.0, seed=1)
    retrieval(warm.to(c.device), torch.arange(1000) // 20)
    for n in c.size("retrieval_n"):
        x, labels = make_data(n, 512, per_identity=20, noise=2.0, seed=0)
        x = x.to(c.device)
        if c.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        result, seconds = c.timed(lambda x=x, labels=labels: retrieval(x, labels))
        chunk = max(1, min(1024, MAX_CHUNK_SCORES // n))
        _, t_mm = c.timed(lambda x=x, chunk=chunk: bare_matmul(x, chunk))
        c.figure(f"seconds_n{n}", seconds, f"mAP {result['mAP']:.4f} R@1 {result['R@1']:.4f}")
        c.figure(f"ratio_to_matmul_n{n}", seconds / t_mm)
        if c.device.type == "cuda":
            c.figure(f"peak_gpu_mb_n{n}", (torch.cuda.max_memory_allocated() - base) / 2**20,
                     f"embeddings alone {x.numel() * 4 / 2**20:.0f} MB")
        del x
        if c.left() < 15 and not c.smoke:
            raise TimeoutError(f"stopped after N={n}: budget")


def training_throughput(c: Check) -> None:
    from unlearnkit.backbones import create_backbone
    from unlearnkit.heads import create_head

    arch, size, batch, classes, steps = (c.size(k) for k in ("arch", "size", "batch", "classes", "timed_steps"))
    cuda = c.device.type == "cuda"

    def build(channels_last: bool, compiled: bool):
        torch.manual_seed(0)
        backbone = create_backbone(arch, embedding_size=512, image_size=size).to(c.device)
        head = create_head("cosface", 512, classes).to(c.device)
        if channels_last:
            backbone = backbone.to(memory_format=torch.channels_last)
        net = torch.compile(backbone) if compiled else backbone
        opt = torch.optim.SGD([*backbone.parameters(), *head.parameters()], lr=0.1, momentum=0.9)

        def step(images, labels, bf16):
            with torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = head.loss(net(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def rate(step, bf16, channels_last, warmup=3):
        images = torch.randn(batch, 3, size, size, device=c.device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(classes, (batch,), device=c.device)
        for _ in range(warmup):
            step(images, labels, bf16)
        _, seconds = c.timed(lambda: [step(images, labels, bf16) for _ in range(steps)])
        return batch * steps / seconds

    variants = [("fp32", False, False, False), ("bf16", True, False, False),
                ("bf16_channels_last", True, True, False), ("bf16_channels_last_compile", True, True, True)]
    for name, bf16, channels_last, compiled in variants:
        if compiled and not cuda:
            c.figure(f"images_per_s_{name}", "not run", "compile is measured on a GPU only")
            continue
        started = time.perf_counter()
        value = rate(build(channels_last, compiled), bf16, channels_last)
        c.figure(f"images_per_s_{name}", value, f"{arch} {size}px batch {batch}, "
                 f"{time.perf_counter() - started:.0f} s incl. warm-up/compile")
    if cuda:
        c.figure("peak_gpu_mb", torch.cuda.max_memory_allocated() / 2**20)
    loader_throughput(c, build(True, False), arch, size, batch, classes)


def loader_throughput(c: Check, step, arch: str, size: int, batch: int, classes: int) -> None:
    from helpers_formats import jpeg_bytes, write_recordio

    from unlearnkit.data.datamodule import FaceDataset, face_loader
    from unlearnkit.data.formats import RecordIOSource
    from unlearnkit.data.transforms import FaceTransform

    count = c.size("rec_images")
    workers = 0 if c.smoke else max(1, min(12, (os.cpu_count() or 2) - 2))
    with tempfile.TemporaryDirectory() as tmp:
        per_id = 20
        write_recordio(Path(tmp), [(n // per_id, jpeg_bytes(n, size=size)) for n in range(count)])
        source = RecordIOSource(tmp)
        labels = np.arange(len(source)) // per_id % classes
        dataset = FaceDataset(source, np.arange(len(source)), labels, FaceTransform(size), random_flip=True)
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(0)).tolist()
        loader = face_loader(dataset, order, batch, workers)
        [b["image"].shape for b in loader]  # warm-up: workers start (persistent), page cache filled
        _, seconds = c.timed(lambda: [b["image"].shape for b in loader])
        c.figure("loader_images_per_s", len(source) / seconds, f"{workers} workers, {size}px JPEG .rec, "
                 f"batch {batch}, read + decode + normalise + pin")

        def fed():
            for b in loader:
                images = b["image"].to(c.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                step(images, b["label"].to(c.device, non_blocking=True), True)
        _, seconds = c.timed(fed)
        c.figure("loader_fed_train_images_per_s", len(source) / seconds, f"{arch} bf16 channels-last from the .rec")


def step_ratios(c: Check) -> None:
    import step_overhead

    accel = ["--accelerator", "gpu", "--precision", "bf16-mixed"] if c.device.type == "cuda" else []
    workers = str(max(1, min(14, (os.cpu_count() or 2) - 2))) if not c.smoke else "1"
    args = step_overhead.parse_args([*c.size("step_args"), *accel, "--workers", workers,
                                     "--threads", str(min(8, os.cpu_count() or 2))])
    only = SMOKE_STEP_METHODS if c.smoke else None
    ratios = step_overhead.measure(args, report=lambda line: print(f"step_ratio | {line}", flush=True),
                                   only=only)
    for name, value in ratios.items():
        c.figure(name if name != "baseline" else "baseline_step_seconds", value)


def mini_study(c: Check) -> None:
    import lightning as L

    from unlearnkit.callbacks.evaluation import FaceEvaluation
    from unlearnkit.data.datamodule import FaceDataModule
    from unlearnkit.data.synthetic import generate_synthetic
    from unlearnkit.methods import load_all
    from unlearnkit.methods.base import Pretrain, Retrain

    cuda = c.device.type == "cuda"
    people, size, arch, batch = (c.size(k) for k in ("study_people", "study_size", "study_arch", "study_batch"))
    work = Path(tempfile.mkdtemp(prefix="gpu-check-study-"))
    started = time.perf_counter()
    workers = None if not c.smoke else 1
    root = generate_synthetic(work / "faces", num_identities=people, images_per_identity=c.size("study_images"),
                              image_size=size, seed=0, workers=workers, progress=False)
    c.figure("generate_seconds", time.perf_counter() - started, f"{people} people at {size}px")
    loader_workers = 0 if c.smoke else max(1, min(8, (os.cpu_count() or 2) - 2))
    trainer_kw = dict(accelerator="gpu" if cuda else "cpu", devices=1, logger=False,
                      precision="bf16-mixed" if cuda else "32-true", enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False)

    def datamodule(protocol: str) -> FaceDataModule:
        forget = max(2, people // 10) if protocol == "identity" else 0.1
        return FaceDataModule(root=str(root), image_size=size, protocol=protocol, forget=forget,
                              heldout_per_identity=2, batch_size=batch, eval_batch_size=512,
                              pk_identities=max(2, batch // 8), pk_images=4, num_workers=loader_workers,
                              pairs=[{"name": "heldout", "format": "heldout", "num_pairs": 600}], seed=0)

    def train(model, protocol: str, name: str, epochs: int, callbacks=()) -> Path:
        trainer = L.Trainer(max_epochs=epochs, default_root_dir=str(work / name), callbacks=list(callbacks),
                            enable_checkpointing=False, check_val_every_n_epoch=epochs,
                            limit_val_batches=1.0 if callbacks else 0, **trainer_kw)
        trainer.fit(model, datamodule=datamodule(protocol))
        path = work / name / "model.ckpt"
        trainer.save_checkpoint(path)
        return path

    recipe = dict(backbone=arch, embedding_size=512, image_size=size, scale=30.0, optimizer="adamw", lr=3e-3,
                  weight_decay=5e-4, warmup_epochs=1)
    epochs = c.size("study_pretrain_epochs")
    t0 = time.perf_counter()
    L.seed_everything(0, verbose=False)
    original = train(Pretrain(**recipe), "identity", "pretrain", epochs)
    c.figure("pretrain_seconds", time.perf_counter() - t0, f"{epochs} epochs")
    methods = load_all()
    plan = SMOKE_STUDY_METHODS if c.smoke else STUDY_METHODS
    for protocol in ("identity", "sample"):
        if c.left() < (0 if c.smoke else 60):
            raise TimeoutError(f"stopped before the {protocol} protocol: budget")
        t0 = time.perf_counter()
        L.seed_everything(0, verbose=False)
        oracle = train(Retrain(**recipe), protocol, f"{protocol}-retrain", epochs)
        c.figure(f"{protocol}/oracle_seconds", time.perf_counter() - t0)
        for name in plan[protocol]:
            if c.left() < (0 if c.smoke else 20):
                raise TimeoutError(f"stopped before {protocol}/{name}: budget")
            cls = methods[name]
            label_free = protocol != "identity" and cls.needs_labels
            model = cls(original=str(original), **({"labels": "pseudo"} if label_free else {}))
            evaluation = FaceEvaluation(oracle=str(oracle), plots=False, per_identity=False)
            t0 = time.perf_counter()
            L.seed_everything(0, verbose=False)
            train(model, protocol, f"{protocol}-{name}", c.size("study_unlearn_epochs"), [evaluation])
            m = evaluation.last
            tag = f"{protocol}/{name}{'-pseudo' if label_free else ''}"
            if name == plan[protocol][0]:
                c.figure(f"{protocol}/original", " ".join(f"{k} {m.get('original/' + k, math.nan):.3f}"
                                                            for k in ("forget/mAP", "retain/mAP", "forget/CS")))
                c.figure(f"{protocol}/oracle", " ".join(f"{k} {m.get('oracle/' + k, math.nan):.3f}"
                                                          for k in ("forget/mAP", "retain/mAP", "forget/CS")))
            c.figure(tag, " ".join(f"{k} {m.get(k, math.nan):.3f}" for k in (
                "forget/mAP", "forget/R@1", "retain/mAP", "forget/CS", "UES", "mia/membership_recall")),
                f"{time.perf_counter() - t0:.0f} s")


SECTIONS = {"tests": gpu_tests, "knn": knn_vs_cpu, "retrieval": retrieval_at_scale,
            "throughput": training_throughput, "step_ratio": step_ratios, "mini_study": mini_study}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device is here")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all sections together")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run these sections only")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the fp32 figures
    check = Check(Path(args.out), args.smoke, args.budget)
    print(f"device {check.result['device']} torch {torch.__version__} cuda {torch.version.cuda}", flush=True)
    for name in args.only or SECTIONS:
        check.run(name, SECTIONS[name])
    failed = [n for n, s in check.result["sections"].items() if s["status"] == "failed"]
    print(f"gpu_check done: {len(failed)} failed section(s) {failed}; figures in {args.out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

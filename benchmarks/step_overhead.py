"""Time one training step of every unlearning method against a plain supervised step (same backbone, batch).

Prints ``step_ratio <method> <ratio>`` per method: the median in-step time (forward, backward, optimiser;
data loading excluded) divided by the median time of a pretraining step on a batch of the same size.
Methods that consume a forget and a retain batch in every step get half the batch per part, so each step
pushes the same number of images through the student; a method that uses one part per step (its batch recipe
says so: SCRUB) gets the full batch. Every method of the registry is timed, by its class name. Run: ``python benchmarks/step_overhead.py [--batch 64 --size 48 --steps 12]``; on a GPU add
``--accelerator gpu --precision bf16-mixed`` (``benchmarks/gpu_check.py`` runs it so on ``iresnet50``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
import lightning as L  # noqa: E402
import torch  # noqa: E402

from unlearnkit.data.datamodule import FaceDataModule  # noqa: E402
from unlearnkit.data.synthetic import generate_synthetic  # noqa: E402
from unlearnkit.methods import unlearning_methods  # noqa: E402
from unlearnkit.methods.base import Pretrain  # noqa: E402


class StepTimer(L.Callback):
    def __init__(self, skip: int) -> None:
        self.skip, self.times, self.images, self._t = skip, [], [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.skip:
            self.times.append(time.perf_counter() - self._t)
            parts = batch.values() if "image" not in batch else [batch]
            self.images.append(sum(len(part["image"]) for part in parts))


def time_steps(model, root: Path, args, protocol: str, batch: int) -> tuple[float, float]:
    """Median step seconds and median images per step (every part of the batch counted)."""
    pk_identities = max(1, batch // 4)
    dm = FaceDataModule(root=str(root), image_size=args.size, protocol=protocol,
                        forget=pk_identities if protocol == "identity" else 0.3, heldout_per_identity=2,
                        batch_size=batch, pk_identities=pk_identities, pk_images=4, seed=0)
    timer = StepTimer(skip=2)
    trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision,
                        max_steps=args.steps + 2, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, callbacks=[timer])
    trainer.fit(model, datamodule=dm)
    return statistics.median(timer.times), statistics.median(timer.images)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--backbone", default="timm_resnet10t")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--workers", type=int, default=None, help="processes generating the faces")
    return parser.parse_args(argv)


def step_plan(batch: int, only=None) -> dict[str, tuple[int, str]]:
    """Every unlearning method of the registry (or those named in ``only``: class names, or the old snake_case
    keys) with the batch size each part gets and the protocol it is timed on, from its declarations: the batch is
    shared between the parts of its batch recipe unless it uses one part per step; label-free methods run on the
    sample protocol."""
    methods = unlearning_methods()
    names = list(methods) if only is None else [methods[name].__name__ for name in only]
    plan = {}
    for name, cls in methods.items():
        if name in names:
            recipe = cls.batches
            share = batch if recipe.one_part_per_step else batch // len(recipe.parts)
            plan[name] = (share, "identity" if cls.needs_labels else "sample")
    return plan


def measure(args: argparse.Namespace, report=print, only=None) -> dict[str, float]:
    """Every unlearning method's step ratio (or those named in ``only``), and the baseline's step seconds
    under ``baseline``."""
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    work = Path(tempfile.mkdtemp(prefix="step-overhead-"))
    # enough people that a P×K batch's forget identities leave most of them retained
    identities = max(48, 3 * max(1, args.batch // 4))
    root = generate_synthetic(work / "faces", num_identities=identities, images_per_identity=24,
                              image_size=args.size, seed=0, workers=args.workers, progress=False)
    arch = dict(backbone=args.backbone, embedding_size=128, image_size=args.size)
    baseline_model = Pretrain(**arch, num_classes=identities)
    ckpt = work / "original.ckpt"
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(baseline_model)
    trainer.save_checkpoint(ckpt)
    baseline, images = time_steps(baseline_model, root, args, "identity", args.batch)
    report(f"baseline_step_seconds {baseline:.4f} (pretrain, {images:.0f} images per step, {args.backbone} at "
           f"{args.size} px, {args.accelerator}, {args.precision})")
    ratios = {"baseline": baseline}
    methods = unlearning_methods()
    for name, (batch, protocol) in step_plan(args.batch, only).items():
        model = methods[name](original=str(ckpt))
        seconds, images = time_steps(model, root, args, protocol, batch)
        ratios[name] = ratio = seconds / baseline
        target = methods[name].step_ratio_target  # declared in the method's file
        verdict = "" if target is None else f"  (target ≤ {target:.2f}: {'met' if ratio <= target else 'MISSED'})"
        report(f"step_ratio {name} {ratio:.2f}{verdict}  [{images:.0f} images delivered per step]")
    return ratios


def main() -> None:
    measure(parse_args())


if __name__ == "__main__":
    sys.exit(main())

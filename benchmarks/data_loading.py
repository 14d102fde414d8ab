"""How much the data readers add on top of JPEG decoding, which is the cost that cannot be avoided.

Writes N small JPEGs once as an image folder and once as insightface RecordIO (the same bytes), then
measures images/s of each reader through the loader every run uses (``FaceDataset`` + ``face_loader``:
read, decode, insightface normalisation, batches of 64) with 0 and 2 workers, and of a bare loop that
decodes the same bytes and normalises each image with the same ``FaceTransform``. ``ratio_to_decode``
compares each reader at 0 workers (the same single-process work) with the bare loop; the target is at
most 1.3.

    .venv/bin/python benchmarks/data_loading.py [--images 2000] [--size 112] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers_formats import jpeg_bytes, write_recordio  # noqa: E402

from unlearnkit.data.datamodule import FaceDataset, face_loader  # noqa: E402
from unlearnkit.data.formats import RecordIOSource  # noqa: E402
from unlearnkit.data.sources import ImageFolderSource  # noqa: E402
from unlearnkit.data.transforms import FaceTransform  # noqa: E402


def write_data(root: Path, count: int, size: int, identities: int = 50) -> None:
    """The same JPEG bytes as ``root/folder/<id>/<n>.jpg`` and as ``root/rec/train.{rec,idx}``."""
    images = []
    for n in range(count):
        label = n * identities // count
        data = jpeg_bytes(n, size=size)
        images.append((label, data))
        path = root / "folder" / f"id{label:04d}" / f"{n:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    write_recordio(root / "rec", images)


def best_rates(runs: dict[str, object], count: int, repeats: int) -> dict[str, float]:
    """Images/s of each run's fastest pass; the runs take turns, so a busy machine slows them all alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: count / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    # one intra-op thread, as in DataLoader workers: on a small busy machine torch's thread pool otherwise
    # makes the tensor conversion 10x slower and the comparison meaningless
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_data(root, args.images, args.size)
        readers = {"recordio": RecordIOSource(root / "rec"), "folder": ImageFolderSource(root / "folder")}
        encoded = [readers["folder"].read_bytes(i) for i in range(len(readers["folder"]))]

        transform = FaceTransform(args.size)

        def decode_loop() -> None:
            for data in encoded:
                transform(Image.open(io.BytesIO(data)).convert("RGB"))

        def through(loader):
            return lambda: [batch["image"].shape for batch in loader]

        runs = {("decode", 0): decode_loop}
        for name, source in readers.items():
            for workers in (0, 2):
                # persistent workers, as in training: the best pass then excludes the workers' start
                dataset = FaceDataset(source, np.arange(len(source)), np.zeros(len(source), np.int64), transform)
                loader = face_loader(dataset, range(len(source)), args.batch_size, workers)
                runs[name, workers] = through(loader)
        rates = best_rates(runs, len(encoded), args.repeats)
        for (name, workers), rate in rates.items():
            print(f"images_per_s {name} {workers} {rate:.0f}")
        for name in readers:
            print(f"ratio_to_decode {name} {rates['decode', 0] / rates[name, 0]:.2f}")


if __name__ == "__main__":
    main()

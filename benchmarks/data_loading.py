"""How much the data readers add on top of JPEG decoding, which is the cost that cannot be avoided.

Writes N small JPEGs once as an image folder and once as insightface RecordIO (the same bytes), and the same
faces as image folders of RGB PNGs, grey JPEGs and 16-bit grey PNGs, then measures images/s of each reader
through the loader every run uses (``FaceDataset`` + ``face_loader``: read, decode to 8-bit RGB, insightface
normalisation, batches of 64) with 0 and 2 workers, and of a bare loop that decodes the same bytes to RGB and
normalises each image with the same ``FaceTransform``. ``ratio_to_decode`` compares each reader at 0 workers
(the same single-process work) with the bare loop over its own bytes; the target is at most 1.3.

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
from helpers_formats import image_of_kind, jpeg_bytes, write_recordio  # noqa: E402

from unlearnkit.data.datamodule import FaceDataset, face_loader  # noqa: E402
from unlearnkit.data.formats import RecordIOSource  # noqa: E402
from unlearnkit.data.sources import ImageFolderSource  # noqa: E402
from unlearnkit.data.transforms import FaceTransform  # noqa: E402

# folder name → (suffix, PIL mode, format) of the image folders besides the JPEG one
OTHER_FOLDERS = {"folder_png": (".png", "RGB", "PNG"), "folder_grey": (".jpg", "L", "JPEG"),
                 "folder_grey16": (".png", "I;16", "PNG")}


def write_data(root: Path, count: int, size: int, identities: int = 50) -> None:
    """The same JPEG bytes as ``root/folder/<id>/<n>.jpg`` and as ``root/rec/train.{rec,idx}``; the same faces
    as ``root/<name>/<id>/<n><suffix>`` for each of ``OTHER_FOLDERS``."""
    images = []
    for n in range(count):
        label = n * identities // count
        data = jpeg_bytes(n, size=size)
        images.append((label, data))
        path = root / "folder" / f"id{label:04d}" / f"{n:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        face = Image.open(io.BytesIO(data))
        for name, (suffix, mode, fmt) in OTHER_FOLDERS.items():
            other = root / name / path.parent.name / f"{path.stem}{suffix}"
            other.parent.mkdir(parents=True, exist_ok=True)
            image = image_of_kind(np.asarray(face), mode)
            image.save(other, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    write_recordio(root / "rec", images)


def bare_rgb(image: Image.Image) -> Image.Image:
    """The least work that turns a decoded image into 8-bit RGB (16-bit grey shifted down, as it must be)."""
    if image.mode == "I;16":
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    return image.convert("RGB")


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
        readers = {"recordio": RecordIOSource(root / "rec"), "folder": ImageFolderSource(root / "folder"),
                   **{name: ImageFolderSource(root / name) for name in OTHER_FOLDERS}}
        # the bare loop of each reader decodes its own bytes (RecordIO holds the folder's JPEG bytes)
        bytes_of = {name: "folder" if name == "recordio" else name for name in readers}
        transform = FaceTransform(args.size)

        def decode_loop(encoded: list[bytes]):
            def run() -> None:
                for data in encoded:
                    transform(bare_rgb(Image.open(io.BytesIO(data))))
            return run

        def through(loader):
            return lambda: [batch["image"].shape for batch in loader]

        runs = {}
        for name in dict.fromkeys(bytes_of.values()):
            source = readers[name]
            runs[f"decode_{name}", 0] = decode_loop([source.read_bytes(i) for i in range(len(source))])
        for name, source in readers.items():
            for workers in (0, 2):
                # persistent workers, as in training: the best pass then excludes the workers' start
                dataset = FaceDataset(source, np.arange(len(source)), np.zeros(len(source), np.int64), transform)
                loader = face_loader(dataset, range(len(source)), args.batch_size, workers)
                runs[name, workers] = through(loader)
        rates = best_rates(runs, args.images, args.repeats)
        for (name, workers), rate in rates.items():
            print(f"images_per_s {name} {workers} {rate:.0f}")
        for name in readers:
            print(f"ratio_to_decode {name} {rates[f'decode_{bytes_of[name]}', 0] / rates[name, 0]:.2f}")


if __name__ == "__main__":
    main()

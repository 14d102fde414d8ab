"""Face data sets on disk, as one interface: sample ``i`` has a key, an identity name and an image.

Every on-disk format (image folders, insightface RecordIO, VGGFace2, CelebA, the synthetic set) is a
``FaceSource``; splits, samplers and loaders only ever see this interface. This module holds the interface and
image folders; ``formats.py`` the other formats and ``open_source``, which opens any of them by name.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from unlearnkit.errors import DataError
from unlearnkit.registry import Registry

SOURCES: Registry[type[FaceSource]] = Registry("data format")
# every image type torchvision's ImageFolder reads (its IMG_EXTENSIONS), matched case-insensitively
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def suffix_counts(names) -> str:
    """``'.gif' (3), '.txt' (1)``: the suffixes among ``names``, most frequent first (for error messages)."""
    counts = Counter(Path(name).suffix.lower() or "(none)" for name in names)
    return ", ".join(f"{suffix!r} ({count})" for suffix, count in counts.most_common(6)) or "no files"


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded image as 8-bit RGB. 16-bit grey (``I;16``, ``I``) keeps its high byte rather than being clipped
    (PIL's own ``convert`` saturates it to white), float images are read as [0, 1] when they fit, palette
    images with transparency go through RGBA (dropping alpha as for RGBA), CMYK, grey and bilevel convert."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I"):
        values = np.asarray(image)
        if mode.startswith("I;16"):  # 0..65535 → 0..255: the high byte
            values = values >> 8
        elif values.max(initial=0) > 255:  # 32-bit integers holding 16-bit values (16-bit PGMs open so)
            values = np.clip(values, 0, 65535) >> 8
        image = Image.fromarray(values.astype(np.uint8))
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.min(initial=0) >= 0 and values.max(initial=0) <= 1:
            values = values * 255.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    elif mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def decode_image(data: bytes, what: str | Callable[[], str]) -> Image.Image:
    """Encoded bytes → 8-bit RGB image (``to_rgb``: the one conversion an image gets); a corrupt or truncated
    image raises ``DataError`` naming ``what`` (a string, or a callable that makes one only when needed: the hot
    path formats nothing)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"corrupt image {what() if callable(what) else what}: {err}; remove or replace the file"
                        ) from err
    return to_rgb(image)


def read_file(root: str | Path, key: str) -> bytes:
    """The bytes of ``root/key``, read with bare system calls (a third of ``Path.read_bytes``' overhead on
    small JPEGs); a missing file raises ``DataError`` naming it."""
    path = f"{root}/{key}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as err:
        raise DataError(f"image {path} is missing: the folder changed since it was listed") from err
    try:
        chunks, size = [], os.fstat(fd).st_size
        while True:  # one read for a regular file; loop in case the system returns less
            chunk = os.read(fd, max(size, 1 << 16))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


class FaceSource:
    """Base class. Subclasses fill ``keys`` (unique, stable, e.g. a relative path) and ``identities``.

    ``qualities`` holds a known per-image quality in [0, 1] (1 = clean) where the format carries one
    (the synthetic set does), else NaN.
    """

    root: Path
    keys: list[str]
    identities: list[str]
    qualities: list[float]

    def __len__(self) -> int:
        return len(self.keys)

    def read_bytes(self, i: int) -> bytes:
        """The encoded image of sample ``i``."""
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        """Sample ``i`` decoded as RGB; a corrupt image raises ``DataError`` naming it."""
        return decode_image(self.read_bytes(i), functools.partial(self.describe, i))

    def describe(self, i: int) -> str:
        return f"{self.root}/{self.keys[i]}"

    @property
    def identity_names(self) -> list[str]:
        """Distinct identities in first-seen order; a sample's class label is its index here."""
        return list(dict.fromkeys(self.identities))


def read_quality_csv(path: str | Path) -> dict[str, float]:
    """An external quality file: CSV with columns ``path,score`` (or ``path,quality`` / ``path,degradation``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"quality file {path} does not exist: give a CSV with columns path,score")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        if "path" not in fields:
            raise DataError(f"quality file {path} has no 'path' column (found {fields})")
        if "score" in fields:
            return {row["path"]: float(row["score"]) for row in reader}
        if "quality" in fields:
            return {row["path"]: float(row["quality"]) for row in reader}
        if "degradation" in fields:
            return {row["path"]: 1.0 - float(row["degradation"]) for row in reader}
    raise DataError(f"quality file {path} needs a 'score' column (found {fields})")


@SOURCES.register("folder")
class ImageFolderSource(FaceSource):
    """CASIA-WebFace's layout, ``root/<identity>/<image>.jpg``; the synthetic set is written the same way.

    A ``manifest.csv`` beside the folders with a ``degradation`` column (as the synthetic generator writes)
    gives each image's true quality.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(
                f"data root {self.root} does not exist: expected an image folder root/<identity>/<image>.jpg"
            )
        self.keys, self.identities, others = [], [], []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for name in sorted(os.listdir(folder)):
                if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                    self.keys.append(f"{folder.name}/{name}")
                    self.identities.append(folder.name)
                elif not name.startswith("."):
                    others.append(name)
        if not self.keys:
            loose = [p.name for p in self.root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            found = (f"found {suffix_counts(others)} in its identity folders" if others else
                     f"found {len(loose)} images directly in it, none in identity folders" if loose else
                     "found no files in identity folders")
            raise DataError(f"no images found under {self.root}: expected root/<identity>/<image> with a suffix "
                            f"among {' '.join(IMAGE_SUFFIXES)}; {found}")
        known = {}
        manifest = self.root / "manifest.csv"
        if manifest.is_file():
            known = read_quality_csv(manifest)
        self.qualities = [known.get(k, math.nan) for k in self.keys]

    def read_bytes(self, i: int) -> bytes:
        return read_file(self.root, self.keys[i])

"""Face-verification pair sets: insightface ``.bin`` files, LFW ``pairs.txt``, plain pair lists.

A ``PairSet`` lists each image once (``keys``) and the pairs as indices into that list, so the evaluation
embeds every image once (plus its flip) however many pairs name it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unlearnkit.data.sources import IMAGE_SUFFIXES, decode_image, to_rgb
from unlearnkit.errors import DataError
from unlearnkit.utils.io import write_text
from unlearnkit.utils.safe_pickle import restricted_loads


@dataclass
class PairSet:
    """Pairs ``(i, j)`` of images with a same-person flag; ``images`` is a list of PIL images or a loader ``k -> image``.

    ``folds`` (optional) gives each pair its fold of the source protocol; ``skipped`` counts pairs dropped
    because an image was missing.
    """

    images: Sequence[Image.Image] | Callable[[int], Image.Image]
    pairs: list[tuple[int, int]]
    issame: list[bool]
    name: str = "pairs"
    keys: list[str] | None = None
    folds: list[int] | None = None
    skipped: int = 0

    def __post_init__(self) -> None:
        if self.keys is None:
            if callable(self.images):
                raise ValueError("a PairSet with an image loader needs its image keys")
            self.keys = [f"{self.name}#{k}" for k in range(len(self.images))]
        if len(self.pairs) != len(self.issame):
            raise DataError(
                f"pair set {self.name}: {len(self.pairs)} pairs but {len(self.issame)} same/different flags"
            )
        if self.folds is not None and len(self.folds) != len(self.pairs):
            raise DataError(
                f"pair set {self.name}: {len(self.pairs)} pairs but {len(self.folds)} fold numbers"
            )
        n = len(self.keys)
        if any(not (0 <= i < n and 0 <= j < n) for i, j in self.pairs):
            raise DataError(f"pair set {self.name}: a pair names an image index outside 0..{n - 1}")

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_images(self) -> int:
        return len(self.keys)

    def load(self, k: int) -> Image.Image:
        """Image ``k`` (an index into ``keys``) as RGB."""
        image = self.images(k) if callable(self.images) else self.images[k]
        return to_rgb(image)  # decoded images are RGB already; in-memory ones may not be




class EncodedImages:
    """Decodes the encoded images of a ``.bin`` on demand (a class, not a closure, so workers can pickle it)."""

    def __init__(self, bins: list[bytes], what: str, image_size: int | tuple[int, int] | None = None) -> None:
        self.bins = bins
        self.what = what
        # insightface writes image_size as (height, width); PIL wants (width, height)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.size = None if image_size is None else (image_size[1], image_size[0])

    def __call__(self, k: int) -> Image.Image:
        image = decode_image(self.bins[k], f"{self.what} image {k}")
        if self.size is not None and image.size != self.size:
            image = image.resize(self.size, Image.BILINEAR)
        return image


class FileImages:
    """Loads ``root/<key>`` on demand."""

    def __init__(self, root: str | Path, keys: list[str]) -> None:
        self.root = Path(root)
        self.keys = keys

    def __call__(self, k: int) -> Image.Image:
        path = self.root / self.keys[k]
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise DataError(f"image {path} is missing: it existed when the pair list was read") from err
        return decode_image(data, str(path))


def load_bin(path: str | Path, image_size: int | tuple[int, int] | None = None) -> PairSet:
    """insightface's ``lfw.bin`` / ``agedb_30.bin`` / ``cfp_fp.bin``: a pickle of ``(bins, issame_list)``.

    Image ``2k`` and ``2k + 1`` form pair ``k``. Both flavours insightface writes are read: images as encoded
    bytes (the published files, Python 2 or 3) and as the 1-D ``uint8`` arrays of ``cv2.imencode``
    (``build_eval_pack.py``). The pickle is read allowing no globals but the few numpy names that rebuild such
    an array (``restricted_loads(uint8_arrays=True)``), so a tampered file is refused instead of running code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"verification file {path} does not exist: give an insightface .bin (e.g. lfw.bin)")
    content = restricted_loads(path.read_bytes(), what=str(path), uint8_arrays=True)
    if not (isinstance(content, (tuple, list)) and len(content) == 2 and isinstance(content[0], (tuple, list))
            and isinstance(content[1], (tuple, list))):
        raise DataError(f"{path} is not an insightface .bin: expected a pickled (bins, issame_list)")
    bins, issame = list(content[0]), content[1]
    for k, image in enumerate(bins):
        if isinstance(image, np.ndarray) and image.ndim == 1 and image.dtype == np.uint8:
            bins[k] = image.tobytes()
        elif not isinstance(image, (bytes, bytearray)):
            raise DataError(f"{path}: image {k} is a {type(image).__name__}, not encoded bytes or a 1-D uint8 array "
                            "of a JPEG/PNG, as insightface writes them")
    if len(bins) != 2 * len(issame):
        raise DataError(
            f"{path} holds {len(bins)} images for {len(issame)} pairs; expected two images per pair"
        )
    pairs = [(2 * k, 2 * k + 1) for k in range(len(issame))]
    return PairSet(
        images=EncodedImages(bins, str(path), image_size),
        pairs=pairs,
        issame=[bool(s) for s in issame],
        name=path.stem,
        keys=[f"{path.name}#{k}" for k in range(len(bins))],
    )


class _PairCollector:
    """Builds a PairSet from image keys, listing each image once and checking that it exists."""

    def __init__(self, source: Path, root: Path, skip_missing: bool) -> None:
        self.source, self.root, self.skip_missing = source, root, skip_missing
        self.index: dict[str, int] = {}
        self.exists: dict[str, bool] = {}
        self.pairs, self.issame, self.folds = [], [], []
        self.skipped = 0

    def add(self, key1: str, key2: str, same: bool, fold: int, line: int) -> None:
        for key in (key1, key2):
            if key not in self.exists:
                self.exists[key] = (self.root / key).is_file()
            if not self.exists[key]:
                if self.skip_missing:
                    self.skipped += 1
                    return
                raise DataError(
                    f"{self.source} line {line} names {self.root / key}, which does not exist: "
                    "check the image root, or pass skip_missing=True to drop such pairs"
                )
        ids = [self.index.setdefault(key, len(self.index)) for key in (key1, key2)]
        self.pairs.append((ids[0], ids[1]))
        self.issame.append(same)
        self.folds.append(fold)

    def build(self, name: str, with_folds: bool) -> PairSet:
        keys = list(self.index)
        if not self.pairs:
            raise DataError(f"{self.source}: no pair could be resolved under {self.root}")
        return PairSet(
            images=FileImages(self.root, keys),
            pairs=self.pairs,
            issame=self.issame,
            name=name,
            keys=keys,
            folds=self.folds if with_folds else None,
            skipped=self.skipped,
        )


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def load_lfw_pairs(
    pairs_txt: str | Path, image_root: str | Path, ext: str = "jpg", skip_missing: bool = False
) -> PairSet:
    """LFW's ``pairs.txt`` (or ``pairsDevTest.txt``), resolving ``<root>/<Name>/<Name>_<iiii>.<ext>``.

    Reads both the official form (header ``10\\t300``, then per fold 300 same-person lines ``name i j`` and
    300 different-person lines ``name1 i name2 j``) and a plain list without the header. A pair naming a
    missing image raises ``DataError``, or is dropped and counted in ``skipped`` with ``skip_missing``.
    """
    pairs_txt, root = Path(pairs_txt).expanduser(), Path(image_root).expanduser()
    if not pairs_txt.is_file():
        raise DataError(
            f"LFW pairs file {pairs_txt} does not exist: expected LFW's pairs.txt, its images at "
            f"{root}/<Name>/<Name>_<iiii>.{ext}"
        )
    lines = [
        (n, line.split()) for n, line in enumerate(pairs_txt.read_text().splitlines(), 1) if line.strip()
    ]
    per_fold = None
    if lines and len(lines[0][1]) <= 2 and all(_is_int(f) for f in lines[0][1]):
        header = [int(f) for f in lines[0][1]]
        folds, per_fold = (header[0], header[1]) if len(header) == 2 else (1, header[0])
        lines = lines[1:]
        if len(lines) != 2 * folds * per_fold:
            raise DataError(
                f"{pairs_txt}: the header promises {folds} folds of 2 x {per_fold} pairs "
                f"({2 * folds * per_fold} lines) but {len(lines)} pair lines follow; the file is incomplete"
            )

    def key(name: str, number: str) -> str:
        return f"{name}/{name}_{int(number):04d}.{ext}"

    collector = _PairCollector(pairs_txt, root, skip_missing)
    for position, (number, fields) in enumerate(lines):
        fold = position // (2 * per_fold) if per_fold else 0
        if len(fields) == 3 and _is_int(fields[1]) and _is_int(fields[2]):
            collector.add(key(fields[0], fields[1]), key(fields[0], fields[2]), True, fold, number)
        elif len(fields) == 4 and _is_int(fields[1]) and _is_int(fields[3]):
            collector.add(key(fields[0], fields[1]), key(fields[2], fields[3]), False, fold, number)
        else:
            raise DataError(
                f"{pairs_txt} line {number} is neither 'name i j' nor 'name1 i name2 j': {' '.join(fields)!r}"
            )
    return collector.build(pairs_txt.stem, with_folds=per_fold is not None)


_TRUE, _FALSE = {"1", "true", "yes", "same"}, {"0", "false", "no", "different", "diff"}


def load_pairs_file(path: str | Path, image_root: str | Path, skip_missing: bool = False) -> PairSet:
    """A generic pair list, one pair per line: ``path1 path2 issame [fold]`` (tab- or space-separated).

    Paths are relative to ``image_root``; ``issame`` is 1/0 or true/false; lines starting with ``#`` are
    comments. ``write_pairs`` writes this format.
    """
    path, root = Path(path).expanduser(), Path(image_root).expanduser()
    if not path.is_file():
        raise DataError(
            f"pair list {path} does not exist: expected lines 'path1 path2 issame [fold]', paths under {root}"
        )
    collector = _PairCollector(path, root, skip_missing)
    has_folds = True
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rstrip("\n").split("\t") if "\t" in line else line.split()
        flag = fields[2].strip().lower() if len(fields) in (3, 4) else ""
        if flag not in _TRUE | _FALSE or (len(fields) == 4 and not _is_int(fields[3].strip())):
            raise DataError(f"{path} line {number} is not 'path1 path2 issame [fold]': {line.strip()!r}")
        has_folds = has_folds and len(fields) == 4
        fold = int(fields[3]) if len(fields) == 4 else 0
        collector.add(fields[0].strip(), fields[1].strip(), flag in _TRUE, fold, number)
    return collector.build(path.stem, with_folds=has_folds)


def write_pairs(pairset: PairSet, path: str | Path) -> None:
    """Write the pair list a run used, in the format ``load_pairs_file`` reads back."""
    lines = [f"# pair set {pairset.name}: path1<TAB>path2<TAB>issame<TAB>fold ({len(pairset)} pairs)"]
    for n, (i, j) in enumerate(pairset.pairs):
        fold = pairset.folds[n] if pairset.folds is not None else 0
        lines.append(f"{pairset.keys[i]}\t{pairset.keys[j]}\t{int(pairset.issame[n])}\t{fold}")
    write_text(path, "\n".join(lines) + "\n")


def covered_pairs_lfw_subset(root: str | Path, seed: int, n_negative: int | None = None) -> PairSet:
    """The LFW subset's verification set: its 261 official same-person pairs and seeded different-person pairs.

    None of the official different-person pairs resolves in the subset, so negatives pair two images of two
    different identities of the subset, drawn with ``seed`` (as many as positives by default). Each negative
    gets a fold in proportion to the positives' folds, and pairs are ordered fold by fold (positives, then
    negatives), as in ``pairs.txt``, so contiguous 10-fold splits see both kinds.
    """
    root = Path(root).expanduser()
    covered = root / "pairs_same_covered.txt"
    if not covered.is_file():
        raise DataError(
            f"{covered} does not exist: expected the LFW subset of shared/data/lfw_subset "
            f"(<Name>/<Name>_<iiii>.jpg folders and pairs_same_covered.txt) in {root}"
        )
    images = {
        folder.name: sorted(f.name for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for folder in sorted(root.iterdir())
        if folder.is_dir()
    }
    images = {name: files for name, files in images.items() if files}
    if len(images) < 2:
        raise DataError(f"{root} needs at least two identity folders to draw different-person pairs")

    positives = []
    for number, line in enumerate(covered.read_text().splitlines(), 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) != 4 or not all(_is_int(f) for f in (fields[0], fields[2], fields[3])):
            raise DataError(f"{covered} line {number} is not 'fold<TAB>name<TAB>i<TAB>j': {line.strip()!r}")
        fold, name, i, j = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
        positives.append((fold, f"{name}/{name}_{i:04d}.jpg", f"{name}/{name}_{j:04d}.jpg", number))

    count = len(positives) if n_negative is None else n_negative
    sizes = [len(files) for files in images.values()]
    possible = (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
    if count > possible:
        raise DataError(f"{root} allows only {possible} different-person pairs; {count} were asked for")
    rng = random.Random(seed)
    names = sorted(images)
    seen, negatives = set(), []
    while len(negatives) < count:
        first, second = rng.sample(names, 2)
        pair = (f"{first}/{rng.choice(images[first])}", f"{second}/{rng.choice(images[second])}")
        if pair not in seen and pair[::-1] not in seen:
            seen.add(pair)
            negatives.append(pair)
    positive_folds = sorted(fold for fold, _, _, _ in positives)
    negative_folds = [positive_folds[k * len(positives) // count] if positives else 0 for k in range(count)]

    collector = _PairCollector(covered, root, skip_missing=False)
    for fold in sorted(set(positive_folds) | set(negative_folds)):
        for f, key1, key2, number in positives:
            if f == fold:
                collector.add(key1, key2, True, fold, number)
        for f, (key1, key2) in zip(negative_folds, negatives):
            if f == fold:
                collector.add(key1, key2, False, fold, line=0)
    return collector.build(f"lfw_subset_covered_seed{seed}", with_folds=True)

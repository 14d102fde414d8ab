"""Forget / retain / held-out splits by SPEC §1's three protocols, and their manifests.

Every training image is in exactly one part: ``forget`` (D_f), ``retain`` (D_r) or ``heldout`` (images kept
out of training, used for evaluation and as non-members). Held-out images are chosen per identity first, so
every protocol evaluates on the same unseen images; the forget set is then drawn from the training images.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unlearnkit.errors import DataError
from unlearnkit.protocols import PARTS, PROTOCOLS
from unlearnkit.utils.io import atomic_open

MANIFEST_FIELDS = ("path", "identity", "split", "quality")


@dataclass
class Split:
    """Which part each sample of a source is in, and its quality score (NaN where none was computed)."""

    keys: list[str]
    identities: list[str]
    parts: np.ndarray  # str array, one of PARTS per sample
    quality: np.ndarray  # float array
    protocol: str

    def indices(self, part: str) -> np.ndarray:
        if part == "train":
            return np.flatnonzero(self.parts != "heldout")
        return np.flatnonzero(self.parts == part)

    @property
    def unseen_identities(self) -> list[str]:
        """People with no training image at all (every image held out): verification on unseen people."""
        trained = {self.identities[i] for i in self.indices("train")}
        return sorted(set(self.identities) - trained)

    @property
    def forget_identities(self) -> list[str]:
        """Identities with at least one forget image (for ``identity``: exactly the forgotten people)."""
        return sorted({self.identities[i] for i in self.indices("forget")})

    def counts(self) -> dict[str, int]:
        return {part: int((self.parts == part).sum()) for part in PARTS}

    def write_manifest(self, path: str | Path) -> Path:
        """One line per image: path, identity, split, quality; written atomically."""
        path = Path(path)
        with atomic_open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_FIELDS)
            for key, ident, part, q in zip(self.keys, self.identities, self.parts, self.quality):
                writer.writerow([key, ident, part, "" if math.isnan(q) else f"{q:.6f}"])
        return path


def read_manifest(path: str | Path, keys: list[str], identities: list[str], protocol: str) -> Split:
    """Load a split written by ``Split.write_manifest`` and check it matches the data set's images."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split manifest {path} does not exist: give the manifest.csv of an earlier run")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise DataError(f"split manifest {path} has columns {reader.fieldnames}, expected {MANIFEST_FIELDS}")
        rows = {row["path"]: row for row in reader}
    missing = [k for k in keys if k not in rows]
    if missing:
        raise DataError(
            f"split manifest {path} does not list {len(missing)} image(s) of the data set (e.g. {missing[0]}):"
            " it was written for another data set"
        )
    parts = np.array([rows[k]["split"] for k in keys])
    bad = set(parts) - set(PARTS)
    if bad:
        raise DataError(f"split manifest {path} has unknown split values {sorted(bad)}; allowed: {PARTS}")
    quality = np.array([float(rows[k]["quality"]) if rows[k]["quality"] else math.nan for k in keys])
    return Split(list(keys), list(identities), parts, quality, protocol)


def _count(value: float, total: int, what: str) -> int:
    """``value`` is a count (≥ 1, integral) or a fraction in (0, 1)."""
    if value <= 0:
        raise DataError(f"forget size {value} for {what} must be positive: give a count or a fraction in (0, 1)")
    n = int(round(value * total)) if value < 1 else int(value)
    return max(n, 1)


def make_split(
    keys: list[str],
    identities: list[str],
    protocol: str = "identity",
    forget: float = 0.1,
    forget_identities: list[str] | None = None,
    heldout_per_identity: int = 2,
    quality: np.ndarray | None = None,
    seed: int = 0,
    forget_seed: int | None = None,
    unseen: float = 0,
) -> Split:
    """Deterministic split for ``seed``.

    ``unseen`` people (a count ≥ 1 or a fraction < 1 of the identities; 0 = none) are kept out of training
    entirely: all their images are held out, so verification on people the model never saw is measurable.
    They are drawn first, with a generator of their own (the same people for every protocol and forget seed).
    ``forget`` is the number (≥ 1) or fraction (< 1) of identities (``identity``) or of training images
    (``sample``, ``quality``). ``forget_identities`` names the people to forget instead (identity protocol).
    ``forget_seed`` draws another forget set with the same held-out images (for tuning on a validation split).
    ``quality`` (higher = better) is needed for the ``quality`` protocol: the lowest-scored images are forgotten.
    Its forget set is no draw, so there ``forget_seed`` j forgets the j-th band of k images up the quality order
    instead (ranks j·k … (j+1)·k − 1): the validation split never forgets the evaluation split's images.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown forget protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    rng = np.random.default_rng(seed)
    ids = np.asarray(identities)
    n = len(keys)
    parts = np.full(n, "retain", dtype=object)
    by_identity: dict[str, list[int]] = {}
    for i, ident in enumerate(identities):
        by_identity.setdefault(ident, []).append(i)
    names = sorted(by_identity)
    unseen_ids: set[str] = set()
    if unseen:
        k_unseen = _count(unseen, len(names), "unseen identities")
        if k_unseen >= len(names) - 1:
            raise DataError(f"unseen={unseen} keeps {k_unseen} of {len(names)} identities out of training: "
                            "leave at least two to train on (forget one, retain one)")
        unseen_ids = set(np.random.default_rng([seed, 11]).choice(names, size=k_unseen, replace=False).tolist())
    for name in names:
        members = by_identity[name]
        if name in unseen_ids:
            parts[members] = "heldout"
            continue
        if heldout_per_identity and len(members) > heldout_per_identity:
            chosen = rng.choice(members, size=heldout_per_identity, replace=False)
            parts[chosen] = "heldout"

    if forget_seed is not None:  # another forget set over the same held-out images (validation splits)
        rng = np.random.default_rng([seed, forget_seed])
    if protocol == "identity":
        if forget_identities is not None:
            unknown = sorted(set(forget_identities) - set(names))
            if unknown:
                raise DataError(
                    f"forget list names {len(unknown)} identities not in the data set (e.g. {unknown[0]!r}):"
                    " check the names against the identity folders"
                )
            chosen_ids = sorted(set(forget_identities))
            kept_out = sorted(set(chosen_ids) & unseen_ids)
            if kept_out:
                raise DataError(f"forget list names {kept_out[0]!r}, drawn as an unseen person (never trained on):"
                                " lower data.unseen_identities or change data.seed")
            few = [name for name in chosen_ids if len(by_identity[name]) <= heldout_per_identity]
            if few:
                raise DataError(
                    f"forget list names {few[0]!r}, which has {len(by_identity[few[0]])} image(s): "
                    f"heldout_per_identity={heldout_per_identity} needs at least {heldout_per_identity + 1} "
                    "(held-out images to evaluate on, one to forget): pick another identity or lower it"
                )
        else:
            # a forgotten person needs held-out images for the evaluation: draw among those who have enough
            eligible = [name for name in names
                        if len(by_identity[name]) > heldout_per_identity and name not in unseen_ids]
            k = _count(forget, len(names), "identities")
            if k > len(eligible):
                raise DataError(
                    f"cannot forget {k} identities: only {len(eligible)} have more than "
                    f"heldout_per_identity={heldout_per_identity} images; forget fewer or lower heldout_per_identity"
                )
            chosen_ids = sorted(rng.choice(eligible, size=k, replace=False).tolist())
        if not chosen_ids:
            raise DataError("the forget set is empty: name at least one identity to forget")
        if len(chosen_ids) >= len(names):
            raise DataError("the forget set holds every identity: leave at least one identity to retain")
        mask = np.isin(ids, chosen_ids) & (parts == "retain")
        parts[mask] = "forget"
    else:
        train = np.flatnonzero(parts == "retain")
        k = _count(forget, len(train), "training images")
        if k >= len(train):
            raise DataError(f"the forget set ({k} images) is the whole training set: forget a smaller fraction")
        if protocol == "sample":
            chosen = rng.choice(train, size=k, replace=False)
        else:
            if quality is None or np.isnan(np.asarray(quality)[train]).any():
                raise DataError("the quality protocol needs a quality score for every training image")
            band = forget_seed or 0
            if (band + 1) * k >= len(train):
                raise DataError(f"forget_seed={band} asks for quality band {band} of {k} images, beyond the "
                                f"{len(train)} training images: use a smaller forget_seed or forget fraction")
            order = np.argsort(np.asarray(quality)[train], kind="stable")
            chosen = train[order[band * k:(band + 1) * k]]
        parts[chosen] = "forget"
    q = np.full(n, math.nan) if quality is None else np.asarray(quality, dtype=float)
    return Split(list(keys), list(identities), parts.astype(str), q, protocol)

"""The LightningDataModule: a face source, its forget/retain/held-out split, and every loader a run needs.

Training loaders follow the LightningModule's batch recipe (``module.batch_recipe()``, the model → data contract
of ``unlearnkit/batch_recipe.py``): a step gets a dict of batches keyed by part, the first part fixing the epoch
length and the others drawn to match it.
Evaluation: one retrieval set (forget / retain, train / held-out images, each tagged with its group) and one
loader per verification pair set. Every batch carries ``index``, the sample's position in the source.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.data import verification
from unlearnkit.data.formats import open_source
from unlearnkit.data.robust import BadImages, ResumableLoader, ResumableSampler
from unlearnkit.data.samplers import PKSampler, ShuffleSampler, shard_contiguous
from unlearnkit.data.sources import FaceSource, read_quality_csv
from unlearnkit.data.splits import Split, make_split, read_manifest
from unlearnkit.data.transforms import FaceTransform
from unlearnkit.data.verification import PairSet
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.protocols import GROUP_ID, PARTS, forgets_people


class FaceDataset(Dataset):
    """Samples ``indices`` of a source as batches ``{image, label, index[, group]}``.

    The DataLoader hands ``__getitems__`` a whole batch of positions, which decodes every image straight into
    one preallocated batch tensor (``FaceTransform.batch``); loaders pass the batch on as is (``as_batch``).
    """

    def __init__(self, source: FaceSource, indices, labels: np.ndarray, transform: FaceTransform,
                 groups=None, random_flip: bool = False, bad_images: BadImages | None = None) -> None:
        self.source, self.indices, self.labels = source, np.asarray(indices), labels
        self.transform, self.groups, self.random_flip = transform, groups, random_flip
        self.bad_images = bad_images

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, items: list[int | tuple[int, bool]]) -> dict:
        positions, flips = [], []
        for item in items:
            if isinstance(item, tuple):  # (i, flip) from a ResumableSampler: the flip is decided there
                positions.append(item[0])
                flips.append(self.random_flip and item[1])
            else:
                positions.append(item)
                flips.append(self.random_flip and bool(torch.rand(()) < 0.5))
        index = self.indices[positions]
        load = functools.partial(self.bad_images.load, self.source) if self.bad_images else self.source.load
        batch = {
            "image": self.transform.batch([load(int(i)) for i in index], flips),
            "label": torch.as_tensor(self.labels[index], dtype=torch.int64),
            "index": torch.as_tensor(index, dtype=torch.int64),
        }
        if self.groups is not None:
            batch["group"] = torch.as_tensor(self.groups[positions], dtype=torch.int64)
        return batch

    def __getitem__(self, i: int | tuple[int, bool]) -> dict:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}


class PairImages(Dataset):
    """The unique images of a pair set (positions ``indices``), as batches ``{image, index}``."""

    def __init__(self, pair_set: PairSet, transform: FaceTransform, indices) -> None:
        self.pair_set, self.transform, self.indices = pair_set, transform, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions: list[int]) -> dict:
        index = self.indices[positions]
        return {"image": self.transform.batch([self.pair_set.load(int(k)) for k in index]),
                "index": torch.as_tensor(index, dtype=torch.int64)}

    def __getitem__(self, i: int) -> dict:
        return {key: value[0] for key, value in self.__getitems__([i]).items()}


def as_batch(batch: dict) -> dict:
    """The collate function of loaders over ``FaceDataset`` / ``PairImages``: their batches come whole."""
    return batch


def face_loader(dataset: Dataset, sampler, batch_size: int, num_workers: int = 0,
                resumable: bool = False) -> DataLoader:
    """A loader over ``FaceDataset`` / ``PairImages`` as every run builds it (the benchmark too); batches are
    pinned where a GPU exists, so their copy to it can overlap compute."""
    loader = ResumableLoader if resumable else DataLoader  # training: resumes mid-epoch from a checkpoint
    return loader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=as_batch,
                  num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())


class SourceImages:
    """Images ``indices`` of a source as a picklable ``k -> image`` loader for a ``PairSet``."""

    def __init__(self, source: FaceSource, indices) -> None:
        self.source, self.indices = source, np.asarray(indices)

    def __call__(self, k: int):
        return self.source.load(int(self.indices[k]))


PAIR_FORMATS = ("bin", "lfw", "list", "lfw_subset", "heldout")
HELDOUT_PAIR_PEOPLE = ("all", "trained", "unseen")  # whose held-out images ``heldout`` pairs are drawn from


def load_pair_set(name: str, format: str, path: str, image_root: str | None = None, seed: int = 0,
                  skip_missing: bool = False) -> PairSet:
    """A verification set from a config entry ``{name, format, path, image_root}``.

    Formats: insightface ``bin``; ``lfw`` (pairs.txt over an image folder); ``list`` (``path1 path2 issame``);
    ``lfw_subset`` (the covered same-person pairs of a subset plus seeded different-person pairs; ``path`` is
    the subset's root).
    """
    if format == "bin":
        pairs = verification.load_bin(path)
    elif format == "lfw":
        pairs = verification.load_lfw_pairs(path, image_root or Path(path).parent, skip_missing=skip_missing)
    elif format == "list":
        pairs = verification.load_pairs_file(path, image_root or Path(path).parent, skip_missing=skip_missing)
    elif format == "lfw_subset":
        pairs = verification.covered_pairs_lfw_subset(path, seed=seed)
    else:
        raise ConfigError(f"unknown pair-set format {format!r}: choose one of {', '.join(PAIR_FORMATS)}")
    pairs.name = name
    return pairs


class _IndexedSampler(torch.utils.data.Sampler[int]):
    """Yields positions 0..n-1 of a dataset whose ``indices`` are already this rank's shard."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class FaceDataModule(L.LightningDataModule):
    """Forget/retain splits of a face data set on disk.

    Args:
        root: the data set's root folder.
        format: on-disk format: ``folder`` (CASIA-WebFace layout), ``recordio``, ``vggface2``, ``celeba``.
        protocol: forget protocol of SPEC §1: ``identity``, ``sample`` or ``quality``.
        forget: identities (identity protocol) or training images (others) to forget: a count ≥ 1 or a fraction.
        forget_list: a text file of identity names (one per line) to forget instead of a seeded draw.
        heldout_per_identity: images per identity kept out of training for evaluation.
        split_manifest: a ``split.csv`` of an earlier run to reuse its exact split.
        quality: the quality score for the ``quality`` protocol: ``stability`` (embedding stability under
            augmentation), ``serfiq`` (dropout passes), ``known`` (the set's own per-image quality, e.g.
            synthetic degradation) or a CSV path with columns ``path,score``.
        quality_model: the model that computes ``stability`` / ``serfiq``: ``{checkpoint: <θ0's file>}``, with
            ``backbone``, ``embedding_size``, ``image_size`` for a file that records no architecture; ``unlearnkit
            fit`` links it to the unlearning method's ``original``.
        image_size: side of the square network input.
        crop: centre-crop fraction before resizing (1.0 = none).
        batch_size: training batch size per device (P×K batches use ``pk_identities × pk_images``).
        pk_identities, pk_images: P and K of identity-balanced batches.
        eval_per_group: at most this many images in each evaluation group (seeded subset).
        pairs: verification sets: a list of ``{name, format: bin|lfw|lfw_subset|list, path, image_root}``, or
            ``{name, format: heldout, num_pairs, people}`` for seeded pairs among the set's own held-out images
            (``people``: ``all``, ``trained`` people's or ``unseen`` people's; see ``unseen_identities``).
        num_workers: DataLoader workers.
        source_options: format options, e.g. ``{partition: train}`` (CelebA), ``{split: test}`` (VGGFace2),
            ``{rec: train.rec, idx: train.idx}`` (RecordIO).
        pixel_mean, pixel_std: input normalisation (x/255 − mean)/std; insightface's is 0.5, 0.5.
        on_bad_image: an unreadable image ``stop``s the run (an error naming it) or is ``skip``ped: replaced by
            another image of the same person in the same part, and counted as ``data/bad_images``.
        seed: the split's and samplers' seed.
        forget_seed: draw another forget set over the same held-out images (a validation split for tuning); in
            the quality protocol, the next band of low-quality images (``splits.make_split``).
        unseen_identities: people (a count or a fraction) kept out of training entirely: their images are only
            evaluated, so ``heldout`` pairs among them give ``verify/<set>/unseen/…``. They are not retrieval
            queries (those are the forgotten and retained people).
    """

    def __init__(
        self,
        root: str = "data/synthetic",
        format: str = "folder",
        protocol: str = "identity",
        forget: float = 0.1,
        forget_list: str | None = None,
        heldout_per_identity: int = 2,
        split_manifest: str | None = None,
        quality: str = "stability",
        image_size: int = 48,
        crop: float = 1.0,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        pk_identities: int = 16,
        pk_images: int = 4,
        eval_per_group: int = 2000,
        pairs: list[dict] | None = None,
        num_workers: int = 0,
        on_bad_image: str = "stop",
        source_options: dict | None = None,
        pixel_mean: float = 0.5,
        pixel_std: float = 0.5,
        seed: int = 0,
        forget_seed: int | None = None,
        unseen_identities: float = 0,
        quality_model: dict | None = None,
    ) -> None:
        super().__init__()
        actual = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if batch_size <= 0 or eval_batch_size <= 0:
            raise ConfigError(f"batch sizes must be positive, got {batch_size} and {eval_batch_size}")
        if pk_identities < 1 or pk_images < 2:
            raise ConfigError("P×K batches need pk_identities ≥ 1 and pk_images ≥ 2")
        if heldout_per_identity < 0:
            raise ConfigError(f"heldout_per_identity must be ≥ 0, got {heldout_per_identity}")
        if on_bad_image not in ("stop", "skip"):
            raise ConfigError(f"on_bad_image must be 'stop' or 'skip', got {on_bad_image!r}")
        self.save_hyperparameters()
        self.hparams.update(actual)  # under LightningCLI, subclasses' fixed arguments are not in the config
        self.transform = FaceTransform(image_size, crop=crop, mean=pixel_mean, std=pixel_std)
        self.source: FaceSource | None = None
        self.split: Split | None = None
        self.pair_sets: list = []
        self.bad_images: BadImages | None = None
        self._train_loaders: dict = {}  # the current training loaders, by part
        self._resume_loaders: dict = {}  # their positions from a checkpoint, applied when they are built

    # ----------------------------------------------------------------- set-up
    def prepare_source(self) -> FaceSource:
        """Open the data set (subclasses may create it first)."""
        return open_source(self.hparams.format, self.hparams.root, **(self.hparams.source_options or {}))

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        self.source = self.prepare_source()
        names = self.source.identity_names
        self.class_of = {name: i for i, name in enumerate(names)}
        self.labels = np.array([self.class_of[n] for n in self.source.identities], dtype=np.int64)
        self.split = self._make_split()
        if self.hparams.on_bad_image == "skip":  # a replacement shares the person and the part
            part_code = np.searchsorted(np.array(sorted(PARTS)), self.split.parts)
            self.bad_images = BadImages(self.labels * len(PARTS) + part_code)
        self.pair_sets = [self._load_pairs(spec) for spec in (self.hparams.pairs or [])]
        run_dir = self._run_dir()
        if run_dir is not None and self._is_global_zero():
            self.split.write_manifest(run_dir / "split.csv")
            for pair_set in self.pair_sets:  # the exact pairs evaluated, e.g. the seeded negatives
                verification.write_pairs(pair_set, run_dir / f"pairs-{pair_set.name}.txt")

    @property
    def num_classes(self) -> int:
        if self.source is None:
            self.setup()
        return len(self.class_of)

    def _make_split(self) -> Split:
        hp, src = self.hparams, self.source
        if hp.split_manifest:
            return read_manifest(hp.split_manifest, src.keys, src.identities, hp.protocol)
        forget_ids = None
        if hp.forget_list:
            path = Path(hp.forget_list)
            if not path.is_file():
                raise DataError(f"forget list {path} does not exist: give a text file with one identity per line")
            forget_ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not forget_ids:
                raise DataError(f"forget list {path} is empty: name at least one identity to forget")
        quality = self._quality() if hp.protocol == "quality" else np.asarray(src.qualities, dtype=float)
        return make_split(src.keys, src.identities, hp.protocol, hp.forget, forget_ids,
                          hp.heldout_per_identity, quality, hp.seed, hp.forget_seed,
                          hp.get("unseen_identities", 0))

    def _quality(self) -> np.ndarray:
        """Per-image quality (higher = better) for the quality protocol."""
        kind, src = self.hparams.quality, self.source
        if kind == "known":
            q = np.asarray(src.qualities, dtype=float)
            if np.isnan(q).any():
                raise DataError("quality: known needs a per-image quality in the data set (manifest.csv)")
            return q
        if kind in ("stability", "serfiq"):
            from unlearnkit.data.quality import load_quality_model, score_source

            model = load_quality_model(self.hparams.get("quality_model"))
            return score_source(model, src, self.transform, method=kind,
                                batch_size=self.hparams.eval_batch_size, seed=self.hparams.seed)
        scores = read_quality_csv(kind)
        missing = [k for k in src.keys if k not in scores]
        if missing:
            raise DataError(f"quality file {kind} has no score for {len(missing)} image(s), e.g. {missing[0]}")
        return np.array([scores[k] for k in src.keys], dtype=float)

    def _load_pairs(self, spec: dict):
        if spec.get("format") == "heldout":
            return self._heldout_pairs(spec.get("name", "heldout"), int(spec.get("num_pairs", 300)),
                                       spec.get("people", "all"))
        return load_pair_set(seed=self.hparams.seed, **spec)

    def _heldout_pairs(self, name: str, num_pairs: int, people: str = "all") -> PairSet:
        """Seeded same/different pairs among the held-out images: benchmark pairs for sets that have none.

        ``people`` picks whose held-out images: ``all``, ``trained`` (people with training images) or ``unseen``
        (people kept out of training, ``unseen_identities``: verification on people the model never saw). The
        pairs depend on ``seed`` only, not on the forget set, so θ0 and every unlearning run share them.
        """
        if people not in HELDOUT_PAIR_PEOPLE:
            raise ConfigError(f"pair set {name!r}: people must be one of {', '.join(HELDOUT_PAIR_PEOPLE)}, got {people!r}")
        rng = np.random.default_rng([self.hparams.seed, 11])
        heldout = self.split.indices("heldout")
        if people != "all":
            unseen = set(self.split.unseen_identities)
            keep = [(self.source.identities[i] in unseen) == (people == "unseen") for i in heldout]
            heldout = heldout[np.array(keep, dtype=bool)]
        labels = self.labels[heldout]
        by_label = {y: np.flatnonzero(labels == y) for y in np.unique(labels)}
        multi = [y for y, members in by_label.items() if len(members) >= 2]
        if not multi or len(by_label) < 2:
            fix = "raise data.unseen_identities to ≥ 2" if people == "unseen" else "raise heldout_per_identity"
            raise DataError(f"pair set {name!r} needs two {'' if people == 'all' else people + ' '}identities with "
                            f"≥ 2 held-out images: {fix}")
        pairs, issame = [], []
        for k in range(num_pairs):
            if k % 2 == 0:
                i, j = rng.choice(by_label[multi[rng.integers(len(multi))]], size=2, replace=False)
            else:
                a, b = rng.choice(list(by_label), size=2, replace=False)
                i, j = rng.choice(by_label[a]), rng.choice(by_label[b])
            pairs.append((int(i), int(j)))
            issame.append(k % 2 == 0)
        keys = [self.source.keys[i] for i in heldout]
        return PairSet(SourceImages(self.source, heldout), pairs, issame, name=name, keys=keys)

    def _run_dir(self) -> Path | None:
        if self.trainer is None:
            return None
        return Path(self.trainer.default_root_dir)

    def _is_global_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    def _rank(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    # ----------------------------------------------------------------- loaders
    def part_indices(self, part: str) -> np.ndarray:
        """Source indices of ``forget``, ``retain``, ``heldout`` or ``train`` (forget ∪ retain)."""
        if part not in (*PARTS, "train"):
            raise ConfigError(f"unknown data part {part!r}")
        indices = self.split.indices(part)
        if part == "forget" and len(indices) == 0:
            raise DataError("the forget set is empty: choose a larger forget size or other identities")
        return indices

    def _loader(self, dataset: Dataset, sampler, batch_size: int, resumable: bool = False) -> DataLoader:
        return face_loader(dataset, sampler, batch_size, self.hparams.num_workers, resumable)

    def bad_image_count(self) -> int:
        """Unreadable images skipped so far (``on_bad_image: skip``), over all ranks."""
        return self.bad_images.count(self.trainer) if self.bad_images is not None else 0

    def train_loader(self, part: str, pk: bool = False, num_samples: int | None = None,
                     group_labels: np.ndarray | None = None) -> DataLoader:
        """A shuffled training loader over one part; ``pk`` gives P×K batches grouped by ``group_labels`` (a label
        per source index: a label-free method's pseudo-labels) or, by default, by identity."""
        hp = self.hparams
        rank, world = self._rank()
        indices = self.part_indices(part)
        dataset = FaceDataset(self.source, np.arange(len(self.source)), self.labels, self.transform,
                              random_flip=True, bad_images=self.bad_images)
        if pk:
            groups = self.labels if group_labels is None else np.asarray(group_labels)
            num_batches = math.ceil(num_samples / (hp.pk_identities * hp.pk_images)) if num_samples else None
            sampler = PKSampler(indices, groups[indices], hp.pk_identities, hp.pk_images,
                                num_batches, hp.seed, rank, world)
            # with fewer identities than P, a batch is every identity × K: the loader must cut there too
            batch = sampler.batch_size
            return self._loader(dataset, ResumableSampler(sampler, hp.seed), batch, resumable=True)
        sampler = ShuffleSampler(indices, num_samples, hp.seed, rank, world, batch_size=hp.batch_size)
        return self._loader(dataset, ResumableSampler(sampler, hp.seed), hp.batch_size, resumable=True)

    def train_dataloader(self):
        module = self.trainer.lightning_module
        # the model → data contract; a module that declares none trains on every training image
        recipe = module.batch_recipe() if hasattr(module, "batch_recipe") else BatchRecipe()
        parts, pk_parts, groups, min_batches = recipe.parts, recipe.pk_parts, recipe.pk_groups, recipe.min_batches
        first = parts[0]
        loaders = {first: self.train_loader(first, pk=first in pk_parts, group_labels=groups)}
        if len(loaders[first]) < min_batches:  # a small forget set: its batches are drawn again, reshuffled
            per_batch = self.hparams.pk_identities * self.hparams.pk_images if first in pk_parts else self.hparams.batch_size
            loaders[first] = self.train_loader(first, pk=first in pk_parts, group_labels=groups,
                                               num_samples=min_batches * per_batch * self._rank()[1])
        epoch_samples = len(loaders[first].sampler) * self._rank()[1]  # the same on every rank (samplers pad)
        for part in parts[1:]:
            loaders[part] = self.train_loader(part, pk=part in pk_parts, num_samples=epoch_samples,
                                              group_labels=groups)
        for part, loader in loaders.items():
            if part in self._resume_loaders:
                loader.load_state_dict(self._resume_loaders.pop(part))
        self._train_loaders = loaders
        return loaders

    def state_dict(self) -> dict:
        """Where each training loader is in its pass (saved in checkpoints: a resumed run continues there)."""
        return {"train_loaders": {part: loader.state_dict() for part, loader in self._train_loaders.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._resume_loaders = dict(state.get("train_loaders", {}))

    def eval_groups(self) -> np.ndarray:
        """Source indices and group codes of the retrieval evaluation set (seeded, capped per group)."""
        if getattr(self, "_eval", None) is not None:
            return self._eval
        rng = np.random.default_rng([self.hparams.seed, 7])
        forget_ids = set(self.split.forget_identities) if forgets_people(self.split.protocol) else set()
        unseen = set(self.split.unseen_identities)
        heldout = self.split.indices("heldout")
        if unseen:  # unseen people are verification-only: not retrieval queries
            heldout = heldout[np.array([self.source.identities[i] not in unseen for i in heldout], dtype=bool)]
        is_forget_person = np.array([self.source.identities[i] in forget_ids for i in heldout], dtype=bool)
        chosen, codes = [], []
        for name, indices in (
            ("forget_train", self.split.indices("forget")),
            ("retain_train", self.split.indices("retain")),
            ("forget_test", heldout[is_forget_person]),
            ("retain_test", heldout[~is_forget_person]),
        ):
            if len(indices) > self.hparams.eval_per_group:
                indices = np.sort(rng.choice(indices, self.hparams.eval_per_group, replace=False))
            chosen.append(indices)
            codes.append(np.full(len(indices), GROUP_ID[name]))
        self._eval = (np.concatenate(chosen), np.concatenate(codes))
        return self._eval

    def eval_loader(self, indices, groups=None, shard: bool = True) -> DataLoader:
        """A deterministic loader over source ``indices`` (this rank's contiguous shard under DDP)."""
        rank, world = self._rank() if shard else (0, 1)
        mine = shard_contiguous(np.arange(len(indices)), rank, world)
        dataset = FaceDataset(self.source, np.asarray(indices)[mine], self.labels, self.transform,
                              groups=None if groups is None else np.asarray(groups)[mine],
                              bad_images=self.bad_images)
        return self._loader(dataset, _IndexedSampler(len(dataset)), self.hparams.eval_batch_size)

    def pair_loader(self, pair_set: PairSet) -> DataLoader:
        rank, world = self._rank()
        mine = shard_contiguous(np.arange(pair_set.num_images), rank, world)
        dataset = PairImages(pair_set, self.transform, mine)
        return self._loader(dataset, _IndexedSampler(len(dataset)), self.hparams.eval_batch_size)

    def val_dataloader(self):
        indices, groups = self.eval_groups()
        return [self.eval_loader(indices, groups)] + [self.pair_loader(p) for p in self.pair_sets]

    def test_dataloader(self):
        return self.val_dataloader()

    def eval_set_names(self) -> list[str]:
        """Names of the ``val_dataloader`` entries, in order."""
        return ["retrieval"] + [p.name for p in self.pair_sets]


class SyntheticFaces(FaceDataModule):
    """The generated face set (``unlearnkit.data.synthetic``), created under ``root`` on first use.

    Args:
        num_identities, images_per_identity: size of the generated set.
        render_size: side of the generated images (defaults to ``image_size``).
        data_seed: the generator's seed (the split's is ``seed``).
    """

    def __init__(self, root: str = "data/synthetic", num_identities: int = 100, images_per_identity: int = 20,
                 render_size: int | None = None, data_seed: int = 0, **kwargs) -> None:
        super().__init__(root=root, format="folder", **kwargs)
        self.synthetic = dict(num_identities=num_identities, images_per_identity=images_per_identity,
                              image_size=render_size or self.hparams.image_size, seed=data_seed)

    def prepare_data(self) -> None:
        from unlearnkit.data.synthetic import generate_synthetic

        generate_synthetic(self.hparams.root, **self.synthetic)

    def prepare_source(self) -> FaceSource:
        if self.trainer is None:  # used outside a Trainer: nobody called prepare_data
            self.prepare_data()
        return super().prepare_source()

"""The model → data contract: what batches a training step receives.

A method declares the shape of its batches once, on its class (``batches = BatchRecipe(parts=("forget",
"retain"))``); ``module.batch_recipe()`` resolves that declaration for the run (a retain part when a retain term
is on, SCRUB's pass of the epoch, the pseudo-labels P×K batches group by, the epoch's minimum length), and the
data module builds its training loaders from the resolved recipe alone (``FaceDataModule.train_dataloader``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unlearnkit.errors import ConfigError
from unlearnkit.protocols import PARTS

# what a step may be served: a part of the split, or ``train`` (forget ∪ retain, pretraining)
TRAIN_PARTS = (*PARTS, "train")


@dataclass(frozen=True)
class BatchRecipe:
    """What each training step receives, as ``{part: batch}``.

    Args:
        parts: the data parts of every step; the first fixes the epoch length, the others are drawn to match it.
        pk_parts: parts served as P×K batches (P identities × K images: ``data.pk_identities`` × ``data.pk_images``).
        one_part_per_step: each step uses one of its parts (SCRUB's max- and min-steps): a benchmark that keeps the
            images per step equal gives that part the whole batch instead of a share.
        pk_groups: what P×K batches group by, a label per source index (a label-free variant's pseudo-labels,
            never identities); ``None``: the identities. Set when resolved, not declared.
        min_batches: batches the first part's epoch takes at least (a small part is drawn again, reshuffled);
            set when resolved (``min_steps``), not declared.
    """

    parts: tuple[str, ...] = ("train",)
    pk_parts: tuple[str, ...] = ()
    one_part_per_step: bool = False
    pk_groups: np.ndarray | None = field(default=None, compare=False, repr=False)
    min_batches: int = 0

    def __post_init__(self) -> None:
        for name in ("parts", "pk_parts"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(part in TRAIN_PARTS for part in value):
                raise ConfigError(f"BatchRecipe {name} must be a tuple of {', '.join(TRAIN_PARTS)}; got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not self.parts:
            raise ConfigError("BatchRecipe parts is empty: name the data part(s) each step receives, e.g. ('forget',)")
        if self.min_batches < 0:
            raise ConfigError(f"BatchRecipe min_batches must be ≥ 0, got {self.min_batches}")

"""Pretraining and the retrain oracle: ``FaceModule``'s margin loss, on D (θ0) or on D_r alone (the oracle).

Both lived in ``methods/base.py`` before; ``base.py`` still names them, so configs and checkpoints that say
``class_path: unlearnkit.methods.base.Pretrain`` resolve.
"""

from __future__ import annotations

from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.methods.face_module import FaceModule


class Pretrain(FaceModule):
    """Margin loss on D = D_f ∪ D_r: produces the original model θ0."""

    batches = BatchRecipe(parts=("train",))


class Retrain(FaceModule):
    """The retrain-from-scratch oracle: the pretraining recipe on D_r only."""

    batches = BatchRecipe(parts=("retain",))

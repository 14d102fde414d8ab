"""Fine-tuning (FT): the margin loss on D_r, starting from θ0 — forgetting only by catastrophic drift."""

from __future__ import annotations

from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.search_space import Knob, SearchSpace


class Finetune(UnlearningMethod):
    """Margin loss on retain batches. Baseline of Golatkar et al. (CVPR 2020) and most unlearning papers."""

    batches = BatchRecipe(parts=("retain",))
    tuning = SearchSpace(strength=Knob("weight_decay", (0.0005, 0.0)))

    def unlearning_loss(self, batch):
        data = batch["retain"]
        return self.margin_loss(self.embed(data["image"]), self.labels_of(data))

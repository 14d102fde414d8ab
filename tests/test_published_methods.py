"""Methods as published (issue 15): SCRUB alternates whole passes over D_f and D_r (Kurmanji et al. 2023),
the bad teacher's incompetent teacher is close to uniform (Chundawat et al. 2023)."""

from __future__ import annotations

import lightning as L
import pytest
from conftest import quiet_trainer, tiny_datamodule

from unlearnkit.errors import ConfigError


class _Batches(L.Callback):
    """Per trainer epoch: the parts of every step's batch, the source indices seen per part, the step losses."""

    def __init__(self) -> None:
        self.parts: dict[int, list[tuple[str, ...]]] = {}
        self.indices: dict[int, dict[str, list[int]]] = {}
        self.losses: dict[int, list[float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        epoch = trainer.current_epoch
        self.parts.setdefault(epoch, []).append(tuple(sorted(batch)))
        for part, data in batch.items():
            self.indices.setdefault(epoch, {}).setdefault(part, []).extend(data["index"].tolist())
        self.losses.setdefault(epoch, []).append(float(outputs["loss"]))


def _scrub_run(tiny_faces, original_ckpt, tmp_path, epochs: int, **kwargs):
    from unlearnkit.methods.scrub import Scrub

    L.seed_everything(0)
    model = Scrub(original=str(original_ckpt), lr=1e-3, max_epochs=1, **kwargs)
    dm = tiny_datamodule(tiny_faces)
    batches = _Batches()
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0, callbacks=[batches],
                            default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    return model, dm, batches


def test_scrub_alternates_whole_passes(tiny_faces, original_ckpt, tmp_path):
    """msteps = 1: a max-pass over every forget image, then a min-pass over every retain image, then min-passes
    only (the step alternation used half the forget batches and a few retain images per epoch)."""
    model, dm, batches = _scrub_run(tiny_faces, original_ckpt, tmp_path, epochs=3)
    forget, retain = sorted(dm.part_indices("forget").tolist()), sorted(dm.part_indices("retain").tolist())
    assert sorted(batches.parts) == [0, 1, 2]
    assert set(batches.parts[0]) == {("forget",)} and sorted(batches.indices[0]["forget"]) == forget
    assert all(loss < 1e-5 for loss in batches.losses[0]), "max-steps maximise the KL (≈ 0 at the first step)"
    for epoch in (1, 2):
        assert set(batches.parts[epoch]) == {("retain",)} and sorted(batches.indices[epoch]["retain"]) == retain
        assert all(loss > 0 for loss in batches.losses[epoch])
    assert model.train_parts == ("retain",)


def test_scrub_step_alternation_is_kept_as_an_option(tiny_faces, original_ckpt, tmp_path):
    _, _, batches = _scrub_run(tiny_faces, original_ckpt, tmp_path, epochs=2, alternation="step")
    assert set(batches.parts[0]) == set(batches.parts[1]) == {("forget", "retain")}
    signs = [loss < 1e-5 for loss in batches.losses[0]]
    assert signs[::2] == [True] * len(signs[::2]) and not any(signs[1::2])  # max, min, max, ...
    assert all(loss > 0 for loss in batches.losses[1])


def test_scrub_bad_alternation_is_a_config_error():
    from unlearnkit.methods.scrub import Scrub

    with pytest.raises(ConfigError, match="alternation"):
        Scrub(alternation="epoch")


@pytest.mark.parametrize("labels", ["true", "pseudo"])
def test_bad_teacher_is_close_to_uniform(labels, tiny_faces, original_ckpt, tmp_path):
    """The incompetent teacher's softmax over the K classes (at the KL temperature) has entropy ≈ log K; its
    logits scaled by the head's s, as before issue 15, were nearly one-hot."""
    import math

    import torch

    from unlearnkit.methods.bad_teacher import BadTeacher

    def entropy(**kwargs) -> float:
        L.seed_everything(0)
        model = BadTeacher(original=str(original_ckpt), labels=labels, **kwargs)
        dm = tiny_datamodule(tiny_faces, protocol="identity" if labels == "true" else "sample")
        trainer = quiet_trainer(max_steps=1, limit_val_batches=0, default_root_dir=str(tmp_path))
        trainer.fit(model, datamodule=dm)
        forget = next(iter(dm.eval_loader(dm.part_indices("forget"), shard=False)))["image"]
        p = torch.softmax(model.incompetent_logits(forget) / model.hparams.temperature, dim=1)
        return float(-(p * p.clamp(min=1e-12).log()).sum(1).mean()), model.num_labels

    h, k = entropy()
    assert k >= 3 and h > 0.98 * math.log(k), (h, math.log(k))
    h_old, _ = entropy(incompetent_scale=None)
    assert h_old < 0.9 * math.log(k), "the head's scale s makes the teacher confident"

"""Device placement that only a GPU run used to reveal, reproduced on the CPU.

In ``LightningModule.setup`` Lightning already reports the accelerator as ``self.device`` while the modules
are still on the CPU. Label-free variants embed their training data there (pseudo-labels), so on a GPU the
first run of any of them stopped with "Input type (torch.cuda.FloatTensor) and weight type
(torch.FloatTensor) should be the same" (found by ``make gpu-check`` on an H200).
"""

from __future__ import annotations

import torch
from conftest import quiet_trainer, tiny_datamodule

from unlearnkit.methods.gradient_ascent import GradientAscent


def test_embedding_follows_the_modules_not_the_reported_device(tiny_faces, original_ckpt):
    model = GradientAscent(original=str(original_ckpt), labels="pseudo")
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=tiny_datamodule(tiny_faces, protocol="sample", forget=0.2))
    indices = trainer.datamodule.part_indices("forget")
    expected = model.teacher.embed_indices(trainer.datamodule, indices)
    model._device = torch.device("meta")  # what setup sees on a GPU machine: a device the weights are not on
    got = model.teacher.embed_indices(trainer.datamodule, indices)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, expected)

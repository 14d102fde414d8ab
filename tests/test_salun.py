"""SalUn: the saliency mask is the global top-γ of |∇ forget loss| at θ0, weights outside it stay at θ0 bit for bit
(weight decay and momentum included, the fix of the reference's PR #33), a resumed run keeps its mask, and the
label-free variant never reads identity labels."""

from __future__ import annotations

import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import quiet_trainer, tiny_datamodule

from unlearnkit.errors import ConfigError
from unlearnkit.methods import method_defaults
from unlearnkit.methods.salun import MASK_KEY, SalUn, top_fraction

RATIO = 0.3
_RUNS: dict = {}


def _fit(original, faces, optimizer: str = "sgd", steps: int = 3, ckpt_path=None, **options):
    """A short SalUn run with strong weight decay and momentum (they would move every weight they reach)."""
    L.seed_everything(0)
    model = SalUn(original=str(original), saliency_ratio=RATIO, optimizer=optimizer, lr=1e-2, momentum=0.9,
                  weight_decay=0.05, **options)
    dm = tiny_datamodule(faces)
    trainer = quiet_trainer(max_steps=steps, limit_val_batches=0)
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, dm, trainer


def _run(original, faces, optimizer: str):
    """One run per optimiser for the whole module (each fit costs seconds on 2 cores), with its checkpoint."""
    if optimizer not in _RUNS:
        model, dm, trainer = _fit(original, faces, optimizer)
        path = Path(tempfile.mkdtemp()) / "salun.ckpt"
        trainer.save_checkpoint(path)
        _RUNS[optimizer] = model, dm, trainer, path
    return _RUNS[optimizer]


def _theta0(original) -> dict[str, torch.Tensor]:
    state = torch.load(original, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}


def test_top_fraction_keeps_exactly_the_largest_and_breaks_ties_by_position():
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.0])
    assert top_fraction(scores, 0.6).tolist() == [True, False, True, True, False]
    assert top_fraction(scores, 0.4).tolist() == [True, False, True, False, False]  # one of the tied 2s: the first
    assert top_fraction(scores, 1.0).all() and top_fraction(scores, 0.01).tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5])
def test_saliency_ratio_outside_0_1_is_a_config_error(ratio):
    with pytest.raises(ConfigError, match=r"saliency_ratio must be in \(0, 1\]"):
        SalUn(saliency_ratio=ratio)


def test_mask_is_the_global_top_fraction_of_the_forget_gradient(tiny_faces, original_ckpt):
    """Against a computation of our own, written as the reference's ``generate_mask.py``: backward of θ0's
    forget loss over D_f, |g| of every weight, global rank, the top int(γ·n) salient."""
    model, dm, _, _ = _run(original_ckpt, tiny_faces, "sgd")
    reference = SalUn(original=str(original_ckpt))
    reference.load_original()
    reference.eval()
    for data in dm.eval_loader(dm.part_indices("forget"), shard=False):
        z = F.normalize(reference.backbone(data["image"]), dim=1)
        (reference.head.loss(z, data["label"]) * len(z)).backward()
    names = [n for n, p in reference.named_parameters() if p.requires_grad]
    assert any(n.startswith("head.") for n in names) and any(n.startswith("backbone.") for n in names)
    grads = dict(reference.named_parameters())
    scores = torch.cat([grads[n].grad.abs().flatten() for n in names])
    order = torch.argsort(scores, descending=True, stable=True)
    expected = torch.zeros_like(scores, dtype=torch.bool)
    expected[order[: int(RATIO * len(scores))]] = True

    assert sorted(model.saliency_mask) == sorted(names)
    mask = torch.cat([model.saliency_mask[n].flatten() for n in names])
    assert int(mask.sum()) == int(RATIO * len(scores))
    assert scores[mask].min() >= scores[~mask].max()
    # the same weights, up to float summation order at the threshold
    threshold = scores[order[int(RATIO * len(scores)) - 1]]
    clear = (scores - threshold).abs() > 1e-6 * threshold
    assert torch.equal(mask[clear], expected[clear])
    assert clear.float().mean() > 0.99


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weights_outside_the_mask_stay_at_theta0_bit_for_bit(optimizer, tiny_faces, original_ckpt):
    model, _, trainer, _ = _run(original_ckpt, tiny_faces, optimizer)
    theta0, state = _theta0(original_ckpt), trainer.optimizers[0].state
    params = dict(model.named_parameters())
    moved = 0
    for name, mask in model.saliency_mask.items():
        p, p0 = params[name].detach(), theta0[name]
        assert torch.equal(p[~mask], p0[~mask]), f"{name}: a masked-out weight moved"
        moved += int((p[mask] != p0[mask]).sum())
        for key, value in state.get(params[name], {}).items():
            if key != "step":
                assert not value[~mask].any(), f"{name}: optimiser state {key} kept for masked-out weights"
    assert moved > 0.5 * sum(int(m.sum()) for m in model.saliency_mask.values()), "salient weights did not move"


def test_a_resumed_run_keeps_its_mask_and_theta0(tiny_faces, original_ckpt):
    """The mask is saved in the checkpoint: recomputed from the moved weights it would differ."""
    first, _, _, path = _run(original_ckpt, tiny_faces, "sgd")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint[MASK_KEY]) == set(first.saliency_mask)
    resumed, _, trainer = _fit(original_ckpt, tiny_faces, steps=5, ckpt_path=str(path))
    assert trainer.global_step == 5
    assert all(torch.equal(resumed.saliency_mask[n], m) for n, m in first.saliency_mask.items())
    theta0, params = _theta0(original_ckpt), dict(resumed.named_parameters())
    for name, mask in resumed.saliency_mask.items():
        assert torch.equal(params[name].detach()[~mask], theta0[name][~mask]), name


def _label_free(faces, original, scramble: bool):
    L.seed_everything(0)
    model = SalUn(original=str(original), labels="pseudo", num_clusters=6, saliency_ratio=RATIO, lr=1e-2)
    dm = tiny_datamodule(faces, protocol="sample", forget=0.2)
    dm.setup("fit")
    if scramble:
        dm.labels = np.random.default_rng(1).permutation(dm.labels)
    quiet_trainer(max_steps=2, limit_val_batches=0).fit(model, datamodule=dm)
    return model, dm


def test_label_free_variant_never_reads_identity_labels(tiny_faces, original_ckpt):
    """Scrambled identity labels change nothing: not the mask (the forget loss is on pseudo-labels), not the
    weights."""
    a, dm_a = _label_free(tiny_faces, original_ckpt, scramble=False)
    b, dm_b = _label_free(tiny_faces, original_ckpt, scramble=True)
    forget = dm_a.part_indices("forget")
    assert (dm_a.labels[forget] != dm_b.labels[forget]).any()  # the forget set's labels did change
    assert all(torch.equal(a.saliency_mask[n], b.saliency_mask[n]) for n in a.saliency_mask)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_method_config_names_salun_and_its_options():
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "method" / "salun.yaml").read_text())
    assert config["class_path"] == "unlearnkit.methods.salun.SalUn"
    defaults = method_defaults(SalUn)
    assert set(config["init_args"]) <= set(defaults)
    assert config["init_args"]["lr"] == defaults["lr"] and config["init_args"]["saliency_ratio"] == 0.5

"""Relearn time (unlearnkit.relearn, the audit's ``--relearn``): θ0 needs no step to regain its own forget mAP, a
retrain oracle, which never saw D_f, needs more; the recipe's bounds are checked."""

from __future__ import annotations

import pytest
from conftest import ARCH, quiet_trainer, tiny_datamodule

from unlearnkit.errors import ConfigError
from unlearnkit.frozen import load_frozen
from unlearnkit.relearn import RelearnRecipe, forget_map, relearn


@pytest.fixture(scope="module")
def oracle_ckpt(tiny_faces, tmp_path_factory):
    """A retrain oracle on the tiny set: the same recipe as θ0's, on D_r only."""
    import lightning as L

    from unlearnkit.methods.base import Retrain

    L.seed_everything(0)
    out = tmp_path_factory.mktemp("oracle")
    trainer = quiet_trainer(max_epochs=3, limit_val_batches=0, default_root_dir=str(out))
    trainer.fit(Retrain(**ARCH, lr=0.05), datamodule=tiny_datamodule(tiny_faces))
    trainer.save_checkpoint(out / "oracle.ckpt")
    return out / "oracle.ckpt"


def test_relearn_time_is_zero_for_theta0_and_longer_for_the_oracle(tiny_faces, original_ckpt, oracle_ckpt):
    datamodule = tiny_datamodule(tiny_faces)
    datamodule.setup()
    target = forget_map(load_frozen(str(original_ckpt)).backbone, datamodule)
    recipe = RelearnRecipe(lr=0.01, max_steps=30, eval_every=5)  # the tiny model relearns within 30 steps at 0.01
    theta0 = relearn(original_ckpt, datamodule, target, recipe)
    assert theta0["steps"] == 0 and theta0["reached"] and theta0["curve"] == [[0, target]]
    oracle = relearn(oracle_ckpt, datamodule, target, recipe)
    start = oracle["curve"][0][1]
    assert start < target  # the oracle never saw the forgotten people: its forget mAP is below θ0's
    assert oracle["steps"] > theta0["steps"] and oracle["steps"] % recipe.eval_every == 0
    assert max(v for _, v in oracle["curve"]) > start  # fine-tuning on D_f brings forget mAP back up
    assert oracle["reached"] == (oracle["curve"][-1][1] >= target)
    assert relearn(oracle_ckpt, datamodule, start, recipe)["steps"] == 0  # a target it already meets: no step


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_relearn_recipe_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(ConfigError, match="fraction must be in"):
        RelearnRecipe(fraction=fraction)

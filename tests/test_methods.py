"""Every registered method: a few steps run, the loss is finite, the student moves, the teacher does not,
and a checkpoint loads back into the same class. Parametrised over the registry, so a new method is
tested the moment it is registered."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ARCH, quiet_trainer, tiny_datamodule

from unlearnkit.errors import ConfigError
from unlearnkit.methods import load_all
from unlearnkit.methods.base import UnlearningMethod

METHODS = load_all()
UNLEARNING = sorted(n for n, c in METHODS.items() if issubclass(c, UnlearningMethod))


def _protocol(cls) -> str:
    return "identity" if cls.needs_labels else "sample"


def _build(name, original):
    cls = METHODS[name]
    if issubclass(cls, UnlearningMethod):
        return cls(original=str(original), lr=1e-3)
    return cls(**ARCH, lr=0.05)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_runs_moves_student_keeps_teacher(name, tiny_faces, original_ckpt, tmp_path):
    L.seed_everything(0)
    model = _build(name, original_ckpt)
    cls = METHODS[name]
    dm = tiny_datamodule(tiny_faces, protocol=_protocol(cls))
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    loss = trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)
    if isinstance(model, UnlearningMethod):
        original = torch.load(original_ckpt, map_location="cpu", weights_only=True)["state_dict"]
        moved = max((model.backbone.state_dict()[k[9:]].float() - v.float()).abs().max().item()
                    for k, v in original.items() if k.startswith("backbone.") and v.is_floating_point())
        assert moved > 0, "the student did not change"
        if model.teacher is not None:
            for k, v in model.teacher.state_dict().items():
                assert torch.equal(v, original[f"backbone.{k}"]), f"teacher changed at {k}"
    path = tmp_path / "method.ckpt"
    trainer.save_checkpoint(path)
    back = type(model).load_from_checkpoint(path, map_location="cpu")
    assert type(back) is type(model)
    state, loaded = model.state_dict(), back.state_dict()
    assert state.keys() == loaded.keys()
    assert all(torch.equal(state[k].cpu(), loaded[k]) for k in state)


SUPERVISED = sorted(n for n in UNLEARNING if METHODS[n].needs_labels)


@pytest.mark.parametrize("name", SUPERVISED)
def test_label_free_variant_runs_on_sample_protocol(name, tiny_faces, original_ckpt, tmp_path):
    L.seed_everything(0)
    cls = METHODS[name]
    with pytest.raises(ConfigError, match="labels"):
        cls.check_protocol("sample", "true")
    model = cls(original=str(original_ckpt), labels="pseudo", num_clusters=6, lr=1e-3)
    dm = tiny_datamodule(tiny_faces, protocol="sample", forget=0.2)
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert model.pseudo_head.num_classes == 6
    forget = torch.as_tensor(dm.part_indices("forget"))
    assert (model.pseudo_table[forget] >= 0).all()


def _label_free_params(name, tiny_faces, original_ckpt, tmp_path, scramble: bool):
    """Parameters after a few steps of a method's label-free variant (pseudo-labels, or itself if label-free),
    with the data set's identity labels scrambled or not after the split is made."""
    cls = METHODS[name]
    L.seed_everything(0)
    labels = {"labels": "pseudo", "num_clusters": 6} if cls.needs_labels else {}
    model = cls(original=str(original_ckpt), lr=1e-3, **labels)
    dm = tiny_datamodule(tiny_faces, protocol="sample", forget=0.2)
    dm.setup("fit")
    if scramble:
        dm.labels = np.random.default_rng(1).permutation(dm.labels)
    trainer = quiet_trainer(max_steps=3, limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    return _snapshot(model)


@pytest.mark.parametrize("name", UNLEARNING)
def test_label_free_variant_never_reads_identity_labels(name, tiny_faces, original_ckpt, tmp_path):
    """CURE, bad teacher and every method's ``labels: pseudo`` variant train identically on scrambled identity
    labels: losses, P×K groups and samplers see only pseudo-labels."""
    a = _label_free_params(name, tiny_faces, original_ckpt, tmp_path / "a", scramble=False)
    b = _label_free_params(name, tiny_faces, original_ckpt, tmp_path / "b", scramble=True)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{name} read identity labels: {differ[:5]}"


def test_unsupported_protocol_is_a_config_error_before_work(tiny_faces, original_ckpt, tmp_path):
    from unlearnkit.methods.dispersion import Dispersion

    model = Dispersion(original=str(original_ckpt))
    dm = tiny_datamodule(tiny_faces, protocol="sample", forget=0.2)
    with pytest.raises(ConfigError, match="identity labels"):
        quiet_trainer(max_steps=1, default_root_dir=str(tmp_path)).fit(model, datamodule=dm)


def printed_model_config(capsys, monkeypatch, *args) -> dict:
    """The ``model`` section the CLI resolves for ``fit *args`` (``--print_config``, nothing run)."""
    import sys

    import yaml

    from unlearnkit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["unlearnkit"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)["model"]


@pytest.mark.parametrize("name", UNLEARNING)
def test_model_swap_takes_the_methods_own_defaults(name, capsys, monkeypatch):
    """``--model Name`` after a config keeps its shared options (original, labels) but not another
    method's learning rate or loss weights; options after the swap still win."""
    from unlearnkit.cli.main import method_defaults

    cls = METHODS[name]
    experiment = Path(__file__).parents[1] / "configs" / "experiment" / "unlearn_synthetic.yaml"

    def resolved(*extra):
        return printed_model_config(capsys, monkeypatch, "--config", str(experiment), "--model.lr", "0.777",
                                    "--model.labels", "pseudo", "--model", cls.__name__, *extra)["init_args"]

    args = resolved()
    defaults = method_defaults(cls)
    assert args["lr"] == defaults["lr"] != 0.777
    assert args["labels"] == "pseudo" and args["original"].endswith("last.ckpt")
    assert resolved("--model.lr", "0.123")["lr"] == 0.123


def test_pretrain_to_retrain_swap_keeps_the_recipe(capsys, monkeypatch):
    """The oracle must be trained as θ0 was: ``--model Retrain`` after the pretraining config keeps it all."""
    experiment = Path(__file__).parents[1] / "configs" / "experiment" / "pretrain_synthetic.yaml"
    model = printed_model_config(capsys, monkeypatch, "--config", str(experiment), "--model", "Retrain")
    assert model["class_path"].endswith(".Retrain")
    assert (model["init_args"]["optimizer"], model["init_args"]["lr"]) == ("adamw", 0.003)


@pytest.mark.parametrize("name", UNLEARNING)
def test_declarations_name_the_methods_own_options(name):
    """What the study tunes and the demo sets are options the method takes; its batch recipe is well formed."""
    from unlearnkit.methods import method_defaults

    cls = METHODS[name]
    options = method_defaults(cls)
    cls.tuning.check(name, options)
    assert set(cls.demo_overrides) <= set(options)
    assert cls.batches.parts and set(cls.batches.pk_parts) <= set(cls.batches.parts)
    assert cls.step_ratio_target is None or cls.step_ratio_target >= 1.0  # a bound, not a measurement


def test_registry_is_by_class_name_with_the_old_keys_as_aliases():
    from unlearnkit.methods.gradient_ascent import GradientAscent

    assert all(name == cls.__name__ for name, cls in METHODS.items())
    assert {"Pretrain", "Retrain", "Dispersion", "Cure"} <= set(METHODS)
    assert METHODS["gradient_ascent"] is METHODS["GradientAscent"] is GradientAscent
    assert "gradient_ascent" not in list(METHODS)  # one name when iterated (CLI, demo, study, benchmarks)
    with pytest.raises(ConfigError, match="unknown method 'salun': choose one of BadTeacher"):
        METHODS["salun"]


def test_batch_recipe_refuses_an_unknown_part():
    from unlearnkit.batch_recipe import BatchRecipe

    with pytest.raises(ConfigError, match="parts must be a tuple of forget, retain, heldout, train"):
        BatchRecipe(parts=("forgets",))
    with pytest.raises(ConfigError, match="parts must be a tuple"):
        BatchRecipe(parts="forget")
    assert BatchRecipe().parts == ("train",)


def test_model_swap_carries_the_base_options_but_not_the_training_recipe(capsys, monkeypatch):
    """The swap's carried options come from the base classes' signatures: freeze_bn and num_clusters (shared) carry
    over, min_steps (the recipe) takes the new method's own (SCRUB: 0)."""
    from unlearnkit.cli.main import SHARED_OPTIONS, TRAINING_RECIPE

    assert not SHARED_OPTIONS & set(TRAINING_RECIPE) and {"original", "labels", "freeze_bn"} <= SHARED_OPTIONS
    experiment = Path(__file__).parents[1] / "configs" / "experiment" / "unlearn_synthetic.yaml"
    args = printed_model_config(capsys, monkeypatch, "--config", str(experiment), "--model.freeze_bn", "false",
                                "--model.num_clusters", "7", "--model.min_steps", "3", "--model", "Scrub")["init_args"]
    assert (args["freeze_bn"], args["num_clusters"], args["min_steps"]) == (False, 7, 0)

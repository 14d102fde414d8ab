"""Backbones: a name → builder registry and a weights loader that explains mismatches.

Every backbone maps (B, 3, image_size, image_size) images to UN-normalised (B, embedding_size)
embeddings and carries ``embedding_size`` and ``image_size`` attributes; callers L2-normalise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from unlearnkit.backbones import iresnet, timm_backbone
from unlearnkit.backbones.iresnet import IBasicBlock, IResNet
from unlearnkit.backbones.timm_backbone import TimmEmbedding
from unlearnkit.errors import CheckpointError, ConfigError
from unlearnkit.registry import Registry
from unlearnkit.utils.safe_pickle import weights_only_refusal

__all__ = [
    "BACKBONES",
    "IBasicBlock",
    "IResNet",
    "TimmEmbedding",
    "create_backbone",
    "load_backbone_weights",
    "read_state_dict",
]

BACKBONES: Registry = Registry("backbone")
for _name, _builder in {**iresnet.BUILDERS, **timm_backbone.BUILDERS}.items():
    BACKBONES.register(_name)(_builder)


def create_backbone(name: str, embedding_size: int = 512, image_size: int = 112, **kwargs) -> nn.Module:
    """Builds a registered backbone, else wraps the timm model ``name`` (``timm_<name>`` works too)."""
    if name in BACKBONES:
        return BACKBONES.get(name)(embedding_size=embedding_size, image_size=image_size, **kwargs)
    timm_name = name.removeprefix("timm_")
    if not timm.is_model(timm_name):
        timm_name = name
    if timm.is_model(timm_name):
        return TimmEmbedding(timm_name, embedding_size=embedding_size, image_size=image_size, **kwargs)
    raise ConfigError(
        f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES.names())}, "
        "or any timm model name (see timm.list_models())"
    )


# where a Lightning checkpoint or a training checkpoint keeps the backbone, tried in this order
_STATE_KEYS = ("state_dict_backbone", "state_dict", "model_state_dict", "model")
_PREFIXES = ("", "backbone.", "student.", "model.", "module.")


def read_state_dict(path_or_state_dict: str | Path | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    """Reads a weights file safely (``weights_only``); returns its tensors and a name for messages."""
    if isinstance(path_or_state_dict, Mapping):
        obj, source = path_or_state_dict, "state dict"
    else:
        source = str(path_or_state_dict)
        if not Path(source).is_file():
            raise CheckpointError(f"{source}: no such weights file")
        try:
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors have many types; all mean "cannot be read safely"
            raise CheckpointError(
                f"{source}: cannot be read as a weights-only checkpoint ({weights_only_refusal(exc)}); "
                "save a state dict (torch.save(model.state_dict(), path)) instead of a whole model"
            ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
    for key in _STATE_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors (keys: {_few(list(obj))})")
    return tensors, source


def _few(keys, n: int = 4) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_backbone_weights(
    model: nn.Module,
    path_or_state_dict: str | Path | Mapping,
    strict: bool = True,
    prefix: str | None = None,
) -> nn.Module:
    """Loads backbone weights from a plain state dict, an arcface_torch file or one of our checkpoints.

    ``prefix`` selects and strips keys (``"backbone."`` for our Lightning checkpoints); by default the
    prefix among ``"", "backbone.", "student.", "model.", "module."`` that matches most of the model's
    keys is used. BatchNorm's ``num_batches_tracked`` counters, which converted and exported weights often lack
    and which no forward pass reads, are filled with the model's own; every other key must match. A mismatch
    raises ``CheckpointError`` with one line naming the keys at fault.
    """
    state, source = read_state_dict(path_or_state_dict)
    expected = model.state_dict()
    if prefix is None:
        prefix = max(_PREFIXES, key=lambda p: len(expected.keys() & _strip(state, p).keys()))
    if not _strip(state, prefix):
        raise CheckpointError(f"{source}: no keys start with {prefix!r} (keys: {_few(state)})")
    state = _strip(state, prefix)
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = expected[key]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} in file vs {tuple(expected[k].shape)} in model"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if shapes or (strict and (missing or unexpected)):
        problems = []
        if missing:
            problems.append(f"missing {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected {_few(unexpected)}")
        if shapes:
            problems.append(f"shape mismatch {_few(shapes, 2)}")
        raise CheckpointError(
            f"{source}: weights do not fit {type(model).__name__}"
            f"{f' (keys prefixed {prefix!r})' if prefix else ''}: {'; '.join(problems)}. "
            "Build the backbone with the name, embedding_size and image_size these weights were trained with"
        )
    model.load_state_dict(state, strict=strict)
    return model

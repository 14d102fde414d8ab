"""Backbones: a name → builder registry.

Every backbone maps (B, 3, image_size, image_size) images to UN-normalised (B, embedding_size)
embeddings and carries ``embedding_size`` and ``image_size`` attributes; callers L2-normalise. Loading weights
into one (``load_backbone_weights``, which explains mismatches) lives in ``unlearnkit.checkpoints`` and is
importable from here too.
"""

from __future__ import annotations

import timm
from torch import nn

from unlearnkit.backbones import iresnet, timm_backbone
from unlearnkit.backbones.iresnet import IBasicBlock, IResNet
from unlearnkit.backbones.timm_backbone import TimmEmbedding
from unlearnkit.checkpoints import load_backbone_weights, read_state_dict
from unlearnkit.errors import ConfigError
from unlearnkit.registry import Registry

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

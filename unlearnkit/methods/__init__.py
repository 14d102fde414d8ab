"""Unlearning methods: one LightningModule per file, each a registered subclass of ``UnlearningMethod``."""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> dict:
    """Import every module of this package (so each registers itself) and return the registry by name."""
    from unlearnkit.methods.base import METHODS

    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return {name: METHODS.get(name) for name in METHODS.names()}

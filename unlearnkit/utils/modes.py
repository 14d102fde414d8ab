"""Switching a model to eval mode for a while without losing its submodules' own modes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; afterwards every submodule gets back its own ``training`` flag.

    ``module.train(was_training)`` would set *every* submodule to the top module's mode, so BatchNorm layers
    frozen on purpose (``freeze_bn``) inside a training student would silently go back to train mode.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training

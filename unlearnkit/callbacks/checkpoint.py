"""Checkpoint files that are always whole, and never run code when read.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temp file lives in the system
temp directory: on another file system than the run directory, the final "move" is a copy, so a job killed
then leaves a half-written ``last.ckpt``. ``AtomicCheckpointIO`` writes a temp file beside the target, fsyncs
it and renames it over the target: a reader sees the old checkpoint or the new one, never a mix. Reading is
always ``weights_only`` (tensors and plain containers only), whatever the caller asks, and a file that cannot
be read that way is a ``CheckpointError`` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from unlearnkit.errors import CheckpointError
from unlearnkit.utils.io import atomic_open
from unlearnkit.utils.safe_pickle import weights_only_refusal


def _is_local(path) -> bool:
    return "://" not in str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with temp-file-and-rename saves and weights-only loads (remote paths: Lightning's)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_lightning_checkpoint(path, map_location)


def read_lightning_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """A checkpoint to resume or evaluate (``--ckpt_path``): read weights-only, errors as ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of a .ckpt file (e.g. "
                              "<run_dir>/checkpoints/last.ckpt)")
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated zips: all mean "cannot be read safely"
        raise CheckpointError(f"cannot read checkpoint {path} safely: {weights_only_refusal(err)}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict'): give a .ckpt saved by "
                              "unlearnkit; a plain weights file goes in --model.original")
    return checkpoint

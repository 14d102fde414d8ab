"""Every way weights are read or written: our Lightning checkpoints, plain state dicts and insightface
arcface_torch ``backbone.pth`` files; the architecture a checkpoint records; freezing; the atomic writer.

Reading is always ``weights_only`` (tensors and plain data: a crafted file cannot run code), and a file that
does not exist or cannot be read that way is a one-line ``CheckpointError`` naming it. Several parts of a run
need θ0 (the method, its quality score, the evaluation) and the evaluation needs the retrain oracle:
``read_weights`` keeps the tensors and hyperparameters of the last files it read (by path, size and
modification time), so each is read from disk once.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from unlearnkit.errors import CheckpointError
from unlearnkit.utils.io import atomic_open
from unlearnkit.utils.safe_pickle import weights_only_refusal

# what a checkpoint records of the model's architecture (an unlearning method is built as θ0 was)
ARCH_KEYS = ("backbone", "embedding_size", "image_size", "head", "scale", "margin", "num_classes")
# where a Lightning or training checkpoint keeps its weights, tried in this order; else the file's own mapping
_STATE_KEYS = ("state_dict_backbone", "state_dict", "model_state_dict", "model")
# key prefixes a backbone's weights may carry: ours (``backbone.``), other trainers', DDP's (``module.``)
_PREFIXES = ("", "backbone.", "student.", "model.", "module.")
# files kept by ``read_weights``: θ0 and the oracle of a run
CACHED_FILES = 2
MISSING = "no such weights file: give the path of a .ckpt or .pth file"


def read_checkpoint(path: str | os.PathLike, map_location="cpu", missing: str = MISSING):
    """A weights file as ``torch.load(weights_only=True)`` returns it; ``missing`` is the advice for a path that
    does not exist. Not cached: ``read_weights`` is the cached reader."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: {missing}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors, truncated zips: all mean "cannot be read safely"
        refusal = weights_only_refusal(err)
        advice = ("; a weights-only read takes tensors and plain data: save a state dict "
                  "(torch.save(model.state_dict(), path)) instead of a whole model") if "could run code" in refusal else ""
        raise CheckpointError(f"cannot read checkpoint {path} safely: {refusal}{advice}") from err


def read_lightning_checkpoint(path: str | os.PathLike, map_location=None) -> dict:
    """A checkpoint to resume or evaluate (``--ckpt_path``), whole: it must be one of our Lightning checkpoints."""
    checkpoint = read_checkpoint(path, map_location or "cpu", missing="give the path of a .ckpt file (e.g. "
                                 "<run_dir>/checkpoints/last.ckpt)")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict'): give a .ckpt saved by "
                              "unlearnkit; a plain weights file goes in --model.original")
    return checkpoint


@dataclass(frozen=True)
class Weights:
    """What a model reads from a weights file (read-only): its tensors and the hyperparameters it records.

    ``tensors``: a Lightning checkpoint's ``state_dict`` (keys ``backbone.…``, ``head.…``), a training
    checkpoint's weights or a plain state dict (arcface_torch: the backbone's own keys). ``hparams``: our
    checkpoints' ``hyper_parameters``, ``{}`` for other files. ``source`` names the file in messages.
    """

    source: str
    tensors: Mapping[str, torch.Tensor]
    hparams: Mapping

    def architecture(self) -> dict:
        """The architecture the file records (``ARCH_KEYS``); ``{}`` for a file that records none."""
        return {k: self.hparams[k] for k in ARCH_KEYS if k in self.hparams}

    def head(self) -> dict[str, torch.Tensor]:
        """The margin head's tensors (``head.…`` keys, without the prefix); ``{}`` for a file without a head."""
        return {k[len("head."):]: v for k, v in self.tensors.items() if k.startswith("head.")}


_CACHE: OrderedDict[tuple, Weights] = OrderedDict()


def read_weights(path_or_state_dict: str | os.PathLike | Mapping, missing: str = MISSING) -> Weights:
    """The weights of a file (read once while it is unchanged: see ``CACHED_FILES``) or of a state dict;
    ``missing`` is the advice for a path that does not exist."""
    if isinstance(path_or_state_dict, Mapping):
        return _weights(path_or_state_dict, "state dict")
    path = Path(path_or_state_dict)
    if not path.is_file():
        read_checkpoint(path, missing=missing)  # raises the one-line error
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        _CACHE[key] = _weights(read_checkpoint(path), str(path))
        while len(_CACHE) > CACHED_FILES:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


def clear_cache() -> None:
    """Forget the files ``read_weights`` keeps (their memory is freed; the next read goes to disk)."""
    _CACHE.clear()


def _weights(obj, source: str) -> Weights:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: holds a {type(obj).__name__}, not a state dict")
    hparams = obj.get("hyper_parameters") if isinstance(obj.get("hyper_parameters"), Mapping) else {}
    state = next((obj[key] for key in _STATE_KEYS if isinstance(obj.get(key), Mapping)), obj)
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source}: holds no tensors (keys: {_few(list(state))})")
    return Weights(source, MappingProxyType(tensors), MappingProxyType(dict(hparams)))


def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping) -> tuple[dict[str, torch.Tensor], str]:
    """A weights file's (or state dict's) tensors and a name for messages."""
    weights = read_weights(path_or_state_dict)
    return dict(weights.tensors), weights.source


def _few(keys, n: int = 4) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_backbone_weights(model: nn.Module, path_or_state_dict: str | os.PathLike | Mapping | Weights,
                          strict: bool = True, prefix: str | None = None) -> nn.Module:
    """Loads backbone weights from a plain state dict, an arcface_torch file or one of our checkpoints.

    ``prefix`` selects and strips keys (``"backbone."`` for our Lightning checkpoints); by default the
    prefix among ``"", "backbone.", "student.", "model.", "module."`` that matches most of the model's
    keys is used. BatchNorm's ``num_batches_tracked`` counters, which converted and exported weights often lack
    and which no forward pass reads, are filled with the model's own; every other key must match. A mismatch
    raises ``CheckpointError`` with one line naming the keys at fault.
    """
    weights = path_or_state_dict if isinstance(path_or_state_dict, Weights) else read_weights(path_or_state_dict)
    state, source = weights.tensors, weights.source
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
    shapes = [f"{k} {tuple(state[k].shape)} in file vs {tuple(expected[k].shape)} in model"
              for k in expected if k in state and state[k].shape != expected[k].shape]
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


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: a model that is read, never trained."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _is_local(path) -> bool:
    return "://" not in str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with temp-file-and-rename saves and weights-only loads (remote paths: Lightning's).

    Lightning's own writes through an fsspec transaction whose temp file lives in the system temp directory: on
    another file system than the run directory the final "move" is a copy, so a job killed then leaves a
    half-written ``last.ckpt``. This one writes a temp file beside the target, fsyncs it and renames it over the
    target: a reader sees the old checkpoint or the new one, never a mix. Reading is always ``weights_only``,
    whatever the caller asks.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_lightning_checkpoint(path, map_location)

"""Label-free face-image quality (SPEC §1): how stable a sample's embedding is under small perturbations.

``stability``: mean pairwise cosine between the embeddings of a few views (identity, flip, small shifted
crop, slight blur). ``serfiq``: T stochastic passes with dropout (p = 0.5) before the embedding layer,
score = 2 / (1 + exp(mean pairwise Euclidean distance)), as SER-FIQ does.

The scoring model is θ0: the data module's ``quality_model`` names its file (``load_quality_model``), and
``unlearnkit fit`` links that to the unlearning method's ``original`` (cli/main.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.sources import FaceSource
from unlearnkit.data.transforms import FaceTransform
from unlearnkit.errors import ConfigError
from unlearnkit.frozen import FrozenModel, load_frozen
from unlearnkit.utils.modes import eval_mode

QUALITY_MODEL_KEYS = ("checkpoint", "backbone", "embedding_size", "image_size")


def quality_model_spec(checkpoint: str | None, backbone: str | None = None, embedding_size: int | None = None,
                       image_size: int | None = None) -> dict | None:
    """The data module's ``quality_model`` for θ0's file (``None`` without one): its path, and the architecture to
    build where the file records none (an insightface ``backbone.pth``)."""
    if not checkpoint:
        return None
    return {"checkpoint": str(checkpoint), "backbone": backbone, "embedding_size": embedding_size,
            "image_size": image_size}


def load_quality_model(spec: dict | None) -> FrozenModel:
    """The model that scores image quality, frozen, from a ``quality_model`` spec (see ``quality_model_spec``)."""
    if not spec or not spec.get("checkpoint"):
        raise ConfigError("quality: stability/serfiq scores images with the original model θ0: set "
                          "data.quality_model: {checkpoint: <θ0's file>} (unlearnkit fit links it to model.original)")
    unknown = sorted(set(spec) - set(QUALITY_MODEL_KEYS))
    if unknown:
        raise ConfigError(f"data.quality_model has unknown keys {unknown}: give {', '.join(QUALITY_MODEL_KEYS)}")
    with torch.random.fork_rng(devices=[]):  # building the model must not move the run's random stream
        return load_frozen(**spec)


def _views(x: torch.Tensor) -> list[torch.Tensor]:
    """Original, flipped, a 90 % crop shifted to a corner and resized back, and a 3×3 Gaussian blur."""
    n, c, h, w = x.shape
    ch, cw = max(1, round(h * 0.9)), max(1, round(w * 0.9))
    shifted = F.interpolate(x[:, :, :ch, w - cw :], size=(h, w), mode="bilinear", align_corners=False)
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (kernel[:, None] * kernel[None, :]) / 16
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
    return [x, x.flip(-1), shifted, blurred]


def _mean_pairwise(z: torch.Tensor, fn) -> torch.Tensor:
    """``z``: (views, batch, d) → mean over view pairs of ``fn(a, b)`` per sample."""
    t = z.shape[0]
    values = [fn(z[i], z[j]) for i in range(t) for j in range(i + 1, t)]
    return torch.stack(values).mean(0)


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("serfiq quality needs a backbone with a linear embedding layer")
    return linears[-1]


@torch.no_grad()
def quality_scores(model: nn.Module, images: torch.Tensor, method: str = "stability", passes: int = 8,
                   dropout: float = 0.5) -> torch.Tensor:
    """Quality of a batch of normalised images (higher = better), with ``model`` in eval mode."""
    with eval_mode(model):  # restores each submodule's own mode (frozen BatchNorm stays frozen)
        if method == "stability":
            z = torch.stack([F.normalize(model(v).float(), dim=1) for v in _views(images)])
            return _mean_pairwise(z, lambda a, b: (a * b).sum(1))
        if method == "serfiq":
            hook = _last_linear(model).register_forward_pre_hook(
                lambda _m, args: (F.dropout(args[0], dropout, training=True),)
            )
            try:
                z = torch.stack([F.normalize(model(images).float(), dim=1) for _ in range(passes)])
            finally:
                hook.remove()
            distance = _mean_pairwise(z, lambda a, b: (a - b).norm(dim=1))
            return 2.0 / (1.0 + torch.exp(distance))
        raise ValueError(f"unknown quality method {method!r}: choose stability or serfiq")


def score_source(model: nn.Module, source: FaceSource, transform: FaceTransform, method: str = "stability",
                 batch_size: int = 256, seed: int = 0, indices=None) -> np.ndarray:
    """Quality of every sample (or ``indices``) of ``source``; NaN for samples not scored."""
    device = next(model.parameters()).device
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    out = np.full(len(source), np.nan)
    generator = torch.random.fork_rng(devices=[])  # serfiq's dropout must not move the global RNG
    with generator:
        torch.manual_seed(seed)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            images = torch.stack([transform(source.load(int(i))) for i in chunk]).to(device)
            out[chunk] = quality_scores(model, images, method).cpu().double().numpy()
    return out

"""Image preprocessing as insightface does it: RGB, optional centre crop, resize, (x/255 − 0.5)/0.5."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from PIL import Image

from unlearnkit.errors import ConfigError


class FaceTransform:
    """PIL image → normalised CHW float tensor.

    ``crop`` is the centre-crop fraction taken before resizing (1.0 = none; LFW's 250×250 crops want ~0.5–0.6
    to frame the face as in an aligned 112×112 crop). Images of another size than ``image_size`` are resized
    with one warning per transform, since real aligned crops should already be that size.
    """

    def __init__(self, image_size: int = 112, crop: float = 1.0, mean: float = 0.5, std: float = 0.5,
                 warn_resize: bool = True) -> None:
        if image_size <= 0:
            raise ConfigError(f"image_size must be positive, got {image_size}")
        if not 0 < crop <= 1:
            raise ConfigError(f"crop must be a fraction in (0, 1], got {crop}")
        self.image_size, self.crop, self.mean, self.std = image_size, crop, mean, std
        self._warned = not warn_resize

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The centre-cropped, resized image as an ``H×W×3`` uint8 array."""
        if self.crop < 1:
            w, h = image.size
            cw, ch = round(w * self.crop), round(h * self.crop)
            left, top = (w - cw) // 2, (h - ch) // 2
            image = image.crop((left, top, left + cw, top + ch))
        w, h = image.size
        if w != h:  # VGGFace2 / CelebA crops are not square: take the centred square, never stretch
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if image.size != (self.image_size, self.image_size):
            if not self._warned and self.crop == 1:  # an explicit crop means resizing is intended
                warnings.warn(
                    f"images are {image.size[0]}×{image.size[1]}, resizing to {self.image_size}×{self.image_size}"
                    " (set data.crop to centre-crop first)",
                    stacklevel=4,  # the caller of __call__ / batch
                )
                self._warned = True
            image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)

    def write(self, image: Image.Image, out: np.ndarray, flip: bool = False) -> None:
        """Normalise ``image`` into ``out`` (a ``3×H×W`` float32 view, e.g. one slot of a batch)."""
        pixels = self.pixels(image)
        np.copyto(out, (pixels[:, ::-1] if flip else pixels).transpose(2, 0, 1))
        out /= 255.0
        out -= self.mean
        out /= self.std

    def batch(self, images: list[Image.Image], flips: list[bool] | None = None) -> torch.Tensor:
        """``N×3×H×W`` float batch, each image normalised straight into its slot: no per-image tensors to
        stack (the stack copy costs as much as the normalisation). Inside a DataLoader worker the batch is
        allocated in shared memory, as ``default_collate`` does, so handing it to the main process copies
        nothing."""
        shape = (len(images), 3, self.image_size, self.image_size)
        if torch.utils.data.get_worker_info() is not None:
            storage = torch.empty(0)._typed_storage()._new_shared(math.prod(shape))
            out = torch.empty(0).new(storage).view(shape)
        else:
            out = torch.empty(shape)
        slots = out.numpy()
        for k, image in enumerate(images):
            self.write(image, slots[k], flip=bool(flips[k]) if flips is not None else False)
        return out

    def __call__(self, image: Image.Image, flip: bool = False) -> torch.Tensor:
        out = torch.empty(3, self.image_size, self.image_size)
        self.write(image, out.numpy(), flip)
        return out

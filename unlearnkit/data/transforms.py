"""Image preprocessing as insightface does it: RGB, optional centre crop, resize, (x/255 − 0.5)/0.5."""

from __future__ import annotations

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
                 hflip: bool = False, warn_resize: bool = True) -> None:
        if image_size <= 0:
            raise ConfigError(f"image_size must be positive, got {image_size}")
        if not 0 < crop <= 1:
            raise ConfigError(f"crop must be a fraction in (0, 1], got {crop}")
        self.image_size, self.crop, self.mean, self.std, self.hflip = image_size, crop, mean, std, hflip
        self._warned = not warn_resize

    def __call__(self, image: Image.Image, flip: bool = False) -> torch.Tensor:
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
                    stacklevel=2,
                )
                self._warned = True
            image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32)
        if flip:
            array = array[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        return (tensor / 255.0 - self.mean) / self.std

"""IResNet face backbones with the exact module layout of insightface's arcface_torch.

The module names, shapes and initialisation follow arcface_torch's ``backbones/iresnet.py``, so its
published ``backbone.pth`` files load with ``strict=True``. Our additions: the input size is a
parameter (the ``fc`` layer's input is computed from it instead of being fixed to 7×7), ``fp16``
autocast is only entered when asked for (so an outer mixed-precision context is not switched off),
and every variant is also registered in timm (``timm.create_model("iresnet50")``).
"""

from __future__ import annotations

import contextlib

import timm
import torch
from timm.models import register_model
from torch import nn

__all__ = ["IBasicBlock", "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200"]

LAYERS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style block of arcface_torch: BN → conv → BN → PReLU → conv(stride) → BN, plus shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


def output_side(image_size: int, stages: int = 4) -> int:
    """Side of the last feature map: each stage's stride-2, padding-1 conv maps n to ceil(n / 2)."""
    side = image_size
    for _ in range(stages):
        side = (side + 1) // 2
    return side


class IResNet(nn.Module):
    """arcface_torch's IResNet; returns the un-normalised ``embedding_size``-d embedding (``features``)."""

    def __init__(
        self,
        layers: tuple[int, int, int, int] | list[int],
        embedding_size: int = 512,
        image_size: int = 112,
        dropout: float = 0.0,
        fp16: bool = False,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        self.embedding_size = embedding_size
        self.num_features = embedding_size  # timm's name for the output width
        self.image_size = image_size
        self.fp16 = fp16
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes, eps=1e-05)
        self.prelu = nn.PReLU(self.inplanes)
        self.layer1 = self._make_layer(64, layers[0], stride=2)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512 * IBasicBlock.expansion, eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc_scale = output_side(image_size) ** 2
        self.fc = nn.Linear(512 * IBasicBlock.expansion * self.fc_scale, embedding_size)
        # arcface_torch keeps the last BN's scale at 1 (not learned): only its shift and statistics move
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, IBasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * IBasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes, planes * IBasicBlock.expansion, kernel_size=1, stride=stride, bias=False
                ),
                nn.BatchNorm2d(planes * IBasicBlock.expansion, eps=1e-05),
            )
        layers = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * IBasicBlock.expansion
        layers += [IBasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"IResNet built for {self.image_size}x{self.image_size} inputs got {tuple(x.shape[-2:])}: "
                "build it with the data's image_size"
            )
        autocast = torch.autocast(x.device.type) if self.fp16 else contextlib.nullcontext()
        with autocast:
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.bn2(x)
            x = torch.flatten(x, 1)
            x = self.dropout(x)
        x = self.fc(x.float() if self.fp16 else x)
        return self.features(x)


def _iresnet(arch: str, pretrained: bool = False, **kwargs) -> IResNet:
    """Builds ``arch``; drops the arguments timm's factory always passes, maps ``num_classes``/``num_features``."""
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    if "num_features" in kwargs:  # arcface_torch's get_model(name, num_features=...) spelling
        kwargs.setdefault("embedding_size", kwargs.pop("num_features"))
    num_classes = kwargs.pop("num_classes", None)
    if num_classes:  # timm's "width of the last layer"; 0 (features only) is what IResNet gives anyway
        kwargs.setdefault("embedding_size", num_classes)
    if pretrained:
        raise ValueError(
            f"{arch} has no downloadable weights: build it, then load an arcface_torch backbone.pth with "
            "unlearnkit.backbones.load_backbone_weights"
        )
    return IResNet(LAYERS[arch], **kwargs)


def iresnet18(pretrained: bool = False, **kwargs) -> IResNet:
    return _iresnet("iresnet18", pretrained, **kwargs)


def iresnet34(pretrained: bool = False, **kwargs) -> IResNet:
    return _iresnet("iresnet34", pretrained, **kwargs)


def iresnet50(pretrained: bool = False, **kwargs) -> IResNet:
    return _iresnet("iresnet50", pretrained, **kwargs)


def iresnet100(pretrained: bool = False, **kwargs) -> IResNet:
    return _iresnet("iresnet100", pretrained, **kwargs)


def iresnet200(pretrained: bool = False, **kwargs) -> IResNet:
    return _iresnet("iresnet200", pretrained, **kwargs)


BUILDERS = {fn.__name__: fn for fn in (iresnet18, iresnet34, iresnet50, iresnet100, iresnet200)}

# timm warns when a name is registered twice (a module reload, or two copies of this file): register once
for _name, _fn in BUILDERS.items():
    if not timm.is_model(_name):
        register_model(_fn)

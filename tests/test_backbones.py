"""Backbones: registry, timm registration, arcface_torch compatibility, weights loading."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from unlearnkit.backbones import (
    BACKBONES,
    IResNet,
    TimmEmbedding,
    create_backbone,
    load_backbone_weights,
)
from unlearnkit.errors import CheckpointError, ConfigError

# ---------------------------------------------------------------------------------------------------------
# An independent description of arcface_torch's iresnet18 (insightface, recognition/arcface_torch/backbones):
# stem conv3x3(3→64, stride 1) + BN + PReLU; four stages of IBasicBlocks (BN, conv3x3, BN, PReLU,
# conv3x3(stride), BN; the first block of each stage has a stride-2 conv1x1+BN shortcut "downsample");
# then BN2d(512), flatten, dropout, Linear(512·7·7 → 512) "fc", BatchNorm1d(512) "features".
# ---------------------------------------------------------------------------------------------------------


def _bn_keys(name: str, n: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{name}.weight": (n,),
        f"{name}.bias": (n,),
        f"{name}.running_mean": (n,),
        f"{name}.running_var": (n,),
        f"{name}.num_batches_tracked": (),
    }


def arcface_torch_keys(blocks=(2, 2, 2, 2), side: int = 7, emb: int = 512) -> dict[str, tuple[int, ...]]:
    """Key → shape of an arcface_torch IResNet state dict, written out from its layout."""
    keys = {"conv1.weight": (64, 3, 3, 3), **_bn_keys("bn1", 64), "prelu.weight": (64,)}
    inplanes = 64
    for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(count):
            p = f"layer{stage}.{b}"
            keys.update(_bn_keys(f"{p}.bn1", inplanes))
            keys[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
            keys.update(_bn_keys(f"{p}.bn2", planes))
            keys[f"{p}.prelu.weight"] = (planes,)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            keys.update(_bn_keys(f"{p}.bn3", planes))
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                keys.update(_bn_keys(f"{p}.downsample.1", planes))
            inplanes = planes
    keys.update(_bn_keys("bn2", 512))
    keys["fc.weight"] = (emb, 512 * side * side)
    keys["fc.bias"] = (emb,)
    keys.update(_bn_keys("features", emb))
    return keys


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, blocks=(2, 2, 2, 2)) -> torch.Tensor:
    """arcface_torch's IResNet forward in eval mode, written with functional ops from a state dict."""

    def bn(t, name):
        return F.batch_norm(
            t, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"], sd[f"{name}.bias"]
        )

    x = F.prelu(bn(F.conv2d(x, sd["conv1.weight"], padding=1), "bn1"), sd["prelu.weight"])
    for stage, count in enumerate(blocks, start=1):
        for b in range(count):
            p = f"layer{stage}.{b}"
            stride = 2 if b == 0 else 1
            out = bn(F.conv2d(bn(x, f"{p}.bn1"), sd[f"{p}.conv1.weight"], padding=1), f"{p}.bn2")
            out = F.prelu(out, sd[f"{p}.prelu.weight"])
            out = bn(F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn3")
            if b == 0:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=2), f"{p}.downsample.1")
            x = out + x
    x = torch.flatten(bn(x, "bn2"), 1)
    return bn(F.linear(x, sd["fc.weight"], sd["fc.bias"]), "features")


def randomised_state(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with every float tensor random (BN statistics too), so op order shows in outputs."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            state[k] = v.clone()
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight", "features.weight")):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * (0.05 if v.dim() > 1 else 0.1)
    return state


# --- registry and timm -----------------------------------------------------------------------------------


def test_registry_lists_backbones():
    names = BACKBONES.names()
    for name in ("iresnet18", "iresnet34", "iresnet50", "iresnet100", "timm_resnet10t", "timm_resnet18"):
        assert name in names


def test_timm_creates_iresnets():
    model = timm.create_model("iresnet50")
    assert isinstance(model, IResNet)
    assert model.fc.in_features == 512 * 7 * 7 and model.embedding_size == 512
    assert "iresnet18" in timm.list_models("iresnet*")
    assert timm.create_model("iresnet18", num_classes=128).embedding_size == 128
    assert timm.create_model("iresnet18", num_features=64, image_size=48).fc.out_features == 64
    with pytest.raises(ValueError, match="load_backbone_weights"):
        timm.create_model("iresnet18", pretrained=True)


def test_create_backbone_falls_back_to_timm_names():
    for name in ("resnet18", "timm_mobilenetv3_small_050"):
        model = create_backbone(name, embedding_size=32, image_size=32).eval()
        assert isinstance(model, TimmEmbedding)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 32)


def test_unknown_backbone_is_one_line_config_error():
    with pytest.raises(ConfigError) as err:
        create_backbone("no_such_net")
    message = str(err.value)
    assert "\n" not in message and "iresnet50" in message and "timm_resnet10t" in message


# --- arcface_torch layout ------------------------------------------------------------------------------


def test_iresnet18_has_arcface_torch_keys_and_shapes():
    model = create_backbone("iresnet18")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == arcface_torch_keys()
    assert list(got) == list(arcface_torch_keys())  # same order as arcface_torch too
    assert not model.features.weight.requires_grad
    assert torch.all(model.features.weight == 1.0)


def test_iresnet18_computes_arcface_torch_forward():
    model = create_backbone("iresnet18", embedding_size=64, image_size=48).eval()
    state = randomised_state(model)
    load_backbone_weights(model, state)  # strict=True
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), reference_forward(state, x), atol=1e-4, rtol=1e-4)


def test_larger_iresnets_match_stage_depths():
    for name, blocks in (
        ("iresnet34", (3, 4, 6, 3)),
        ("iresnet50", (3, 4, 14, 3)),
        ("iresnet100", (3, 13, 30, 3)),
    ):
        got = {k: tuple(v.shape) for k, v in create_backbone(name).state_dict().items()}
        assert got == arcface_torch_keys(blocks), name


def test_iresnet50_forward_at_112():
    model = create_backbone("iresnet50").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 512)


@pytest.mark.parametrize(("size", "side"), [(112, 7), (64, 4), (48, 3), (56, 4)])
def test_iresnet_other_input_sizes(size, side):
    model = create_backbone("iresnet18", embedding_size=128, image_size=size)
    assert model.image_size == size and model.embedding_size == 128
    assert model.fc.in_features == 512 * side * side
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 128)


def test_iresnet_rejects_wrong_input_size():
    model = create_backbone("iresnet18", image_size=48)
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, 3, 64, 64))


def test_iresnet_fp16_autocast_returns_float32():
    model = create_backbone("iresnet18", embedding_size=32, image_size=32, fp16=True).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).dtype == torch.float32


def test_iresnet_trains_one_step():
    model = create_backbone("iresnet18", embedding_size=16, image_size=32)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    loss = model(torch.randn(4, 3, 32, 32)).pow(2).mean()
    loss.backward()
    opt.step()
    assert model.features.weight.grad is None and torch.all(model.features.weight == 1.0)


# --- the timm embedding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [48, 64])
def test_timm_resnet10t_embedding(size):
    model = create_backbone("timm_resnet10t", embedding_size=64, image_size=size)
    assert isinstance(model, TimmEmbedding)
    assert (model.embedding_size, model.image_size) == (64, size)
    out = model(torch.randn(4, 3, size, size))
    assert out.shape == (4, 64)
    out.sum().backward()


def test_channels_last_does_not_change_outputs_or_weights():
    a = create_backbone("timm_resnet10t", embedding_size=16, image_size=32, channels_last=True).eval()
    b = create_backbone("timm_resnet10t", embedding_size=16, image_size=32, channels_last=False).eval()
    load_backbone_weights(b, a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-5)


# --- weights loading -----------------------------------------------------------------------------------


def test_load_saved_file_weights_only(tmp_path):
    source = create_backbone("iresnet18", embedding_size=32, image_size=32).eval()
    source.load_state_dict(randomised_state(source))
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    target = load_backbone_weights(
        create_backbone("iresnet18", embedding_size=32, image_size=32).eval(), path
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_load_from_lightning_checkpoint_prefixes(tmp_path):
    source = create_backbone("timm_resnet10t", embedding_size=16, image_size=32)
    state = source.state_dict()
    checkpoint = {
        "epoch": 3,
        "state_dict": {
            **{f"backbone.{k}": v for k, v in state.items()},
            **{f"student.{k}": v + 1 if v.is_floating_point() else v for k, v in state.items()},
            "head.weight": torch.randn(10, 16),
        },
    }
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    target = create_backbone("timm_resnet10t", embedding_size=16, image_size=32)
    load_backbone_weights(target, path)  # "backbone." by default
    assert torch.equal(target.fc.weight, source.fc.weight)
    load_backbone_weights(target, path, prefix="student.")
    assert torch.equal(target.fc.weight, source.fc.weight + 1)
    ddp = {f"module.{k}": v for k, v in state.items()}  # arcface_torch files saved from a DDP wrapper
    assert torch.equal(load_backbone_weights(target, ddp).fc.weight, source.fc.weight)


def test_mismatched_embedding_size_names_the_shapes(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(create_backbone("iresnet18", embedding_size=512, image_size=32).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(create_backbone("iresnet18", embedding_size=128, image_size=32), path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "fc.weight (512, 2048) in file vs (128, 2048) in model" in message
    assert "embedding_size" in message


def test_other_architecture_names_missing_and_unexpected_keys():
    small = create_backbone("iresnet18", embedding_size=16, image_size=32).state_dict()
    with pytest.raises(CheckpointError, match=r"missing layer1\.2\.") as err:
        load_backbone_weights(create_backbone("iresnet34", embedding_size=16, image_size=32), small)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=r"unexpected trunk\."):
        load_backbone_weights(
            create_backbone("iresnet18", embedding_size=16, image_size=32),
            create_backbone("timm_resnet10t", embedding_size=16, image_size=32).state_dict(),
        )
    # a partial match loads when asked for
    load_backbone_weights(create_backbone("iresnet34", embedding_size=16, image_size=32), small, strict=False)


def test_unsafe_or_missing_files_raise_checkpoint_error(tmp_path):
    model = create_backbone("iresnet18", embedding_size=16, image_size=32)
    whole = tmp_path / "model.pt"
    torch.save(model, whole)  # a pickled module, not a state dict: weights_only refuses it
    with pytest.raises(CheckpointError, match="weights-only"):
        load_backbone_weights(model, whole)
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_backbone_weights(model, tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="no keys start with"):
        load_backbone_weights(model, model.state_dict(), prefix="backbone.")
